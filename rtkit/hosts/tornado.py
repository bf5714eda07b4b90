"""The hub on tornado (the Jupyter server's web framework).

Two things python-engineio's tornado driver does not do, and this host does:

- TCP_NODELAY on websocket connections. Without it Nagle's algorithm holds a
  small frame back until the previous one is acknowledged, tens of
  milliseconds with delayed ACKs.
- A direct frame writer for the hub's fan-out (``FRAME_WRITER_KEY``): the
  driver's ``send`` goes through ``write_message``, which frames the message
  again and creates a task per message and per recipient. Fan-out instead
  writes its one prebuilt frame to each connection's IOStream.

A handler can add entries to the Engine.IO environ of its request (which the
hub's :class:`~rtkit.hub.auth.Authenticator` receives) through the attribute
``rtkit_environ``; the Jupyter extension passes the Jupyter user that way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import socketio
import tornado.web
from tornado.iostream import IOStream, StreamClosedError
from tornado.websocket import WebSocketHandler

from ..config import HubConfig
from ..hub import Hub
from ..hub.fanout import FRAME_WRITER_KEY
from . import freeze_startup_objects

# Above this many bytes waiting in a connection's IOStream, fan-out stops
# writing to it directly and lets Engine.IO's queue apply backpressure.
DIRECT_WRITE_LIMIT = 1 << 20

# The handler attribute whose dict is merged into the request's environ.
ENVIRON_ATTRIBUTE = "rtkit_environ"


class _StreamFrameWriter:
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


def _install_translate_request(hub: Hub, direct_writes: bool) -> None:
    """Wrap the Engine.IO driver's environ builder for ``hub``'s server only."""
    eio = hub.sio.eio
    translate: Callable[[Any], dict[str, Any]] = getattr(
        eio._async["translate_request"], "_rtkit_original", eio._async["translate_request"]
    )
    compress = hub.config.websocket_compression

    def translate_request(handler: Any) -> dict[str, Any]:
        environ = translate(handler)
        environ.update(getattr(handler, ENVIRON_ATTRIBUTE, None) or {})
        conn = getattr(handler, "ws_connection", None)
        if (
            direct_writes
            and not compress
            and conn is not None
            and getattr(conn, "_compressor", None) is None
            and not getattr(conn, "mask_outgoing", False)
        ):
            environ[FRAME_WRITER_KEY] = _StreamFrameWriter(handler)
        return environ

    translate_request._rtkit_original = translate  # type: ignore[attr-defined]
    # A copy per server, as the aiohttp host does: other Engine.IO servers in
    # the process keep the stock driver.
    eio._async = {**eio._async, "translate_request": translate_request}


def socketio_handler(hub: Hub, *, direct_writes: bool = True) -> type[WebSocketHandler]:
    """python-socketio's tornado handler with TCP_NODELAY, compression as
    configured and the direct frame writer (see the module docstring;
    ``direct_writes=False`` leaves every write to Engine.IO, for comparison)."""
    base: Any = socketio.get_tornado_handler(hub.sio)
    compress = hub.config.websocket_compression
    _install_translate_request(hub, direct_writes)

    class Handler(base):  # type: ignore[misc]
        async def open(self, *args: Any, **kwargs: Any) -> None:
            self.set_nodelay(True)
            await super().open(*args, **kwargs)

        def get_compression_options(self) -> dict[str, Any] | None:
            return {} if compress else None

    handler: type[WebSocketHandler] = Handler
    return handler


def create_app(hub: Hub) -> tornado.web.Application:
    hub_handler = socketio_handler(hub)

    class Health(tornado.web.RequestHandler):
        def get(self) -> None:
            self.write({"ok": True})

    class Ready(tornado.web.RequestHandler):
        def get(self) -> None:
            self.set_status(200 if hub.ready else 503)
            self.write({"ready": hub.ready})

    return tornado.web.Application(
        [
            (r"/socket.io/", hub_handler),
            (r"/healthz", Health),
            (r"/readyz", Ready),
        ]
    )


async def serve(config: HubConfig, *, ready: Callable[[str], None] | None = None) -> None:
    hub = Hub(config, async_mode="tornado")
    app = create_app(hub)
    await hub.start()
    server = app.listen(config.port, address=config.host, xheaders=False)
    freeze_startup_objects()
    try:
        if ready is not None:
            ready(f"http://{config.host}:{config.port}")
        await asyncio.Event().wait()
    finally:
        server.stop()
        await hub.stop()
