"""The pieces that keep an idle connection small: the timer wheel, and the
drain that writes Engine.IO's queue without a task waiting on it."""

from __future__ import annotations

import asyncio
from typing import Any

from engineio import packet as eio_packet

from rtkit.hub.transport.packets import websocket_text_frame
from rtkit.hub.transport.sockets import ByteQueue, QueueDrain, writer_idle
from rtkit.hub.transport.wheel import RESOLUTION, Wheel


class Recorder:
    """Stands in for a connection's two ways out: the direct frame writer
    (refusing while ``full``) and python-engineio's websocket driver."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.sent: list[str | bytes] = []
        self.closed = False
        self.full = False

    def write(self, frame: bytes) -> bool:
        if self.full:
            return False
        self.frames.append(frame)
        return True

    async def send(self, data: str | bytes) -> None:
        await asyncio.sleep(0)
        self.sent.append(data)

    async def close(self) -> None:
        self.closed = True


class Item:
    def __init__(
        self, log: list[str], name: str, fail: bool = False, done: asyncio.Event | None = None
    ) -> None:
        self.log, self.name, self.fail, self.done = log, name, fail, done

    def on_due(self) -> None:
        self.log.append(self.name)
        if self.done is not None:
            self.done.set()
        if self.fail:
            raise RuntimeError("boom")


async def test_the_wheel_fires_deadlines_in_order_one_timer_per_slot() -> None:
    wheel = Wheel(resolution=0.05)
    loop = asyncio.get_running_loop()
    log: list[str] = []
    now = loop.time()
    done = asyncio.Event()
    wheel.at(now + 0.1, Item(log, "later", done=done))
    wheel.at(now + 0.01, Item(log, "first", fail=True))  # its failure stops nobody
    wheel.at(now + 0.01, Item(log, "second"))
    assert len(wheel) == 3
    scheduled = len(loop._scheduled)  # type: ignore[attr-defined]
    wheel.at(now + 0.01, Item(log, "third"))
    assert len(loop._scheduled) == scheduled, "same slot, no new loop timer"  # type: ignore[attr-defined]
    await asyncio.wait_for(done.wait(), 5 * RESOLUTION)
    assert log == ["first", "second", "third", "later"]
    assert len(wheel) == 0


async def test_the_drain_writes_frames_directly_and_keeps_order_when_it_cannot() -> None:
    queue = ByteQueue()
    out = Recorder()
    drain = QueueDrain(queue, out, out.write)
    assert writer_idle(queue)
    queue.put_nowait(eio_packet.Packet(eio_packet.PING))
    assert not writer_idle(queue), "a queued packet: a direct write would overtake it"
    await asyncio.sleep(0)
    assert out.frames == [websocket_text_frame(b"2")] and writer_idle(queue)

    # The transport is full: the rest goes through the websocket, in order.
    out.full = True
    for text in ("a", "b"):
        queue.put_nowait(eio_packet.Packet(eio_packet.MESSAGE, text))
    await asyncio.wait_for(queue.join(), 3)
    assert out.sent == ["4a", "4b"] and writer_idle(queue)
    await drain.stop()
    assert queue.drain is None


async def test_a_none_on_the_queue_closes_the_websocket_and_drops_the_rest() -> None:
    queue = ByteQueue()
    out = Recorder()
    drain = QueueDrain(queue, out, out.write)
    queue.put_nowait(eio_packet.Packet(eio_packet.CLOSE))
    queue.put_nowait(None)
    queue.put_nowait(eio_packet.Packet(eio_packet.MESSAGE, "late"))
    await asyncio.wait_for(queue.join(), 3)
    assert out.frames == [websocket_text_frame(b"1")]
    assert out.closed and drain.ended and not out.sent
    assert queue.empty() and queue.bytes == 0


async def test_stop_writes_what_was_queued_before_it() -> None:
    queue = ByteQueue()
    out = Recorder()
    drain = QueueDrain(queue, out, None)  # no frame writer: websocket sends only
    queue.put_nowait(eio_packet.Packet(eio_packet.MESSAGE, "x"))
    await drain.stop()
    assert out.sent == ["4x"]
    queued: Any = queue
    assert queued.drain is None
