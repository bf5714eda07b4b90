"""Presence kept in this process's memory, for the embedded backends.

Presence is ephemeral (who is here now), so both the memory and the SQLite
store keep it here; a shared backend keeps the same model where every hub can
see it. The model, per room:

- one entry per member (one per user identity), in join order, with its
  name, color and state;
- per entry, the connections that vouch for it, each with a deadline. The
  hub holding a connection moves its deadline forward periodically
  (``refresh``); a connection whose hub died stops being refreshed and is
  dropped by whoever runs ``expire`` next. A member whose last connection
  goes, leaves.

Every method is synchronous and never yields, so a hub's sequence of calls
is applied in call order.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from ..errors import Forbidden
from ..protocol import Member, merge_state
from .base import PresenceChange

__all__ = ["MemoryPresence", "PresenceInMemory"]


@dataclass(slots=True)
class _Entry:
    id: str
    user: str
    name: str
    color: str
    state: dict[str, Any] = field(default_factory=dict)
    conns: dict[str, float] = field(default_factory=dict)  # connection -> deadline

    def member(self, connections: int | None = None) -> Member:
        count = len(self.conns) if connections is None else connections
        return Member(self.id, self.user, self.name, self.color, self.state, count)


class MemoryPresence:
    """Rooms of members with per-connection deadlines (see the module docstring).

    >>> presence = MemoryPresence()
    >>> ada = Member("m1", "ada", "Ada", "#1f77b4", {"cell": 1}, 0)
    >>> presence.join("analysis", "sid1", ada, expires=1e12, max_members=10, max_state_bytes=512)
    PresenceChange(room='analysis', event='join', member=Member(..., connections=1))
    """

    def __init__(self) -> None:
        self._rooms: dict[str, dict[str, _Entry]] = {}
        # connection -> (room, member id) of every entry it vouches for
        self._by_conn: dict[str, set[tuple[str, str]]] = {}

    def clear(self) -> None:
        self._rooms.clear()
        self._by_conn.clear()

    def join(
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
        entry = entries.get(member.id) if entries is not None else None
        if entry is None:
            if entries is not None and len(entries) >= max_members:
                raise Forbidden(f"room {room!r} is full ({max_members} members)")
            state = merge_state({}, member.state, max_state_bytes)
            entry = _Entry(member.id, member.user, member.name, member.color, state)
            entry.conns[conn] = expires
            self._rooms.setdefault(room, {})[member.id] = entry
            self._by_conn.setdefault(conn, set()).add((room, member.id))
            return PresenceChange(room, "join", entry.member())
        state = merge_state(entry.state, member.state, max_state_bytes)
        changed = state != entry.state or conn not in entry.conns
        entry.state = state
        entry.conns[conn] = expires
        self._by_conn.setdefault(conn, set()).add((room, member.id))
        return PresenceChange(room, "update", entry.member()) if changed else None

    def update(
        self, room: str, member_id: str, patch: dict[str, Any], *, max_state_bytes: int
    ) -> PresenceChange | None:
        entry = self._rooms.get(room, {}).get(member_id)
        if entry is None:
            return None
        state = merge_state(entry.state, patch, max_state_bytes)
        if state == entry.state:
            return None
        entry.state = state
        return PresenceChange(room, "update", entry.member())

    def leave(self, room: str, member_id: str, conn: str) -> PresenceChange | None:
        entries = self._rooms.get(room)
        entry = entries.get(member_id) if entries is not None else None
        if entries is None or entry is None or conn not in entry.conns:
            return None
        del entry.conns[conn]
        keys = self._by_conn.get(conn)
        if keys is not None:
            keys.discard((room, member_id))
            if not keys:
                del self._by_conn[conn]
        return self._after_removal(room, entries, entry)

    def _after_removal(
        self, room: str, entries: dict[str, _Entry], entry: _Entry
    ) -> PresenceChange:
        if entry.conns:
            return PresenceChange(room, "update", entry.member())
        del entries[entry.id]
        if not entries:
            del self._rooms[room]
        return PresenceChange(room, "leave", entry.member(connections=0))

    def members(self, room: str) -> list[Member]:
        return [entry.member() for entry in self._rooms.get(room, {}).values()]

    def refresh(self, conns: Collection[str], expires: float) -> None:
        rooms = self._rooms
        for conn in conns:
            for room, member_id in self._by_conn.get(conn, ()):
                entry = rooms.get(room, {}).get(member_id)
                if entry is not None and conn in entry.conns:
                    entry.conns[conn] = expires

    def expire(self, now: float) -> list[PresenceChange]:
        changes: list[PresenceChange] = []
        for room, entries in list(self._rooms.items()):
            for entry in list(entries.values()):
                lapsed = [conn for conn, deadline in entry.conns.items() if deadline < now]
                if not lapsed:
                    continue
                for conn in lapsed:
                    del entry.conns[conn]
                    keys = self._by_conn.get(conn)
                    if keys is not None:
                        keys.discard((room, entry.id))
                        if not keys:
                            del self._by_conn[conn]
                changes.append(self._after_removal(room, entries, entry))
        return changes


class PresenceInMemory:
    """The presence half of the Store protocol on a :class:`MemoryPresence`.

    Mixed into the embedded stores, which set ``self._presence``.
    """

    _presence: MemoryPresence

    async def presence_join(
        self,
        room: str,
        conn: str,
        member: Member,
        *,
        expires: float,
        max_members: int,
        max_state_bytes: int,
    ) -> PresenceChange | None:
        return self._presence.join(
            room,
            conn,
            member,
            expires=expires,
            max_members=max_members,
            max_state_bytes=max_state_bytes,
        )

    async def presence_update(
        self, room: str, member_id: str, patch: dict[str, Any], *, max_state_bytes: int
    ) -> PresenceChange | None:
        return self._presence.update(room, member_id, patch, max_state_bytes=max_state_bytes)

    async def presence_leave(self, room: str, member_id: str, conn: str) -> PresenceChange | None:
        return self._presence.leave(room, member_id, conn)

    async def presence_members(self, room: str) -> list[Member]:
        return self._presence.members(room)

    async def presence_refresh(self, conns: Collection[str], expires: float) -> None:
        self._presence.refresh(conns, expires)

    async def presence_expire(self, now: float) -> list[PresenceChange]:
        return self._presence.expire(now)
