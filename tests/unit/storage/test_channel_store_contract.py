"""The ChannelStore contract (``store.channels``), run against every backend.

Each test gets ``make_store`` (see conftest.py), a factory for fresh, opened
stores of one backend, and uses their channel store. Times are passed in
through ``ts``; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from rtkit.storage import Appended, ChannelStore, MemoryStore, Range, Retention, SQLiteStore, Store

MakeStore = Callable[..., Awaitable[Store]]  # the conftest's fixture
WINDOW = 300.0


async def put(
    store: Store,
    channel: str,
    data: Any,
    *,
    msg_id: str | None = None,
    sender: str = "ann",
    ts: float | None = None,
    window: float = WINDOW,
) -> Appended:
    return await store.channels.append(
        channel,
        data,
        sender=sender,
        msg_id=msg_id,
        ts=time.time() if ts is None else ts,
        dedup_window=window,
    )


def seqs(rng: Range) -> list[int]:
    return [m.seq for m in rng.messages]


def assert_same(got: Any, want: Any) -> None:
    """Equal, and of the same types all the way down (1 == 1.0 == True in Python)."""
    assert type(got) is type(want), (got, want)
    if isinstance(want, dict):
        assert list(got) == list(want)
        for key in want:
            assert_same(got[key], want[key])
    elif isinstance(want, list):
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert_same(g, w)
    elif isinstance(want, float):
        assert math.copysign(1, got) == math.copysign(1, want)  # -0.0 stays -0.0
        assert got == want
    else:
        assert got == want


async def test_is_a_store(make_store: MakeStore) -> None:
    store = await make_store()
    assert isinstance(store, Store)
    assert isinstance(store.channels, ChannelStore)
    assert store.url.split(":")[0] in {"memory", "sqlite", "redis"}


async def test_concurrent_appends_get_gap_free_seqs_in_call_order(make_store: MakeStore) -> None:
    store = await make_store()
    channels = ["a", "b", "c"]
    rnd = random.Random(7)
    calls = [rnd.choice(channels) for _ in range(1000)]
    results = await asyncio.gather(*(put(store, ch, {"i": i}) for i, ch in enumerate(calls)))

    expected: dict[str, int] = dict.fromkeys(channels, 0)
    for i, (ch, appended) in enumerate(zip(calls, results, strict=True)):
        expected[ch] += 1
        assert not appended.duplicate
        assert appended.message.channel == ch
        assert appended.message.seq == expected[ch], f"call {i} on {ch}"
        assert appended.message.data == {"i": i}
    for ch in channels:
        rng = await store.channels.read(ch)
        assert seqs(rng) == list(range(1, expected[ch] + 1))
        assert rng.seq == expected[ch]
        assert [m.data["i"] for m in rng.messages] == [i for i, c in enumerate(calls) if c == ch]
        assert await store.channels.head(ch) == (expected[ch], rng.epoch)


async def test_generated_ids_are_unique(make_store: MakeStore) -> None:
    store = await make_store()
    results = await asyncio.gather(*(put(store, "ch", i) for i in range(200)))
    ids = {r.message.id for r in results}
    assert len(ids) == 200
    assert all(ids)


async def test_read_selection(make_store: MakeStore) -> None:
    store = await make_store()
    for i in range(1, 11):
        await put(store, "ch", i, msg_id=f"m{i}", sender="bob")

    everything = await store.channels.read("ch")
    assert seqs(everything) == list(range(1, 11))
    assert everything.seq == 10
    assert everything.complete
    first = everything.messages[0]
    assert (first.channel, first.seq, first.id, first.sender, first.data) == (
        "ch",
        1,
        "m1",
        "bob",
        1,
    )
    assert first.envelope()["seq"] == 1

    assert seqs(await store.channels.read("ch", since=3)) == list(range(4, 11))
    assert seqs(await store.channels.read("ch", since=3, limit=2)) == [4, 5]  # oldest after since
    assert seqs(await store.channels.read("ch", before=5)) == [1, 2, 3, 4]
    assert seqs(await store.channels.read("ch", before=5, limit=2)) == [3, 4]  # newest before
    assert seqs(await store.channels.read("ch", since=2, before=6)) == [3, 4, 5]
    assert seqs(await store.channels.read("ch", since=2, before=6, limit=2)) == [3, 4]
    assert seqs(await store.channels.read("ch", last=3)) == [8, 9, 10]
    assert seqs(await store.channels.read("ch", limit=3)) == [8, 9, 10]  # newest without since
    assert seqs(await store.channels.read("ch", last=20)) == list(range(1, 11))
    # A limit or last between the count and twice it (a negative slice start
    # once counted from the end: before=5, limit=6 gave [2, 3, 4]).
    assert seqs(await store.channels.read("ch", before=5, limit=6)) == [1, 2, 3, 4]
    assert seqs(await store.channels.read("ch", limit=15)) == list(range(1, 11))
    assert seqs(await store.channels.read("ch", last=15)) == list(range(1, 11))
    assert seqs(await store.channels.read("ch", last=0)) == []
    assert seqs(await store.channels.read("ch", limit=0)) == []
    assert seqs(await store.channels.read("ch", before=1)) == []
    assert seqs(await store.channels.read("ch", since=5, last=2)) == [9, 10]

    caught_up = await store.channels.read("ch", since=10)
    assert (caught_up.messages, caught_up.seq, caught_up.complete) == ([], 10, True)
    from_start = await store.channels.read("ch", since=0)
    assert seqs(from_start) == list(range(1, 11))
    assert from_start.complete


async def test_unknown_channel_has_a_stable_epoch(make_store: MakeStore) -> None:
    store = await make_store()
    rng = await store.channels.read("new")
    assert (rng.messages, rng.seq, rng.complete) == ([], 0, True)
    assert rng.epoch
    assert await store.channels.head("new") == (0, rng.epoch)
    assert (await store.channels.read("new", since=0)).complete
    await put(store, "new", "x")
    assert await store.channels.head("new") == (1, rng.epoch)
    other = await store.channels.head("other")
    assert other[1] != rng.epoch


async def test_since_beyond_head_is_incomplete(make_store: MakeStore) -> None:
    # A client that counted to 7 in another epoch (before a restart) has a gap.
    store = await make_store()
    for i in range(3):
        await put(store, "ch", i)
    rng = await store.channels.read("ch", since=7)
    assert (rng.messages, rng.seq, rng.complete) == ([], 3, False)
    assert not (await store.channels.read("empty", since=1)).complete


async def test_since_older_than_retained_is_incomplete(make_store: MakeStore) -> None:
    store = await make_store(Retention(max_messages=5))
    for i in range(1, 11):
        await put(store, "ch", i)
    assert seqs(await store.channels.read("ch")) == [6, 7, 8, 9, 10]
    assert seqs(await store.channels.read("ch", last=10)) == [6, 7, 8, 9, 10]

    gap = await store.channels.read("ch", since=2)
    assert seqs(gap) == [6, 7, 8, 9, 10]
    assert not gap.complete
    assert not (await store.channels.read("ch", since=4)).complete
    assert not (await store.channels.read("ch", since=0)).complete
    assert (await store.channels.read("ch", since=5)).complete
    assert (await store.channels.read("ch", since=9)).complete
    assert seqs(await store.channels.read("ch", before=8)) == [6, 7]


async def test_retention_by_age(make_store: MakeStore) -> None:
    store = await make_store(Retention(max_age=60.0))
    now = time.time()
    for i in range(3):
        await put(store, "ch", f"old{i}", ts=now - 120)
    for i in range(2):
        await put(store, "ch", f"new{i}", ts=now)
    rng = await store.channels.read("ch")
    assert [m.data for m in rng.messages] == ["new0", "new1"]
    assert seqs(rng) == [4, 5]
    assert rng.seq == 5
    assert not (await store.channels.read("ch", since=0)).complete
    assert not (await store.channels.read("ch", since=2)).complete
    assert (await store.channels.read("ch", since=3)).complete


async def test_idempotent_append(make_store: MakeStore) -> None:
    store = await make_store()
    now = time.time()
    first = await put(store, "ch", {"v": 1}, msg_id="abc", ts=now)
    await put(store, "ch", {"v": 2}, msg_id="other", ts=now + 1)
    again = await put(store, "ch", {"v": 1}, msg_id="abc", ts=now + 2)
    assert not first.duplicate
    assert again.duplicate
    assert again.message == first.message  # same seq, ts, id, sender and data
    assert seqs(await store.channels.read("ch")) == [1, 2]

    # The key is (channel, sender, id).
    assert not (await put(store, "ch", 0, msg_id="abc", sender="bob", ts=now + 3)).duplicate
    assert not (await put(store, "ch2", 0, msg_id="abc", ts=now + 3)).duplicate
    assert (await store.channels.head("ch"))[0] == 3


async def test_duplicate_of_a_message_past_retention(make_store: MakeStore) -> None:
    # Dedup outlives history: the retry is still recognised, with its first seq.
    store = await make_store(Retention(max_messages=2))
    now = time.time()
    await put(store, "ch", {"v": 1}, msg_id="early", ts=now)
    for i in range(3):
        await put(store, "ch", i, ts=now)
    again = await put(store, "ch", {"v": 1}, msg_id="early", ts=now + 1)
    assert again.duplicate
    assert (again.message.seq, again.message.ts, again.message.id) == (1, now, "early")
    assert again.message.data == {"v": 1}
    assert (await store.channels.head("ch"))[0] == 4


async def test_concurrent_duplicates_store_once(make_store: MakeStore) -> None:
    store = await make_store()
    now = time.time()
    results = await asyncio.gather(
        *(put(store, "ch", {"v": 1}, msg_id="same", ts=now) for _ in range(5)),
        put(store, "ch", {"v": 2}, msg_id="next", ts=now),
    )
    assert [r.message.seq for r in results] == [1, 1, 1, 1, 1, 2]
    assert [r.duplicate for r in results] == [False, True, True, True, True, False]
    assert seqs(await store.channels.read("ch")) == [1, 2]


async def test_dedup_expires_after_the_window(make_store: MakeStore) -> None:
    store = await make_store()
    now = time.time()
    first = await put(store, "ch", "a", msg_id="k", ts=now, window=10)
    assert (await put(store, "ch", "a", msg_id="k", ts=now + 10, window=10)).duplicate
    later = await put(store, "ch", "a", msg_id="k", ts=now + 11, window=10)
    assert not later.duplicate
    assert later.message.seq == first.message.seq + 1
    again = await put(store, "ch", "a", msg_id="k", ts=now + 12, window=10)
    assert again.duplicate
    assert again.message.seq == later.message.seq
    # A zero window turns dedup off.
    assert not (await put(store, "ch", "a", msg_id="k", ts=now + 12, window=0)).duplicate


ROUND_TRIP: list[Any] = [
    b"\x00\xffbinary\n",
    b"",
    {
        "int": 1,
        "float": 1.0,
        "neg_zero": -0.0,
        "small": 5e-324,
        "big_float": 1.7976931348623157e308,
        "big_int": 2**70,
        "neg_int": -(2**63),
        "text": 'héllo ☃ 𝄞 \u0000 "q" \\',
        "nested": [None, True, False, [], {}, [1, [2.5]]],
    },
    "just a string",
    "lone surrogate \ud800",
    0,
    2.5,
    None,
    True,
    [1, "a", {"k": [None]}],
]


async def test_data_round_trips_exactly(make_store: MakeStore) -> None:
    store = await make_store()
    for data in ROUND_TRIP:
        appended = await put(store, "ch", data)
        assert appended.message.data is data
    rng = await store.channels.read("ch")
    assert len(rng.messages) == len(ROUND_TRIP)
    for message, data in zip(rng.messages, ROUND_TRIP, strict=True):
        assert_same(message.data, data)


async def test_bytearray_is_stored_as_bytes(make_store: MakeStore) -> None:
    store = await make_store()
    await put(store, "ch", bytearray(b"\x01\x02"))
    (message,) = (await store.channels.read("ch")).messages
    assert bytes(message.data) == b"\x01\x02"


async def test_timestamps_round_trip(make_store: MakeStore) -> None:
    store = await make_store()
    ts = time.time() - 0.123456789
    appended = await put(store, "ch", 1, ts=ts)
    assert appended.message.ts == ts
    (message,) = (await store.channels.read("ch", since=0)).messages
    assert message == appended.message


async def test_lifecycle(make_store: MakeStore, tmp_path: Path) -> None:
    store = await make_store()
    with pytest.raises(RuntimeError, match="open"):
        await store.open()
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        await put(store, "ch", 1)
    with pytest.raises(RuntimeError, match="closed"):
        await store.channels.read("ch")

    for fresh in (MemoryStore(), SQLiteStore(tmp_path / "unopened.db")):
        with pytest.raises(RuntimeError, match="not open"):
            await put(fresh, "ch", 1)
        await fresh.close()


async def test_async_context_manager(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "cm.db") as sqlite_store:
        assert (await put(sqlite_store, "ch", 1)).message.seq == 1
    async with MemoryStore() as memory_store:
        assert (await put(memory_store, "ch", 1)).message.seq == 1
    with pytest.raises(RuntimeError):
        await put(sqlite_store, "ch", 1)


async def test_memory_restart_is_a_new_epoch() -> None:
    async with MemoryStore() as first:
        await put(first, "ch", 1)
        epoch = (await first.channels.head("ch"))[1]
    async with MemoryStore() as second:
        assert (await second.channels.head("ch"))[0] == 0
        assert (await second.channels.head("ch"))[1] != epoch
