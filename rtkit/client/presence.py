"""Presence on the client: who is in a room, kept current by the hub's events.

A :class:`Presence` joins its room on every (re)connection with the state it
last set, so the hub's view survives reconnects and hub restarts. After a
rejoin the member list from the ack is compared with what the object knew,
and the differences are reported as ``join``/``leave``/``update`` callbacks,
so an application sees the same transitions as if it had stayed connected.

Events are applied idempotently (a ``join`` of a known member is an update,
a ``leave`` of an unknown one nothing), because the hub coalesces and a
rejoin's member list may already include what an event says.

:class:`Rooms` is the client's registry of rooms: it routes the hub's
``presence`` events to each room and rejoins them after every reconnect,
all through the :class:`~rtkit.client._session.Session`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import ConfigurationError, NotConnected, NotFound
from ..protocol import (
    PRESENCE,
    PRESENCE_EVENTS,
    PRESENCE_JOIN,
    PRESENCE_LEAVE,
    PRESENCE_UPDATE,
    Member,
    parse_member,
    validate_name,
)
from ._session import ConnectionLost, Session

__all__ = ["MemberCallback", "Presence", "PresenceEvent", "Rooms"]

log = logging.getLogger(__name__)

PresenceEvent = Literal["join", "leave", "update"]
MemberCallback = Callable[[Member], Any]
"""``callback(member)``; a plain function or a coroutine function."""


def _merge(state: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    merged = dict(state)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


class Presence:
    """This client's membership of a presence room, and the room's members.

    Get one with ``await hub.presence(room, state={...})``.

    >>> room = await hub.presence("analysis", state={"status": "reading"})
    >>> room.on("join", lambda m: print(m.name, "joined"))
    >>> await room.update({"cell": 4})        # merged into this member's state
    >>> [m.name for m in room.members]
    ['Ada', 'Grace']
    >>> await room.leave()

    A member is a user, not a connection: the same user in two tabs is one
    member with ``connections == 2``, whose state is shared by both.
    """

    def __init__(self, rooms: Rooms, room: str, state: dict[str, Any]) -> None:
        self._rooms = rooms
        self._session = rooms.session
        self.room = room
        self._state = dict(state)
        self._members: dict[str, Member] = {}
        self._me: str | None = None
        self._active = True
        self._token = 0
        self._callbacks: dict[str, list[MemberCallback]] = {e: [] for e in PRESENCE_EVENTS}
        rooms.register(
            self,
            on_event=self._on_event,
            join=self._join,
            active=self._is_active,
            revoked=self._left_by_hub,
        )

    def __repr__(self) -> str:
        return f"<rtkit.aio.Presence {self.room!r} members={len(self._members)}>"

    @property
    def members(self) -> list[Member]:
        """The room's members, in the order they joined (this client included)."""
        return list(self._members.values())

    @property
    def me(self) -> Member | None:
        """This client's own member, once the hub confirmed the join."""
        return self._members.get(self._me) if self._me is not None else None

    @property
    def state(self) -> dict[str, Any]:
        """The state this client asked for (the hub merges it into the member's)."""
        return dict(self._state)

    def on(self, event: PresenceEvent, callback: MemberCallback) -> MemberCallback:
        """Call ``callback(member)`` when a member joins, leaves or changes
        (its state or its connection count). Usable as a decorator."""
        if event not in self._callbacks:
            raise ConfigurationError(f"unknown presence event {event!r}; use join, leave or update")
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {type(callback).__name__}")
        self._callbacks[event].append(callback)
        return callback

    def off(self, event: PresenceEvent, callback: MemberCallback) -> None:
        """Undo :meth:`on`."""
        with contextlib.suppress(KeyError, ValueError):
            self._callbacks[event].remove(callback)

    async def update(self, state: dict[str, Any]) -> None:
        """Merge ``state`` into this member's state (a ``None`` value removes
        its key) and tell the room. Offline, it is sent with the rejoin."""
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict, got {type(state).__name__}")
        self._check_active()
        self._state = _merge(self._state, state)
        if not self._session.connected:
            return
        try:
            await self._session.request(
                PRESENCE_UPDATE, {"room": self.room, "state": state}, wait=False
            )
        except NotConnected:
            return  # the rejoin after the reconnect carries the state
        except NotFound:
            await self._join()  # the hub forgot us (it restarted): join again

    async def leave(self) -> None:
        """Leave the room; this object stops following it."""
        if not self._active:
            return
        self._active = False
        self._token += 1
        self._rooms.forget(self)
        if self._session.connected:
            with contextlib.suppress(NotConnected, NotFound):
                await self._session.request(PRESENCE_LEAVE, {"room": self.room}, wait=False)
        self._members.clear()

    def _left_by_hub(self) -> None:
        self._active = False
        self._token += 1
        self._rooms.forget(self)
        self._members.clear()

    def _is_active(self) -> bool:
        """Still in the room (not left)."""
        return self._active

    def _check_active(self) -> None:
        self._session.check_usable()
        if not self._active:
            raise RuntimeError(f"left room {self.room!r}; call hub.presence() to join again")

    # -- internals, on the client's loop -------------------------------------

    async def _join(self) -> None:
        """Join (or rejoin) on the current connection; raises the hub's refusal."""
        self._token += 1
        token = self._token
        await self._session.request(
            PRESENCE_JOIN,
            {"room": self.room, "state": self._state},
            on_ack=lambda ack: self._on_join_ack(token, ack),
            wait=False,
        )

    def _on_join_ack(self, token: int, ack: dict[str, Any]) -> None:
        """Runs in the ack handler, before any later presence event."""
        if token != self._token or not self._active:
            return
        fresh: dict[str, Member] = {}
        for raw in ack.get("members") or ():
            try:
                member = parse_member(raw)
            except ValueError as exc:
                log.warning("rtkit: ignored a malformed member of %r: %s", self.room, exc)
                continue
            fresh[member.id] = member
        me = ack.get("member")
        if isinstance(me, dict) and isinstance(me.get("id"), str):
            self._me = me["id"]
        old, self._members = self._members, fresh
        for member_id, member in old.items():
            if member_id not in fresh:
                self._fire("leave", member)
        for member_id, member in fresh.items():
            before = old.get(member_id)
            if before is None:
                self._fire("join", member)
            elif before != member:
                self._fire("update", member)

    def _on_event(self, event: str, member: Member) -> None:
        if not self._active:
            return
        before = self._members.get(member.id)
        if event == "leave":
            if before is not None:
                del self._members[member.id]
                self._fire("leave", member)
            return
        self._members[member.id] = member
        if before is None:
            self._fire("join", member)
        elif before != member:
            self._fire("update", member)

    def _fire(self, event: str, member: Member) -> None:
        for callback in self._callbacks[event]:
            self._session.dispatch(callback, (member,))


