"""The tornado host's hooks into python-engineio's tornado driver.

- :func:`install_translate_request` wraps the driver's environ builder (in
  the Engine.IO server's private ``_async`` table) for one server: a
  handler's ``rtkit_environ`` entries join the environ the hub's
  Authenticator receives, and, with direct writes, the connection's frame
  writer does too.
- :class:`StreamFrameWriter` writes the fan-out's prebuilt frames to a
  websocket's IOStream. tornado has no public "bytes buffered" nor a public
  way to skip ``write_message``'s framing, so it reads IOStream's
  ``_write_buffer`` and the connection's ``_compressor``, and writes to the
  raw socket when nothing is queued in tornado. A fast path: off with
  ``RTKIT_FAST_PATHS=0``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tornado.iostream import IOStream, StreamClosedError
from tornado.websocket import WebSocketHandler

from .base import FRAME_WRITER_KEY, WRITE_BUFFERED_KEY
from .server import HubServer

# Above this many bytes waiting in a connection's IOStream, fan-out stops
# writing to it directly and lets Engine.IO's queue apply backpressure.
DIRECT_WRITE_LIMIT = 1 << 20


class StreamFrameWriter:
    """Writes prebuilt websocket frames straight to a connection's IOStream.

    Only for connections without permessage-deflate (a compressed connection
    needs its own copy of every frame). Server-to-client frames carry no mask,
    so the same bytes go to every subscriber.
    """

    __slots__ = ("_handler",)

    def __init__(self, handler: WebSocketHandler) -> None:
        self._handler = handler

    def __call__(self, frame: bytes) -> bool:
        conn: Any = self._handler.ws_connection
        if conn is None or conn.is_closing():
            return False
        stream = conn.stream
        # IOStream has no public "bytes buffered"; _write_buffer (a
        # _StreamBuffer with __len__) has been there since tornado 5.
        buffered = getattr(stream, "_write_buffer", None)
        if buffered is None:
            return False
        pending = len(buffered)
        data: bytes | memoryview = frame
        if pending == 0 and type(stream) is IOStream:
            # Nothing queued in tornado: the socket gets the frame at once,
            # without IOStream.write's Future and bookkeeping (a third of the
            # cost of a delivery). What does not fit goes through IOStream.
            try:
                sent = stream.socket.send(frame)
            except BlockingIOError:
                sent = 0
            except OSError:
                return False  # the connection is going; Engine.IO finds out
            if sent == len(frame):
                return True
            data = memoryview(frame)[sent:]
        elif pending > DIRECT_WRITE_LIMIT:
            return False
        try:
            stream.write(data)
        except StreamClosedError:
            return False
        return True


class StreamBuffered:
    """The bytes a websocket's IOStream holds unsent (its ``_write_buffer``,
    as :class:`StreamFrameWriter` reads it): part of the connection's send
    budget with the fast paths on or off, since python-engineio's tornado
    driver hands ``write_message`` every packet without waiting for it."""

    __slots__ = ("_handler",)

    def __init__(self, handler: WebSocketHandler) -> None:
        self._handler = handler

    def __call__(self) -> int:
        conn: Any = self._handler.ws_connection
        if conn is None:
            return 0
        buffered = getattr(conn.stream, "_write_buffer", None)
        return len(buffered) if buffered is not None else 0


def install_translate_request(
    server: HubServer, *, environ_attribute: str, compress: bool, direct_writes: bool
) -> None:
    """Wrap the Engine.IO driver's environ builder for ``server`` only.

    The handler's ``environ_attribute`` (a dict) is merged into the environ;
    with ``direct_writes`` (ignored when the fast paths are off) an
    uncompressed websocket also gets a :class:`StreamFrameWriter`."""
    direct_writes = direct_writes and server.fast_paths
    eio = server.eio
    translate: Callable[[Any], dict[str, Any]] = getattr(
        eio._async["translate_request"], "_rtkit_original", eio._async["translate_request"]
    )

    def translate_request(handler: Any) -> dict[str, Any]:
        environ = translate(handler)
        environ.update(getattr(handler, environ_attribute, None) or {})
        if isinstance(handler, WebSocketHandler):
            environ[WRITE_BUFFERED_KEY] = StreamBuffered(handler)
        conn = getattr(handler, "ws_connection", None)
        if (
            direct_writes
            and not compress
            and conn is not None
            and getattr(conn, "_compressor", None) is None
            and not getattr(conn, "mask_outgoing", False)
        ):
            environ[FRAME_WRITER_KEY] = StreamFrameWriter(handler)
        return environ

    translate_request._rtkit_original = translate  # type: ignore[attr-defined]
    # A copy per server, as the aiohttp host does: other Engine.IO servers in
    # the process keep the stock driver.
    eio._async = {**eio._async, "translate_request": translate_request}
