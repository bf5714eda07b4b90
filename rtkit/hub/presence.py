"""Presence: who is in a room right now, and their state.

A *member* is a user identity, not a connection: a user with two tabs and a
kernel in one room is one member with ``connections: 3``. Its id is derived
from the user id (:func:`rtkit.protocol.member_id_for`), so every hub and
every reconnect agrees on it.

The store holds the rooms (see :mod:`rtkit.storage.presence`); this module
holds what only this hub knows: which of its connections joined which rooms
(they receive the room's events), and the events not sent yet.

Events are batched per room for ``presence_batch_delay`` seconds and
coalesced per member: a member that joined and left within one batch is
never announced, ten state updates become one, and a leave followed by a
join becomes an update. A storm of hundreds of joins therefore costs one
event per member that changed, each encoded once for all recipients.

Coalescing must not span a snapshot: a connection that joins while events
are pending got the room's current members in its ack, which may show a
member halfway through the batch. Such a recipient is sent each pending
member's final event regardless (``leave`` if gone, else ``update``), which
clients apply idempotently.

Expiry: every connection in the store has one deadline for all its rooms,
which this hub moves forward for its live connections every third of
``presence_expiry`` (one store call for all of them, whatever the number of
rooms). A connection that closes leaves at once; a client that
vanishes without closing is dropped by Engine.IO's heartbeat (ping_interval
+ ping_timeout) and then leaves; the entries of a hub that died lapse at
their deadline and are expired by any hub sharing the store.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
import unicodedata
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..config import HubConfig
from ..errors import Forbidden, NotFound, Unavailable
from ..protocol import (
    PRESENCE,
    Member,
    PresenceEventName,
    member_id_for,
    parse_presence_join,
    parse_presence_leave,
    parse_presence_list,
    parse_presence_update,
)
from ..storage.base import PresenceChange, Store
from .auth import color_for
from .fanout import FanOut, encode_event

if TYPE_CHECKING:
    from .auth import Identity
    from .connection import Connection

log = logging.getLogger(__name__)

# (room, member id) of each room a connection was taken out of (a method of
# PresenceRooms is called "list": the alias keeps the builtin in reach).
RoomsLeft = list[tuple[str, str]]
# [member existed before this batch, its latest change, order of its first change]
_Slot = list[Any]

# The colors a member may have: hex colors, and a theme's CSS variable by name
# (JupyterLab names collaborator colors var(--jp-collaborator-color1)). Front
# ends put the color into a style property, so anything else (';', url(),
# expressions) is replaced, never passed on.
_SAFE_COLOR = re.compile(
    r"#(?:[0-9a-fA-F]{3,4}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})"
    r"|var\(--[A-Za-z0-9_-]{1,64}\)"
    r"|[A-Za-z]{3,24}"  # a color keyword: red, rebeccapurple
)


def safe_color(color: str | None, user: str) -> str:
    """``color`` if it is a hex color, a keyword or ``var(--name)``, else the user's
    derived color (:func:`~rtkit.hub.auth.color_for`).

    >>> safe_color("#1f77b4", "ann"), safe_color("red;position:fixed", "ann") == color_for("ann")
    ('#1f77b4', True)
    """
    if color and _SAFE_COLOR.fullmatch(color):
        return color
    return color_for(user)


def safe_name(name: str | None, user: str, max_chars: int) -> str:
    r"""A display name fit to show others: control and format characters
    (bidi overrides, zero-width joiners) removed, whitespace runs made one
    space, cut to ``max_chars``; the user id when nothing is left.

    >>> safe_name("  Ann  Lee\u202e ", "ann", 64)
    'Ann Lee'
    """
    text = "".join(
        " " if ch.isspace() else ch
        for ch in (name or "")
        if ch.isspace() or not unicodedata.category(ch).startswith("C")
    )
    text = " ".join(text.split())[:max_chars].strip()
    return text or user[:max_chars]


class PresenceRooms:
    """The hub's presence handlers, membership bookkeeping and event batching."""

    def __init__(
        self,
        config: HubConfig,
        store: Store,
        fanout: FanOut,
        connections: Mapping[str, Connection],
        *,
        on_change: Callable[[PresenceChange], None] | None = None,
    ) -> None:
        self._config = config
        # Told of every change this hub makes (joins, leaves, expiries),
        # not of the changes other hubs make (remote_change).
        self._on_change = on_change
        self._limits = config.limits
        self._store = store
        self._fanout = fanout
        self._connections = connections
        # This hub's connections per room (member id of each, and the order
        # of its join among queued changes), and back.
        self._local: dict[str, dict[str, tuple[str, int]]] = {}
        self._joined: dict[str, set[str]] = {}
        self._pending: dict[str, dict[str, _Slot]] = {}
        self._order = itertools.count()
        self._handle: asyncio.TimerHandle | asyncio.Handle | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self.events_sent = 0

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> None:
        self._heartbeat = asyncio.get_running_loop().create_task(
            self._refresh_loop(), name="rtkit presence heartbeat"
        )

    async def stop(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
            self._heartbeat = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def status(self) -> dict[str, Any]:
        return {
            "rooms": {room: len(sids) for room, sids in self._local.items()},
            "events_sent": self.events_sent,
        }

    def room_sizes(self) -> dict[str, tuple[int, int]]:
        """``{room: (connections, members)}`` of this hub's connections."""
        return {
            room: (len(sids), len({member for member, _ in sids.values()}))
            for room, sids in self._local.items()
        }

    async def _refresh_loop(self) -> None:
        expiry = self._config.presence_expiry
        while True:
            await asyncio.sleep(expiry / 3)
            try:
                now = time.time()
                # Vouch for our own connections first: a hub that was stalled
                # for a while must not expire its own live members.
                await self._store.presence.refresh(list(self._joined), now + expiry)
                for change in await self._store.presence.expire(now):
                    log.info("presence: %s in %r expired", change.member.user, change.room)
                    self._changed(change)
            except Exception:
                log.exception("presence heartbeat failed; retrying")

    # -- requests -----------------------------------------------------------

    async def join(self, conn: Connection, payload: Any) -> dict[str, Any]:
        req = parse_presence_join(payload)
        identity = conn.identity
        if not (identity.can_subscribe(req.room) and identity.can_publish(req.room)):
            raise Forbidden(f"{identity.user!r} may not join room {req.room!r}")
        rooms = self._joined.get(conn.sid, set())
        if req.room not in rooms and len(rooms) >= self._limits.max_rooms:
            raise Forbidden(f"room limit reached ({self._limits.max_rooms} rooms per connection)")
        self._take(conn)
        # Name and color come from a token or the host's identity provider,
        # which may let users set them: others' front ends show them, so they
        # are made safe here, where members are built.
        color = safe_color(identity.color, identity.user)
        if color != identity.color and identity.color:
            log.debug(
                "presence: %s's color %.40r is not a safe CSS color", identity.user, identity.color
            )
        member = Member(
            member_id_for(identity.user),
            identity.user,
            safe_name(identity.name, identity.user, self._limits.max_name_chars),
            color,
            req.state,
            0,
        )
        change = await self._store.presence.join(
            req.room,
            conn.sid,
            member,
            expires=time.time() + self._config.presence_expiry,
            max_members=self._limits.max_room_members,
            max_state_bytes=self._limits.max_presence_state_bytes,
        )
        if self._connections.get(conn.sid) is not conn:
            # Gone while the store was at work: undo, or it lingers until expiry.
            await self._store.presence.leave(req.room, member.id, conn.sid)
            raise Unavailable("disconnected while joining")
        if not (conn.identity.can_subscribe(req.room) and conn.identity.can_publish(req.room)):
            # A token refresh took the right away while the store was at work:
            # undo (the join's change was not sent, so neither is the leave's).
            await self._store.presence.leave(req.room, member.id, conn.sid)
            raise Forbidden(f"{conn.identity.user!r} may not join room {req.room!r}")
        self._local.setdefault(req.room, {})[conn.sid] = (member.id, next(self._order))
        self._joined.setdefault(conn.sid, set()).add(req.room)
        if change is not None:
            self._changed(change)
        members = await self._store.presence.members(req.room)
        me = next((m for m in members if m.id == member.id), None)
        return {
            "ok": True,
            "members": [m.to_wire() for m in members],
            "member": me.to_wire() if me is not None else None,
        }

    async def update(self, conn: Connection, payload: Any) -> dict[str, Any]:
        req = parse_presence_update(payload)
        local = self._local.get(req.room, {}).get(conn.sid)
        if local is None:
            raise NotFound(f"not in room {req.room!r}: send presence.join first")
        member_id = local[0]
        self._take(conn)
        change = await self._store.presence.update(
            req.room, member_id, req.state, max_state_bytes=self._limits.max_presence_state_bytes
        )
        if change is not None:
            self._changed(change)
        return {"ok": True}

    def _take(self, conn: Connection) -> None:
        # Joins and updates share the connection's publish budget: each one
        # costs every member of the room an event.
        conn.bucket.take_or_refuse()

    async def leave(self, conn: Connection, payload: Any) -> dict[str, Any]:
        req = parse_presence_leave(payload)
        member_id = self._forget(conn.sid, req.room)
        if member_id is None:
            raise NotFound(f"not in room {req.room!r}")
        await self._leave_store(conn.sid, req.room, member_id)
        return {"ok": True}

    async def list(self, conn: Connection, payload: Any) -> dict[str, Any]:
        req = parse_presence_list(payload)
        if not conn.identity.can_subscribe(req.room):
            raise Forbidden(f"{conn.identity.user!r} may not see room {req.room!r}")
        members = await self._store.presence.members(req.room)
        return {"ok": True, "members": [m.to_wire() for m in members]}

    async def disconnected(self, sid: str) -> None:
        """A connection closed: it leaves every room it had joined."""
        for room in list(self._joined.get(sid, ())):
            member_id = self._forget(sid, room)
            if member_id is None:
                continue
            try:
                await self._leave_store(sid, room, member_id)
            except Exception:
                # Its entry lapses at its deadline instead.
                log.exception("presence: could not remove %s from %r", sid, room)

    def revoke(self, sid: str, identity: Identity) -> RoomsLeft:
        """Forget ``sid`` in every room ``identity`` may no longer join (it
        needs both rights on the room's name); ``(room, member id)`` of each,
        for :meth:`leave_revoked`. Synchronous: once it returns, no event
        of those rooms reaches ``sid``."""
        left: RoomsLeft = []
        for room in sorted(self._joined.get(sid, ())):
            if identity.can_subscribe(room) and identity.can_publish(room):
                continue
            member_id = self._forget(sid, room)
            if member_id is not None:
                left.append((room, member_id))
        return left

    async def leave_revoked(self, sid: str, rooms: RoomsLeft) -> None:
        """Take ``sid`` out of the rooms :meth:`revoke` returned, in the store
        (others see it leave when it was its user's last connection there)."""
        for room, member_id in rooms:
            try:
                await self._leave_store(sid, room, member_id)
            except Exception:
                # Its entry lapses at its deadline instead.
                log.exception("presence: could not remove %s from %r", sid, room)

    def _forget(self, sid: str, room: str) -> str | None:
        """Drop this hub's record of ``sid`` in ``room``; its member id, or
        None if it was not there."""
        local = self._local.get(room)
        entry = local.pop(sid, None) if local is not None else None
        if local is not None and not local:
            del self._local[room]
        rooms = self._joined.get(sid)
        if rooms is not None:
            rooms.discard(room)
            if not rooms:
                del self._joined[sid]
        return entry[0] if entry is not None else None

    async def _leave_store(self, sid: str, room: str, member_id: str) -> None:
        change = await self._store.presence.leave(room, member_id, sid)
        if change is not None:
            self._changed(change)

    # -- events -------------------------------------------------------------

    def remote_change(self, change: PresenceChange) -> None:
        """A change another hub made to a room (through a shared store)."""
        if change.room in self._local:
            self._queue(change)

    def _changed(self, change: PresenceChange) -> None:
        """A change this hub made: its members hear of it, and the hook."""
        if self._on_change is not None:
            self._on_change(change)
        self._queue(change)

    def _queue(self, change: PresenceChange) -> None:
        slots = self._pending.setdefault(change.room, {})
        slot = slots.get(change.member.id)
        if slot is None:
            slots[change.member.id] = [change.event != "join", change, next(self._order)]
        else:
            slot[1] = change
        if self._handle is None:
            loop = asyncio.get_running_loop()
            delay = self._config.presence_batch_delay
            self._handle = (
                loop.call_later(delay, self.flush) if delay > 0 else loop.call_soon(self.flush)
            )

    def flush(self) -> None:
        """Send every pending event, coalesced per member. Synchronous: events
        of one batch reach each recipient in the order they were first queued."""
        self._handle = None
        pending, self._pending = self._pending, {}
        for room, slots in pending.items():
            recipients = self._local.get(room)
            if not recipients:
                continue
            for existed, change, first in slots.values():
                exists = change.event != "leave"
                event: PresenceEventName | None
                if existed and exists:
                    event = "update"
                elif exists:
                    event = "join"
                elif existed:
                    event = "leave"
                else:
                    event = None  # joined and left within one batch
                # For recipients that joined after this member's first change
                # their ack's snapshot is the baseline: send the final event.
                late: PresenceEventName = "update" if exists else "leave"
                encoded: dict[str, list[Any]] = {}
                for sid, (_, joined) in list(recipients.items()):
                    send = late if joined > first else event
                    conn = self._connections.get(sid)
                    if send is None or conn is None:
                        continue
                    packets = encoded.get(send)
                    if packets is None:
                        wire = {"room": room, "event": send, "member": change.member.to_wire()}
                        packets = encoded[send] = encode_event(PRESENCE, wire)
                    self._fanout.send_to(sid, conn.eio_sid, packets, conn.frame_writer)
                    self.events_sent += 1
