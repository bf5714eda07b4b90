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
import collections
import logging
import time
from typing import Any

from engineio import packet as eio_packet
from engineio.async_socket import AsyncSocket

from .base import FrameWriter, WriteBuffered
from .packets import websocket_text_frame
from .wheel import wheel

log = logging.getLogger(__name__)

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


# Stands in for an empty deque: len() 0, false, nothing to iterate.
_NONE: tuple[Any, ...] = ()


class _LazyEvent(asyncio.Event):
    """``asyncio.Event`` whose waiter deque is made by the first ``wait``."""

    def __init__(self) -> None:
        super().__init__()
        self._waiters: Any = _NONE

    async def wait(self) -> Any:
        if self._waiters is _NONE:
            self._waiters = collections.deque()
        return await super().wait()


class ByteQueue(asyncio.Queue[Any]):
    """Engine.IO's send queue, counting the bytes it holds (:attr:`bytes`)
    and waking :meth:`wait_below` callers when its writer drains it. With a
    :attr:`drain` attached (the aiohttp host's fast path), every packet put
    wakes that instead of a writer task parked in ``get``.

    It holds no deque while it is empty and nobody waits on it: an empty
    deque is 760 bytes (one 64-slot block), and ``asyncio.Queue`` keeps four
    (items, getters, putters, and its ``join`` event's waiters) for every
    connection, idle or not. Each is made when first needed; the item deque
    is let go again whenever the queue empties.
    """

    drain: QueueDrain | None = None

    def _init(self, maxsize: int) -> None:
        # asyncio.Queue.__init__ has made its getters, putters and join
        # event before it calls _init (tests/contract pins that order).
        self._queue: Any = _NONE
        self._getters: Any = _NONE
        if maxsize <= 0:
            # Unbounded: no put() ever waits, so nothing is ever added here
            # (Engine.IO's queues are unbounded).
            self._putters: Any = _NONE
        finished = _LazyEvent()
        finished.set()
        self._finished = finished
        self.bytes = 0
        self._below: list[tuple[int, asyncio.Future[None]]] = []

    async def get(self) -> Any:
        if self._getters is _NONE:
            self._getters = collections.deque()
        return await super().get()

    def _put(self, item: Any) -> None:
        if self._queue is _NONE:
            self._queue = collections.deque()
        self._queue.append(item)
        self.bytes += packet_bytes(item)
        if self.drain is not None:
            self.drain.wake()

    def _get(self) -> Any:
        queue = self._queue
        item = queue.popleft()
        if not queue:
            self._queue = _NONE
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
    """True when the task reading ``queue`` is parked waiting for it (or,
    with a :class:`QueueDrain`, when that holds nothing), i.e. it holds no
    packet it has not written yet. Only then may a frame go straight to the
    transport without overtaking anything (the subscribe ack above all)."""
    if not queue.empty():
        return False
    if isinstance(queue, ByteQueue) and queue.drain is not None:
        return not queue.drain.busy
    getters: Any = getattr(queue, "_getters", None) or ()
    return any(not g.done() for g in getters)


