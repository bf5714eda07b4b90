"""The hub's python-socketio server, and what it changes in python-socketio.

:class:`HubServer` customises python-socketio through its constructor only
(``json=``, ``serializer=``), plus two things tests/contract pins down:
:class:`UndecodablePacket` relies on ``Packet.decode`` parsing the packet
type before the JSON arguments, and :class:`ConnectionRefused` on a
``ConnectionRefusedError``'s ``error_args`` being the connect error payload.

:class:`FastHubServer` adds the fast paths, as overrides of four private
methods of ``socketio.AsyncServer`` (``_handle_event``,
``_handle_event_internal``, ``_handle_eio_connect``,
``_handle_eio_disconnect``, ``_send_packet``): requests the hub can answer
at once are answered without a task, acks go straight to the wire when the
connection's writer is idle, and Engine.IO sockets ping from a timer
instead of a task each (:class:`~.sockets.TimerPingSocket`).
:func:`create_server` picks one by the fast-paths switch.
"""

from __future__ import annotations

import asyncio
import enum
import functools
from collections.abc import Callable
from typing import Any

import orjson
import socketio

from ...errors import BadRequest, HubError
from ...protocol import NAMESPACE, error_ack
from .base import FrameWriter, Transport, WriteBuffered
from .guard import BoundedPacket, SessionGuard, bounded_packet_class
from .packets import message_frame
from .sockets import Transports, ping_from_timer


class Queued(enum.Enum):
    QUEUED = "queued"


# An Answerer's "the ack comes later, through the reply it was given".
QUEUED = Queued.QUEUED
# Sends a request's ack (a no-op for a request that wants none).
Reply = Callable[[dict[str, Any]], None]
# Answers a request on the spot (see FastHubServer._handle_event), given
# (sid, [event, *args], reply): its ack now; QUEUED, and it calls reply with
# the ack later; or None: not answered here, the request takes a task.
Answerer = Callable[[str, list[Any], Reply], "dict[str, Any] | Queued | None"]

# The event name an undecodable request is delivered as (see UndecodablePacket).
UNDECODABLE = "\x00undecodable"


class OrjsonForSocketIO:
    """The ``json`` module interface python-socketio asks for, on orjson.

    Faster than the standard library, and strict: NaN or Infinity in a
    payload is a bad request instead of something that reads back as null.
    """

    @staticmethod
    def dumps(obj: Any, **_: Any) -> str:
        return orjson.dumps(obj).decode()

    @staticmethod
    def loads(data: str | bytes, **_: Any) -> Any:
        return orjson.loads(data)


class UndecodablePacket(BoundedPacket):
    """python-socketio's packet, keeping requests that are not JSON answerable.

    Stock clients can send arguments that are not JSON (Python's json module
    writes NaN and Infinity). python-socketio would drop such a packet with a
    logged traceback and leave the client waiting for its ack; decoded as the
    event ``UNDECODABLE`` instead, it gets a bad_request ack.
    """

    # python-socketio sets this on the server's packet class (a subclass
    # with the server's attachment caps); said here too so the class decodes
    # as the hub does on its own.
    json = OrjsonForSocketIO

    def decode(self, encoded_packet: Any) -> int:
        try:
            return int(super().decode(encoded_packet) or 0)
        except orjson.JSONDecodeError as exc:
            # Type, namespace and ack id are parsed before the JSON part.
            if self.packet_type != socketio.packet.EVENT:
                raise
            self.data = [UNDECODABLE, str(exc)]
            return 0


class ConnectionRefused(socketio.exceptions.ConnectionRefusedError):  # type: ignore[misc]
    """A refused connect whose data is DESIGN's ``{"code", "message"}``.

    socket.io-client (JavaScript) reads a connect error's payload as
    ``{"message", "data"}`` and shows only those as ``err.message`` and
    ``err.data``; python-socketio hands over the whole payload. Sending both
    shapes at once gives every stock client the code.
    """

    def __init__(self, err: HubError) -> None:
        super().__init__(err.message)
        self.error_args = {**err.to_wire(), "data": err.to_wire()}


