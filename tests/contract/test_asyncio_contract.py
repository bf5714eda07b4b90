"""What rtkit.hub.transport.sockets relies on in asyncio: a Queue keeps the
futures of its waiting ``get`` calls in ``_getters`` (the idle check that
lets a frame go straight to the wire without overtaking a queued packet)."""

from __future__ import annotations

import asyncio
import collections

from rtkit.hub.transport.sockets import writer_idle

SOCKETS = "rtkit.hub.transport.sockets.writer_idle"


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
