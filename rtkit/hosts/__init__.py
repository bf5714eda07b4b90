"""Web servers that mount a Hub. Only this package (and the Jupyter
extension) knows aiohttp, tornado or ASGI."""

from __future__ import annotations

SERVERS = ("aiohttp", "tornado", "uvicorn")
