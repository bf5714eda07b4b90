"""Delivery of stored messages to every subscriber of a channel.

python-socketio's room emit creates one task per recipient and encodes the
Engine.IO packet again for each of them; at a thousand subscribers that, not
Python, is the cost. Here a batch of messages for a channel is encoded once
into one ``messages`` packet (:mod:`rtkit.hub.transport.packets`), and the
same packet object is queued on every subscriber's
:class:`~rtkit.hub.transport.Transport` synchronously: no task, no await, no
copy per recipient. Where the host gave a connection a frame writer and its
transport is idle, the packet's prebuilt frame goes straight to the wire.

Under load, deliveries coalesce: after a flush the next one waits about as
long as the last one took (bounded by ``max_delay``), so the hub spends at
most about half its time on fan-out, ingest keeps flowing, and each packet
carries every message that arrived meanwhile. At low rates nothing waits.
A wait shorter than the event loop's timer resolution is not a timer but the
next turn of the loop (see ``TIMER_RESOLUTION``).

Ordering: a channel's messages reach a subscriber in seq order, and each
subscriber carries a cursor (the last seq it was given) so that a subscriber
added while a batch is pending gets exactly the part of it after its backlog.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..config import DEFAULT_LIMITS
from ..protocol import Message
from .transport import (
    FRAME_WRITER_KEY,
    EncodedPacket,
    FrameWriter,
    Transport,
    encode_event,
    encode_messages,
    websocket_text_frame,
)

if TYPE_CHECKING:
    from .stats import Histogram

log = logging.getLogger(__name__)

# Re-exported: presence and shared docs encode their events with these and
# deliver them through FanOut.send_to.
__all__ = [
    "FRAME_WRITER_KEY",
    "FanOut",
    "FrameWriter",
    "encode_event",
    "encode_messages",
    "websocket_text_frame",
]


class TransportLookup(Protocol):
    """Finds a connection's transport by Engine.IO sid
    (:class:`~rtkit.hub.transport.Transports`, or a dict in tests)."""

    def get(self, eio_sid: str, /) -> Transport | None: ...


@dataclass(slots=True)
class _Subscriber:
    sid: str
    eio_sid: str
    cursor: int  # last seq this subscriber has been given
    writer: FrameWriter | None = None


# asyncio's epoll selector rounds its timeout up to whole milliseconds, so on
# an otherwise idle loop a timer due in 50 us fires about 1 ms later. Shorter
# waits than this go to the next turn of the loop instead: that still batches
# whatever arrived in the same turn, without sleeping past the due time.
TIMER_RESOLUTION = 0.001

# Recently delivered messages kept per channel, to complete the backlog of a
# subscriber whose store read raced with a delivery.
RECENT_PER_CHANNEL = 256


@dataclass(slots=True)
class _Channel:
    subscribers: dict[str, _Subscriber] = field(default_factory=dict)
    pending: list[Message] = field(default_factory=list)
    delivered: int = 0  # highest seq handed to the subscribers' queues
    recent: deque[Message] = field(default_factory=lambda: deque(maxlen=RECENT_PER_CHANNEL))


class FanOut:
    """Per-channel subscriber sets and the coalescing delivery loop.

    ``transports`` finds each connection's transport by Engine.IO sid;
    ``on_slow`` is called with the sid of a subscriber whose send queue is
    over ``max_pending`` packets or ``max_pending_bytes`` bytes (it cannot
    keep up; the same byte budget holds its acks back, see Hub._on_event).
    """

    def __init__(
        self,
        transports: TransportLookup,
        *,
        on_slow: Callable[[str], None],
        max_pending: int = 2000,
        max_pending_bytes: int = DEFAULT_LIMITS.max_pending_bytes,
        max_delay: float = 0.02,
    ) -> None:
        self._transports = transports
        self._on_slow = on_slow
        self._max_pending = max_pending
        self._max_pending_bytes = max_pending_bytes
        self._max_delay = max_delay
        self._channels: dict[str, _Channel] = {}
        # Last seq stored on channels nobody here subscribes to.
        self._unheard: dict[str, int] = {}
        self._dirty: dict[str, _Channel] = {}
        self._handle: asyncio.Handle | asyncio.TimerHandle | None = None
        self._last_end = 0.0
        self._last_cost = 0.0
        self._due = 0.0
        self._slack = 0.0  # how late the pending flush may run without having waited on work
        self._queued = False  # the last flush left packets to Engine.IO's writer tasks
        # Subscribers found too slow during a delivery, reported once it is
        # done: on_slow unsubscribes them, which must not happen while a
        # delivery walks the subscribers.
        self._slow: dict[str, None] = {}
        self.packets_sent = 0
        self.direct_writes = 0  # packets that took the fast path
        self.messages_delivered = 0
        self.flushes = 0
        # Set by a hub with metrics on: how long each channel's oldest
        # pending message waited from its hub timestamp to this flush.
        self.delivery_seconds: Histogram | None = None

    # -- subscriptions ------------------------------------------------------

    def add(
        self,
        channel: str,
        sid: str,
        eio_sid: str,
        cursor: int,
        writer: FrameWriter | None = None,
    ) -> list[Message] | None:
        """Subscribe ``sid`` whose backlog ends at seq ``cursor``.

        Messages stored after the caller read the backlog may already have
        been delivered to the other subscribers. Returns those (to append to
        the backlog), or None when they are no longer at hand: then nothing
        is added and the caller must read the store again from ``cursor``.
        """
        ch = self._channels.get(channel)
        if ch is None:
            ch = self._channels[channel] = _Channel(delivered=self._unheard.pop(channel, 0))
        missing: list[Message] = []
        if ch.delivered > cursor:
            if not ch.recent or ch.recent[0].seq > cursor + 1:
                return None
            missing = [m for m in ch.recent if m.seq > cursor]
        ch.subscribers[sid] = _Subscriber(sid, eio_sid, max(cursor, ch.delivered), writer)
        return missing

    def remove(self, channel: str, sid: str) -> bool:
        ch = self._channels.get(channel)
        if ch is None or ch.subscribers.pop(sid, None) is None:
            return False
        if not ch.subscribers and not ch.pending:
            del self._channels[channel]
            self._unheard[channel] = ch.delivered
        return True

    def forget(self, channel: str) -> bool:
        """Forget the last seq of a channel nobody here follows (its store
        forgot it, and its seqs start over); False if someone follows it."""
        if channel in self._channels:
            return False
        self._unheard.pop(channel, None)
        return True

    def subscriber_count(self, channel: str) -> int:
        ch = self._channels.get(channel)
        return len(ch.subscribers) if ch else 0

    def channel_stats(self) -> dict[str, tuple[int, int]]:
        """``{channel: (subscribers, last seq delivered)}`` for every channel
        subscribed or published to since this fan-out started."""
        stats = {name: (0, seq) for name, seq in self._unheard.items()}
        for name, ch in self._channels.items():
            stats[name] = (len(ch.subscribers), ch.delivered)
        return stats

    # -- delivery -----------------------------------------------------------

    def push(self, message: Message) -> None:
        """Queue a stored message for delivery (called once it is durable)."""
        ch = self._channels.get(message.channel)
        if ch is None:
            # Nobody listens here; remember the seq so that a subscriber
            # arriving later knows whether its backlog read was late.
            self._unheard[message.channel] = message.seq
            return
        ch.pending.append(message)
        self._dirty[message.channel] = ch
        if self._handle is None:
            self._schedule(message.seq == ch.delivered + 1 and len(ch.pending) == 1)

    def push_many(self, messages: list[Message]) -> None:
        """Queue several stored messages of one channel, in seq order, as one
        batch: a shared store's burst then goes out as one packet per
        subscriber, as a burst of local publishes does."""
        first, last = messages[0], messages[-1]
        ch = self._channels.get(last.channel)
        if ch is None:
            self._unheard[last.channel] = last.seq
            return
        ch.pending.extend(messages)
        self._dirty[last.channel] = ch
        if self._handle is None:
            self._schedule(first.seq == ch.delivered + 1 and len(ch.pending) == len(messages))

    def _schedule(self, next_in_order: bool) -> None:
        """Arrange the flush of what was just queued; ``next_in_order``: all
        that is pending is one run that starts right after what was delivered."""
        loop = asyncio.get_running_loop()
        # Wait as long as the previous flush took, measured from its end:
        # zero at low load, a growing batch under heavy load.
        now = time.perf_counter()
        delay = min(self._max_delay, self._last_end + self._last_cost - now)
        if delay >= TIMER_RESOLUTION:
            self._handle = loop.call_later(delay, self.flush)
            self._due = now + delay
            self._slack = TIMER_RESOLUTION
        elif delay > 0:
            self._handle = loop.call_soon(self.flush)
            self._due = now
            self._slack = 0.0
        elif next_in_order:
            # Idle, and this is the very next message: deliver it now,
            # before the publisher's ack and whatever else is ready, so
            # it pays no extra turn of the event loop.
            self._due = now
            self._slack = 0.0
            self.flush()
        else:
            # Out of order (the flush sorts the batch) or more pending.
            self._handle = loop.call_soon(self.flush)
            self._due = now
            self._slack = 0.0

    def flush(self) -> None:
        """Deliver everything pending. Synchronous: nothing can interleave."""
        self._handle = None
        start = time.perf_counter()
        queued_before = self.packets_sent - self.direct_writes
        dirty, self._dirty = self._dirty, {}
        waited = self.delivery_seconds
        now = time.time() if waited is not None else 0.0
        for name, ch in dirty.items():
            pending, ch.pending = ch.pending, []
            if not pending:
                continue
            if any(pending[i].seq > pending[i + 1].seq for i in range(len(pending) - 1)):
                pending.sort(key=lambda m: m.seq)
            if waited is not None:
                # One observation per channel and flush, none per recipient.
                waited.observe(max(0.0, now - pending[0].ts))
            self._deliver(ch, pending)
            if not ch.subscribers and self._channels.get(name) is ch:
                del self._channels[name]
                self._unheard[name] = ch.delivered
        end = time.perf_counter()
        self._last_end = end
        # The cost of a flush is its own run time plus, when the previous one
        # left packets to Engine.IO's writer tasks (no direct frame writer),
        # how long it waited past its due time: their work shows up as that
        # wait. Direct writes leave no such work behind, and the lateness of
        # a timer on an idle loop (up to TIMER_RESOLUTION) is not work either:
        # counting it made every wait about 1 ms long, and so the next one.
        cost = end - start
        if self._queued:
            cost += max(0.0, start - self._due - self._slack)
        self._last_cost = cost
        self._queued = self.packets_sent - self.direct_writes > queued_before
        self.flushes += 1
        if self._slow:
            self._report_slow()

    def _deliver(self, ch: _Channel, batch: list[Message]) -> None:
        first, last = batch[0].seq, batch[-1].seq
        shared: list[Any] | None = None
        for sub in ch.subscribers.values():
            if sub.cursor >= last:
                continue
            if sub.cursor >= first:
                # Joined while this batch was pending: its backlog already
                # holds the start of the batch.
                packets = encode_messages([m for m in batch if m.seq > sub.cursor])
            else:
                if shared is None:
                    shared = encode_messages(batch)
                packets = shared
            if self._send(sub, packets):
                self.messages_delivered += last - max(sub.cursor, first - 1)
            sub.cursor = last
        ch.delivered = max(ch.delivered, last)
        ch.recent.extend(batch)

    def _send(self, sub: _Subscriber, packets: list[Any]) -> bool:
        transport = self._transports.get(sub.eio_sid)
        if transport is None or transport.closed:
            return False
        if (
            sub.writer is not None
            and len(packets) == 1
            and isinstance(packets[0], EncodedPacket)
            and transport.idle()
            and sub.writer(packets[0].frame)
        ):
            # The fast path: one shared frame straight onto the transport,
            # no queue, no task wake-up, no copy.
            self.packets_sent += 1
            self.direct_writes += 1
            return True
        if (
            transport.depth() >= self._max_pending
            or transport.pending_bytes() >= self._max_pending_bytes
        ):
            self._slow[sub.sid] = None
            return False
        for pkt in packets:
            transport.queue_packet(pkt)
        self.packets_sent += len(packets)
        return True

    def send_to(
        self, sid: str, eio_sid: str, packets: list[Any], writer: FrameWriter | None = None
    ) -> bool:
        """Put packets made by :func:`encode_event` on one connection, the
        way channel deliveries go (same order, same slow-consumer check).
        The packets may be shared by any number of recipients."""
        sent = self._send(_Subscriber(sid, eio_sid, 0, writer), packets)
        if self._slow:
            self._report_slow()
        return sent

    def _report_slow(self) -> None:
        slow, self._slow = self._slow, {}
        for sid in slow:
            self._on_slow(sid)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._channels.clear()
        self._dirty.clear()
