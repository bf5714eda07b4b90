"""The memory store: its lifecycle and the three concerns it composes."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ..base import Retention
from ..dedup import MAX_DEDUP_KEYS
from ..feed import LocalFeed
from ..lifecycle import Lifecycle
from ..presence import LocalPresence
from .channels import MAX_TOTAL_BYTES, MemoryChannels
from .docs import MemoryDocs

__all__ = ["MemoryStore"]

log = logging.getLogger(__name__)


class MemoryStore:
    """Channels, history, idempotency keys, presence and shared documents in
    this process's memory.

    History and idempotency keys vanish with the process. Each channel's
    ``epoch`` is derived from a salt this process draws, so clients that
    reconnect to a restarted hub see the epoch change and know their
    ``since`` means nothing here. Fast and simple; ``channels.append`` never
    yields to the event loop, so concurrent appends get seqs in call order.

    >>> store = MemoryStore(retention=Retention(max_messages=1000, max_age=600))
    >>> await store.open()
    >>> appended = await store.channels.append(
    ...     "prices", {"px": 1.0}, sender="ann", msg_id=None, ts=time.time(), dedup_window=300
    ... )
    >>> appended.message.seq
    1
    >>> await store.close()

    A message is delivered to ``store.feed``'s sink (the hub) as it is
    appended, before ``append`` returns.

    ``clock`` gives "now" for age-based retention on ``read`` (``append`` uses
    its ``ts`` argument). ``max_total_bytes`` bounds the payload bytes kept
    over all channels (see :class:`~rtkit.storage.memory.channels.MemoryChannels`).
    Message data is kept by reference: do not mutate it after appending.
    """

    def __init__(
        self,
        retention: Retention = Retention(),  # noqa: B008 - frozen, so sharing is safe
        *,
        clock: Callable[[], float] = time.time,
        max_dedup_keys: int = MAX_DEDUP_KEYS,
        max_total_bytes: int = MAX_TOTAL_BYTES,
    ) -> None:
        self.url = "memory://"
        self.retention = retention
        self._life = Lifecycle()
        self.feed = LocalFeed()
        self.channels = MemoryChannels(
            self._life,
            retention,
            self.feed,
            clock=clock,
            max_dedup_keys=max_dedup_keys,
            max_total_bytes=max_total_bytes,
        )
        self.presence = LocalPresence()
        self.docs = MemoryDocs(self._life)

    async def __aenter__(self) -> MemoryStore:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Make the store usable. A closed store cannot be reopened."""
        if self._life.state != "new":
            raise RuntimeError(f"MemoryStore.open() on a store that is {self._life.state}")
        self._life.state = "open"
        log.info(
            "memory store open (retention %s, at most %d payload bytes in all)",
            self.retention,
            self.channels.max_total_bytes,
        )

    async def close(self) -> None:
        """Drop everything. Idempotent."""
        if self._life.state == "closed":
            return
        self._life.state = "closed"
        self.channels.clear()
        self.presence.clear()
        self.docs.clear()
        log.info("memory store closed")
