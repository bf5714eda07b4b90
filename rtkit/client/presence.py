"""Presence on the client: who is in a room, kept current by the hub's events.

A :class:`Presence` joins its room on every (re)connection with the state it
last set, so the hub's view survives reconnects and hub restarts. After a
rejoin the member list from the ack is compared with what the object knew,
and the differences are reported as ``join``/``leave``/``update`` callbacks,
so an application sees the same transitions as if it had stayed connected.

Events are applied idempotently (a ``join`` of a known member is an update,
a ``leave`` of an unknown one nothing), because the hub coalesces and a
rejoin's member list may already include what an event says.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from ..errors import ConfigurationError, NotConnected, NotFound
from ..protocol import (
    PRESENCE_EVENTS,
    PRESENCE_JOIN,
    PRESENCE_LEAVE,
    PRESENCE_UPDATE,
    Member,
    parse_member,
)

if TYPE_CHECKING:
    from .aio import Client

__all__ = ["MemberCallback", "Presence", "PresenceEvent"]

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

    def __init__(self, client: Client, room: str, state: dict[str, Any]) -> None:
        self._client = client
        self.room = room
        self._state = dict(state)
        self._members: dict[str, Member] = {}
        self._me: str | None = None
        self._active = True
        self._token = 0
        self._callbacks: dict[str, list[MemberCallback]] = {e: [] for e in PRESENCE_EVENTS}

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
        if not self._client.connected:
            return
        try:
            await self._client._request(
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
        self._client._forget_room(self)
        if self._client.connected:
            with contextlib.suppress(NotConnected, NotFound):
                await self._client._request(PRESENCE_LEAVE, {"room": self.room}, wait=False)
        self._members.clear()

    def _is_active(self) -> bool:
        """Still in the room (not left)."""
        return self._active

    def _check_active(self) -> None:
        self._client._check_usable()
        if not self._active:
            raise RuntimeError(f"left room {self.room!r}; call hub.presence() to join again")

    # -- internals, on the client's loop -------------------------------------

    async def _join(self) -> None:
        """Join (or rejoin) on the current connection; raises the hub's refusal."""
        self._token += 1
        token = self._token
        await self._client._request(
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
            self._client._dispatch(callback, (member,), None)
