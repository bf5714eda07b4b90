"""The hub as an ASGI app, served by uvicorn."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import socketio
import uvicorn  # optional: the CLI turns its absence into an install hint

from ..config import HubConfig
from ..hub import Hub
from ..hub.http_api import HttpApi, HttpRequest, HttpResponse
from ..hub.metrics import MetricsEndpoint
from . import freeze_startup_objects


async def _read_body(receive: Any, cap: int) -> bytes | None:
    """The request body, or None once it is over ``cap`` bytes (what is
    left is not read)."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return bytes(body)
        body += message.get("body", b"")
        if len(body) > cap:
            return None
        if not message.get("more_body"):
            return bytes(body)


async def _send(send: Any, answer: HttpResponse) -> None:
    headers = [(k.lower().encode(), v.encode()) for k, v in answer.headers.items()]
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})


def create_app(hub: Hub) -> Any:
    api = HttpApi(hub)
    metrics = MetricsEndpoint(hub) if hub.config.metrics else None

    async def http_api(scope: dict[str, Any], receive: Any) -> HttpResponse:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > api.max_body_bytes:
            return api.too_large()
        body = await _read_body(receive, api.max_body_bytes)
        if body is None:
            return api.too_large()
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        raw_path = scope.get("raw_path") or scope["path"].encode()
        path = raw_path.decode("latin-1").split("?")[0].removeprefix("/api")
        return await api.handle(HttpRequest(scope["method"], path, query, headers, body))

    async def health(scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path")
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await hub.start()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await hub.stop()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] == "http" and isinstance(path, str) and path.startswith("/api/"):
            await _send(send, await http_api(scope, receive))
            return
        if scope["type"] == "http" and path == "/metrics" and metrics is not None:
            headers = {
                k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]
            }
            await _send(send, metrics.handle(headers))
            return
        if path in {"/healthz", "/readyz"}:
            ok = path == "/healthz" or hub.ready
            body = b'{"ok": true}' if ok else b'{"ok": false}'
            await send(
                {
                    "type": "http.response.start",
                    "status": 200 if ok else 503,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"not found"})

    return socketio.ASGIApp(hub.sio, other_asgi_app=health, socketio_path="socket.io")


async def serve(config: HubConfig, *, ready: Callable[[str], None] | None = None) -> None:
    hub = Hub(config, async_mode="asgi")
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(hub),
            host=config.host,
            port=config.port,
            log_level="warning",
            # uvicorn's own logging config gives its loggers handlers of their
            # own (and stops them propagating): they would bypass rtkit's
            # format and credential filter. Without it they reach the root's.
            log_config=None,
            lifespan="on",
            ws_per_message_deflate=config.websocket_compression,
        )
    )
    task = asyncio.ensure_future(server.serve())
    try:
        while not server.started:
            if task.done():
                await task
                return
            await asyncio.sleep(0.02)
        freeze_startup_objects()
        if ready is not None:
            ready(f"http://{config.host}:{config.port}")
        await task
    finally:
        server.should_exit = True
        await asyncio.wait_for(asyncio.shield(task), 10)
