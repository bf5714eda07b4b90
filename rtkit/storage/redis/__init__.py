"""A store shared by many hub processes: Redis 7 (or Valkey).

Every hub pointed at the same Redis (and key prefix) serves the same
channels, so a load balancer needs no sticky sessions.

- :mod:`.store`: :class:`RedisStore`, the composition and its lifecycle;
- :mod:`.connection`: the client, Lua scripts, key prefix and lifecycle the
  concerns share;
- :mod:`.channels`: messages, numbered, stored and announced by one script;
- :mod:`.presence`: rooms as hashes, changed in optimistic transactions by
  the rules of :mod:`rtkit.storage.presence`;
- :mod:`.docs`: shared documents as a stream of updates plus a snapshot;
- :mod:`.announcements`: the pub/sub link that tells a hub what any hub
  stored, and other hubs' presence changes and document updates;
- :mod:`.feed`: :class:`RedisFeed`, the store's feed: reads what the
  announcements tell from the stream and delivers it in seq order.

Needs the ``redis`` extra: ``pip install 'rtkit[redis]'``; redis-py is
imported when a store opens, not when this package is.
"""

from __future__ import annotations

from .announcements import RedisAnnouncements
from .channels import RedisChannels
from .connection import RedisConnection, import_redis
from .docs import RedisDocs
from .feed import RedisFeed
from .presence import RedisPresence
from .store import RedisStore

__all__ = [
    "RedisAnnouncements",
    "RedisChannels",
    "RedisConnection",
    "RedisDocs",
    "RedisFeed",
    "RedisPresence",
    "RedisStore",
    "import_redis",
]
