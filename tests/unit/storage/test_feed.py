"""The feed contract (``store.feed``), run against every backend.

Whatever keeps the messages, a sink attached to ``store.feed`` receives every
newly stored message of a watched channel exactly once, in seq order, and
never a duplicate publish. The embedded stores deliver before ``append``
returns; the Redis store too for its own messages when they come next, and
others' once it has read them back, so the tests wait for the sink to have
everything rather than for a fixed time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from rtkit.storage import MemoryStore, Message, PresenceChange, Store
from rtkit.storage.base import Feed

MakeStore = Callable[..., Awaitable[Store]]  # the conftest's fixture
WINDOW = 300.0


class RecordingSink:
    """A FeedSink that keeps what it is given and says when it has enough."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.states: list[bool] = []
        self._changed = asyncio.Event()

    def stored(self, message: Message) -> None:
        self.messages.append(message)
        self._changed.set()

    def stored_many(self, messages: list[Message]) -> None:
        self.messages.extend(messages)
        self._changed.set()

    def presence_changed(self, change: PresenceChange) -> None:
        raise AssertionError(f"no other hub changed a room: {change}")

    def doc_updated(self, name: str, update: bytes) -> None:
        raise AssertionError(f"no other hub updated a document: {name}")

    def state(self, up: bool) -> None:
        self.states.append(up)

    def subscribers(self, channel: str) -> int:
        return 1  # keep every watched channel watched

    def forget(self, channel: str) -> bool:
        return False  # every channel is followed

    async def wait_for(self, count: int, within: float = 10.0) -> None:
        async with asyncio.timeout(within):
            while len(self.messages) < count:
                self._changed.clear()
                await self._changed.wait()


async def put(store: Store, channel: str, n: int, *, msg_id: str | None = None) -> int:
    appended = await store.channels.append(
        channel, {"n": n}, sender="ann", msg_id=msg_id, ts=time.time(), dedup_window=WINDOW
    )
    return appended.message.seq


async def test_every_stored_message_reaches_the_sink_once_in_seq_order(
    make_store: MakeStore,
) -> None:
    store = await make_store()
    assert isinstance(store.feed, Feed)
    sink = RecordingSink()
    await store.feed.start(sink)
    try:
        assert store.feed.up
        await store.feed.watch("prices")
        await store.feed.watch("prices")  # watching twice is watching once
        seqs = [await put(store, "prices", n, msg_id=f"m{n}") for n in range(1, 6)]
        # Concurrent appends too: each is delivered once, in the order stored.
        seqs += await asyncio.gather(*(put(store, "prices", n) for n in range(6, 31)))
        assert await put(store, "prices", 3, msg_id="m3") == 3  # a duplicate
        assert sorted(seqs) == list(range(1, 31))
        await sink.wait_for(30)
        # One more, so a late duplicate delivery would show before it.
        assert await put(store, "prices", 31) == 31
        await sink.wait_for(31)
    finally:
        await store.feed.stop()
    assert [m.seq for m in sink.messages] == list(range(1, 32))
    assert {m.channel for m in sink.messages} == {"prices"}
    assert [m.data for m in sink.messages[:5]] == [{"n": n} for n in range(1, 6)]
    assert False not in sink.states


async def test_a_message_stored_before_start_is_not_delivered(make_store: MakeStore) -> None:
    store = await make_store()
    before = await put(store, "news", 1)
    sink = RecordingSink()
    await store.feed.start(sink)
    try:
        await store.feed.watch("news")
        after = await put(store, "news", 2)
        await sink.wait_for(1)
        await store.feed.unwatch("news")
    finally:
        await store.feed.stop()
    # Before start there is no sink (and for Redis, nothing watched yet).
    assert [m.seq for m in sink.messages] == [after]
    assert before == 1


async def test_an_embedded_store_delivers_before_append_returns() -> None:
    store = MemoryStore()
    await store.open()
    sink = RecordingSink()
    await store.feed.start(sink)
    try:
        assert store.feed.status() is None
        appended = store.channels.append_now(
            "fast", 1, sender="ann", msg_id="a", ts=time.time(), dedup_window=WINDOW
        )
        assert sink.messages == [appended.message]
        again = store.channels.append_now(
            "fast", 1, sender="ann", msg_id="a", ts=time.time(), dedup_window=WINDOW
        )
        assert again.duplicate
        assert sink.messages == [appended.message]
    finally:
        await store.feed.stop()
        await store.close()


async def test_a_feed_has_one_sink(make_store: MakeStore) -> None:
    store = await make_store()
    await store.feed.start(RecordingSink())
    try:
        with pytest.raises(RuntimeError):
            await store.feed.start(RecordingSink())
    finally:
        await store.feed.stop()