@dataclass(frozen=True, slots=True)
class _Entry:
    presence: Presence
    on_event: Callable[[str, Member], None]
    join: Callable[[], Awaitable[None]]
    active: Callable[[], bool]
    revoked: Callable[[], None]


class Rooms:
    """The client's presence rooms by name, fed by the hub's ``presence`` events."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._entries: dict[str, _Entry] = {}
        session.on_event(PRESENCE, self._on_presence)
        session.on_resume(self._rejoin_all)
        session.on_revoked("room", self._revoked)

    def __contains__(self, room: object) -> bool:
        return room in self._entries

    async def join(self, room: str, state: dict[str, Any] | None) -> Presence:
        """The :class:`Presence` of ``room``, joined (see :meth:`rtkit.aio.Client.presence`)."""
        self.session.check_usable()
        validate_name(room, "room", "presence")
        if state is not None and not isinstance(state, dict):
            raise TypeError(f"state must be a dict, got {type(state).__name__}")
        existing = self._entries.get(room)
        if existing is not None:
            if state:
                await existing.presence.update(state)
            return existing.presence
        Presence(self, room, state or {})  # registers itself
        entry = self._entries[room]
        if self.session.connected:
            try:
                await entry.join()
            except ConnectionLost:
                pass  # joins on reconnect
            except BaseException:
                self._entries.pop(room, None)
                raise
        return entry.presence

    def register(
        self,
        presence: Presence,
        *,
        on_event: Callable[[str, Member], None],
        join: Callable[[], Awaitable[None]],
        active: Callable[[], bool],
        revoked: Callable[[], None],
    ) -> None:
        """Route ``presence.room``'s events to ``on_event``; run ``join()``
        after each reconnect while ``active()``, ``revoked()`` when the hub
        took the connection out of the room."""
        self._entries[presence.room] = _Entry(presence, on_event, join, active, revoked)

    def forget(self, presence: Presence) -> None:
        """Stop routing events to ``presence`` (it left its room)."""
        entry = self._entries.get(presence.room)
        if entry is not None and entry.presence is presence:
            del self._entries[presence.room]

    def _revoked(self, room: str) -> None:
        """The hub took this connection out of ``room`` (a refreshed token no
        longer grants it): its Presence stops following it, as if it left."""
        entry = self._entries.get(room)
        if entry is not None:
            entry.revoked()

    def _on_presence(self, payload: Any) -> None:
        if not isinstance(payload, dict):
            return
        entry = self._entries.get(str(payload.get("room")))
        if entry is None:
            return
        event = payload.get("event")
        try:
            member = parse_member(payload.get("member"))
        except ValueError as exc:
            log.warning("rtkit: ignored a malformed presence event: %s", exc)
            return
        if event in PRESENCE_EVENTS:
            entry.on_event(event, member)

    def _rejoin_all(self) -> None:
        for room, entry in self._entries.items():
            resume = self.session.resume(entry.join, f"rejoin {room!r}", active=entry.active)
            self.session.spawn(resume, "rejoin", per_connection=True)
