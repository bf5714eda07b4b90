from __future__ import annotations

from typing import Any

import orjson
from engineio import packet as eio_packet

from rtkit.hub.fanout import FanOut, encode_messages, websocket_text_frame
from rtkit.hub.transport.sockets import ByteQueue
from rtkit.protocol import Message


class FakeTransport:
    """A Transport (rtkit.hub.transport.base) without a wire: packets stay
    queued until the test drains them, and it is never idle, so nothing
    takes the direct-write path."""

    def __init__(self) -> None:
        self.queue: ByteQueue = ByteQueue()
        self.closed = False

    def depth(self) -> int:
        return self.queue.qsize()

    def pending_bytes(self) -> int:
        return self.queue.bytes

    async def wait_below(self, limit: int, within: float, *, packets: int | None = None) -> bool:
        return await self.queue.wait_below(limit, within)

    def queue_packet(self, packet: Any) -> None:
        self.queue.put_nowait(packet)

    def idle(self) -> bool:
        return False

    def drain(self) -> list[Any]:
        """The envelopes queued so far, decoded as a client would."""
        envelopes = []
        while not self.queue.empty():
            text = self.queue.get_nowait().encode()
            assert text.startswith('42/rtkit,["messages",')
            _event, batch = orjson.loads(text[len("42/rtkit,") :])
            envelopes.extend(batch)
        return envelopes


def msg(seq: int, channel: str = "c") -> Message:
    return Message(channel, seq, 1.0, f"id{seq}", "alice", {"n": seq})


def test_frame_lengths_follow_rfc6455() -> None:
    assert websocket_text_frame(b"x" * 10)[:2] == b"\x81\x0a"
    assert websocket_text_frame(b"x" * 200)[:4] == b"\x81\x7e\x00\xc8"
    big = websocket_text_frame(b"x" * 70_000)
    assert big[:2] == b"\x81\x7f" and int.from_bytes(big[2:10], "big") == 70_000


def test_batches_encode_once_and_binary_uses_attachments() -> None:
    (text,) = encode_messages([msg(1), msg(2)])
    assert orjson.loads(text.encode()[len("42/rtkit,") :])[1][1]["seq"] == 2
    parts = encode_messages([Message("c", 1, 1.0, "i", "a", b"\x00\x01")])
    assert len(parts) == 2 and isinstance(parts[1], eio_packet.Packet)
    assert parts[1].data == b"\x00\x01"


async def test_subscribers_get_each_message_once_in_order() -> None:
    transports = {"e1": FakeTransport(), "e2": FakeTransport()}
    fanout = FanOut(transports, on_slow=lambda sid: None)
    assert fanout.add("c", "s1", "e1", cursor=0) == []
    for seq in (1, 2):
        fanout.push(msg(seq))
    fanout.flush()
    # s2 joins with a backlog that ends at 2; 3 and 4 arrive out of order.
    assert fanout.add("c", "s2", "e2", cursor=2) == []
    fanout.push(msg(4))
    fanout.push(msg(3))
    fanout.flush()
    assert [e["seq"] for e in transports["e1"].drain()] == [1, 2, 3, 4]
    assert [e["seq"] for e in transports["e2"].drain()] == [3, 4]


async def test_late_backlog_is_completed_from_recent_messages() -> None:
    transports = {"e1": FakeTransport(), "e2": FakeTransport()}
    fanout = FanOut(transports, on_slow=lambda sid: None)
    fanout.add("c", "s1", "e1", cursor=0)
    for seq in (1, 2, 3):
        fanout.push(msg(seq))
    fanout.flush()
    # s2 read the store when it held only seq 1: it lacks 2 and 3.
    missing = fanout.add("c", "s2", "e2", cursor=1)
    assert [m.seq for m in missing or []] == [2, 3]
    fanout.push(msg(4))
    fanout.flush()
    assert [e["seq"] for e in transports["e2"].drain()] == [4]


async def test_unheard_channel_makes_a_late_subscriber_read_again() -> None:
    fanout = FanOut({"e1": FakeTransport()}, on_slow=lambda sid: None)
    fanout.push(msg(1))  # nobody subscribed: nothing kept in memory
    assert fanout.add("c", "s1", "e1", cursor=0) is None
    assert fanout.add("c", "s1", "e1", cursor=1) == []


async def test_a_subscriber_that_cannot_keep_up_is_reported() -> None:
    slow: list[str] = []
    transports = {"e1": FakeTransport()}
    fanout = FanOut(transports, on_slow=slow.append, max_pending=3)
    fanout.add("c", "s1", "e1", cursor=0)
    for seq in range(1, 6):
        fanout.push(msg(seq))
        fanout.flush()
    assert slow == ["s1", "s1"]
    assert transports["e1"].depth() == 3


async def test_dropping_a_slow_subscriber_spares_the_others_in_the_same_delivery() -> None:
    """The hub's on_slow unsubscribes the slow connection from every channel
    at once: done while a delivery walked the subscribers, that changed the
    dict under it (RuntimeError), the publisher got ``unavailable`` for a
    stored message and the subscribers after the slow one missed it."""
    transports = {"e1": FakeTransport(), "e2": FakeTransport()}
    slow: list[str] = []

    def drop(sid: str) -> None:
        slow.append(sid)
        fanout.remove("c", sid)

    fanout = FanOut(transports, on_slow=drop, max_pending=1)
    fanout.add("c", "s1", "e1", cursor=0)
    fanout.add("c", "s2", "e2", cursor=0)
    fanout.push(msg(1))
    fanout.flush()
    transports["e2"].drain()  # s2 reads, s1 does not
    fanout.push(msg(2))
    fanout.flush()
    assert slow == ["s1"]
    assert [e["seq"] for e in transports["e2"].drain()] == [2]
    assert fanout.subscriber_count("c") == 1


async def test_a_subscriber_over_its_byte_budget_is_reported() -> None:
    slow: list[str] = []
    transports = {"e1": FakeTransport()}
    fanout = FanOut(transports, on_slow=slow.append, max_pending_bytes=25_000)
    fanout.add("c", "s1", "e1", cursor=0)
    for seq in range(1, 5):
        fanout.push(Message("c", seq, 0.0, str(seq), "u", "x" * 10_000))
        fanout.flush()
    # Three 10 KB packets reach 25,000 bytes: the fourth is not queued.
    assert slow == ["s1"]
    assert transports["e1"].depth() == 3
    assert 30_000 < transports["e1"].pending_bytes() < 31_000
    transports["e1"].drain()
    assert transports["e1"].pending_bytes() == 0


async def test_the_next_message_on_an_idle_hub_goes_out_at_once() -> None:
    transports = {"e1": FakeTransport()}
    fanout = FanOut(transports, on_slow=lambda sid: None)
    fanout.add("c", "s1", "e1", cursor=0)
    fanout.push(msg(1))  # no flush() call: delivered inside push
    assert [e["seq"] for e in transports["e1"].drain()] == [1]
    fanout.push(msg(3))  # out of order: waits for the flush that sorts
    assert transports["e1"].drain() == []
    fanout.push(msg(2))
    fanout.flush()
    assert [e["seq"] for e in transports["e1"].drain()] == [2, 3]
