"""Presence rules every backend applies, and the in-process presence store.

The model, per room:

- one entry per member (one per user identity), in join order, with its
  name, color and state;
- per entry, the connections that vouch for it. A member whose last
  connection goes, leaves.

Deadlines belong to connections, not to their entries: a connection has one
deadline for all the rooms it is in, set by its join and moved forward by its
hub periodically (``refresh``). A heartbeat therefore costs one write per
connection, whatever the number of rooms. A connection whose hub died stops
being refreshed and is dropped from all its rooms by whoever runs ``expire``
next.

The functions here (:func:`join`, :func:`update`, :func:`leave`,
:func:`expire_room`) are those rules on one room's entries, with no I/O:
:class:`LocalPresence` applies them to rooms in this process's memory (the
memory and SQLite stores: presence is ephemeral), and the Redis store
applies them inside its transaction on a room read from Redis.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from ..errors import Forbidden
from ..protocol import Member, merge_state
from .base import PresenceChange

__all__ = ["LocalPresence", "PresenceEntry", "Room", "expire_room", "join", "leave", "update"]


@dataclass(slots=True)
class PresenceEntry:
    """One member of a room and the connections that vouch for it."""

    id: str
    user: str
    name: str
    color: str
    state: dict[str, Any] = field(default_factory=dict)
    conns: set[str] = field(default_factory=set)
    # Join order where the room's container does not keep it (a Redis hash).
    order: float = 0.0

    def member(self, connections: int | None = None) -> Member:
        count = len(self.conns) if connections is None else connections
        return Member(self.id, self.user, self.name, self.color, self.state, count)


Room = dict[str, PresenceEntry]  # member id -> entry


def join(
    room: str,
    entries: Room,
    conn: str,
    member: Member,
    *,
    max_members: int,
    max_state_bytes: int,
    order: float = 0.0,
) -> PresenceChange | None:
    """Add ``conn`` to ``member`` in ``entries`` (see :meth:`PresenceStore.join
    <rtkit.storage.base.PresenceStore.join>`); ``entries`` is left as it was
    when this raises."""
    entry = entries.get(member.id)
    if entry is None:
        if len(entries) >= max_members:
            raise Forbidden(f"room {room!r} is full ({max_members} members)")
        state = merge_state({}, member.state, max_state_bytes)
        entry = PresenceEntry(
            member.id, member.user, member.name, member.color, state, {conn}, order
        )
        entries[member.id] = entry
        return PresenceChange(room, "join", entry.member())
    state = merge_state(entry.state, member.state, max_state_bytes)
    changed = state != entry.state or conn not in entry.conns
    entry.state = state
    entry.conns.add(conn)
    return PresenceChange(room, "update", entry.member()) if changed else None


def update(
    room: str, entries: Room, member_id: str, patch: dict[str, Any], *, max_state_bytes: int
) -> PresenceChange | None:
    """Merge ``patch`` into a member's state; None (and nothing changed) if it
    is not in the room or the state stays the same."""
    entry = entries.get(member_id)
    if entry is None:
        return None
    state = merge_state(entry.state, patch, max_state_bytes)
    if state == entry.state:
        return None
    entry.state = state
    return PresenceChange(room, "update", entry.member())


def leave(room: str, entries: Room, member_id: str, conn: str) -> PresenceChange | None:
    """Remove one connection; None (and nothing changed) if it was not there."""
    entry = entries.get(member_id)
    if entry is None or conn not in entry.conns:
        return None
    entry.conns.discard(conn)
    return _after_removal(room, entries, entry)


def expire_room(
    room: str, entries: Room, lapsed: Collection[str]
) -> tuple[list[PresenceChange], dict[str, list[str]]]:
    """Drop the ``lapsed`` connections from the room: the changes that made
    (one per member touched), and per member touched, the connections
    dropped."""
    changes: list[PresenceChange] = []
    lapsed_by_member: dict[str, list[str]] = {}
    for member_id, entry in list(entries.items()):
        dropped = [conn for conn in entry.conns if conn in lapsed]
        if not dropped:
            continue
        entry.conns.difference_update(dropped)
        lapsed_by_member[member_id] = dropped
        changes.append(_after_removal(room, entries, entry))
    return changes, lapsed_by_member


def _after_removal(room: str, entries: Room, entry: PresenceEntry) -> PresenceChange:
    if entry.conns:
        return PresenceChange(room, "update", entry.member())
    del entries[entry.id]
    return PresenceChange(room, "leave", entry.member(connections=0))


class LocalPresence:
    """A :class:`~rtkit.storage.base.PresenceStore` in this process's memory,
    for the embedded backends.

    Every method completes without yielding, so a hub's sequence of calls is
    applied in call order. ``refresh`` touches each connection once, and
    ``expire`` only the rooms of connections that lapsed.

    >>> presence = LocalPresence()
    >>> ada = Member("m1", "ada", "Ada", "#1f77b4", {"cell": 1}, 0)
    >>> await presence.join("analysis", "sid1", ada, expires=1e12, max_members=10,
    ...                     max_state_bytes=512)
    PresenceChange(room='analysis', event='join', member=Member(..., connections=1))
    """

    def __init__(self) -> None:
        # Rooms with at least one member; a dict keeps members in join order.
        self._rooms: dict[str, Room] = {}
        # connection -> (room, member id) of every entry it vouches for
        self._by_conn: dict[str, set[tuple[str, str]]] = {}
        # connection -> its deadline; exactly the connections in _by_conn
        self._deadlines: dict[str, float] = {}

    def clear(self) -> None:
        self._rooms.clear()
        self._by_conn.clear()
        self._deadlines.clear()

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
        entries = self._rooms.get(room)
        # A room is kept only once it has a member: a refused join leaves none.
        fresh: Room = {} if entries is None else entries
        change = join(
            room, fresh, conn, member, max_members=max_members, max_state_bytes=max_state_bytes
        )
        if entries is None:
            self._rooms[room] = fresh
        self._by_conn.setdefault(conn, set()).add((room, member.id))
        self._deadlines[conn] = expires
        return change

    async def update(
        self, room: str, member_id: str, patch: dict[str, Any], *, max_state_bytes: int
    ) -> PresenceChange | None:
        entries = self._rooms.get(room)
        if entries is None:
            return None
        return update(room, entries, member_id, patch, max_state_bytes=max_state_bytes)

    async def leave(self, room: str, member_id: str, conn: str) -> PresenceChange | None:
        entries = self._rooms.get(room)
        if entries is None:
            return None
        change = leave(room, entries, member_id, conn)
        if change is None:
            return None
        self._forget(conn, room, member_id)
        if not entries:
            del self._rooms[room]
        return change

    async def members(self, room: str) -> list[Member]:
        return [entry.member() for entry in self._rooms.get(room, {}).values()]

    async def refresh(self, conns: Collection[str], expires: float) -> None:
        deadlines = self._deadlines
        for conn in conns:
            # Only connections in a room have a deadline: refreshing one that
            # left them all must not bring it back.
            if conn in deadlines:
                deadlines[conn] = expires

    async def expire(self, now: float) -> list[PresenceChange]:
        lapsed = {conn for conn, deadline in self._deadlines.items() if deadline < now}
        if not lapsed:
            return []
        rooms = {room for conn in lapsed for room, _ in self._by_conn.get(conn, ())}
        changes: list[PresenceChange] = []
        for room in sorted(rooms):
            entries = self._rooms.get(room)
            if entries is None:
                continue
            found, lapsed_by_member = expire_room(room, entries, lapsed)
            for member_id, dropped in lapsed_by_member.items():
                for conn in dropped:
                    self._forget(conn, room, member_id)
            if not entries:
                del self._rooms[room]
            changes.extend(found)
        return changes

    def _forget(self, conn: str, room: str, member_id: str) -> None:
        keys = self._by_conn.get(conn)
        if keys is not None:
            keys.discard((room, member_id))
            if not keys:
                del self._by_conn[conn]
                del self._deadlines[conn]
