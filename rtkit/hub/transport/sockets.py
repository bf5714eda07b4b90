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
- A socket's queue is made by its server's public ``create_queue()``
  (``BaseSocket.__init__``), and ``asyncio.Queue`` moves every item in and
  out through its ``_put`` and ``_get`` hooks (the ones ``PriorityQueue``
  overrides). :class:`ByteQueue` counts the bytes of the packets it holds
  there, with the fast paths on or off: how many bytes a connection has
  not yet taken off the hub is what its send budget is measured in, with
  what the host buffers below the queue (a :data:`WriteBuffered` from the
  host: python-engineio's tornado driver does not wait for
  ``write_message``, so there the queue stays empty and IOStream buffers).
"""

from __future__ import annotations

import asyncio
from typing import Any

from .base import WriteBuffered

# How often a request waiting for the send budget looks at what the host
# buffers (tornado's IOStream drains without telling anyone).
BUFFER_POLL = 0.05

# What a queued packet costs besides its payload (the Packet object, the
# deque slot): so that many tiny packets count too.
PACKET_OVERHEAD = 100


def packet_bytes(packet: Any) -> int:
    """About what ``packet`` (an Engine.IO packet, or None) holds in memory:
    its payload's length plus :data:`PACKET_OVERHEAD`. ``len`` of a str is
    its characters, not its UTF-8 bytes: close enough for JSON, which is
    mostly ASCII, and O(1)."""
    data = getattr(packet, "data", None)
    if isinstance(data, str | bytes | bytearray):
        return len(data) + PACKET_OVERHEAD
    return PACKET_OVERHEAD


class ByteQueue(asyncio.Queue[Any]):
    """Engine.IO's send queue, counting the bytes it holds (:attr:`bytes`)
    and waking :meth:`wait_below` callers when its writer drains it."""

    def _init(self, maxsize: int) -> None:
        super()._init(maxsize)
        self.bytes = 0
        self._below: list[tuple[int, asyncio.Future[None]]] = []

    def _put(self, item: Any) -> None:
        super()._put(item)
        self.bytes += packet_bytes(item)

    def _get(self) -> Any:
        item = super()._get()
        self.bytes -= packet_bytes(item)
        if self._below:
            self._wake()
        return item

    def _wake(self) -> None:
        waiting = []
        for limit, fut in self._below:
            if fut.done():
                continue
            if self.bytes < limit:
                fut.set_result(None)
            else:
                waiting.append((limit, fut))
        self._below = waiting

    def drop(self) -> None:
        """Forget every packet still queued: called once the connection's
        writer has ended, when nobody will ever write them. python-engineio
        keeps a closed socket (and so its queue) alive until its ping task
        wakes, up to ``ping_interval`` later: without this, the unread acks
        of a client that left stay in memory that long."""
        while not self.empty():
            self.get_nowait()
            self.task_done()

    async def wait_below(self, limit: int, within: float) -> bool:
        """Wait until fewer than ``limit`` bytes are queued; False if that
        did not happen within ``within`` seconds."""
        if self.bytes < limit:
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._below.append((limit, fut))
        try:
            await asyncio.wait_for(fut, within)
        except TimeoutError:
            return False
        finally:
            if not fut.done():
                fut.cancel()
            self._below = [(n, f) for n, f in self._below if f is not fut]
        return True


def byte_queue(*args: Any, **kwargs: Any) -> ByteQueue:
    """An Engine.IO server's ``create_queue``: see :class:`ByteQueue`."""
    return ByteQueue(*args, **kwargs)


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

    __slots__ = ("_buffered", "_fast", "_queue", "_socket")

    def __init__(
        self, socket: Any, *, fast_paths: bool, buffered: WriteBuffered | None = None
    ) -> None:
        self._socket = socket
        self._queue: asyncio.Queue[Any] = socket.queue
        self._fast = fast_paths
        self._buffered = buffered

    @property
    def closed(self) -> bool:
        return bool(self._socket.closed)

    def depth(self) -> int:
        return self._queue.qsize()

    def pending_bytes(self) -> int:
        queue = self._queue
        queued = queue.bytes if isinstance(queue, ByteQueue) else 0
        return queued + (self._buffered() if self._buffered is not None else 0)

    async def wait_below(self, limit: int, within: float, *, packets: int | None = None) -> bool:
        queue = self._queue
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while (excess := self.pending_bytes() - limit + 1) > 0 or (
            packets is not None and queue.qsize() >= packets
        ):
            left = deadline - loop.time()
            if left <= 0 or self.closed:
                return False
            # The queue says when its writer takes a packet; what the host
            # buffers below it drains without a word, so look again soon.
            step = min(left, BUFFER_POLL)
            if isinstance(queue, ByteQueue) and queue.bytes > 0:
                # Over the byte limit: until enough bytes are taken; over
                # the packet count: until the next packet is.
                await queue.wait_below(queue.bytes - max(excess - 1, 0), step)
            else:
                await asyncio.sleep(step)
        return True

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
        # Every socket's send queue counts its bytes (see ByteQueue): an
        # instance attribute, so other Engine.IO servers keep theirs.
        eio_server.create_queue = byte_queue
        self._sockets: dict[str, Any] = eio_server.sockets
        self._open: dict[str, EngineIOTransport] = {}
        self.fast_paths = fast_paths

    def open(self, eio_sid: str, buffered: WriteBuffered | None = None) -> EngineIOTransport | None:
        """The transport of a connection Engine.IO holds; None if it is gone.
        ``buffered`` tells what the host holds below Engine.IO's queue."""
        socket = self._sockets.get(eio_sid)
        if socket is None:
            return None
        transport = self._open[eio_sid] = EngineIOTransport(
            socket, fast_paths=self.fast_paths, buffered=buffered
        )
        return transport

    def get(self, eio_sid: str) -> EngineIOTransport | None:
        return self._open.get(eio_sid)

    def discard(self, eio_sid: str) -> None:
        self._open.pop(eio_sid, None)

    def __len__(self) -> int:
        return len(self._open)
