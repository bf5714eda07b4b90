"""The default store: everything in this process's memory.

History and idempotency keys vanish with the process. Each channel gets a new
``epoch`` when this process first touches it, so clients that reconnect to a
restarted hub see the epoch change and know their ``since`` means nothing
here.

The helpers defined first (:func:`new_message_id`, :class:`DedupCache`,
:func:`trim_selection`) are shared with the SQLite store, which keeps the same
idempotency cache in front of its database.
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .base import Appended, DocRecord, Message, Range, Retention
from .presence import MemoryPresence, PresenceInMemory

__all__ = ["DedupCache", "MemoryStore", "new_epoch", "new_message_id", "trim_selection"]

log = logging.getLogger(__name__)

V = TypeVar("V")
Key = tuple[str, str, str]  # (channel, sender, msg_id)

# Cap on remembered idempotency keys, whatever the window: a flood of publishes
# with client ids must not grow memory without bound.
MAX_DEDUP_KEYS = 1_000_000

# Message ids the store makes: a random per-process prefix keeps them unique
# across restarts and hub processes; a counter is ~10x cheaper than uuid4().
_ID_PREFIX = uuid.uuid4().hex[:16]
_id_counter = itertools.count(1)


def new_message_id() -> str:
    """A message id unique across processes, for publishes without one."""
    return f"{_ID_PREFIX}-{next(_id_counter):x}"


def new_epoch() -> str:
    """A fresh random epoch token."""
    return uuid.uuid4().hex[:12]


class DedupCache(Generic[V]):
    """Recently seen ``(channel, sender, msg_id)`` keys and what they stored.

    An entry is a duplicate for a call when ``now - first_ts <= window``.
    Entries are forgotten once older than the largest window seen so far, or,
    oldest first, when more than ``max_keys`` are held (a warning is logged
    the first time: dedup then covers less than the window).

    >>> cache: DedupCache[int] = DedupCache()
    >>> cache.put(("ch", "ann", "m1"), 7, ts=100.0, window=60.0)
    >>> cache.get(("ch", "ann", "m1"), now=130.0, window=60.0)
    7
    """

    __slots__ = ("_entries", "_order", "dropped", "max_keys", "max_window")

    def __init__(self, max_keys: int = MAX_DEDUP_KEYS) -> None:
        self.max_keys = max_keys
        self.max_window = 0.0
        self.dropped = 0  # keys forgotten for space while maybe still in their window
        self._entries: dict[Key, tuple[V, float, Key]] = {}
        # Insertion order, for cheap expiry from the front. A key stored again
        # (its old entry expired) leaves a stale item here; it is skipped when
        # it reaches the front, because the dict no longer points at it.
        self._order: deque[tuple[V, float, Key]] = deque()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Key, now: float, window: float) -> V | None:
        """The value stored under ``key`` if it was put within ``window`` of ``now``."""
        entry = self._entries.get(key)
        if entry is not None and now - entry[1] <= window:
            return entry[0]
        return None

    def put(self, key: Key, value: V, ts: float, window: float) -> None:
        """Remember ``key`` (first stored at ``ts``) and forget what has expired."""
        # On the publish hot path: load() and prune() inlined.
        if window > self.max_window:
            self.max_window = window
        entry = (value, ts, key)
        entries, order = self._entries, self._order
        entries[key] = entry
        order.append(entry)
        cutoff = ts - self.max_window
        while order[0][1] < cutoff:  # never empties: the entry just added is not expired
            old = order.popleft()
            if entries.get(old[2]) is old:
                del entries[old[2]]
        if len(order) > self.max_keys:
            self._drop_oldest()

    def load(self, key: Key, value: V, ts: float) -> None:
        """Remember ``key`` without pruning (used when loading from disk)."""
        entry = (value, ts, key)
        self._entries[key] = entry
        self._order.append(entry)
        if len(self._order) > self.max_keys:
            self._drop_oldest()

    def prune(self, now: float) -> None:
        """Forget keys older than the largest window seen (none if unknown yet)."""
        if self.max_window <= 0:
            return
        cutoff = now - self.max_window
        order, entries = self._order, self._entries
        while order and order[0][1] < cutoff:
            entry = order.popleft()
            if entries.get(entry[2]) is entry:
                del entries[entry[2]]

    def _drop_oldest(self) -> None:
        entry = self._order.popleft()
        if self._entries.get(entry[2]) is entry:
            del self._entries[entry[2]]
            if not self.dropped:
                log.warning(
                    "more than %d idempotency keys within the dedup window: forgetting the "
                    "oldest, so retries that old may be stored twice",
                    self.max_keys,
                )
            self.dropped += 1


def trim_selection(
    selected: list[Message], *, since: int | None, limit: int | None, last: int | None
) -> list[Message]:
    """Apply ``read``'s ``last`` and ``limit`` to messages already filtered.

    ``last`` keeps the newest ``last``; ``limit`` then keeps the oldest
    ``limit`` when ``since`` is given (paging forward) and the newest
    ``limit`` otherwise (paging back from ``before``, or the latest).
    """
    if last is not None:
        selected = selected[len(selected) - max(last, 0) :]
    if limit is not None:
        limit = max(limit, 0)
        selected = selected[:limit] if since is not None else selected[len(selected) - limit :]
    return selected


@dataclass(slots=True)
class _Channel:
    epoch: str
    seq: int = 0
    messages: deque[Message] = field(default_factory=deque)


@dataclass(slots=True)
class _DocLog:
    snapshot: bytes | None = None
    upto: int = 0  # the last update id the snapshot covers
    updates: list[tuple[int, bytes]] = field(default_factory=list)  # (id, update)
    next_id: int = 1


class MemoryStore(PresenceInMemory):
    """Channels, history, idempotency keys, presence and shared documents in
    this process's memory.

    Fast and simple; nothing survives a restart (each channel then starts a
    new epoch). ``append`` never yields to the event loop, so concurrent
    appends get seqs in call order.

    >>> store = MemoryStore(retention=Retention(max_messages=1000, max_age=600))
    >>> await store.open()
    >>> appended = await store.append(
    ...     "prices", {"px": 1.0}, sender="ann", msg_id=None, ts=time.time(), dedup_window=300
    ... )
    >>> appended.message.seq
    1
    >>> await store.close()

    ``clock`` gives "now" for age-based retention on ``read`` (``append`` uses
    its ``ts`` argument). Message data is kept by reference: do not mutate it
    after appending.
    """

    def __init__(
        self,
        retention: Retention = Retention(),  # noqa: B008 - frozen, so sharing is safe
        *,
        clock: Callable[[], float] = time.time,
        max_dedup_keys: int = MAX_DEDUP_KEYS,
    ) -> None:
        self.url = "memory://"
        self.retention = retention
        self._clock = clock
        self._channels: dict[str, _Channel] = {}
        # Keys map to (seq, ts), not to the Message: up to max_dedup_keys
        # entries must not keep payloads alive past retention, and tuples of
        # atomics drop out of the garbage collector's tracking, so a large
        # cache does not slow every collection down.
        self._dedup: DedupCache[tuple[int, float]] = DedupCache(max_dedup_keys)
        self._presence = MemoryPresence()
        self._docs: dict[str, _DocLog] = {}
        self._state = "new"

    async def __aenter__(self) -> MemoryStore:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Make the store usable. A closed store cannot be reopened."""
        if self._state != "new":
            raise RuntimeError(f"MemoryStore.open() on a store that is {self._state}")
        self._state = "open"
        log.info("memory store open (retention %s)", self.retention)

    async def close(self) -> None:
        """Drop everything. Idempotent."""
        if self._state == "closed":
            return
        self._state = "closed"
        self._channels.clear()
        self._dedup = DedupCache(self._dedup.max_keys)
        self._presence.clear()
        self._docs.clear()
        log.info("memory store closed")

    def _check_open(self) -> None:
        if self._state != "open":
            raise RuntimeError(
                "the store is not open: call 'await store.open()' first"
                if self._state == "new"
                else "the store is closed"
            )

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
        """Store one message; see :meth:`rtkit.storage.base.Store.append`."""
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
        :class:`rtkit.storage.base.ImmediateStore`)."""
        # Hot path: a handful of dict/deque operations.
        if self._state != "open":
            self._check_open()
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
        """Messages of a channel in seq order; see :meth:`rtkit.storage.base.Store.read`."""
        self._check_open()
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
        self._check_open()
        ch = self._channel(channel)
        return ch.seq, ch.epoch

    # -- shared documents -------------------------------------------------

    async def doc_load(self, name: str) -> DocRecord:
        """The document's snapshot and later updates; see :class:`~rtkit.storage.Store`."""
        self._check_open()
        log_ = self._docs.get(name)
        if log_ is None:
            return DocRecord(None, [], 0)
        last = log_.updates[-1][0] if log_.updates else log_.upto
        return DocRecord(log_.snapshot, [update for _, update in log_.updates], last)

    async def doc_append(self, name: str, update: bytes) -> int:
        """Store one update; returns the count after the snapshot."""
        self._check_open()
        log_ = self._docs.get(name)
        if log_ is None:
            log_ = self._docs[name] = _DocLog()
        log_.updates.append((log_.next_id, bytes(update)))
        log_.next_id += 1
        return len(log_.updates)

    async def doc_compact(self, name: str, snapshot: bytes, upto: int) -> None:
        """Make ``snapshot`` the base and drop the updates it covers."""
        self._check_open()
        log_ = self._docs.get(name)
        if log_ is None or upto <= log_.upto:
            return
        log_.snapshot = bytes(snapshot)
        log_.upto = upto
        log_.updates = [(i, u) for i, u in log_.updates if i > upto]


def _slice(messages: deque[Message], lo: int, hi: int) -> list[Message]:
    # Walk from whichever end is nearer: catching up (``since`` near the head)
    # is the common case and should not cost a walk over the whole history.
    n = len(messages)
    if n - lo < hi:
        return list(itertools.islice(reversed(messages), n - hi, n - lo))[::-1]
    return list(itertools.islice(messages, lo, hi))
