"""Presence in Redis, where every hub sees it.

One hash per room (``<prefix>presence:<room>``: member id -> the entry as
JSON, each connection with its deadline), a set per connection of the rooms
it is in (``<prefix>presence-conn:<conn>``, for ``refresh``) and a set of
rooms with members (``<prefix>presence-rooms``, for ``expire``, which any
hub runs). A room is read, changed by the rules of
:mod:`rtkit.storage.presence` and written back in one optimistic
transaction; changes are announced on ``<prefix>events`` so that the other
hubs can tell their own clients.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from typing import Any

import orjson

from ...protocol import Member
from .. import presence as rules
from ..base import PresenceChange
from ..presence import PresenceEntry, Room
from .connection import RedisConnection

__all__ = ["RedisPresence", "presence_event"]


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


# An entry's JSON is read by every hub sharing the Redis, running this version
# or another: its keys are part of the layout.


def _entry_from_json(raw: bytes) -> PresenceEntry:
    e = orjson.loads(raw)
    return PresenceEntry(
        e["id"], e["user"], e["name"], e["color"], e["state"], e["conns"], e["order"]
    )


def _entry_to_json(entry: PresenceEntry) -> bytes:
    return orjson.dumps(
        {
            "id": entry.id,
            "user": entry.user,
            "name": entry.name,
            "color": entry.color,
            "state": entry.state,
            "conns": entry.conns,
            "order": entry.order,
        }
    )


class RedisPresence:
    """A :class:`~rtkit.storage.base.PresenceStore` in Redis, shared by every
    hub using the same URL and prefix."""

    def __init__(self, conn: RedisConnection) -> None:
        self._conn = conn

    def _room_key(self, room: str) -> str:
        return f"{self._conn.prefix}presence:{room}"

    def _conn_key(self, conn: str) -> str:
        return f"{self._conn.prefix}presence-conn:{conn}"

    @property
    def _rooms_key(self) -> str:
        return f"{self._conn.prefix}presence-rooms"

    async def _room_txn(
        self,
        room: str,
        change_fn: Callable[[Room], tuple[Any, list[str], PresenceChange | None]],
    ) -> Any:
        """Read a room, let ``change_fn`` edit it (returning its result, the
        member ids it touched and the change to announce), write it back
        atomically; retried when another hub wrote the room meanwhile."""
        from redis.exceptions import WatchError

        key = self._room_key(room)
        while True:
            async with self._conn.redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(key)
                    raw = await pipe.hgetall(key)
                    entries = {k.decode(): _entry_from_json(v) for k, v in raw.items()}
                    result, touched, change = change_fn(entries)
                    pipe.multi()
                    for member_id in touched:
                        if member_id in entries:
                            pipe.hset(key, member_id, _entry_to_json(entries[member_id]))
                        else:
                            pipe.hdel(key, member_id)
                    if entries:
                        pipe.sadd(self._rooms_key, room)
                    if change is not None:
                        pipe.publish(self._conn.events, presence_event(self._conn.origin, change))
                    await pipe.execute()
                    return result
                except WatchError:
                    continue

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
        def change(entries: Room) -> Any:
            c = rules.join(
                room,
                entries,
                conn,
                member,
                expires=expires,
                max_members=max_members,
                max_state_bytes=max_state_bytes,
                order=time.time(),  # a hash keeps no order: members are sorted by this
            )
            return c, [member.id], c

        result: PresenceChange | None = await self._room_txn(room, change)
        await self._conn.redis.sadd(self._conn_key(conn), room)
        return result

    async def update(
        self, room: str, member_id: str, patch: dict[str, Any], *, max_state_bytes: int
    ) -> PresenceChange | None:
        def change(entries: Room) -> Any:
            c = rules.update(room, entries, member_id, patch, max_state_bytes=max_state_bytes)
            return c, [] if c is None else [member_id], c

        result: PresenceChange | None = await self._room_txn(room, change)
        return result

    async def leave(self, room: str, member_id: str, conn: str) -> PresenceChange | None:
        def change(entries: Room) -> Any:
            c = rules.leave(room, entries, member_id, conn)
            return c, [] if c is None else [member_id], c

        result: PresenceChange | None = await self._room_txn(room, change)
        await self._conn.redis.srem(self._conn_key(conn), room)
        return result

    async def members(self, room: str) -> list[Member]:
        raw = await self._conn.redis.hgetall(self._room_key(room))
        entries = sorted((_entry_from_json(v) for v in raw.values()), key=lambda e: e.order)
        return [e.member() for e in entries]

    async def refresh(self, conns: Collection[str], expires: float) -> None:
        for conn in conns:
            rooms = await self._conn.redis.smembers(self._conn_key(conn))
            for raw_room in rooms:

                def change(entries: Room, conn: str = conn) -> Any:
                    touched = [i for i, e in entries.items() if conn in e.conns]
                    for i in touched:
                        entries[i].conns[conn] = expires
                    return None, touched, None

                await self._room_txn(raw_room.decode(), change)
            # The index outlives a killed hub by a bounded time only.
            await self._conn.redis.expire(
                self._conn_key(conn), int(max(60, expires - time.time()) * 4)
            )

    async def expire(self, now: float) -> list[PresenceChange]:
        changes: list[PresenceChange] = []
        for raw_room in await self._conn.redis.smembers(self._rooms_key):
            room = raw_room.decode()

            def change(entries: Room, room: str = room) -> Any:
                found, lapsed_by_member = rules.expire_room(room, entries, now)
                return found, list(lapsed_by_member), None

            found: list[PresenceChange] = await self._room_txn(room, change)
            for c in found:
                await self._conn.redis.publish(
                    self._conn.events, presence_event(self._conn.origin, c)
                )
            changes.extend(found)
            if not await self._conn.redis.exists(self._room_key(room)):
                await self._conn.redis.srem(self._rooms_key, room)
        return changes
