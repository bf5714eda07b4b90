"""The standalone hub on aiohttp (the default host: fastest fan-out in
benchmarks/RESULTS.md)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from engineio.async_drivers import aiohttp as eio_aiohttp

from ..config import HubConfig
from ..hub import Hub
from ..hub.fanout import FRAME_WRITER_KEY
from . import freeze_startup_objects

log = logging.getLogger(__name__)


# Above this many bytes waiting in a connection's transport, fan-out stops
# writing to it directly and lets Engine.IO's writer apply backpressure.
DIRECT_WRITE_LIMIT = 1 << 20


class _TransportFrameWriter:
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


def _websocket_class(compress: bool) -> type[Any]:
    class WebSocket(eio_aiohttp.WebSocket):  # type: ignore[misc]
        """python-engineio's aiohttp websocket with permessage-deflate as
        configured (aiohttp would otherwise compress whenever offered), and
        a frame writer for the hub's fan-out."""

        async def __call__(self, environ: dict[str, Any]) -> web.WebSocketResponse:
            request = environ["aiohttp.request"]
            self._sock = web.WebSocketResponse(
                max_msg_size=self.server.max_http_buffer_size, compress=compress
            )
            await self._sock.prepare(request)
            if not compress and request.transport is not None:
                environ[FRAME_WRITER_KEY] = _TransportFrameWriter(request.transport)
            self.environ = environ
            await self.handler(self)
            return self._sock

    return WebSocket


def create_app(hub: Hub) -> web.Application:
    """An aiohttp app serving the hub at /socket.io/ plus /healthz and /readyz."""
    eio = hub.sio.eio
    eio._async = {**eio._async, "websocket": _websocket_class(hub.config.websocket_compression)}
    app = web.Application()
    hub.sio.attach(app, socketio_path="socket.io")

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def readyz(request: web.Request) -> web.Response:
        return web.json_response({"ready": hub.ready}, status=200 if hub.ready else 503)

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)

    async def lifecycle(app: web.Application) -> Any:
        await hub.start()
        yield
        await hub.stop()

    async def drain(app: web.Application) -> None:
        # on_shutdown runs before aiohttp waits for open websockets to close;
        # stopping here tells clients to go, so that wait is short.
        await hub.stop()

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(drain)
    return app


async def serve(config: HubConfig, *, ready: Callable[[str], None] | None = None) -> None:
    """Run the hub until cancelled (SIGINT/SIGTERM stop it cleanly)."""
    hub = Hub(config, async_mode="aiohttp")
    runner = web.AppRunner(
        create_app(hub), handle_signals=False, access_log=None, shutdown_timeout=5.0
    )
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, reuse_address=True)
    await site.start()
    url = f"http://{_host_for_url(config.host)}:{config.port}"
    freeze_startup_objects()
    try:
        if ready is not None:
            ready(url)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def _host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host else host
