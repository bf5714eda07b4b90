from __future__ import annotations

import pytest

from rtkit.client._queue import Outbox
from rtkit.errors import OfflineQueueFull


class Item:
    """Distinct objects with equal payloads must not collide."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __repr__(self) -> str:
        return f"Item({self.n})"


def drain_unsent(box: Outbox[Item]) -> list[int]:
    out = []
    while (item := box.pop_unsent()) is not None:
        out.append(item.n)
    return out


def test_sends_in_push_order() -> None:
    box: Outbox[Item] = Outbox(maxsize=10)
    for n in range(5):
        box.push(Item(n), online=True)
    assert drain_unsent(box) == [0, 1, 2, 3, 4]
    assert box.pop_unsent() is None
    assert len(box) == 5  # sent, not acked


def test_offline_bound_counts_every_pending_item() -> None:
    box: Outbox[Item] = Outbox(maxsize=3)
    box.push(Item(0), online=True)
    box.pop_unsent()  # in flight when the connection dropped
    box.push(Item(1), online=False)
    box.push(Item(2), online=False)
    with pytest.raises(OfflineQueueFull, match="max_offline_queue=3"):
        box.push(Item(3), online=False)
    assert len(box) == 3


def test_online_pushes_are_not_bounded() -> None:
    box: Outbox[Item] = Outbox(maxsize=2)
    for n in range(5):
        box.push(Item(n), online=True)
    assert len(box) == 5
    with pytest.raises(OfflineQueueFull):
        box.push(Item(5), online=False)


def test_full_queue_accepts_again_after_acks() -> None:
    box: Outbox[Item] = Outbox(maxsize=1)
    first = Item(0)
    box.push(first, online=False)
    with pytest.raises(OfflineQueueFull):
        box.push(Item(1), online=False)
    assert box.remove(first)
    box.push(Item(2), online=False)
    assert drain_unsent(box) == [2]


def test_rewind_resends_unacked_in_original_order_before_newer() -> None:
    box: Outbox[Item] = Outbox(maxsize=100)
    items = [Item(n) for n in range(6)]
    for item in items[:4]:
        box.push(item, online=True)
    assert drain_unsent(box) == [0, 1, 2, 3]
    box.remove(items[1])  # acked
    box.remove(items[3])  # acked out of order
    # connection lost: publishes made while offline go behind the unacked ones
    assert box.rewind() == 2
    box.push(items[4], online=False)
    box.push(items[5], online=False)
    assert drain_unsent(box) == [0, 2, 4, 5]


def test_rewind_midway_through_a_flush() -> None:
    box: Outbox[Item] = Outbox(maxsize=100)
    for n in range(4):
        box.push(Item(n), online=False)
    assert box.pop_unsent() is not None  # sent item 0, then the link drops again
    box.rewind()
    assert drain_unsent(box) == [0, 1, 2, 3]


def test_removed_unsent_items_are_skipped() -> None:
    box: Outbox[Item] = Outbox(maxsize=100)
    items = [Item(n) for n in range(3)]
    for item in items:
        box.push(item, online=False)
    assert box.remove(items[1])  # abandoned before it was sent
    assert box.unsent == 2
    assert drain_unsent(box) == [0, 2]


def test_remove_is_idempotent() -> None:
    box: Outbox[Item] = Outbox(maxsize=10)
    item = Item(0)
    box.push(item, online=True)
    assert item in box
    assert box.remove(item) is True
    assert box.remove(item) is False
    assert item not in box


def test_equal_items_are_distinct() -> None:
    box: Outbox[tuple[int]] = Outbox(maxsize=10)
    a, b = (1,), tuple([1])  # equal, distinct objects
    assert a == b and a is not b
    box.push(a, online=True)
    box.push(b, online=True)
    assert len(box) == 2
    box.remove(a)
    assert box.pop_unsent() is b


def test_pushing_the_same_object_twice_is_an_error() -> None:
    box: Outbox[Item] = Outbox(maxsize=10)
    item = Item(0)
    box.push(item, online=True)
    with pytest.raises(ValueError, match="already"):
        box.push(item, online=True)


def test_iter_and_drain_keep_order() -> None:
    box: Outbox[Item] = Outbox(maxsize=10)
    items = [Item(n) for n in range(4)]
    for item in items:
        box.push(item, online=True)
    box.remove(items[2])
    assert [i.n for i in box] == [0, 1, 3]
    assert [i.n for i in box.drain()] == [0, 1, 3]
    assert len(box) == 0
    assert box.pop_unsent() is None


def test_needs_room() -> None:
    with pytest.raises(ValueError):
        Outbox(maxsize=0)
