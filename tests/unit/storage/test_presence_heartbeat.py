"""The presence heartbeat at scale: what ``refresh`` and ``expire`` cost on
the Redis store with hundreds of rooms, and that deadlines still hold.

Round trips are counted on redis-py's connections: every request (a command,
or a pipeline sent as one batch) is one ``send_packed_command`` call. Only
calls made by the awaited store method are counted (a context variable marks
them), so the feed's connection and other tests' traffic on the shared Redis
do not disturb the count, and redis-py's own health-check PINGs are left out.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import Any, TypeVar

import pytest
import redis
from redis.asyncio.connection import AbstractConnection

from rtkit.protocol import Member
from rtkit.pytest_plugin import REDIS_URL
from rtkit.storage import PresenceStore, Store
from rtkit.storage.redis import RedisStore

T = TypeVar("T")
LIMITS = {"max_members": 10, "max_state_bytes": 256}
ROOMS = 300
PER_ROOM = 3

_counting: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar(
    "counting", default=None
)


def member(user: str) -> Member:
    return Member(f"id-{user}", user, user.title(), "#000", {}, 0)


def conn_of(room: int, i: int) -> str:
    return f"c{room}-{i}"


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    original = AbstractConnection.send_packed_command

    async def counted(self: Any, command: Any, check_health: bool = True) -> None:
        box = _counting.get()
        # check_health=False marks redis-py's own PINGs and handshakes.
        if box is not None and check_health:
            box[0] += 1
        await original(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counted)
    yield


async def count(call: Awaitable[T]) -> tuple[T, int]:
    """Await ``call`` in a context that counts its round trips to Redis."""
    box = [0]

    async def run() -> T:
        _counting.set(box)
        return await call

    result = await asyncio.create_task(run(), context=contextvars.copy_context())
    return result, box[0]


@pytest.fixture
async def redis_store(rt_redis_prefix: str) -> AsyncIterator[RedisStore]:
    store = RedisStore(REDIS_URL, prefix=rt_redis_prefix)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def fill(presence: PresenceStore, expires: float) -> None:
    """ROOMS rooms of PER_ROOM members, one connection each."""
    sem = asyncio.Semaphore(32)  # a bounded burst, below the pool's size

    async def join(room: int, i: int) -> None:
        async with sem:
            await presence.join(
                f"room-{room}", conn_of(room, i), member(f"u{i}"), expires=expires, **LIMITS
            )

    await asyncio.gather(*(join(r, i) for r in range(ROOMS) for i in range(PER_ROOM)))


@pytest.mark.redis
async def test_a_heartbeat_costs_one_round_trip_for_hundreds_of_rooms(
    redis_store: RedisStore, round_trips: None, rt_redis_prefix: str
) -> None:
    presence = redis_store.presence
    await fill(presence, expires=100.0)
    live = [conn_of(r, i) for r in range(ROOMS) for i in range(PER_ROOM)]
    live.remove(conn_of(7, 1))  # its hub stopped vouching for it

    _, refresh_trips = await count(presence.refresh(live, expires=200.0))
    assert refresh_trips == 1
    # Nothing has lapsed: any hub's expiry check is one round trip too.
    lapsed, expire_trips = await count(presence.expire(now=50.0))
    assert lapsed == [] and expire_trips == 1

    # Past the join deadline, only the connection left out lapses.
    lapsed = await presence.expire(now=150.0)
    assert [(c.room, c.event, c.member.user) for c in lapsed] == [("room-7", "leave", "u1")]
    rooms = await asyncio.gather(*(presence.members(f"room-{r}") for r in range(ROOMS)))
    assert [len(m) for m in rooms] == [2 if r == 7 else PER_ROOM for r in range(ROOMS)]
    assert await presence.expire(now=190.0) == []

    # Past the refreshed deadline everyone lapses, and nothing is left behind.
    lapsed = await presence.expire(now=250.0)
    assert len(lapsed) == len(live)
    assert {c.event for c in lapsed} == {"leave"}
    rooms = await asyncio.gather(*(presence.members(f"room-{r}") for r in range(ROOMS)))
    assert not any(rooms)
    client = redis.Redis.from_url(REDIS_URL)
    try:
        assert list(client.scan_iter(match=f"{rt_redis_prefix}presence*", count=1000)) == []
    finally:
        client.close()


@pytest.mark.redis
async def test_a_killed_hubs_members_lapse_while_the_other_hub_refreshes(
    rt_redis_prefix: str,
) -> None:
    # Two hubs on one Redis: b stops refreshing (it was killed); a's
    # heartbeat keeps its own members and drops b's at their deadline.
    a = RedisStore(REDIS_URL, prefix=rt_redis_prefix)
    b = RedisStore(REDIS_URL, prefix=rt_redis_prefix)
    await a.open()
    await b.open()
    try:
        for room in ("r", "s"):
            await a.presence.join(room, "a1", member("ada"), expires=10.0, **LIMITS)
            await b.presence.join(room, "b1", member("ada"), expires=10.0, **LIMITS)
            await b.presence.join(room, "b2", member("bob"), expires=10.0, **LIMITS)
        await a.presence.refresh(["a1"], expires=30.0)
        changes = await a.presence.expire(now=20.0)
        summary = sorted((c.room, c.event, c.member.user, c.member.connections) for c in changes)
        assert summary == [
            ("r", "leave", "bob", 0),
            ("r", "update", "ada", 1),
            ("s", "leave", "bob", 0),
            ("s", "update", "ada", 1),
        ]
        assert await b.presence.expire(now=20.0) == []  # already done, not announced twice
        for room in ("r", "s"):
            assert [(m.user, m.connections) for m in await b.presence.members(room)] == [("ada", 1)]
    finally:
        await a.close()
        await b.close()


async def test_a_connection_that_leaves_one_room_still_lapses_in_the_others(
    store: Store,
) -> None:
    presence = store.presence
    await presence.join("r", "c1", member("ada"), expires=10.0, **LIMITS)
    await presence.join("s", "c1", member("ada"), expires=10.0, **LIMITS)
    await presence.join("s", "c2", member("bob"), expires=10.0, **LIMITS)
    assert await presence.leave("r", "id-ada", "c1") is not None
    await presence.refresh(["c2"], expires=30.0)
    changes = await presence.expire(now=20.0)
    assert [(c.room, c.event, c.member.user) for c in changes] == [("s", "leave", "ada")]
    assert [m.user for m in await presence.members("s")] == ["bob"]
    # A connection that left every room is no longer refreshed or expired.
    assert await presence.leave("s", "id-bob", "c2") is not None
    await presence.refresh(["c2"], expires=60.0)
    assert await presence.expire(now=100.0) == []
    assert await presence.members("s") == []


async def test_the_latest_join_or_refresh_sets_a_connections_deadline(store: Store) -> None:
    presence = store.presence
    await presence.join("r", "c1", member("ada"), expires=10.0, **LIMITS)
    await presence.refresh(["c1"], expires=30.0)
    # Joining another room later vouches for the connection in both.
    await presence.join("s", "c1", member("ada"), expires=40.0, **LIMITS)
    assert await presence.expire(now=35.0) == []
    changes = await presence.expire(now=45.0)
    assert sorted((c.room, c.event) for c in changes) == [("r", "leave"), ("s", "leave")]


async def test_a_connection_moving_between_rooms_keeps_its_deadline(store: Store) -> None:
    # Leaving its last room forgets a connection's deadline; a join of the
    # same connection racing with that leave must not lose the new one, or
    # the connection would never lapse in the room it moved to.
    presence = store.presence
    await presence.join("r0", "c1", member("ada"), expires=10.0, **LIMITS)
    for i in range(20):
        await asyncio.gather(
            presence.leave(f"r{i}", "id-ada", "c1"),
            presence.join(f"r{i + 1}", "c1", member("ada"), expires=10.0, **LIMITS),
        )
    changes = await presence.expire(now=20.0)
    assert [(c.room, c.event, c.member.user) for c in changes] == [("r20", "leave", "ada")]
    assert await presence.expire(now=30.0) == []
