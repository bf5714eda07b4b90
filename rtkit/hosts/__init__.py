"""Web servers that mount a Hub. Only this package, the Jupyter extension
and the host-specific modules of :mod:`rtkit.hub.transport` (which only the
host they serve imports) know aiohttp, tornado or ASGI."""

from __future__ import annotations

SERVERS = ("aiohttp", "tornado", "uvicorn")


def freeze_startup_objects() -> None:
    """Move every object alive after start-up (modules, the web server, the
    hub) out of the cyclic GC's full collections (gc.freeze): otherwise each
    full collection walks them all and stalls the event loop for tens of
    milliseconds, which shows up as the hub's tail latency. Only hosts that
    own their process call this."""
    import gc

    gc.collect()
    gc.freeze()