class HubManager(socketio.AsyncManager):  # type: ignore[misc]
    """python-socketio's client manager, leaner per client, with a
    disconnect that costs the same however many clients there are.

    Stock python-socketio gives every client a room of its own (a ``bidict``
    holding just that client: about 570 bytes and 8 microseconds a
    connect), and its ``basic_disconnect`` copies and scans every room of
    the namespace to find the leaving client's: each disconnect is
    O(connections), so 10,000 clients going at once (a network blip, a
    restart of the proxy in front) keep the hub's loop busy for seconds.

    Here a client's own room is not stored: ``get_participants`` and
    ``get_rooms`` answer for it from the namespace's client table (the
    ``None`` room), which is what every emit to a sid goes through. The
    other rooms a client joins are indexed as it joins them, and a
    disconnect leaves exactly those; the rest of its steps are stock
    (tests/contract pins the stock method's source).
    """

    def __init__(self) -> None:
        super().__init__()
        # (namespace, sid) -> rooms beyond None and the sid's own: empty
        # for every hub client (the hub keeps its channels itself).
        self._joined: dict[tuple[str, str], set[Any]] = {}

    def basic_enter_room(self, sid: str, namespace: str, room: Any, eio_sid: Any = None) -> None:
        if room is not None and room == sid:
            return  # a client's own room is implied by its connection
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        if room is not None:
            self._joined.setdefault((namespace, sid), set()).add(room)

    def basic_leave_room(self, sid: str, namespace: str, room: Any) -> None:
        if room is not None and room == sid:
            return
        super().basic_leave_room(sid, namespace, room)
        joined = self._joined.get((namespace, sid))
        if joined is not None:
            joined.discard(room)
            if not joined:
                del self._joined[(namespace, sid)]

    def get_participants(self, namespace: str, room: Any) -> Any:
        rooms = self.rooms.get(namespace, {})
        clients = rooms.get(None, {})
        wanted = room if hasattr(room, "__len__") and not isinstance(room, str) else [room]
        participants: dict[str, Any] = {}
        for name in wanted:
            if name in rooms:
                participants.update(rooms[name].items())
            elif name is not None and name in clients:
                participants[name] = clients[name]
        yield from participants.items()

    def get_rooms(self, sid: str, namespace: str) -> list[Any]:
        rooms: list[Any] = super().get_rooms(sid, namespace)
        if sid in self.rooms.get(namespace, {}).get(None, {}):
            rooms.append(sid)
        return rooms

    def basic_disconnect(self, sid: str, namespace: str, **kwargs: Any) -> None:
        rooms = self.rooms.get(namespace)
        if rooms is None:
            return
        for room in (*self._joined.pop((namespace, sid), ()), None):
            if sid in rooms.get(room, ()):
                self.basic_leave_room(sid, namespace, room)
        if sid in self.callbacks:
            del self.callbacks[sid]
        for pending in (self.pending_connect, self.pending_disconnect):
            waiting = pending.get(namespace)
            if waiting is not None and sid in waiting:
                waiting.remove(sid)
                if not waiting:
                    del pending[namespace]


