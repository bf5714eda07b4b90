"""Web servers that mount a Hub. Only this package, the Jupyter extension
and the host-specific modules of :mod:`rtkit.hub.transport` (which only the
host they serve imports) know aiohttp, tornado or ASGI."""

from __future__ import annotations

SERVERS = ("aiohttp", "tornado", "uvicorn")

# The cyclic GC's third threshold (full collections), default 10. See
# freeze_startup_objects.
FULL_COLLECTION_THRESHOLD = 1000


def freeze_startup_objects() -> None:
    """Move every object alive after start-up (modules, the web server, the
    hub) out of the cyclic GC's full collections (gc.freeze): otherwise each
    full collection walks them all and stalls the event loop for tens of
    milliseconds, which shows up as the hub's tail latency.

    And make full collections rarer: each walks every object of every
    connection (about 150 per idle connection), and by default one runs
    every 10 young-generation collections once the heap has grown by a
    quarter. While 10,000 clients connect that was a third of the hub's
    CPU time (2.1 s of GC for 10,000 connects, 0.3 s with
    :data:`FULL_COLLECTION_THRESHOLD`); the young generations, where
    short-lived garbage dies, keep their defaults. Only hosts that own
    their process call this."""
    import gc

    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_THRESHOLD)


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
