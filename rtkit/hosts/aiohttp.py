"""The standalone hub on aiohttp (the default host: fastest fan-out in
benchmarks/RESULTS.md).

Its websocket (python-engineio's, with compression as configured, a direct
frame writer and a leaner read loop) is in
:mod:`rtkit.hub.transport.aiohttp_websocket`, with the upstream internals it
relies on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import web

from ..config import HubConfig
from ..hub import Hub
from ..hub.http_api import HttpApi, HttpRequest
from ..hub.metrics import MetricsEndpoint
from ..hub.transport.aiohttp_websocket import install_websocket
from . import freeze_startup_objects


def create_app(hub: Hub) -> web.Application:
    """An aiohttp app serving the hub at /socket.io/ plus /healthz, /readyz,
    the HTTP API at /api/ and (unless turned off) /metrics."""
    install_websocket(hub.sio, compress=hub.config.websocket_compression)
    app = web.Application()
    hub.sio.attach(app, socketio_path="socket.io")

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def readyz(request: web.Request) -> web.Response:
        return web.json_response({"ready": hub.ready}, status=200 if hub.ready else 503)

    api = HttpApi(hub)

    async def http_api(request: web.Request) -> web.Response:
        # The size cap holds before the body is read: a declared length
        # over it is refused at once, an undeclared one read up to it.
        cap = api.max_body_bytes
        if (request.content_length or 0) > cap:
            return _response(api.too_large())
        body = bytearray()
        while chunk := await request.content.readany():
            body += chunk
            if len(body) > cap:
                return _response(api.too_large())
        answer = await api.handle(
            HttpRequest(
                request.method,
                request.rel_url.raw_path.removeprefix("/api"),
                dict(request.rel_url.query),
                {k.lower(): v for k, v in request.headers.items()},
                bytes(body),
            )
        )
        return _response(answer)

    app.router.add_route("*", "/api/{tail:.*}", http_api)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if hub.config.metrics:
        endpoint = MetricsEndpoint(hub)

        async def metrics(request: web.Request) -> web.Response:
            return _response(endpoint.handle({k.lower(): v for k, v in request.headers.items()}))

        app.router.add_get("/metrics", metrics)

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


def _response(answer: Any) -> web.Response:
    return web.Response(status=answer.status, body=answer.body, headers=answer.headers)


def _host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host else host
