"""The SQLite store: the database's lifecycle and the concerns it composes."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable

import anyio
import anyio.to_thread

from ..base import Retention
from ..dedup import MAX_DEDUP_KEYS
from ..feed import LocalFeed
from ..presence import LocalPresence
from .channels import SQLiteChannels
from .database import SQLiteDatabase
from .docs import SQLiteDocs

__all__ = ["SQLiteStore"]

log = logging.getLogger(__name__)


class SQLiteStore:
    """Channels, history, idempotency keys and shared documents in one SQLite
    file (presence in memory).

    >>> store = SQLiteStore("rtkit.db", retention=Retention(max_messages=10_000))
    >>> async with store:
    ...     appended = await store.channels.append(
    ...         "prices", {"px": 1.0}, sender="ann", msg_id="m1", ts=time.time(), dedup_window=300
    ...     )

    A message is delivered to ``store.feed``'s sink (the hub) once it is
    committed, before ``append`` returns.

    ``synchronous`` is ``"NORMAL"`` (survives a killed process) or ``"FULL"``
    (survives power loss, slower). ``clock`` gives "now" for age-based
    retention; ``prune_interval`` is how often (seconds) expired rows and keys
    are deleted (``store.channels.prune()`` does it now).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        retention: Retention = Retention(),  # noqa: B008 - frozen, so sharing is safe
        synchronous: str = "NORMAL",
        *,
        clock: Callable[[], float] = time.time,
        prune_interval: float = 10.0,
        max_dedup_keys: int = MAX_DEDUP_KEYS,
    ) -> None:
        self._db = SQLiteDatabase(path, synchronous)
        self.path = self._db.path
        self.synchronous = self._db.synchronous
        self.url = "sqlite:///" + self.path
        self.retention = retention
        self.feed = LocalFeed()
        self.channels = SQLiteChannels(
            self._db,
            retention,
            self.feed,
            clock=clock,
            prune_interval=prune_interval,
            max_dedup_keys=max_dedup_keys,
        )
        # Presence is ephemeral: it lives in memory, not in the file.
        self.presence = LocalPresence()
        self.docs = SQLiteDocs(self._db)
        self._closed = asyncio.Event()

    def __repr__(self) -> str:
        return f"<SQLiteStore {self.path!r} {self._db.state}>"

    async def __aenter__(self) -> SQLiteStore:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Open (creating or migrating) the database and start the flusher."""
        db = self._db
        if db.state != "new":
            raise RuntimeError(f"SQLiteStore.open() on a store that is {db.state}")
        db.state = "opening"
        try:
            channels, keys = await anyio.to_thread.run_sync(
                self._open_sync, limiter=db.write_limiter
            )
        except BaseException:
            db.state = "closed"
            self._closed.set()
            await anyio.to_thread.run_sync(db.close_sync)
            raise
        self.channels.start(channels, keys)
        db.state = "open"
        log.info(
            "sqlite store %s open: %d channels, %d idempotency keys, synchronous=%s",
            self.path,
            len(channels),
            len(keys),
            self.synchronous,
        )

    def _open_sync(
        self,
    ) -> tuple[list[tuple[str, str, int]], list[tuple[str, str, str, int, float]]]:
        self._db.open_sync()
        return self.channels.load_sync()

    async def close(self) -> None:
        """Commit everything queued, then close the database. Idempotent."""
        db = self._db
        if db.state in {"new", "closed"}:
            db.state = "closed"
            self._closed.set()
            return
        if db.state == "opening":
            raise RuntimeError("SQLiteStore.close() while open() is still running")
        if db.state == "closing":  # another close() is at work
            await self._closed.wait()
            return
        db.state = "closing"
        try:
            await self.channels.stop()
        finally:
            await anyio.to_thread.run_sync(db.close_sync, limiter=db.write_limiter)
            db.state = "closed"
            self._closed.set()
            log.info("sqlite store %s closed", self.path)
