"""The hub on tornado (the Jupyter server's web framework).

Two things python-engineio's tornado driver does not do, and this host does:

- TCP_NODELAY on websocket connections. Without it Nagle's algorithm holds a
  small frame back until the previous one is acknowledged, tens of
  milliseconds with delayed ACKs.
- A direct frame writer for the hub's fan-out (``FRAME_WRITER_KEY``): the
  driver's ``send`` goes through ``write_message``, which frames the message
  again and creates a task per message and per recipient. Fan-out instead
  writes its one prebuilt frame to each connection's IOStream. The writer
  and the environ hook that installs it live in
  :mod:`rtkit.hub.transport.tornado_stream` (they use tornado's and
  python-engineio's internals); ``RTKIT_FAST_PATHS=0`` turns the writer off.

A handler can add entries to the Engine.IO environ of its request (which the
hub's :class:`~rtkit.hub.auth.Authenticator` receives) through the attribute
``rtkit_environ``; the Jupyter extension passes the Jupyter user that way.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import socketio
import tornado.web
from tornado.websocket import WebSocketHandler

from ..config import HubConfig
from ..hub import Hub
from ..hub.http_api import Caller, HttpApi, HttpRequest, HttpResponse
from ..hub.metrics import MetricsEndpoint
from ..hub.transport.guard import decode_engineio, violations
from ..hub.transport.tornado_stream import install_translate_request
from . import freeze_startup_objects

# The handler attribute whose dict is merged into the request's environ.
ENVIRON_ATTRIBUTE = "rtkit_environ"


def socketio_handler(hub: Hub, *, direct_writes: bool = True) -> type[WebSocketHandler]:
    """python-socketio's tornado handler with TCP_NODELAY, compression as
    configured and the direct frame writer (see the module docstring;
    ``direct_writes=False``, or the fast paths off, leaves every write to
    Engine.IO, for comparison)."""
    base: Any = socketio.get_tornado_handler(hub.sio)
    compress = hub.config.websocket_compression
    install_translate_request(
        hub.sio,
        environ_attribute=ENVIRON_ATTRIBUTE,
        compress=compress,
        direct_writes=direct_writes,
    )

    class Handler(base):  # type: ignore[misc]
        async def get(self, *args: Any, **kwargs: Any) -> None:
            # tornado answers a websocket upgrade before Engine.IO sees the
            # request, so an address over its cap of sessions still joining
            # is refused here, as Engine.IO refuses a handshake (HTTP 401).
            environ = {
                "tornado.handler": self,
                "HTTP_X_FORWARDED_FOR": self.request.headers.get("X-Forwarded-For", ""),
            }
            refused = hub.sio.guard.refusal(environ)
            if refused is not None:
                self.set_status(401)
                self.set_header("Content-Type", "application/json")
                self.finish(json.dumps(refused))
                return
            await super().get(*args, **kwargs)

        async def on_message(self, message: str | bytes) -> None:
            # python-engineio's loop fails on a frame that is not Engine.IO
            # with a traceback (per frame, or once, leaving the socket open);
            # it is a protocol violation: close, with one rate-limited line.
            if decode_engineio(message) is None:
                violations.info(
                    "closing a websocket from %s: it sent a frame that is not Engine.IO",
                    self.request.remote_ip,
                )
                self.close(1002, "not an Engine.IO packet")
                return
            await super().on_message(message)

        async def open(self, *args: Any, **kwargs: Any) -> None:
            self.set_nodelay(True)
            await super().open(*args, **kwargs)

        def get_compression_options(self) -> dict[str, Any] | None:
            return {} if compress else None

    handler: type[WebSocketHandler] = Handler
    return handler


@tornado.web.stream_request_body
class HttpApiHandler(tornado.web.RequestHandler):
    """The hub's HTTP API (:mod:`rtkit.hub.http_api`) on tornado, at
    ``.../api/(.*)``. The body streams in, so one over the API's cap is
    dropped as it arrives instead of held whole. A subclass with its own
    login (the Jupyter extension's) overrides :meth:`caller`."""

    def initialize(self, api: HttpApi, prefix: str = "/api") -> None:
        self.api = api
        # The raw path after it is the API's: tornado's path arguments are
        # percent-decoded, and a channel name may hold an encoded "/".
        self.prefix = prefix
        self._body = bytearray()
        self._over = False
        self._read_all = False

    async def prepare(self) -> None:
        declared = self.request.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.api.max_body_bytes:
            self._over = True

    def data_received(self, chunk: bytes) -> None:
        if self._over:
            return
        self._body += chunk
        if len(self._body) > self.api.max_body_bytes:
            self._over = True
            self._body = bytearray()

    async def caller(self) -> Caller | HttpResponse | None:
        """Who calls: None to let the API read the request's credentials,
        or an answer that refuses the request."""
        return None

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if not self._read_all:
            # Refused before its body was read (a login or XSRF check):
            # tornado drops the connection after this answer, so the
            # client must not send its next request on it.
            self.set_header("Connection", "close")
        super().write_error(status_code, **kwargs)

    async def _serve(self, path: str) -> None:
        self._read_all = True
        if self._over:
            answer = self.api.too_large()
        else:
            caller = await self.caller()
            if isinstance(caller, HttpResponse):
                answer = caller
            else:
                request = HttpRequest(
                    self.request.method or "GET",
                    self.request.path.removeprefix(self.prefix),
                    {k: v[-1].decode() for k, v in self.request.query_arguments.items()},
                    {k.lower(): v for k, v in self.request.headers.items()},
                    bytes(self._body),
                )
                answer = await self.api.handle(request, caller)
        self.set_status(answer.status)
        for name, value in answer.headers.items():
            self.set_header(name, value)
        self.set_header("Cache-Control", "no-store")
        self.finish(answer.body)

    async def get(self, path: str) -> None:
        await self._serve(path)

    async def post(self, path: str) -> None:
        await self._serve(path)


class MetricsHandler(tornado.web.RequestHandler):
    """``GET /metrics``: the hub's Prometheus metrics (:mod:`rtkit.hub.metrics`)."""

    def initialize(self, endpoint: MetricsEndpoint) -> None:
        self.endpoint = endpoint

    def get(self) -> None:
        answer = self.endpoint.handle({k.lower(): v for k, v in self.request.headers.items()})
        self.set_status(answer.status)
        for name, value in answer.headers.items():
            self.set_header(name, value)
        self.finish(answer.body)


def create_app(hub: Hub) -> tornado.web.Application:
    hub_handler = socketio_handler(hub)

    class Health(tornado.web.RequestHandler):
        def get(self) -> None:
            self.write({"ok": True})

    class Ready(tornado.web.RequestHandler):
        def get(self) -> None:
            self.set_status(200 if hub.ready else 503)
            self.write({"ready": hub.ready})

    routes: list[Any] = [
        (r"/socket.io/", hub_handler),
        (r"/healthz", Health),
        (r"/readyz", Ready),
        (r"/api/(.*)", HttpApiHandler, {"api": HttpApi(hub)}),
    ]
    if hub.config.metrics:
        routes.append((r"/metrics", MetricsHandler, {"endpoint": MetricsEndpoint(hub)}))
    return tornado.web.Application(routes)


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
