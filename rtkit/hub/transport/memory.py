"""Giving memory back after a burst.

A hub's big buffers come and go in bursts: a 4 MiB history ack, a 250 KB
message, a document sync, the unread acks of a client that went away. Two
things keep that memory in the process long after the burst is over, and
this module answers both:

- **The allocator.** glibc serves requests of 128 KiB and more with their
  own ``mmap`` and unmaps them on ``free``, but after the first such free it
  raises that threshold (up to 32 MiB) and serves them from the heap, where
  freed memory stays with the process; its per-thread arenas (the store's
  threads) keep theirs too. :func:`tune_allocator` fixes the thresholds and
  caps the arenas, for about a page-mapping's cost per large buffer. It is
  for processes rtkit owns (``rtkit hub``): inside Jupyter the process is
  the user's, and its allocator is left as it is.
- **Reference cycles.** A websocket that fails mid-write leaves cycles
  between aiohttp's response, its stored error and the frames of the write,
  which hold the frame being written. The interpreter's full collection
  runs when enough new container objects have been made: on a hub that
  mostly moves big strings, minutes later. :func:`collect_soon` runs one
  a few seconds after such a failure (at most one per interval, never on
  the path of a message), then hands free heap pages back to the system.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import sys
from typing import Any

# mallopt(3) parameter numbers, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

# Requests at least this large always get a mapping of their own, and the
# heap gives back free memory above this much at its top.
MMAP_THRESHOLD = 64 * 1024
TRIM_THRESHOLD = 64 * 1024
# Arenas for the threads (the SQLite store's, the default executor's).
ARENA_MAX = 2

# Seconds between a failed websocket and the collection it asks for.
COLLECT_AFTER = 5.0


def _glibc() -> Any | None:
    """glibc's handle, or None where the C library is another (musl and
    macOS give large blocks back already)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 (glibc only: musl has no such symbol)
    except (OSError, AttributeError):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    libc.malloc_trim.restype = ctypes.c_int
    return libc


_LIBC = _glibc()


def tune_allocator() -> bool:
    """Set glibc's thresholds and arena cap (above); False where the C
    library is not glibc or refused. Call it before the process starts
    threads."""
    if _LIBC is None:
        return False
    settings = [
        (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
        (_M_ARENA_MAX, ARENA_MAX),
    ]
    return all(_LIBC.mallopt(param, value) == 1 for param, value in settings)


class _Collector:
    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending: asyncio.TimerHandle | None = None

    def collect_soon(self) -> None:
        if self._pending is None:
            loop = asyncio.get_running_loop()
            self._pending = loop.call_later(COLLECT_AFTER, self._collect)

    def _collect(self) -> None:
        self._pending = None
        gc.collect()
        if _LIBC is not None:
            _LIBC.malloc_trim(0)


_collector = _Collector()


def collect_soon() -> None:
    """Collect reference cycles and return free heap pages, in a few seconds
    (one collection for all the failures until then)."""
    _collector.collect_soon()
