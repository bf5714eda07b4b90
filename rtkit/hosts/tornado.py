"""The hub on tornado (the Jupyter server's web framework)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import socketio
import tornado.web

from ..config import HubConfig
from ..hub import Hub


def socketio_handler(hub: Hub) -> type[tornado.web.RequestHandler]:
    """python-socketio's tornado handler with TCP_NODELAY and compression as
    configured: python-engineio never sets TCP_NODELAY, and Nagle's algorithm
    then holds small frames back for tens of milliseconds."""
    base: Any = socketio.get_tornado_handler(hub.sio)
    compress = hub.config.websocket_compression

    class Handler(base):  # type: ignore[misc]
        async def open(self, *args: Any, **kwargs: Any) -> None:
            self.set_nodelay(True)
            await super().open(*args, **kwargs)

        def get_compression_options(self) -> dict[str, Any] | None:
            return {} if compress else None

    return Handler


def create_app(hub: Hub) -> tornado.web.Application:
    hub_handler = socketio_handler(hub)

    class Health(tornado.web.RequestHandler):
        def get(self) -> None:
            self.write({"ok": True})

    class Ready(tornado.web.RequestHandler):
        def get(self) -> None:
            self.set_status(200 if hub.running else 503)
            self.write({"ready": hub.running})

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
    try:
        if ready is not None:
            ready(f"http://{config.host}:{config.port}")
        await asyncio.Event().wait()
    finally:
        server.stop()
        await hub.stop()
