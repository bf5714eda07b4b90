"""What the Redis store's publish path costs: a burst of publishes is one
script call and one announcement, and a hub delivers its own messages
without reading them back. Two stores on one prefix stand for two hubs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from rtkit.pytest_plugin import REDIS_URL
from rtkit.storage.redis import RedisStore
from tests.unit.storage.test_feed import RecordingSink

pytestmark = pytest.mark.redis
WINDOW = 300.0


@pytest.fixture
async def hubs(rt_redis_prefix: str) -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    a, b = (
        RedisStore(REDIS_URL, prefix=rt_redis_prefix),
        RedisStore(REDIS_URL, prefix=rt_redis_prefix),
    )
    await a.open()
    await b.open()
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def publish(store: RedisStore, channel: str, n: int, msg_id: str | None = None) -> int:
    appended = await store.channels.append(
        channel, {"n": n}, sender="ann", msg_id=msg_id, ts=time.time(), dedup_window=WINDOW
    )
    return appended.message.seq


async def test_a_burst_of_publishes_is_one_announcement_read_once_by_other_hubs(
    hubs: tuple[RedisStore, RedisStore], rt_redis_prefix: str
) -> None:
    a, b = hubs
    sink = RecordingSink()
    await b.feed.start(sink)
    listener = aioredis.Redis.from_url(REDIS_URL)
    pubsub = listener.pubsub()
    try:
        await b.feed.watch("burst")
        await pubsub.subscribe(f"{rt_redis_prefix}{{burst}}:n")
        # Publishes arriving in the same turn of the event loop, as a busy
        # hub sees them.
        seqs = await asyncio.gather(*(publish(a, "burst", n) for n in range(200)))
        assert sorted(seqs) == list(range(1, 201))
        await sink.wait_for(200)
        announcements = []
        async with asyncio.timeout(5):
            while not announcements or announcements[-1] != b"200":
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if msg is not None:
                    announcements.append(msg["data"])
    finally:
        await b.feed.stop()
        await pubsub.aclose()
        await listener.aclose()
    assert announcements == [b"200"], "one announcement for the whole burst"
    assert [m.seq for m in sink.messages] == list(range(1, 201))
    assert [m.data["n"] for m in sink.messages] == [seqs.index(s) for s in range(1, 201)]


async def test_a_hub_delivers_its_own_messages_before_the_publisher_is_answered(
    hubs: tuple[RedisStore, RedisStore],
) -> None:
    a, b = hubs
    sink = RecordingSink()
    await a.feed.start(sink)
    try:
        await a.feed.watch("own")
        appended = await a.channels.append(
            "own", {"n": 1}, sender="ann", msg_id=None, ts=time.time(), dedup_window=WINDOW
        )
        assert sink.messages == [appended.message]
        # Another hub's message comes between: read back, still in order.
        assert await publish(b, "own", 2) == 2
        assert await publish(a, "own", 3) == 3
        await sink.wait_for(3)
        assert [m.seq for m in sink.messages] == [1, 2, 3]
        status = a.feed.status()
        assert status is not None and status["messages_read"] <= 2, "only b's was read back"
    finally:
        await a.feed.stop()


async def test_duplicates_within_one_burst_are_numbered_once(
    hubs: tuple[RedisStore, RedisStore],
) -> None:
    a, _ = hubs
    seqs = await asyncio.gather(
        publish(a, "dups", 1, "same"), publish(a, "dups", 2), publish(a, "dups", 3, "same")
    )
    assert seqs[0] == seqs[2] and sorted(set(seqs)) == [1, 2]
    rng = await a.channels.read("dups", since=0)
    assert [m.data for m in rng.messages] == [{"n": 1}, {"n": 2}]


async def test_publishing_goes_on_after_redis_forgets_its_scripts(
    hubs: tuple[RedisStore, RedisStore],
) -> None:
    a, _ = hubs
    assert await publish(a, "flush", 1) == 1
    # What a Redis restart (or SCRIPT FLUSH) does to the script cache.
    admin = aioredis.Redis.from_url(REDIS_URL)
    try:
        await admin.script_flush()
    finally:
        await admin.aclose()
    assert await asyncio.gather(publish(a, "flush", 2), publish(a, "other", 1)) == [2, 1]