class QueueDrain:
    """Writes what is put on a websocket's Engine.IO send queue, without a
    task waiting on the queue.

    python-engineio gives every websocket a writer task parked in
    ``queue.get()`` under ``asyncio.wait_for`` (a second task on Python
    3.11): two tasks and their coroutine frames for each idle connection,
    several KB of a hub's memory per connection. Here a put schedules one
    callback (:meth:`wake`) that writes the queued packets as websocket
    frames straight to the connection's transport through ``write``; a
    packet that cannot go that way (binary, no frame writer, a full
    transport buffer) starts a task that sends it and the rest through the
    websocket's own ``send``, as the stock writer does, and ends when the
    queue is empty. As with the stock writer, a ``None`` on the queue, or a
    failed send, closes the websocket (which ends its read loop) and
    nothing more is written. Every packet taken is marked ``task_done``, so
    ``AsyncSocket.close(wait=True)``'s ``queue.join()`` still works.
    """

    __slots__ = ("_loop", "_queue", "_task", "_write", "_ws", "busy", "ended")

    def __init__(self, queue: ByteQueue, ws: Any, write: FrameWriter | None) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue = queue
        # python-engineio's websocket driver: async send(str | bytes), close().
        self._ws = ws
        self._write = write
        self._task: asyncio.Task[None] | None = None
        # True from a put until what was queued is written (or handed to
        # the websocket): the connection is not idle meanwhile.
        self.busy = False
        # Told to stop (a None) or a send failed: the websocket is closed
        # or closing, and what is queued from now on is dropped.
        self.ended = False
        queue.drain = self
        if not queue.empty():
            self.wake()

    def wake(self) -> None:
        if not self.busy:
            self.busy = True
            # Not right here: Queue.put_nowait still has its bookkeeping to
            # do after _put (task_done before it would raise).
            self._loop.call_soon(self._run)

    def _run(self) -> None:
        queue = self._queue
        if queue.drain is not self or self._task is not None:
            return  # stopped, or a task has taken over
        write = self._write
        while not queue.empty():
            pkt = queue.get_nowait()
            if self.ended:
                queue.task_done()
                continue
            if pkt is not None:
                encoded = pkt.encode()
                if (
                    write is not None
                    and isinstance(encoded, str)
                    and write(websocket_text_frame(encoded.encode()))
                ):
                    queue.task_done()
                    continue
            else:
                encoded = None
            self._task = asyncio.ensure_future(self._send_from(encoded))
            return
        self.busy = False

    async def _send_from(self, encoded: str | bytes | None) -> None:
        """Send ``encoded`` (the packet just taken; None: close) and then
        the rest of the queue through the websocket, one at a time."""
        queue = self._queue
        try:
            while True:
                try:
                    if encoded is None:
                        self.ended = True
                        await self._ws.close()
                    else:
                        await self._ws.send(encoded)
                except Exception as exc:
                    # As the stock writer: a failed send ends the writing
                    # and closes the websocket, which ends the read loop.
                    log.debug("websocket send failed (%r): closing", exc)
                    if not self.ended:
                        self.ended = True
                        await self._ws.close()
                finally:
                    queue.task_done()
                if queue.empty():
                    break
                pkt = queue.get_nowait()
                while self.ended:
                    queue.task_done()
                    if queue.empty():
                        return
                    pkt = queue.get_nowait()
                encoded = None if pkt is None else pkt.encode()
        finally:
            self._task = None
            self.busy = False
            if not queue.empty():
                self.wake()

    async def stop(self) -> None:
        """Detach from the queue once the connection's reading has ended,
        after what is being sent has been sent (as the stock writer, which
        writes all that was queued before the None that stops it)."""
        if self.busy and self._task is None:
            self._run()
        while (task := self._task) is not None:
            await task
        self._queue.drain = None
        self.busy = False


class TimerPingSocket(AsyncSocket):  # type: ignore[misc]
    """python-engineio's socket, pinging from a timer instead of a task.

    Stock ``schedule_ping`` starts a task that sleeps ``ping_interval`` and
    queues a PING: one more sleeping task and its frames per idle
    connection. Here the same step is a deadline on the loop's
    :class:`~.wheel.Wheel` (a list entry, up to a second late). A socket
    takes this class when the hub sees its Engine.IO connect, before
    python-engineio first calls ``schedule_ping`` (tests/contract pins both
    that order and the stock ``_send_ping``'s steps).
    """

    last_ping: float | None

    def schedule_ping(self) -> None:
        # Only once the previous PING was answered (as stock).
        if self.last_ping:
            self.last_ping = None
            loop = asyncio.get_running_loop()
            wheel().at(loop.time() + self.server.ping_interval, self)

    def on_due(self) -> None:
        if not self.closing and not self.closed:
            self.last_ping = time.time()
            # What stock ``send`` does: its ping-timeout check cannot fire
            # with last_ping just set, and the queue has no bound.
            self.queue.put_nowait(eio_packet.Packet(eio_packet.PING))


def ping_from_timer(socket: Any) -> None:
    """Make a stock python-engineio socket ping from a timer (see
    :class:`TimerPingSocket`); a socket of another class is left alone."""
    if type(socket) is AsyncSocket:
        socket.__class__ = TimerPingSocket


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

    def values(self) -> list[EngineIOTransport]:
        """Every open transport (a copy: for a scrape, not the send path)."""
        return list(self._open.values())

    def __len__(self) -> int:
        return len(self._open)
