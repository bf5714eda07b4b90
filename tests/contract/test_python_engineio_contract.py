"""What rtkit.hub.transport relies on in python-engineio: its server's
socket table and driver table, a socket's queue and flags, the packet
class, and the websocket loop that the aiohttp fast reader re-implements."""

from __future__ import annotations

import asyncio
import hashlib
import inspect

import engineio
from engineio import packet as eio_packet
from engineio.async_drivers import aiohttp as eio_aiohttp
from engineio.async_socket import AsyncSocket

from rtkit.hub.transport import EncodedPacket
from rtkit.hub.transport.aiohttp_websocket import STOCK_HANDLER
from rtkit.hub.transport.sockets import PACKET_OVERHEAD, ByteQueue, Transports

SOCKETS = "rtkit.hub.transport.sockets"
AIOHTTP = "rtkit.hub.transport.aiohttp_websocket"
TORNADO = "rtkit.hub.transport.tornado_stream"
PACKETS = "rtkit.hub.transport.packets"

# sha256 of inspect.getsource(AsyncSocket._websocket_handler) in the
# python-engineio releases pyproject.toml admits.
STOCK_WEBSOCKET_LOOP_SHA256 = "27f120df4d717a24478b7b0f7389ce19eea8a881dd07e2c81fb1cf2493e006a5"


def test_the_websocket_loop_the_fast_reader_follows_is_unchanged() -> None:
    source = inspect.getsource(AsyncSocket._websocket_handler)
    digest = hashlib.sha256(source.encode()).hexdigest()
    assert digest == STOCK_WEBSOCKET_LOOP_SHA256, (
        "python-engineio's AsyncSocket._websocket_handler changed. "
        f"{AIOHTTP}.serve_websocket repeats its protocol steps (upgrade probe, "
        "writer task, ping deadline, close, size limit, cleanup): port whatever "
        "changed there, run tests/integration/test_transport.py, then record the "
        f"new hash here ({digest})"
    )
    assert STOCK_HANDLER is AsyncSocket._websocket_handler


def test_a_websocket_is_served_by_the_driver_table_with_the_stock_handler() -> None:
    upgrade = inspect.getsource(AsyncSocket._upgrade_websocket)
    assert "self.server._async['websocket'](" in upgrade.replace('"', "'"), (
        f"websockets are no longer made from the server's _async table ({AIOHTTP})"
    )
    assert "self._websocket_handler" in upgrade, (
        f"the websocket no longer gets the socket's _websocket_handler ({AIOHTTP})"
    )
    for mode, key in (("aiohttp", "websocket"), ("tornado", "translate_request")):
        server = engineio.AsyncServer(async_mode=mode)
        table = getattr(server, "_async", None)
        assert isinstance(table, dict) and callable(table.get(key)), (
            f"engineio.AsyncServer._async[{key!r}] ({mode}) is gone "
            f"({AIOHTTP if mode == 'aiohttp' else TORNADO})"
        )


def test_the_aiohttp_driver_websocket_has_what_the_subclass_uses() -> None:
    websocket = eio_aiohttp.WebSocket
    assert list(inspect.signature(websocket.__init__).parameters) == [
        "self",
        "handler",
        "server",
    ], f"eio_aiohttp.WebSocket(handler, server) changed ({AIOHTTP})"
    for name in ("__call__", "wait", "send", "close"):
        assert inspect.iscoroutinefunction(getattr(websocket, name, None)), (
            f"eio_aiohttp.WebSocket.{name} is gone or not async ({AIOHTTP})"
        )
    call = inspect.getsource(websocket.__call__)
    assert "self._sock = WebSocketResponse(" in call and "self.environ = environ" in call, (
        f"eio_aiohttp.WebSocket no longer keeps _sock and environ ({AIOHTTP})"
    )
    wait = inspect.getsource(websocket.wait)
    assert "self._sock.receive()" in wait and "raise OSError" in wait, (
        f"eio_aiohttp.WebSocket.wait changed ({AIOHTTP}: wait, serve_websocket)"
    )


