"""The aiohttp host's websocket: python-engineio's, leaner and faster.

python-engineio's aiohttp driver runs a websocket through its ``WebSocket``
class (``engineio.async_drivers.aiohttp``), which the server looks up in its
private ``_async`` table, and the socket's private ``_websocket_handler``
loop. :func:`install_websocket` swaps in a subclass per server that

- sets permessage-deflate as configured (aiohttp would otherwise compress
  whenever a client offers it),
- with the fast paths on, gives the hub a frame writer straight onto the
  connection's asyncio transport (:class:`TransportFrameWriter`), and
- with the fast paths on, reads with :func:`serve_websocket`, a copy of
  ``AsyncSocket._websocket_handler``'s protocol steps without its per-packet
  task and ``wait_for``. tests/contract pins the stock loop's source hash.

With the fast paths off, python-engineio's own loop runs, reading through
the driver's public ``wait`` (which closes on a frame that is not
Engine.IO, as the fast path does), and every write goes through its writer
task.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from engineio import exceptions as eio_exceptions
from engineio import packet as eio_packet
from engineio.async_drivers import aiohttp as eio_aiohttp
from engineio.async_socket import AsyncSocket

from .base import FRAME_WRITER_KEY, WRITE_BUFFERED_KEY, FrameWriter
from .guard import decode_engineio, violations
from .memory import collect_soon
from .server import HubServer
from .sockets import ByteQueue, QueueDrain
from .wheel import wheel

log = logging.getLogger(__name__)


# Above this many bytes waiting in a connection's transport, fan-out stops
# writing to it directly and lets Engine.IO's writer apply backpressure.
DIRECT_WRITE_LIMIT = 1 << 20


class TransportFrameWriter:
    """Writes prebuilt websocket frames straight to a connection's transport
    (see rtkit.hub.fanout: one shared frame for all subscribers)."""

    __slots__ = ("_transport",)

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport

    def __call__(self, frame: bytes) -> bool:
        transport = self._transport
        if transport.is_closing() or transport.get_write_buffer_size() > DIRECT_WRITE_LIMIT:
            return False
        transport.write(frame)
        return True


class _ReadDeadline:
    """Engine.IO drops a websocket that sends nothing for ``ping_interval +
    ping_timeout``. Stock python-engineio enforces that with a task and an
    ``asyncio.wait_for`` around every single read; here one deadline per
    connection on the loop's :class:`~.wheel.Wheel` checks the time the
    current read started, and comes back until a read has lasted too long.
    Then it cancels the reading task, which is parked in ``receive`` (the
    only place it waits while ``reading``)."""

    __slots__ = ("_limit", "_loop", "_task", "_wheel", "expired", "reading", "since")

    def __init__(self, limit: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._limit = limit
        self._wheel = wheel()
        self.since = self._loop.time()
        self.reading = False
        self.expired = False
        self._wheel.at(self.since + limit, self)

    def on_due(self) -> None:
        if self._task is None:
            return  # cancelled
        now = self._loop.time()
        if not self.reading:
            self._wheel.at(now + self._limit, self)
        elif now - self.since >= self._limit:
            self.expired = True
            self._task.cancel()
        else:
            self._wheel.at(self.since + self._limit, self)

    def cancel(self) -> None:
        # The wheel lets go of it when its slot comes; the task goes now.
        self._task = None


async def serve_websocket(
    ws: Any, socket: AsyncSocket, frame_writer: FrameWriter | None = None
) -> None:
    """Engine.IO's websocket transport for one connection: the same protocol
    steps as python-engineio's ``AsyncSocket._websocket_handler`` (upgrade
    probe, writer task, ping/pong, close, size limit, cleanup), without its
    per-packet task and ``wait_for`` (see :class:`_ReadDeadline`), and
    without a writer task: what Engine.IO queues is written by a
    :class:`~.sockets.QueueDrain`, through ``frame_writer`` when given. A MESSAGE
    packet, which is nearly every packet, goes straight to the Socket.IO
    server's handler with no Packet object: its payload needs no decoding at
    the Engine.IO level. Everything else goes through the socket's own
    ``receive``, so Engine.IO keeps its say over pings, upgrades and closes.
    """
    server = socket.server
    max_size = server.max_http_buffer_size
    sock: web.WebSocketResponse = ws._sock

    if socket.connected:
        # An upgrade from long-polling (engineio's steps, unchanged).
        socket.upgrading = True
        try:
            data = _payload((await sock.receive()).data, max_size)
            pkt = eio_packet.Packet(encoded_packet=data) if data is not None else None
        except (OSError, ValueError):
            pkt = None
        if pkt is None or pkt.packet_type != eio_packet.PING or pkt.data != "probe":
            server.logger.info("%s: Failed websocket upgrade, no PING packet", socket.sid)
            socket.upgrading = False
            return
        await ws.send(eio_packet.Packet(eio_packet.PONG, data="probe").encode())
        await socket.queue.put(eio_packet.Packet(eio_packet.NOOP))  # end poll
        try:
            data = _payload((await sock.receive()).data, max_size)
            pkt = eio_packet.Packet(encoded_packet=data) if data is not None else None
        except (OSError, ValueError):
            pkt = None
        if pkt is None or pkt.packet_type != eio_packet.UPGRADE:
            socket.upgraded = False
            server.logger.info(
                "%s: Failed websocket upgrade, expected UPGRADE packet, received %s instead.",
                socket.sid,
                data,
            )
            socket.upgrading = False
            return
        socket.upgraded = True
        socket.upgrading = False
    else:
        socket.connected = True
        socket.upgraded = True

    drain: QueueDrain | None = None
    writer_task: asyncio.Future[None] | None = None
    if isinstance(socket.queue, ByteQueue):
        # Written on demand: no writer task waits on an idle connection.
        drain = QueueDrain(socket.queue, ws, frame_writer)
    else:

        async def writer() -> None:
            while True:
                try:
                    packets = await socket.poll()
                except eio_exceptions.QueueEmpty:
                    break
                if not packets:  # the connection is closing
                    break
                try:
                    for pkt in packets:
                        await ws.send(pkt.encode())
                except Exception:
                    break
            await ws.close()

        writer_task = asyncio.ensure_future(writer())
    on_message = server.handlers.get("message")
    # Engine.IO may be told to run its handlers in tasks: then let it.
    direct = on_message is not None and not server.async_handlers
    deadline = _ReadDeadline(server.ping_interval + server.ping_timeout)
    loop = asyncio.get_running_loop()
    try:
        while True:
            deadline.since = loop.time()
            deadline.reading = True
            try:
                data = _payload((await sock.receive()).data, max_size)
            except asyncio.CancelledError:
                # Timed out, or the server is shutting down: either way stop
                # reading and close the socket, as python-engineio does.
                if deadline.expired and (task := asyncio.current_task()) is not None:
                    task.uncancel()
                break
            except Exception:
                break
            finally:
                deadline.reading = False
            if data is None:
                break
            if direct and isinstance(data, str) and data[:1] == "4":
                try:
                    await on_message(socket.sid, data[1:])
                except Exception as exc:
                    # Handlers run in tasks or answer errors in acks, so this
                    # is a packet Socket.IO cannot decode. It has no ack id
                    # to answer; the connection carries on, as with stock
                    # python-socketio, without a traceback for client garbage.
                    # DEBUG: a client could send these as fast as it likes.
                    log.debug("%s: ignored a packet Socket.IO cannot read (%r)", socket.sid, exc)
                if socket.closed:
                    break  # closed for a protocol violation (see guard.SessionGuard)
                continue
            pkt = decode_engineio(data)
            if pkt is None:
                # Not Engine.IO: nothing to answer it with, so close, as a
                # protocol error warrants, instead of failing the handler.
                violations.info("closing %s: it sent a frame that is not Engine.IO", socket.sid)
                break
            try:
                await socket.receive(pkt)
            except eio_exceptions.UnknownPacketError:
                pass
            except eio_exceptions.SocketIsClosedError:
                break
            except Exception:
                server.logger.exception("Unknown receive error")
    finally:
        deadline.cancel()
        if drain is not None:
            await drain.stop()
            await ws.close()
        elif writer_task is not None:
            await socket.queue.put(None)  # unlock the writer task so it can exit
            await writer_task
        await socket.close(wait=False, abort=True, reason=server.reason.TRANSPORT_CLOSE)


def _payload(data: Any, max_size: int) -> str | bytes | None:
    """A received frame's text or bytes; None: the connection is closed,
    failed, or sent a frame over the size limit (aiohttp refuses those with
    close code 1009). A module function, not a closure: every idle
    connection would hold one, with its cells."""
    if not isinstance(data, str | bytes) or len(data) > max_size:
        return None
    return data


def _websocket_class(*, compress: bool, fast_paths: bool) -> type[Any]:
    class WebSocket(eio_aiohttp.WebSocket):  # type: ignore[misc]
        """python-engineio's aiohttp websocket with permessage-deflate as
        configured (aiohttp would otherwise compress whenever offered), a
        frame writer for the hub's fan-out, and a leaner read loop
        (:func:`serve_websocket`); the last two with the fast paths only."""

        async def __call__(self, environ: dict[str, Any]) -> web.WebSocketResponse:
            request = environ["aiohttp.request"]
            self._sock = web.WebSocketResponse(
                max_msg_size=self.server.max_http_buffer_size, compress=compress
            )
            await self._sock.prepare(request)
            if fast_paths:
                _lighten_protocol(request.protocol)
            if request.transport is not None:
                # What the socket buffers counts against the send budget,
                # with the fast paths on or off (a public asyncio API).
                environ[WRITE_BUFFERED_KEY] = request.transport.get_write_buffer_size
            frame_writer = None
            if fast_paths and not compress and request.transport is not None:
                frame_writer = environ[FRAME_WRITER_KEY] = TransportFrameWriter(request.transport)
            self.environ = environ
            socket = getattr(self.handler, "__self__", None)
            try:
                if (
                    fast_paths
                    and isinstance(socket, AsyncSocket)
                    and self.handler.__func__ is STOCK_HANDLER
                ):
                    await serve_websocket(self, socket, frame_writer)
                else:
                    await self.handler(self)
            finally:
                # Both loops close the socket after their writer task has
                # ended: what is still queued will never be written. (A
                # failed upgrade returns with the socket open, on polling.)
                if (
                    isinstance(socket, AsyncSocket)
                    and socket.closed
                    and isinstance(socket.queue, ByteQueue)
                ):
                    socket.queue.drop()
                if (error := self._sock.exception()) is not None:
                    _forget_traceback(error)
                    collect_soon()
            return self._sock

        async def wait(self) -> str | bytes:
            # What python-engineio's own loop reads through (the fast path
            # reads the socket itself). A frame that is not Engine.IO would
            # fail that loop with a traceback, or be logged and kept; it is
            # a protocol error, so end the connection as the fast path does:
            # the loop takes OSError, as from a closed socket, and closes.
            data: str | bytes = await super().wait()
            if decode_engineio(data) is None:
                sid = getattr(getattr(self.handler, "__self__", None), "sid", "?")
                violations.info("closing %s: it sent a frame that is not Engine.IO", sid)
                raise OSError("not an Engine.IO packet")
            return data

    return WebSocket


class _Messages(list[Any]):
    """What aiohttp's ``RequestHandler`` keeps its parsed HTTP requests in
    (``_messages``, a deque), as a list: an empty deque is 760 bytes, an
    empty list 56. aiohttp calls only ``append``, ``popleft``, ``clear``,
    ``len`` and truth on it (tests/contract pins that), and after a
    websocket upgrade not even those until the websocket ends."""

    def popleft(self) -> Any:
        return self.pop(0)


def _lighten_protocol(protocol: Any) -> None:
    """Let go of what an upgraded connection's ``RequestHandler`` keeps for
    HTTP requests it will never parse again (left alone if aiohttp has
    changed its shape): its empty request deque becomes a
    :class:`_Messages`, and its HTTP parser (760 bytes) goes, as when the
    connection is lost. Once the websocket is prepared, its frames go to
    ``_payload_parser`` and aiohttp touches ``_parser`` only after checking
    it is not None (tests/contract pins both)."""
    messages = getattr(protocol, "_messages", None)
    if type(messages) is collections.deque and not messages:
        protocol._messages = _Messages()
    if (
        getattr(protocol, "_upgraded", False) is True
        and getattr(protocol, "_payload_parser", None) is not None
        and getattr(protocol, "_parser", None) is not None
    ):
        protocol._parser = None


# What python-engineio's aiohttp driver puts in every environ that nothing
# in Engine.IO, Socket.IO or the hub reads: WSGI constants, and headers
# aiohttp has already answered the websocket handshake with. A websocket's
# environ lives as long as the connection (Socket.IO keeps it for its
# namespace connects), so it is built without them.
_UNREAD_ENVIRON = frozenset(
    {
        "wsgi.errors",
        "wsgi.version",
        "wsgi.async",
        "wsgi.multithread",
        "wsgi.multiprocess",
        "wsgi.run_once",
        "SERVER_SOFTWARE",
        "SERVER_PROTOCOL",
        "SERVER_NAME",
        "SERVER_PORT",
        "REMOTE_PORT",
        "SCRIPT_NAME",
        "RAW_URI",
        "HTTP_SEC_WEBSOCKET_KEY",
        "HTTP_SEC_WEBSOCKET_VERSION",
        "HTTP_SEC_WEBSOCKET_EXTENSIONS",
    }
)


def _lean_translate(stock: Callable[[Any], dict[str, Any]]) -> Callable[[Any], dict[str, Any]]:
    """python-engineio's ``translate_request`` for aiohttp, leaving
    :data:`_UNREAD_ENVIRON` out of websocket upgrade requests' environs
    (room for the hub's two keys is made at once: no resize later)."""

    def translate_request(request: Any) -> dict[str, Any]:
        environ = stock(request)
        if environ.get("HTTP_UPGRADE", "").lower() != "websocket":
            return environ
        lean = {k: v for k, v in environ.items() if k not in _UNREAD_ENVIRON}
        lean.setdefault(FRAME_WRITER_KEY, None)
        lean.setdefault(WRITE_BUFFERED_KEY, None)
        return lean

    return translate_request


def _forget_traceback(exc: BaseException | None) -> None:
    """Drop the tracebacks of the error a websocket ended with.

    aiohttp keeps that error (``WebSocketResponse.exception()``); its
    traceback holds the frames of the failed write, and so the frame being
    written (up to an ack's size, MiBs) and the response itself: a cycle
    that only a full garbage collection frees (see :mod:`.memory`). The
    error's type and message stay."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        exc.__traceback__ = None
        exc = exc.__cause__ or exc.__context__


# The Engine.IO method serve_websocket stands in for; a subclass's own
# handler runs as given. serve_websocket follows python-engineio's loop as
# of the versions pyproject.toml admits: re-check it when raising that range
# (tests/contract/test_python_engineio_contract.py fails when it changes).
STOCK_HANDLER = AsyncSocket._websocket_handler


def install_websocket(server: HubServer, *, compress: bool) -> None:
    """Serve ``server``'s websockets on aiohttp with :func:`_websocket_class`.

    A copy of the Engine.IO server's driver table: other Engine.IO servers
    in the process keep the stock driver."""
    eio = server.eio
    websocket = _websocket_class(compress=compress, fast_paths=server.fast_paths)
    drivers = {**eio._async, "websocket": websocket}
    if server.fast_paths:
        drivers["translate_request"] = _lean_translate(eio._async["translate_request"])
    eio._async = drivers
