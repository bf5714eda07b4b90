"""The idempotency cache the embedded channel stores keep in front of
their messages (the SQLite one also writes the keys to its database, and
reloads them here at ``open``)."""

from __future__ import annotations

import logging
from collections import deque
from typing import Generic, TypeVar

__all__ = ["MAX_DEDUP_KEYS", "DedupCache", "Key"]

log = logging.getLogger(__name__)

V = TypeVar("V")
Key = tuple[str, str, str]  # (channel, sender, msg_id)

# Cap on remembered idempotency keys, whatever the window: a flood of publishes
# with client ids must not grow memory without bound.
MAX_DEDUP_KEYS = 1_000_000


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
