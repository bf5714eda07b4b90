"""Presence in Redis, where every hub sees it.

The keys, read and written by every hub sharing the Redis and prefix:

``<prefix>presence-room:<room>`` (hash)
    member id -> the member's entry as JSON: ``id``, ``user``, ``name``,
    ``color``, ``state``, ``conns`` (the connections vouching for it, a
    list) and ``order`` (join time: a hash keeps no order).
``<prefix>presence-rooms-of:<conn>`` (set)
    the rooms connection ``conn`` is in.
``<prefix>presence-deadlines`` (sorted set)
    connection -> its deadline (Unix time), one per connection, for all its
    rooms. A connection has a score exactly while its rooms-of set is not
    empty: every transaction that changes one changes the other.

A room is read, changed by the rules of :mod:`rtkit.storage.presence` and
written back in one optimistic transaction, together with the rooms-of set
and the deadline of the connection concerned; changes are announced on
``<prefix>events`` so that the other hubs can tell their own clients.

The heartbeat touches no room. ``refresh`` is one ``ZADD XX`` of all the
hub's connections (one round trip, whatever the number of rooms), and
``expire``, which any hub runs, asks the sorted set for the connections
past their deadline (one round trip when there are none) and only then
visits their rooms.

Connections' deadlines are not kept in the entries: a hub running the
earlier layout (``presence:<room>`` entries with a deadline per connection)
shares no key with this one, so during a rolling upgrade the two sets of
hubs see separate rooms rather than corrupting each other's.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Collection, Iterable
from typing import Any, TypeVar

import orjson

from ...protocol import Member
from .. import presence as rules
from ..base import PresenceChange
from ..presence import PresenceEntry, Room
from .connection import RedisConnection

__all__ = ["RedisPresence", "presence_event"]

T = TypeVar("T")

# Connections per ZADD in a refresh: a hub's whole list still goes in one
# pipeline (one round trip), but no single command blocks Redis for long.
REFRESH_CHUNK = 1000
# Lapsed connections one ``expire`` takes from the sorted set per batch, and
# the batches per call: the rest waits for the next heartbeat of any hub.
EXPIRE_BATCH = 1000
EXPIRE_BATCHES = 20

# Forget the deadline of each connection (ARGV) whose rooms-of set
# (KEYS[2..]) is empty. Queued at the end of a transaction, so it sees the
# transaction's own SREMs; atomic, so a join of the same connection (which
# adds to the set and sets the deadline in one transaction) comes entirely
# before it, and keeps the deadline, or entirely after, and sets it again.
_FORGET_IDLE = """
for i, conn in ipairs(ARGV) do
    if redis.call('EXISTS', KEYS[i + 1]) == 0 then
        redis.call('ZREM', KEYS[1], conn)
    end
