"""Channels in this process's memory: messages, history, idempotency keys."""

from __future__ import annotations

import heapq
import itertools
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from ...errors import ConfigurationError
from ..base import Appended, Message, Range, Retention
from ..dedup import MAX_DEDUP_KEYS, DedupCache, Key
from ..feed import LocalFeed
from ..ids import channel_epoch, new_message_id
from ..lifecycle import Lifecycle
from ..ranges import trim_selection

__all__ = ["MAX_TOTAL_BYTES", "MemoryChannels"]

log = logging.getLogger(__name__)

#: Default cap on the payload bytes a memory store retains over all its
#: channels (``memory://?max_total_bytes=``).
MAX_TOTAL_BYTES: Final = 256 * 1024 * 1024

# Over the total cap, channels are trimmed down to this share of it, so the
# scan that picks the biggest channels runs once per tenth of the cap written.
_LOW_WATER: Final = 0.9

# How often (seconds of message time) channels whose messages all expired
# are looked for and forgotten.
_SWEEP_INTERVAL: Final = 10.0


@dataclass(slots=True)
class _Channel:
    epoch: str
    seq: int = 0
    messages: deque[Message] = field(default_factory=deque)
    sizes: deque[int] = field(default_factory=deque)  # payload bytes, one per message
    nbytes: int = 0
    last_ts: float = 0.0  # of the newest message, kept or not


def payload_size(data: Any) -> int:
    """Bytes of a message's payload as retention counts them: raw bytes, or
    compact JSON."""
    if isinstance(data, bytes | bytearray | memoryview):
        return len(data)
    try:
        return len(orjson.dumps(data))
    except TypeError:  # ints over 64 bits: close enough
        return len(repr(data))


