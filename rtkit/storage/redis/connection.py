"""The link to Redis the Redis store's concerns share, and key naming.

:class:`RedisConnection` owns the client (made at ``open``, closed at
``close``), the Lua scripts the concerns register, the store's lifecycle,
the key prefix and this hub's ``origin``, which tells its own announcements
on ``<prefix>events`` apart from other hubs'.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from ...errors import ConfigurationError
from ..lifecycle import Lifecycle
from ..redact import redact_url

__all__ = ["RedisConnection", "import_redis"]

log = logging.getLogger(__name__)

# Connections one client (the store's, or the feed's) opens to Redis at most;
# requests beyond wait for one, up to POOL_WAIT seconds, then get
# 'unavailable'. Redis answers each in microseconds, so a few dozen carry
# thousands of requests a second; the limit keeps a burst from opening a
# connection per request.
MAX_CONNECTIONS = 64
POOL_WAIT = 10.0


def import_redis() -> Any:
    """``redis.asyncio``, or ConfigurationError with the install hint."""
    try:
        import redis.asyncio as aioredis
    except ImportError:
        raise ConfigurationError(
            "the redis store needs the redis package: pip install 'rtkit[redis]'"
        ) from None
    return aioredis


class RedisConnection:
    """One Redis URL and key prefix, as the channel, presence and document
    stores and the feed of one :class:`~rtkit.storage.redis.RedisStore` use
    it."""

    def __init__(self, redis_url: str, prefix: str) -> None:
        self.url = redis_url
        self.prefix = prefix
        self.origin = uuid.uuid4().hex[:16]  # tells this hub's announcements apart
        self.events = f"{prefix}events"  # pub/sub channel of presence and doc changes
        self.life = Lifecycle()
        # redis-py's asyncio client is only partly typed: held as Any.
        self._r: Any = None
        self._script_bodies: dict[str, str] = {}
        self.scripts: dict[str, Any] = {}  # redis-py's AsyncScript objects, once open

    def add_script(self, name: str, body: str) -> None:
        """Register Lua ``body`` as ``scripts[name]`` when the store opens."""
        self._script_bodies[name] = body

    def client(self) -> Any:
        """A new client for this URL (the feed keeps one of its own)."""
        aioredis = import_redis()
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # Fail fast: while Redis is away a publish must be answered with
        # 'unavailable' within about a second, not hang in retries. A burst
        # of requests waits for a connection instead: redis-py's default
        # pool raises MaxConnectionsError past its limit, which failed the
        # subscribes of a hundred clients arriving together.
        pool = aioredis.BlockingConnectionPool.from_url(
            self.url,
            max_connections=MAX_CONNECTIONS,
            timeout=POOL_WAIT,
            socket_connect_timeout=1.0,
            socket_timeout=3.0,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=2,
        )
        return aioredis.Redis.from_pool(pool)

    async def open(self) -> None:
        if self.life.state != "new":
            raise RuntimeError(f"RedisStore.open() on a store that is {self.life.state}")
        self._r = self.client()
        for name, body in self._script_bodies.items():
            self.scripts[name] = self._r.register_script(body)
        await self._r.ping()
        self.life.state = "open"
        log.info("redis store open (%s, prefix %r)", redact_url(self.url), self.prefix)

    async def release(self) -> None:
        """Close the client (the lifecycle is already ``closed``)."""
        if self._r is not None:
            await self._r.aclose()
        log.info("redis store closed")

    @property
    def redis(self) -> Any:
        """The client; RuntimeError unless the store is open."""
        if self.life.state != "open":
            self.life.check_open()
        return self._r

    def channel_key(self, channel: str, part: str) -> str:
        # The {channel} hash tag keeps a channel's keys on one Redis Cluster slot.
        return f"{self.prefix}{{{channel}}}:{part}"

    def notify_channel(self, channel: str) -> str:
        """The pub/sub channel that announces each new seq of ``channel``."""
        return self.channel_key(channel, "n")
