"""What the Redis store's publish path costs: a burst of publishes is one
script call and one announcement, and a hub delivers its own messages
without reading them back. Two stores on one prefix stand for two hubs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from rtkit.pytest_plugin import REDIS_URL
from rtkit.storage.redis import RedisStore
from rtkit.storage.redis.connection import RedisConnection
from rtkit.storage.redis.pipeline import PipelinedConnection, pack, pack_head
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


async def test_a_hub_delivers_its_own_messages_without_reading_them_back(
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
        # Right after the publisher's answer, which leaves first.
        await sink.wait_for(1)
        assert sink.messages == [appended.message]
        assert a.feed.status() == {"up": True, "outages": 0, "watched": 1, "messages_read": 0}
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


async def test_a_broken_publishing_connection_fails_what_is_on_its_way_then_reconnects(
    rt_redis_prefix: str,
) -> None:
    conn = RedisConnection(REDIS_URL, rt_redis_prefix)
    await conn.open()
    link = PipelinedConnection(conn)
    admin = aioredis.Redis.from_url(REDIS_URL)
    counter = f"{rt_redis_prefix}counter"

    async def write(*commands: bytes) -> asyncio.Future[list[Any]]:
        replies: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        await link.send(list(commands), replies.set_result)
        return replies

    async def send(*commands: bytes) -> list[Any]:
        return await asyncio.wait_for(await write(*commands), 5)

    try:
        (first_id,) = await send(pack(pack_head("CLIENT", "ID"), []))
        # A blocked call with another written behind it, both on their way
        # when the connection is killed.
        blocked = await write(pack(pack_head("BLPOP"), [f"{rt_redis_prefix}nothing", 10]))
        behind = await write(pack(pack_head("INCR"), [counter]))
        assert link.in_flight == 2
        assert await admin.client_kill_filter(_id=first_id) == 1
        for replies in await asyncio.wait_for(asyncio.gather(blocked, behind), 5):
            assert [type(r).__name__ for r in replies] == ["ConnectionError"]
        assert link.in_flight == 0
        # The next write opens a new connection; what was behind never ran.
        second_id, count = await send(
            pack(pack_head("CLIENT", "ID"), []), pack(pack_head("INCR"), [counter])
        )
        assert second_id != first_id and count == 1
    finally:
        await link.close()
        await admin.delete(counter)
        await admin.aclose()
        conn.life.state = "closed"
        await conn.release()