class MemoryChannels:
    """An :class:`~rtkit.storage.base.ImmediateChannelStore` in this
    process's memory.

    A channel exists from its first append, with an epoch derived from a
    per-process salt (:func:`~rtkit.storage.ids.channel_epoch`), which reads
    of a channel that does not exist report without creating it. Its
    messages live in a deque bounded by ``retention.max_messages`` and
    ``retention.max_bytes`` and are aged out by ``retention.max_age`` as they
    are appended and read; a channel whose messages all expired is forgotten
    (unless the hub has subscribers to it). Over ``max_total_bytes`` for all
    channels together, the oldest messages of the biggest channels go first:
    whoever fills the store loses its own history first, and no publish is
    refused for space. Each newly stored message goes to ``feed`` before
    ``append_now`` returns.
    """

    def __init__(
        self,
        life: Lifecycle,
        retention: Retention,
        feed: LocalFeed,
        *,
        clock: Callable[[], float] = time.time,
        max_dedup_keys: int = MAX_DEDUP_KEYS,
        max_total_bytes: int = MAX_TOTAL_BYTES,
    ) -> None:
        if max_total_bytes < 1:
            raise ConfigurationError("max_total_bytes must be >= 1")
        self._life = life
        self._feed = feed
        self.retention = retention
        self.max_total_bytes = max_total_bytes
        self.total_bytes = 0
        self.shrinks = 0  # times the total cap made the store drop history
        self._clock = clock
        self._salt = uuid.uuid4().hex  # a new process, new epochs
        self._last_sweep = clock()
        self._channels: dict[str, _Channel] = {}
        # Keys map to (seq, ts), not to the Message: up to max_dedup_keys
        # entries must not keep payloads alive past retention, and tuples of
        # atomics drop out of the garbage collector's tracking, so a large
        # cache does not slow every collection down.
        self._dedup: DedupCache[tuple[int, float]] = DedupCache(max_dedup_keys)

    def clear(self) -> None:
        """Forget every channel and idempotency key."""
        self._channels.clear()
        self.total_bytes = 0
        self._dedup = DedupCache(self._dedup.max_keys)

    def __len__(self) -> int:
        """How many channels the store holds."""
        return len(self._channels)

    def _epoch(self, name: str, now: float) -> str:
        return channel_epoch(self._salt, name, now, self.retention.max_age)

    def _new_channel(self, name: str, now: float) -> _Channel:
        ch = self._channels[name] = _Channel(self._epoch(name, now))
        return ch

    def _drop_oldest(self, ch: _Channel) -> None:
        ch.messages.popleft()
        size = ch.sizes.popleft()
        ch.nbytes -= size
        self.total_bytes -= size

    def _expire(self, ch: _Channel, now: float) -> None:
        messages = ch.messages
        cutoff = now - self.retention.max_age
        while messages and messages[0].ts < cutoff:
            self._drop_oldest(ch)

    async def append(
        self,
        channel: str,
        data: Any,
        *,
        sender: str,
        msg_id: str | None,
        ts: float,
        dedup_window: float,
    ) -> Appended:
        """Store one message; see :meth:`rtkit.storage.base.ChannelStore.append`."""
        return self.append_now(
            channel, data, sender=sender, msg_id=msg_id, ts=ts, dedup_window=dedup_window
        )

    def append_now(
        self,
        channel: str,
        data: Any,
        *,
        sender: str,
        msg_id: str | None,
        ts: float,
        dedup_window: float,
    ) -> Appended:
        """``append`` without the coroutine: the hub answers a publish to
        this store right where it reads the request (see
        :class:`rtkit.storage.base.ImmediateChannelStore`)."""
        # Hot path: a handful of dict/deque operations.
        if self._life.state != "open":
            self._life.check_open()
        key: Key | None = None
        if msg_id is None:
            # A store-made id is unique, so it never needs a dedup key.
            msg_id = new_message_id()
        elif dedup_window > 0:
            key = (channel, sender, msg_id)
            first = self._dedup.get(key, ts, dedup_window)
            if first is not None:
                return Appended(self._first(key, first, data), duplicate=True)
        ch = self._channels.get(channel) or self._new_channel(channel, self._clock())
        ch.seq = seq = ch.seq + 1
        msg = Message(channel, seq, ts, msg_id, sender, data)
        ch.last_ts = ts
        size = payload_size(data)
        ch.messages.append(msg)
        ch.sizes.append(size)
        ch.nbytes += size
        self.total_bytes += size
        retention = self.retention
        while len(ch.messages) > 1 and (
            len(ch.messages) > retention.max_messages or ch.nbytes > retention.max_bytes
        ):
            self._drop_oldest(ch)
        self._expire(ch, ts)
        if self.total_bytes > self.max_total_bytes:
            self._shrink()
        if ts - self._last_sweep >= _SWEEP_INTERVAL:
            self._sweep(ts)
        if key is not None:
            self._dedup.put(key, (seq, ts), ts, dedup_window)
        deliver = self._feed.deliver
        if deliver is not None:
            deliver(msg)
        return Appended(msg)

    def _first(self, key: Key, first: tuple[int, float], data: Any) -> Message:
        """The message an idempotency key first stored (for a duplicate append)."""
        channel, sender, msg_id = key
        seq, ts = first
        ch = self._channels.get(channel)
        messages = ch.messages if ch is not None else deque()
        if messages and 0 <= seq - messages[0].seq < len(messages):
            return messages[seq - messages[0].seq]
        # Past retention: the caller sent the same id, so its data stands in.
        return Message(channel, seq, ts, msg_id, sender, data)

    async def read(
        self,
        channel: str,
        *,
        since: int | None = None,
        before: int | None = None,
        limit: int | None = None,
        last: int | None = None,
    ) -> Range:
        """Messages of a channel in seq order; see :meth:`rtkit.storage.base.ChannelStore.read`."""
        self._life.check_open()
        ch = self._channels.get(channel)
        if ch is None:
            # Nothing stored: answer without creating anything (a read must
            # not cost memory), with the epoch the first append will store.
            complete = since is None or since == 0
            return Range([], 0, self._epoch(channel, self._clock()), complete)
        self._expire(ch, self._clock())
        messages = ch.messages
        complete = True
        if since is not None:
            first = messages[0].seq if messages else ch.seq + 1
            # since > head: the caller counted in another epoch.
            complete = since <= ch.seq and (since == ch.seq or first <= since + 1)
        # Seqs in the deque are consecutive, so the bounds become indexes.
        start = 0 if not messages else messages[0].seq
        lo = 0 if since is None else max(since + 1 - start, 0)
        hi = len(messages) if before is None else min(max(before - start, 0), len(messages))
        selected = _slice(messages, lo, hi) if lo < hi else []
        return Range(
            trim_selection(selected, since=since, limit=limit, last=last),
            ch.seq,
            ch.epoch,
            complete,
        )

    async def head(self, channel: str) -> tuple[int, str]:
        """The channel's latest seq (0 if none) and its epoch."""
        self._life.check_open()
        ch = self._channels.get(channel)
        if ch is None:
            return 0, self._epoch(channel, self._clock())
        return ch.seq, ch.epoch

    def _sweep(self, now: float) -> None:
        """Forget the channels whose messages all expired (and that nobody
        follows), so the store holds what it retains, not every name ever used."""
        self._last_sweep = now
        cutoff = now - self.retention.max_age
        # By the time of the newest message, not by what is kept: a channel
        # the total cap emptied keeps counting its seqs until it expires.
        gone = [name for name, ch in self._channels.items() if ch.last_ts < cutoff]
        for name in gone:
            ch = self._channels[name]
            self._expire(ch, now)
            if not ch.messages and self._feed.forget(name):
                del self._channels[name]
        if gone:
            log.debug("memory store: %d channels expired", len(gone))

    def _shrink(self) -> None:
        """Over ``max_total_bytes``: drop the oldest messages of the biggest
        channels down to the low-water mark."""
        target = int(self.max_total_bytes * _LOW_WATER)
        heap = [(-ch.nbytes, name) for name, ch in self._channels.items() if ch.messages]
        heapq.heapify(heap)
        while self.total_bytes > target and heap:
            _, name = heapq.heappop(heap)
            ch = self._channels[name]
            self._drop_oldest(ch)
            if ch.messages:
                heapq.heappush(heap, (-ch.nbytes, name))
        if not self.shrinks:
            log.warning(
                "memory store over its %d-byte cap: dropping the oldest messages of the biggest "
                "channels (raise max_total_bytes in the store URL to keep more)",
                self.max_total_bytes,
            )
        self.shrinks += 1


def _slice(messages: deque[Message], lo: int, hi: int) -> list[Message]:
    # Walk from whichever end is nearer: catching up (``since`` near the head)
    # is the common case and should not cost a walk over the whole history.
    n = len(messages)
    if n - lo < hi:
        return list(itertools.islice(reversed(messages), n - hi, n - lo))[::-1]
    return list(itertools.islice(messages, lo, hi))
