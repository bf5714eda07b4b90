"""What rtkit.hub.transport.sockets relies on in asyncio: a Queue keeps the
futures of its waiting ``get`` calls in ``_getters`` (the idle check that
lets a frame go straight to the wire without overtaking a queued packet),
and moves items in and out through ``_put`` and ``_get`` (the byte count of
a connection's send budget)."""

from __future__ import annotations

import asyncio
import collections

from engineio import packet as eio_packet

from rtkit.hub.transport.sockets import ByteQueue, packet_bytes, writer_idle

SOCKETS = "rtkit.hub.transport.sockets.writer_idle"
BYTES = "rtkit.hub.transport.sockets.ByteQueue"


async def test_a_queue_keeps_its_waiting_getters() -> None:
    queue: asyncio.Queue[object] = asyncio.Queue()
    getters = getattr(queue, "_getters", None)
    assert isinstance(getters, collections.deque), f"asyncio.Queue._getters ({SOCKETS})"
    assert not writer_idle(queue), "nobody waits yet: not idle"

    reader = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)  # let the reader park in get()
    assert [not g.done() for g in queue._getters] == [True], (  # type: ignore[attr-defined]
        f"a parked get() no longer leaves a pending future in _getters ({SOCKETS})"
    )
    assert writer_idle(queue)

    queue.put_nowait("packet")
    assert not writer_idle(queue), "a packet handed to the reader but not yet taken"
    assert await reader == "packet"
    assert not writer_idle(queue), "the reader holds the packet, it is not waiting"


async def test_a_queue_with_packets_is_never_idle() -> None:
    queue: asyncio.Queue[object] = asyncio.Queue()
    queue.put_nowait("first")
    assert not writer_idle(queue)


async def test_a_queue_moves_every_item_through_its_put_and_get_hooks() -> None:
    # ByteQueue counts bytes in _put and _get (the hooks PriorityQueue
    # overrides); every way in and out of an asyncio.Queue must use them.
    queue = ByteQueue()
    packet = eio_packet.Packet(eio_packet.MESSAGE, "x" * 1000)
    queue.put_nowait(packet)
    await queue.put(packet)
    assert queue.bytes == 2 * packet_bytes(packet), f"Queue.put/put_nowait -> _put ({BYTES})"
    assert queue.get_nowait() is packet
    assert await queue.get() is packet
    assert queue.bytes == 0, f"Queue.get/get_nowait -> _get ({BYTES})"

    queue.put_nowait(packet)
    assert await queue.wait_below(packet_bytes(packet) + 1, 1.0)
    waiter = asyncio.ensure_future(queue.wait_below(1, 5.0))
    await asyncio.sleep(0)
    assert not waiter.done()
    queue.get_nowait()  # the writer takes it: the waiter wakes
    assert await waiter is True
    queue.put_nowait(packet)
    assert await queue.wait_below(1, 0.05) is False  # nobody reads: it times out