async def test_a_socket_has_the_queue_and_flags_the_transport_uses() -> None:
    server = engineio.AsyncServer(async_mode="aiohttp")
    assert isinstance(server.sockets, dict), f"engineio.AsyncServer.sockets ({SOCKETS})"
    socket = AsyncSocket(server, "sid1")
    assert isinstance(socket.queue, asyncio.Queue), f"AsyncSocket.queue ({SOCKETS})"
    for flag in ("closed", "connected", "upgrading", "upgraded"):
        assert getattr(socket, flag) is False, f"AsyncSocket.{flag} ({SOCKETS}, {AIOHTTP})"
    for name in ("sid", "server"):
        assert hasattr(socket, name), f"AsyncSocket.{name} ({AIOHTTP})"
    for name in ("poll", "receive", "close", "send"):
        assert inspect.iscoroutinefunction(getattr(socket, name)), f"AsyncSocket.{name}"
    assert list(inspect.signature(socket.close).parameters) == ["wait", "abort", "reason"], (
        f"AsyncSocket.close(wait, abort, reason) changed ({AIOHTTP})"
    )
    for name in ("max_http_buffer_size", "ping_interval", "ping_timeout", "handlers"):
        assert hasattr(server, name), f"engineio.AsyncServer.{name} ({AIOHTTP})"
    assert server.reason.TRANSPORT_CLOSE, f"engineio reason TRANSPORT_CLOSE ({AIOHTTP})"

    # queue_packet stands for the public send: a packet on the socket's queue.
    pkt = eio_packet.Packet(eio_packet.MESSAGE, "2hello")
    await socket.send(pkt)
    assert socket.queue.get_nowait() is pkt, (
        f"AsyncSocket.send no longer queues on AsyncSocket.queue ({SOCKETS}.queue_packet)"
    )
    # and poll, which the writer task awaits, takes what was queued.
    server.sockets["sid1"] = socket
    transports = Transports(server, fast_paths=True)
    transport = transports.open("sid1")
    assert transport is not None and transport.depth() == 0 and not transport.closed
    transport.queue_packet(pkt)
    assert transport.depth() == 1
    assert await socket.poll() == [pkt], f"AsyncSocket.poll no longer drains queue ({SOCKETS})"


def test_encoded_packets_encode_as_engineio_packets_do() -> None:
    stock = eio_packet.Packet(eio_packet.MESSAGE, '2/rtkit,["x",1]')
    ours = EncodedPacket("4" + stock.data)
    assert ours.encode() == stock.encode(), f"Engine.IO MESSAGE encoding changed ({PACKETS})"
    assert (ours.packet_type, ours.data, ours.binary) == (stock.packet_type, stock.data, False)
    assert eio_packet.packet_names[eio_packet.MESSAGE] == "MESSAGE"
    decoded = eio_packet.Packet(encoded_packet=ours.encode())
    assert (decoded.packet_type, decoded.data) == (eio_packet.MESSAGE, stock.data)


async def test_a_socket_takes_its_queue_from_the_servers_create_queue() -> None:
    # The send budget counts bytes in the queue Transports installs as the
    # server's create_queue (an instance attribute: other servers keep theirs).
    server = engineio.AsyncServer(async_mode="aiohttp")
    Transports(server, fast_paths=False)
    socket = AsyncSocket(server, "sid")
    assert isinstance(socket.queue, ByteQueue), (
        f"AsyncSocket no longer gets its queue from server.create_queue() ({SOCKETS})"
    )
    assert not isinstance(engineio.AsyncServer(async_mode="aiohttp").create_queue(), ByteQueue)
    # send() queues the packet object itself, whose data is the payload.
    await socket.send(eio_packet.Packet(eio_packet.MESSAGE, "x" * 1000))
    assert socket.queue.bytes == 1000 + PACKET_OVERHEAD, (
        f"AsyncSocket.send() no longer queues a Packet with its data ({SOCKETS})"
    )
