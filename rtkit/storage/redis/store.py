"""The Redis store: the connection its concerns share, and the composition."""

from __future__ import annotations

import time
from collections.abc import Callable

from ..base import Retention
from ..redact import redact_url
from .announcements import RedisAnnouncements
from .channels import RedisChannels
from .connection import RedisConnection
from .docs import RedisDocs
from .feed import RedisFeed
from .presence import RedisPresence

__all__ = ["RedisStore"]


class RedisStore:
    """Channels, history, idempotency keys, presence and shared documents in
    Redis, shared by every hub using the same URL and ``prefix``.

    >>> store = RedisStore("redis://127.0.0.1:6379/0", prefix="team:")
    >>> async with store:
    ...     appended = await store.channels.append(
    ...         "prices", {"px": 1.0}, sender="ann", msg_id="m1", ts=time.time(), dedup_window=300
    ...     )
    """

    def __init__(
        self,
        redis_url: str,
        *,
        prefix: str = "rtkit:",
        retention: Retention = Retention(),  # noqa: B008 - frozen
        clock: Callable[[], float] = time.time,
    ) -> None:
        # What logs and status show; only the connection holds the password.
        self.url = redact_url(redis_url)
        self.prefix = prefix
        self.retention = retention
        self._conn = RedisConnection(redis_url, prefix)
        self.origin = self._conn.origin  # tells this hub's announcements apart
        self.channels = RedisChannels(self._conn, retention, clock=clock)
        self.presence = RedisPresence(self._conn)
        self.docs = RedisDocs(self._conn)
        # Every hub's messages reach this hub's subscribers through the feed,
        # in the store's order.
        self.feed = RedisFeed(RedisAnnouncements(self._conn), self.channels)

    async def __aenter__(self) -> RedisStore:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def open(self) -> None:
        await self._conn.open()
        await self.channels.open()

    async def close(self) -> None:
        if self._conn.life.state == "closed":
            return
        self._conn.life.state = "closed"
        await self.channels.wait_written()
        await self.channels.close()
        await self._conn.release()
