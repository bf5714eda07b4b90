"""The hub as an ASGI app, served by uvicorn."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import socketio
import uvicorn  # optional: the CLI turns its absence into an install hint

from ..config import HubConfig
from ..hub import Hub
from . import freeze_startup_objects


def create_app(hub: Hub) -> Any:
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
