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


def raise_open_file_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit, as
    servers do: every connection holds a file descriptor, and the usual soft
    default of 1024 would cap a hub at about a thousand clients. Returns the
    soft limit in force. Only hosts that own their process call this."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # An unlimited hard limit (macOS) is not a number setrlimit takes back.
    wanted = hard if hard != resource.RLIM_INFINITY else 1 << 20
    for target in (wanted, 65536):
        if soft >= target:
            return soft
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            continue
        return target
    return soft
