"""What a channel store holds is bounded by what it retains: reads create
nothing, channels whose messages all expired are forgotten, each channel
keeps at most ``max_bytes`` of payload (the memory store also at most
``max_total_bytes`` in all), and idempotency keys of senders whose names
contain separators never collide. Every backend."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable

from rtkit.storage import MemoryStore, Retention, SQLiteStore, Store
from rtkit.storage.redis import RedisStore

MakeStore = Callable[..., Awaitable[Store]]  # the conftest's fixture


async def put(store: Store, channel: str, data: object, **kwargs: object) -> int:
    args = {"sender": "ann", "msg_id": None, "ts": time.time(), "dedup_window": 300.0}
    args.update(kwargs)
    appended = await store.channels.append(channel, data, **args)  # type: ignore[arg-type]
    return appended.message.seq


async def channel_state(store: Store) -> int:
    """How many things the backend keeps for channels (dicts, rows, keys)."""
    if isinstance(store, MemoryStore):
        return len(store.channels)
    if isinstance(store, SQLiteStore):
        with sqlite3.connect(store.path) as db:
            return int(db.execute("SELECT count(*) FROM channels").fetchone()[0])
    assert isinstance(store, RedisStore)
    redis = store._conn.redis
    keys = [k async for k in redis.scan_iter(match=f"{store.prefix}{{*")]
    return len(keys)


async def test_reads_create_nothing(make_store: MakeStore) -> None:
    store = await make_store()
    for i in range(50):
        await store.channels.read(f"never.{i}")
        await store.channels.read(f"never.{i}", since=3)
        await store.channels.head(f"head.{i}")
    if isinstance(store, SQLiteStore):
        await store.channels.prune()
    assert await channel_state(store) == 0


async def test_first_append_keeps_the_epoch_reads_reported(make_store: MakeStore) -> None:
    # A client that subscribed while the channel was empty, then saw its
    # first messages live, resumes with that epoch and must not see a gap.
    store = await make_store()
    _, epoch = await store.channels.head("fresh")
    assert (await store.channels.read("fresh")).epoch == epoch
    await put(store, "fresh", 1)
    assert await store.channels.head("fresh") == (1, epoch)
    assert (await store.channels.read("fresh", since=1)).complete


async def test_per_channel_byte_cap(make_store: MakeStore) -> None:
    store = await make_store(Retention(max_bytes=10_000))
    for i in range(10):
        await put(store, "big", "x" * 2998 + f"{i:02d}")  # 3002 bytes as JSON
    if isinstance(store, SQLiteStore):
        await store.channels.prune()  # the cap is applied by the periodic prune
    rng = await store.channels.read("big")
    assert [m.seq for m in rng.messages] == [8, 9, 10]
    assert not (await store.channels.read("big", since=2)).complete
    assert (await store.channels.read("big", since=7)).complete
    # The newest message stays, however big.
    await put(store, "huge", b"y" * 20_000)
    await put(store, "huge", b"z" * 20_000)
    if isinstance(store, SQLiteStore):
        await store.channels.prune()
    assert [m.data[:1] for m in (await store.channels.read("huge")).messages] == [b"z"]


async def test_senders_with_separators_do_not_collide(make_store: MakeStore) -> None:
    store = await make_store()
    pairs = [("ann", "b:1"), ("ann:b", "1"), ("ann:b:1", "x"), ("ann", "b:1:x")]
    seen = set()
    for sender, msg_id in pairs:
        appended = await store.channels.append(
            "ch", sender, sender=sender, msg_id=msg_id, ts=time.time(), dedup_window=300
        )
        assert not appended.duplicate, (sender, msg_id)
        seen.add(appended.message.seq)
    assert seen == {1, 2, 3, 4}
    again = await store.channels.append(
        "ch", "ann:b", sender="ann:b", msg_id="1", ts=time.time(), dedup_window=300
    )
    assert again.duplicate and again.message.seq == 2


async def test_memory_forgets_expired_channels_and_starts_them_over() -> None:
    now = [1_000_000.0]
    store = MemoryStore(Retention(max_age=5.0), clock=lambda: now[0])
    await store.open()
    try:
        await put(store, "old", 1, ts=now[0])
        _, first_epoch = await store.channels.head("old")
        now[0] += 60
        await put(store, "other", 1, ts=now[0])  # appends sweep now and then
        assert len(store.channels) == 1
        seq, epoch = await store.channels.head("old")
        assert seq == 0 and epoch != first_epoch
        assert not (await store.channels.read("old", since=1)).complete
        assert await put(store, "old", 2, ts=now[0]) == 1
    finally:
        await store.close()


async def test_memory_total_cap_trims_the_biggest_channels_first() -> None:
    store = MemoryStore(max_total_bytes=100_000)
    await store.open()
    try:
        await put(store, "small", "s" * 998)
        for i in range(50):
            await put(store, f"big.{i % 5}", "b" * 4998)  # 5000 bytes each
        assert store.channels.total_bytes <= 100_000
        # The small channel kept its message; the big ones lost their oldest.
        assert len((await store.channels.read("small")).messages) == 1
        for i in range(5):
            rng = await store.channels.read(f"big.{i}")
            assert rng.seq == 10 and rng.messages[-1].seq == 10 and len(rng.messages) < 10
    finally:
        await store.close()


async def test_sqlite_forgets_expired_channels(tmp_path: object) -> None:
    path = f"{tmp_path}/rt.db"
    store = SQLiteStore(path, Retention(max_age=1.0), prune_interval=0.1)
    await store.open()
    try:
        await put(store, "old", 1, ts=time.time() - 10)  # already expired
        await put(store, "new", 2)

        async def rows() -> set[str]:
            with sqlite3.connect(path) as db:
                return {name for (name,) in db.execute("SELECT name FROM channels")}

        deadline = time.monotonic() + 10
        while "old" in await rows():
            assert time.monotonic() < deadline, "the expired channel was not forgotten"
            await asyncio.sleep(0.05)  # polling the file for the condition, with a deadline
        assert (await store.channels.head("old"))[0] == 0
        assert await put(store, "old", 3) == 1  # starts over
        assert "new" in await rows()
    finally:
        await store.close()


async def test_sqlite_reads_leave_no_rows_across_a_restart(tmp_path: object) -> None:
    path = f"{tmp_path}/rt.db"
    store = SQLiteStore(path)
    await store.open()
    for i in range(20):
        await store.channels.read(f"r.{i}")
    await put(store, "kept", 1)
    await store.close()
    store = SQLiteStore(path)
    await store.open()
    try:
        assert await channel_state(store) == 1
        assert (await store.channels.head("kept"))[0] == 1
    finally:
        await store.close()