end
return 0
"""


def presence_event(origin: str, change: PresenceChange) -> bytes:
    """The announcement of ``change`` on ``<prefix>events``."""
    return orjson.dumps(
        {
            "k": "p",
            "o": origin,
            "room": change.room,
            "event": change.event,
            "member": change.member.to_wire(),  # the wire form clients get too
        }
    )


# An entry's JSON is read by every hub sharing the Redis: its keys are part
# of the layout.


def _entry_from_json(raw: bytes) -> PresenceEntry:
    e = orjson.loads(raw)
    return PresenceEntry(
        e["id"], e["user"], e["name"], e["color"], e["state"], set(e["conns"]), e["order"]
    )


def _entry_to_json(entry: PresenceEntry) -> bytes:
    return orjson.dumps(
        {
            "id": entry.id,
            "user": entry.user,
            "name": entry.name,
            "color": entry.color,
            "state": entry.state,
            "conns": sorted(entry.conns),
            "order": entry.order,
        }
    )


class RedisPresence:
    """A :class:`~rtkit.storage.base.PresenceStore` in Redis, shared by every
    hub using the same URL and prefix."""

    def __init__(self, conn: RedisConnection) -> None:
        self._conn = conn

    def _room_key(self, room: str) -> str:
        return f"{self._conn.prefix}presence-room:{room}"

    def _rooms_of_key(self, conn: str) -> str:
        return f"{self._conn.prefix}presence-rooms-of:{conn}"

    @property
    def _deadlines_key(self) -> str:
        return f"{self._conn.prefix}presence-deadlines"

    async def _transaction(self, watch: list[str], body: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``body(pipe)`` with the ``watch`` keys watched: it reads (each
        read is a round trip), then calls ``pipe.multi()`` and queues its
        writes, which are executed atomically; the whole is retried when
        another hub wrote a watched key meanwhile."""
        from redis.exceptions import WatchError

        while True:
            async with self._conn.redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(*watch)
                    result = await body(pipe)
                    await pipe.execute()
                    return result
                except WatchError:
                    continue

    async def _read_room(self, pipe: Any, room: str) -> Room:
        raw = await pipe.hgetall(self._room_key(room))
        return {k.decode(): _entry_from_json(v) for k, v in raw.items()}

    def _write_room(
        self,
        pipe: Any,
        room: str,
        entries: Room,
        touched: Iterable[str],
        changes: Iterable[PresenceChange],
    ) -> None:
        """Queue the writes of the ``touched`` entries and the announcements."""
        key = self._room_key(room)
        for member_id in touched:
            if member_id in entries:
                pipe.hset(key, member_id, _entry_to_json(entries[member_id]))
            else:
                pipe.hdel(key, member_id)
        for change in changes:
            pipe.publish(self._conn.events, presence_event(self._conn.origin, change))

    def _left_room(self, pipe: Any, room: str, conns: list[str]) -> None:
        """Queue the removal of ``room`` from each connection's rooms, and of
        the deadline of those now in no room."""
        if not conns:
            return
        keys = [self._rooms_of_key(c) for c in conns]
        for key in keys:
            pipe.srem(key, room)
        # EVAL, not EVALSHA: a script missing from Redis's cache would fail
        # inside the transaction instead of being loaded.
        pipe.eval(_FORGET_IDLE, len(keys) + 1, self._deadlines_key, *keys, *conns)

    async def join(
        self,
        room: str,
        conn: str,
        member: Member,
        *,
        expires: float,
        max_members: int,
        max_state_bytes: int,
    ) -> PresenceChange | None:
        async def body(pipe: Any) -> PresenceChange | None:
            entries = await self._read_room(pipe, room)
            change = rules.join(
                room,
                entries,
                conn,
                member,
                max_members=max_members,
                max_state_bytes=max_state_bytes,
                order=time.time(),  # a hash keeps no order: members are sorted by this
            )
            pipe.multi()
            self._write_room(pipe, room, entries, [member.id], [] if change is None else [change])
            pipe.sadd(self._rooms_of_key(conn), room)
            pipe.zadd(self._deadlines_key, {conn: expires})
            return change

        return await self._transaction([self._room_key(room)], body)

    async def update(
        self, room: str, member_id: str, patch: dict[str, Any], *, max_state_bytes: int
    ) -> PresenceChange | None:
        async def body(pipe: Any) -> PresenceChange | None:
            entries = await self._read_room(pipe, room)
            change = rules.update(room, entries, member_id, patch, max_state_bytes=max_state_bytes)
            pipe.multi()
            if change is not None:
                self._write_room(pipe, room, entries, [member_id], [change])
            return change

        return await self._transaction([self._room_key(room)], body)

    async def leave(self, room: str, member_id: str, conn: str) -> PresenceChange | None:
        async def body(pipe: Any) -> PresenceChange | None:
            entries = await self._read_room(pipe, room)
            change = rules.leave(room, entries, member_id, conn)
            pipe.multi()
            if change is not None:
                self._write_room(pipe, room, entries, [member_id], [change])
            if not any(conn in e.conns for e in entries.values()):
                self._left_room(pipe, room, [conn])
            return change

        return await self._transaction([self._room_key(room)], body)

    async def members(self, room: str) -> list[Member]:
        raw = await self._conn.redis.hgetall(self._room_key(room))
        entries = sorted((_entry_from_json(v) for v in raw.values()), key=lambda e: e.order)
        return [e.member() for e in entries]

    async def refresh(self, conns: Collection[str], expires: float) -> None:
        if not conns:
            return
        ordered = list(conns)
        async with self._conn.redis.pipeline(transaction=False) as pipe:
            for i in range(0, len(ordered), REFRESH_CHUNK):
                chunk = ordered[i : i + REFRESH_CHUNK]
                # XX: a connection that left all its rooms (or was expired by
                # another hub) has no deadline, and refreshing must not give
                # it one back.
                pipe.zadd(self._deadlines_key, dict.fromkeys(chunk, expires), xx=True)
            await pipe.execute()

    async def expire(self, now: float) -> list[PresenceChange]:
        changes: list[PresenceChange] = []
        for _ in range(EXPIRE_BATCHES):
            lapsed = await self._conn.redis.zrangebyscore(
                self._deadlines_key, "-inf", f"({now!r}", start=0, num=EXPIRE_BATCH
            )
            if not lapsed:
                break
            changes.extend(await self._expire_conns([c.decode() for c in lapsed], now))
            if len(lapsed) < EXPIRE_BATCH:
                break
        return changes

    async def _expire_conns(self, lapsed: list[str], now: float) -> list[PresenceChange]:
        """Drop the ``lapsed`` connections from their rooms, room by room."""
        async with self._conn.redis.pipeline(transaction=False) as pipe:
            for conn in lapsed:
                pipe.smembers(self._rooms_of_key(conn))
            rooms_of = await pipe.execute()
        by_room: dict[str, list[str]] = {}
        for conn, rooms in zip(lapsed, rooms_of, strict=True):
            for room in rooms:
                by_room.setdefault(room.decode(), []).append(conn)
        changes: list[PresenceChange] = []
        for room in sorted(by_room):
            changes.extend(await self._expire_room(room, by_room[room], now))
        # A deadline whose rooms are gone (keys deleted by hand, say) would
        # otherwise come back at every heartbeat.
        roomless = [c for c, rooms in zip(lapsed, rooms_of, strict=True) if not rooms]
        if roomless:
            keys = [self._rooms_of_key(c) for c in roomless]
            await self._conn.redis.eval(
                _FORGET_IDLE, len(keys) + 1, self._deadlines_key, *keys, *roomless
            )
        return changes

    async def _expire_room(
        self, room: str, candidates: list[str], now: float
    ) -> list[PresenceChange]:
        async def body(pipe: Any) -> list[PresenceChange]:
            entries = await self._read_room(pipe, room)
            # Their hub may have refreshed them since they were found lapsed;
            # the deadlines are watched, so a refresh from now on retries.
            scores = await pipe.zmscore(self._deadlines_key, candidates)
            # No score: another hub's expire dropped it already.
            lapsed = [c for c, s in zip(candidates, scores, strict=True) if s is None or s < now]
            found, lapsed_by_member = rules.expire_room(room, entries, set(lapsed))
            pipe.multi()
            self._write_room(pipe, room, entries, lapsed_by_member, found)
            self._left_room(pipe, room, lapsed)
            return found

        return await self._transaction([self._room_key(room), self._deadlines_key], body)
