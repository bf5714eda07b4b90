"""What rtkit.hub.transport.tornado_stream relies on in tornado (and in
python-engineio's tornado driver), checked on a real websocket over
loopback: the handler's connection, its IOStream's write buffer and raw
socket, and that a frame written behind IOStream's back arrives whole."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import engineio
import pytest
import tornado.httpserver
import tornado.netutil
import tornado.web
import tornado.websocket
from tornado.iostream import IOStream

from rtkit.hub.transport import websocket_text_frame
from rtkit.hub.transport.tornado_stream import StreamBuffered, StreamFrameWriter
from tests.integration.helpers import wait_until

TORNADO = "rtkit.hub.transport.tornado_stream"


class Recorder(tornado.websocket.WebSocketHandler):
    opened: asyncio.Future[Recorder]

    def initialize(self, opened: asyncio.Future[Recorder]) -> None:
        self.opened = opened

    def open(self, *args: Any, **kwargs: Any) -> None:
        self.set_nodelay(True)
        if not self.opened.done():
            self.opened.set_result(self)

    def get_compression_options(self) -> dict[str, Any] | None:
        return None


@pytest.fixture
async def websocket_pair() -> Any:
    opened: asyncio.Future[Recorder] = asyncio.get_running_loop().create_future()
    app = tornado.web.Application([(r"/ws", Recorder, {"opened": opened})])
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    port = sockets[0].getsockname()[1]
    server = tornado.httpserver.HTTPServer(app)
    server.add_sockets(sockets)
    client = await tornado.websocket.websocket_connect(f"ws://127.0.0.1:{port}/ws")
    handler = await asyncio.wait_for(opened, 10)
    try:
        yield handler, client
    finally:
        client.close()
        server.stop()
        await server.close_all_connections()


async def test_a_websocket_connection_has_what_the_frame_writer_reads(
    websocket_pair: Any,
) -> None:
    handler, _client = websocket_pair
    conn = handler.ws_connection
    assert conn is not None, f"WebSocketHandler.ws_connection ({TORNADO})"
    assert conn.is_closing() is False, f"WebSocketProtocol.is_closing() ({TORNADO})"
    assert getattr(conn, "_compressor", "gone") is None, (
        f"WebSocketProtocol13._compressor: None without permessage-deflate ({TORNADO})"
    )
    assert getattr(conn, "mask_outgoing", "gone") is False, (
        f"WebSocketProtocol13.mask_outgoing: False on the server side ({TORNADO})"
    )
    stream = conn.stream
    assert type(stream) is IOStream, f"the connection's stream is an IOStream ({TORNADO})"
    buffered = getattr(stream, "_write_buffer", None)
    assert buffered is not None and len(buffered) == 0, (
        f"IOStream._write_buffer with len() ({TORNADO}: the backpressure check)"
    )
    assert stream.socket is not None and callable(stream.socket.send), (
        f"IOStream.socket ({TORNADO}: the write when nothing is buffered)"
    )
    assert StreamBuffered(handler)() == 0


async def test_write_message_does_not_wait_and_iostream_counts_what_it_holds(
    websocket_pair: Any,
) -> None:
    # python-engineio's tornado driver calls write_message without awaiting
    # it, so its queue empties at once and IOStream holds what the client
    # has not read: the send budget counts IOStream._write_buffer.
    handler, client = websocket_pair
    buffered = StreamBuffered(handler)
    big = "x" * 8_000_000  # more than loopback socket buffers take at once
    handler.write_message(big)
    assert buffered() > 1_000_000, f"IOStream._write_buffer holds the unsent part ({TORNADO})"
    assert await asyncio.wait_for(client.read_message(), 10) == big
    await wait_until(lambda: buffered() == 0, "IOStream to drain")


async def test_frames_written_behind_iostream_arrive_whole_and_in_order(
    websocket_pair: Any,
) -> None:
    handler, client = websocket_pair
    write = StreamFrameWriter(handler)
    big = "x" * 300_000  # more than a socket takes at once: the rest goes through IOStream
    for text in ("first", big, "last"):
        assert write(websocket_text_frame(text.encode())), f"StreamFrameWriter refused ({TORNADO})"
    await handler.write_message("after")  # tornado's own path, after ours
    for text in ("first", big, "last", "after"):
        assert await asyncio.wait_for(client.read_message(), 10) == text


def test_the_engineio_tornado_driver_builds_environs_from_a_handler() -> None:
    server = engineio.AsyncServer(async_mode="tornado")
    translate = server._async["translate_request"]
    assert list(inspect.signature(translate).parameters) == ["handler"], (
        f"engineio's tornado translate_request(handler) changed ({TORNADO})"
    )