class HubServer(socketio.AsyncServer):  # type: ignore[misc]
    """python-socketio's server with the hub's JSON and packet classes, and
    the hub's connections as :class:`~rtkit.hub.transport.base.Transport`."""

    fast_paths = False

    def __init__(
        self,
        *,
        max_attachments: int = 4,
        connect_timeout: float = 10.0,
        max_pending_per_address: int = 0,
        trusted_proxies: frozenset[str] = frozenset(),
        **kwargs: Any,
    ) -> None:
        # One packet's attachments may add up to one frame's worth: what a
        # client could send as a single message anyway.
        packet_class = bounded_packet_class(
            UndecodablePacket,
            max_attachments=max_attachments,
            max_attachment_bytes=kwargs.get("max_http_buffer_size", 1_000_000),
        )
        kwargs.setdefault("client_manager", HubManager())
        super().__init__(json=OrjsonForSocketIO, serializer=packet_class, **kwargs)
        # Decode each incoming packet right in Engine.IO's reader instead of
        # in a task of its own: python-socketio still runs every event
        # handler in a task, so one task per request is saved, not concurrency.
        # (python-socketio 5 asks Engine.IO for this itself; said here because
        # the aiohttp websocket's direct dispatch and request order rely on it.)
        self.eio.async_handlers = False
        self.transports = Transports(self.eio, fast_paths=self.fast_paths)
        self.guard = SessionGuard(
            self.eio,
            connect_timeout=connect_timeout,
            max_pending_per_address=max_pending_per_address,
            trusted_proxies=trusted_proxies,
        )

    async def refuse_reserved_event(
        self, eio_sid: str, namespace: str | None, id: Any, data: Any
    ) -> bool:
        """An EVENT named ``connect`` or ``disconnect`` is a client's packet
        python-socketio would hand to the server's own connect or disconnect
        handler, with the client's arguments. Refuse it as a bad request
        instead, if the client has joined the namespace (True: handled)."""
        if not (isinstance(data, list) and data and data[0] in self.reserved_events):
            return False
        namespace = namespace or "/"
        sid = self.manager.sid_from_eio_sid(eio_sid, namespace)
        if id is not None and sid is not None and self.manager.is_connected(sid, namespace):
            refused = BadRequest(f"{data[0]!r} is not an event a client may send")
            ack = self.packet_class(
                socketio.packet.ACK, namespace=namespace, id=id, data=[error_ack(refused)]
            )
            await self._send_packet(eio_sid, ack)
        return True

    async def _handle_event(self, eio_sid: str, namespace: str | None, id: Any, data: Any) -> None:
        if await self.refuse_reserved_event(eio_sid, namespace, id, data):
            return
        await super()._handle_event(eio_sid, namespace, id, data)

    def open_connection(
        self,
        eio_sid: str,
        writer: FrameWriter | None,
        buffered: WriteBuffered | None = None,
    ) -> Transport | None:
        """The transport of a connection the hub accepts (None: it is gone).
        ``writer`` may write the connection's acks (with the fast paths);
        ``buffered`` tells the bytes the host holds for it below Engine.IO."""
        self.guard.joined(eio_sid)
        return self.transports.open(eio_sid, buffered)

    def close_connection(self, eio_sid: str) -> None:
        self.transports.discard(eio_sid)
        # The Engine.IO session may outlive its namespace connection (a
        # namespace DISCONNECT): it must join again within the deadline.
        self.guard.left(eio_sid)

    def answer_immediately(self, answer: Answerer) -> None:
        """Let ``answer`` take requests before python-socketio starts a task
        for them. python-socketio's public API has no such hook: only
        :class:`FastHubServer` uses it, every request here takes a task."""


