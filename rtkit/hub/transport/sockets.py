"""Engine.IO sockets as :class:`~rtkit.hub.transport.base.Transport`.

The upstream facts used here (tests/contract states each of them):

- python-engineio's server keeps its connections in ``sockets`` (Engine.IO
  sid to ``AsyncSocket``); a socket has a ``closed`` flag and a ``queue``
  (an ``asyncio.Queue``) that its public ``send`` puts packets on and its
  writer task drains. ``queue_packet`` is that ``send`` without the await,
  so a whole fan-out runs synchronously.
- ``asyncio.Queue`` keeps the futures of its waiting ``get`` calls in
  ``_getters``: a writer task parked there holds no packet it has not
  written yet (the idle check of the direct-write fast path). With the fast
  paths off, ``idle`` is always False and nothing is written directly.
"""

from __future__ import annotations

import asyncio
from typing import Any


def writer_idle(queue: asyncio.Queue[Any]) -> bool:
    """True when the task reading ``queue`` is parked waiting for it, i.e.
    it holds no packet it has not written yet. Only then may a frame go
    straight to the transport without overtaking anything (the subscribe
    ack above all)."""
    if not queue.empty():
        return False
    getters: Any = getattr(queue, "_getters", None) or ()
    return any(not g.done() for g in getters)


class EngineIOTransport:
    """One python-engineio ``AsyncSocket`` as the hub's Transport."""

    __slots__ = ("_fast", "_queue", "_socket")

    def __init__(self, socket: Any, *, fast_paths: bool) -> None:
        self._socket = socket
        self._queue: asyncio.Queue[Any] = socket.queue
        self._fast = fast_paths

    @property
    def closed(self) -> bool:
        return bool(self._socket.closed)

    def depth(self) -> int:
        return self._queue.qsize()

    def queue_packet(self, packet: Any) -> None:
        self._queue.put_nowait(packet)

    def idle(self) -> bool:
        return self._fast and writer_idle(self._queue)


class Transports:
    """The transports of a python-engineio server's connections, by sid.

    A transport is made when the hub accepts a connection (:meth:`open`) and
    dropped when it leaves (:meth:`discard`); :meth:`get` is what fan-out
    and acks use on every send, so it is one dict lookup.
    """

    def __init__(self, eio_server: Any, *, fast_paths: bool) -> None:
        self._sockets: dict[str, Any] = eio_server.sockets
        self._open: dict[str, EngineIOTransport] = {}
        self.fast_paths = fast_paths

    def open(self, eio_sid: str) -> EngineIOTransport | None:
        """The transport of a connection Engine.IO holds; None if it is gone."""
        socket = self._sockets.get(eio_sid)
        if socket is None:
            return None
        transport = self._open[eio_sid] = EngineIOTransport(socket, fast_paths=self.fast_paths)
        return transport

    def get(self, eio_sid: str) -> EngineIOTransport | None:
        return self._open.get(eio_sid)

    def discard(self, eio_sid: str) -> None:
        self._open.pop(eio_sid, None)

    def __len__(self) -> int:
        return len(self._open)
