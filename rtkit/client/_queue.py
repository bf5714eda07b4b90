"""The publish outbox: every publish not yet acked, in call order.

One structure serves online and offline publishing, which is what keeps order
across reconnects: publishes are sent from its head, an ack removes its item,
and when the connection drops everything still in it (sent or not) is marked
unsent again, so the next connection resends it all, in the original order,
before anything published later. The hub deduplicates resends by
``(sender, id)``, so a publish that was stored just before the drop is not
stored twice.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Generic, TypeVar

from ..errors import OfflineQueueFull

__all__ = ["Outbox"]

T = TypeVar("T")


class Outbox(Generic[T]):
    """Pending items in order, each either *unsent* or *sent* (awaiting an ack).

    Items are told apart by identity, so equal payloads never collide.

    >>> box: Outbox[str] = Outbox(maxsize=2)
    >>> box.push("a", online=False); box.push("b", online=False)
    >>> box.pop_unsent(), box.pop_unsent(), box.pop_unsent()
    ('a', 'b', None)
    >>> box.rewind(); box.pop_unsent()
    2
    'a'
    """

    __slots__ = ("_items", "_unsent", "maxsize")

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("the offline queue needs room for at least one publish")
        self.maxsize = maxsize
        self._items: dict[int, T] = {}  # insertion-ordered: call order
        self._unsent: deque[int] = deque()  # keys; may hold keys removed since

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[T]:
        """Pending items, oldest first."""
        return iter(list(self._items.values()))

    def __contains__(self, item: object) -> bool:
        return id(item) in self._items

    @property
    def unsent(self) -> int:
        """How many items wait to be sent (stale keys of removed items aside)."""
        return sum(1 for key in self._unsent if key in self._items)

    def push(self, item: T, *, online: bool) -> None:
        """Append ``item``; offline, refuse it when ``maxsize`` items are pending.

        Online there is no bound here: each caller awaits its own ack, so the
        pipeline is bounded by the callers themselves.
        """
        if not online and len(self._items) >= self.maxsize:
            raise OfflineQueueFull(
                f"{len(self._items)} publishes are waiting for the hub to come back "
                f"(max_offline_queue={self.maxsize}); wait for the reconnect or raise the limit"
            )
        key = id(item)
        if key in self._items:
            raise ValueError("this item is already queued")
        self._items[key] = item
        self._unsent.append(key)

    def pop_unsent(self) -> T | None:
        """The oldest unsent item, now marked sent; None when all are sent."""
        while self._unsent:
            item = self._items.get(self._unsent.popleft())
            if item is not None:
                return item
        return None

    def unpop(self, items: list[T]) -> None:
        """Put ``items``, just taken with :meth:`pop_unsent`, back at the
        head of the unsent ones, in their order."""
        self._unsent.extendleft(id(item) for item in reversed(items))

    def remove(self, item: T) -> bool:
        """Forget ``item`` (acked, failed or abandoned); False if it was not here."""
        return self._items.pop(id(item), None) is not None

    def rewind(self) -> int:
        """Mark every pending item unsent again, in call order; returns the count."""
        self._unsent = deque(self._items)
        return len(self._items)

    def drain(self) -> list[T]:
        """Remove and return every pending item, oldest first."""
        items = list(self._items.values())
        self._items.clear()
        self._unsent.clear()
        return items
