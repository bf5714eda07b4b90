"""Channels in this process's memory: messages, history, idempotency keys."""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..base import Appended, Message, Range, Retention
from ..dedup import MAX_DEDUP_KEYS, DedupCache, Key
from ..feed import LocalFeed
from ..ids import new_epoch, new_message_id
from ..lifecycle import Lifecycle
from ..ranges import trim_selection

__all__ = ["MemoryChannels"]


@dataclass(slots=True)
class _Channel:
    epoch: str
    seq: int = 0
    messages: deque[Message] = field(default_factory=deque)


class MemoryChannels:
    """An :class:`~rtkit.storage.base.ImmediateChannelStore` in this
    process's memory.

    A channel gets a new epoch when this process first touches it; its
    messages live in a deque bounded by ``retention.max_messages`` and are
    aged out by ``retention.max_age`` as they are appended and read. Each
    newly stored message goes to ``feed`` before ``append_now`` returns.
    """

    def __init__(
        self,
        life: Lifecycle,
        retention: Retention,
        feed: LocalFeed,
        *,
        clock: Callable[[], float] = time.time,
        max_dedup_keys: int = MAX_DEDUP_KEYS,
    ) -> None:
        self._life = life
        self._feed = feed
        self.retention = retention
        self._clock = clock
        self._channels: dict[str, _Channel] = {}
        # Keys map to (seq, ts), not to the Message: up to max_dedup_keys
        # entries must not keep payloads alive past retention, and tuples of
        # atomics drop out of the garbage collector's tracking, so a large
        # cache does not slow every collection down.
        self._dedup: DedupCache[tuple[int, float]] = DedupCache(max_dedup_keys)

    def clear(self) -> None:
        """Forget every channel and idempotency key."""
        self._channels.clear()
        self._dedup = DedupCache(self._dedup.max_keys)

    def _channel(self, name: str) -> _Channel:
        ch = self._channels.get(name)
        if ch is None:
            ch = self._channels[name] = _Channel(
                new_epoch(), messages=deque(maxlen=self.retention.max_messages)
            )
        return ch

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
        ch = self._channels.get(channel) or self._channel(channel)
        ch.seq = seq = ch.seq + 1
        msg = Message(channel, seq, ts, msg_id, sender, data)
        messages = ch.messages
        messages.append(msg)  # the deque's maxlen enforces max_messages
        cutoff = ts - self.retention.max_age
        while messages[0].ts < cutoff:
            messages.popleft()
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
        messages = self._channel(channel).messages
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
        ch = self._channel(channel)
        messages = ch.messages
        cutoff = self._clock() - self.retention.max_age
        while messages and messages[0].ts < cutoff:
            messages.popleft()
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
        ch = self._channel(channel)
        return ch.seq, ch.epoch


def _slice(messages: deque[Message], lo: int, hi: int) -> list[Message]:
    # Walk from whichever end is nearer: catching up (``since`` near the head)
    # is the common case and should not cost a walk over the whole history.
    n = len(messages)
    if n - lo < hi:
        return list(itertools.islice(reversed(messages), n - hi, n - lo))[::-1]
    return list(itertools.islice(messages, lo, hi))
