"""What rtkit.hub.transport.guard relies on in python-socketio and python-engineio."""

from __future__ import annotations

import inspect

import engineio
import pytest
import socketio
from engineio import async_socket
from engineio.async_drivers import aiohttp as eio_aiohttp
from engineio.async_drivers import asgi as eio_asgi
from engineio.async_drivers import tornado as eio_tornado

from rtkit.hub.transport.guard import BoundedPacket, ProtocolViolation, bounded_packet_class
from rtkit.hub.transport.server import create_server

GUARD = "rtkit.hub.transport.guard"


def test_socketio_registers_three_engineio_handlers_the_guard_wraps() -> None:
    plain = socketio.AsyncServer(async_mode="aiohttp")
    assert set(plain.eio.handlers) >= {"connect", "message", "disconnect"}, (
        f"python-socketio no longer registers its Engine.IO handlers with on() ({GUARD})"
    )
    server = create_server(fast_paths=False, async_mode="aiohttp")
    for name in ("connect", "message", "disconnect"):
        handler = server.eio.handlers[name]
        assert getattr(handler, "__self__", None) is server.guard, f"{name} is not guarded"


def test_socketio_decodes_messages_with_the_packet_class_and_lets_errors_out() -> None:
    source = inspect.getsource(socketio.AsyncServer._handle_eio_message)
    # BoundedPacket's caps apply only if every message is decoded by the
    # server's packet_class and every binary frame goes to add_attachment.
    assert "self.packet_class(encoded_packet=data)" in source, GUARD
    assert ".add_attachment(data)" in source, GUARD
    # ... and SessionGuard closes the socket on what raises out of it.
    assert "try:" not in source, f"_handle_eio_message now catches errors itself ({GUARD})"


def test_a_packet_decode_returns_its_attachment_count() -> None:
    count = socketio.packet.Packet().decode('52-/rtkit,1["publish",{}]')
    assert count == 2, GUARD


def test_bounded_packets_refuse_too_many_or_too_large_attachments() -> None:
    cls = bounded_packet_class(BoundedPacket, max_attachments=2, max_attachment_bytes=10)
    with pytest.raises(ProtocolViolation):
        cls(encoded_packet='53-/rtkit,1["x",{}]')
    pkt = cls(
        encoded_packet='52-/rtkit,1["x",[{"_placeholder":true,"num":0},'
        '{"_placeholder":true,"num":1}]]'
    )
    assert pkt.add_attachment(b"12345") is False
    with pytest.raises(ProtocolViolation):
        pkt.add_attachment(b"123456")
    assert len(pkt.attachments) == 1, "a refused attachment must not be kept"


def test_engineio_refuses_a_handshake_its_connect_handler_answers_otherwise() -> None:
    # SessionGuard returns a dict from the connect handler to refuse: sent as
    # the 401 response's JSON body.
    source = inspect.getsource(engineio.AsyncServer._handle_connect)
    assert "ret is not None and ret is not True" in source, GUARD
    assert "self._unauthorized(ret or None)" in source, GUARD
    answer = engineio.AsyncServer()._unauthorized({"code": "rate_limited"})
    assert answer["status"].startswith("401"), GUARD
    assert b"rate_limited" in answer["response"], GUARD


def test_engineio_sockets_close_without_waiting_and_end_their_writer_on_none() -> None:
    params = inspect.signature(async_socket.AsyncSocket.close).parameters
    assert {"wait", "abort", "reason"} <= set(params), GUARD
    poll = inspect.getsource(async_socket.AsyncSocket.poll)
    assert "[None]" in poll, f"poll no longer ends on a queued None ({GUARD}.SessionGuard.close)"
    close = inspect.getsource(async_socket.AsyncSocket.close)
    assert "self.closing = True" in close and "self.closed = True" in close, GUARD


def test_engineio_drivers_fake_the_remote_address_and_carry_the_request() -> None:
    # client_address reads the peer from the host's request object because
    # every driver puts a fixed REMOTE_ADDR in the environ.
    for module, key in (
        (eio_aiohttp, "'aiohttp.request'"),
        (eio_tornado, "'tornado.handler'"),
        (eio_asgi, "'asgi.scope'"),
    ):
        source = inspect.getsource(module.translate_request)
        assert "'REMOTE_ADDR': '127.0.0.1'" in source, f"{module.__name__}: re-check {GUARD}"
        assert key in source, f"{module.__name__} no longer passes {key} ({GUARD})"


def test_the_tornado_handler_upgrades_before_engineio_sees_the_request() -> None:
    # Why rtkit.hosts.tornado checks the per-address cap in get(): Engine.IO
    # runs from open(), after tornado has answered the upgrade with 101.
    handler = eio_tornado.get_tornado_handler(engineio.AsyncServer(async_mode="tornado"))
    assert "handle_request" in inspect.getsource(handler.open), GUARD
    assert "super().get" in inspect.getsource(handler.get), GUARD


def test_the_tornado_handler_queues_every_message_for_the_engineio_loop() -> None:
    # rtkit.hosts.tornado checks each frame in on_message before it reaches
    # python-engineio's loop, which fails on a frame that is not Engine.IO.
    handler = eio_tornado.get_tornado_handler(engineio.AsyncServer(async_mode="tornado"))
    assert "receive_queue.put" in inspect.getsource(handler.on_message), GUARD