class FastHubServer(HubServer):
    """:class:`HubServer` answering what it can without a task, and writing
    acks straight to a connection's transport when the host gave it a frame
    writer and Engine.IO's writer task holds nothing unsent: that saves a
    task wake-up and a frame encode per request, and keeps order with the
    fan-out's direct writes (both only bypass a writer that is idle)."""

    fast_paths = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._frame_writers: dict[str, FrameWriter] = {}
        self._answer_now: Answerer | None = None
        # Handler tasks started and not yet finished, per Engine.IO sid.
        self._running: dict[str, int] = {}
        # Acks of queued requests on their way through Engine.IO's queue
        # (held here: the loop keeps only weak references to tasks).
        self._sending: set[asyncio.Task[None]] = set()
        # Acks of queued requests to write at the end of this turn, by sid.
        self._acks: dict[str, list[Any]] = {}

    def open_connection(
        self,
        eio_sid: str,
        writer: FrameWriter | None,
        buffered: WriteBuffered | None = None,
    ) -> Transport | None:
        transport = super().open_connection(eio_sid, writer, buffered)
        if transport is not None and writer is not None:
            self._frame_writers[eio_sid] = writer
        return transport

    def close_connection(self, eio_sid: str) -> None:
        super().close_connection(eio_sid)
        self._frame_writers.pop(eio_sid, None)

    def answer_immediately(self, answer: Answerer) -> None:
        self._answer_now = answer

    async def _handle_event(
        self, eio_sid: str, namespace: str | None, id: int | None, data: list[Any]
    ) -> None:
        # python-socketio runs every event handler in a task of its own. A
        # request the hub can answer without waiting (a publish to the
        # memory store) is answered right here instead: no task, no
        # coroutine chain, and the ack leaves in the same turn of the loop.
        # Only while none of the connection's earlier requests is still in
        # a task, so that requests take effect in the order they were sent
        # (a subscribe, then a publish that the subscriber must see).
        namespace = namespace or "/"
        if await self.refuse_reserved_event(eio_sid, namespace, id, data):
            return
        sid = self.manager.sid_from_eio_sid(eio_sid, namespace)
        if sid is None or not self.manager.is_connected(sid, namespace):
            await super()._handle_event(eio_sid, namespace, id, data)  # it logs and drops
            return
        answer = self._answer_now
        if answer is not None and namespace == NAMESPACE and eio_sid not in self._running:
            # Queued (a publish to the Redis store): acked when stored, by a
            # callback rather than a task waiting for it.
            reply = _no_reply if id is None else functools.partial(self._queue_ack, eio_sid, id)
            ack = answer(sid, data, reply)
            if ack is QUEUED:
                return
            if ack is not None:
                if id is not None:
                    await self._send_packet(
                        eio_sid,
                        self.packet_class(
                            socketio.packet.ACK, namespace=namespace, id=id, data=[ack]
                        ),
                    )
                return
        if self.async_handlers:
            # Counted here, where python-socketio creates the task without
            # yielding first; _handle_event_internal uncounts it.
            self._running[eio_sid] = self._running.get(eio_sid, 0) + 1
        await super()._handle_event(eio_sid, namespace, id, data)

    async def _handle_event_internal(
        self, server: Any, sid: str, eio_sid: str, data: Any, namespace: str, id: int | None
    ) -> None:
        try:
            await super()._handle_event_internal(server, sid, eio_sid, data, namespace, id)
        finally:
            if self.async_handlers and (left := self._running.get(eio_sid)) is not None:
                if left > 1:
                    self._running[eio_sid] = left - 1
                else:
                    del self._running[eio_sid]

    async def _handle_eio_connect(self, eio_sid: str, environ: Any) -> Any:
        # Engine.IO calls this before it first schedules the socket's ping:
        # from here on the socket pings from a timer, not a task of its own.
        ping_from_timer(self.eio.sockets.get(eio_sid))
        return await super()._handle_eio_connect(eio_sid, environ)

    async def _handle_eio_disconnect(self, eio_sid: str, reason: Any = None) -> None:
        # A task cancelled before it started never uncounts itself.
        self._running.pop(eio_sid, None)
        await super()._handle_eio_disconnect(eio_sid, reason)

    async def _send_packet(self, eio_sid: str, pkt: Any) -> None:
        if not self._write_now(eio_sid, pkt):
            await super()._send_packet(eio_sid, pkt)

    def _write_now(self, eio_sid: str, pkt: Any) -> bool:
        """Write ``pkt`` straight to the connection's transport, when it has
        a frame writer and nothing queued before; False: it was not."""
        writer = self._frame_writers.get(eio_sid)
        if writer is not None:
            transport = self.transports.get(eio_sid)
            if transport is not None and not transport.closed and transport.idle():
                encoded = pkt.encode()
                if isinstance(encoded, str) and writer(message_frame(encoded)):
                    return True
        return False

    def _queue_ack(self, eio_sid: str, id: int, ack: dict[str, Any]) -> None:
        # A burst of queued requests is answered in one step: the acks of
        # each connection leave together, in one write, at the start of the
        # next turn of the loop.
        pkt = self.packet_class(socketio.packet.ACK, namespace=NAMESPACE, id=id, data=[ack])
        waiting = self._acks.get(eio_sid)
        if waiting is not None:
            waiting.append(pkt)
            return
        self._acks[eio_sid] = [pkt]
        if len(self._acks) == 1:
            asyncio.get_running_loop().call_soon(self._flush_acks)

    def _flush_acks(self) -> None:
        acks, self._acks = self._acks, {}
        for eio_sid, packets in acks.items():
            transport = self.transports.get(eio_sid)
            if transport is None or transport.closed:
                continue  # gone meanwhile: nobody to answer
            writer = self._frame_writers.get(eio_sid)
            if writer is not None and transport.idle():
                frames = [pkt.encode() for pkt in packets]
                if all(isinstance(f, str) for f in frames) and writer(
                    b"".join(message_frame(f) for f in frames)
                ):
                    continue
            for pkt in packets:
                task = asyncio.get_running_loop().create_task(super()._send_packet(eio_sid, pkt))
                self._sending.add(task)
                task.add_done_callback(self._sending.discard)


def _no_reply(ack: dict[str, Any]) -> None:
    pass


def create_server(*, fast_paths: bool, **kwargs: Any) -> HubServer:
    """The hub's server: :class:`FastHubServer` with the fast paths on, else
    :class:`HubServer`. ``kwargs`` go to ``socketio.AsyncServer``."""
    cls = FastHubServer if fast_paths else HubServer
    return cls(**kwargs)
