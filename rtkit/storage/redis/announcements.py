"""The pub/sub link through which one hub hears what any hub stored in the
same Redis; :mod:`.feed` turns what it hears into delivered messages.

A hub subscribes to the ``n`` pub/sub channel of the channels its clients
follow only (``watch``/``unwatch``) and reads the messages from the stream;
a missed announcement (a pub/sub reconnect) shows as a seq gap that the hub
fills from the stream before delivering. Presence changes and document
updates come on ``<prefix>events``, one channel for all, each tagged with
the ``origin`` of the hub that made it so that a hub skips its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

import orjson

from ...protocol import parse_member
from ..base import PresenceChange
from .connection import RedisConnection, import_redis

__all__ = ["AnnouncementListener", "RedisAnnouncements"]

log = logging.getLogger(__name__)


class AnnouncementListener(Protocol):
    """What :meth:`RedisAnnouncements.run` tells (the store's feed)."""

    def link_state(self, up: bool) -> None:
        """The pub/sub link went away (False) or is back (True);
        announcements may have been missed while it was away."""

    def announced(self, channel: str, seq: int) -> None:
        """Message ``seq`` of a watched channel was stored (by any hub)."""

    def presence_changed(self, change: PresenceChange) -> None:
        """Another hub changed a room."""

    def doc_updated(self, name: str, update: bytes) -> None:
        """Another hub stored an update of a shared document."""


class RedisAnnouncements:
    """The announcements of one Redis URL and prefix, told to an
    :class:`AnnouncementListener` over a pub/sub link of its own."""

    def __init__(self, conn: RedisConnection) -> None:
        self._conn = conn
        self._watched: set[str] = set()
        # SUBSCRIBEs sent and not yet confirmed, by pub/sub channel name.
        self._confirm: dict[bytes, asyncio.Future[None]] = {}
        self._pubsub: Any = None
        self._link_lock = asyncio.Lock()

    async def watch(self, channel: str, within: float = 5.0) -> None:
        """Receive ``channel``'s announcements from now on (once this returns:
        Redis has confirmed the subscription, so nothing published later is
        missed). Without a link to Redis it raises ConnectionError."""
        async with self._link_lock:
            if channel in self._watched:
                return
            if self._pubsub is None:
                raise ConnectionError("the link to Redis is down")
            name = self._conn.notify_channel(channel)
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._confirm[name.encode()] = fut
            self._watched.add(channel)
            try:
                await self._pubsub.subscribe(name)
                await asyncio.wait_for(asyncio.shield(fut), within)
            except BaseException:
                self._watched.discard(channel)
                self._confirm.pop(name.encode(), None)
                raise

    async def unwatch(self, channel: str) -> None:
        async with self._link_lock:
            if channel not in self._watched:
                return
            self._watched.discard(channel)
            if self._pubsub is not None:
                with contextlib.suppress(Exception):
                    await self._pubsub.unsubscribe(self._conn.notify_channel(channel))

    async def run(self, sink: AnnouncementListener, *, max_backoff: float = 2.0) -> None:
        """Deliver announcements to ``sink`` until cancelled, reconnecting
        with backoff; ``sink.link_state`` hears when the link goes and returns."""
        aioredis = import_redis()
        from redis.exceptions import RedisError

        backoff = 0.05
        notify_prefix = self._conn.prefix.encode()
        events = self._conn.events
        while True:
            client = self._conn.client()
            pubsub = client.pubsub()
            try:
                async with self._link_lock:
                    channels = [self._conn.notify_channel(c) for c in self._watched]
                    await pubsub.subscribe(events, *channels)
                    # Wait for every confirmation: from here on nothing is missed.
                    confirmed = 0
                    while confirmed < len(channels) + 1:
                        msg = await pubsub.get_message(timeout=1.0)
                        if msg is None:
                            raise ConnectionError("no subscribe confirmation from Redis")
                        if msg["type"] == "subscribe":
                            confirmed += 1
                    self._pubsub = pubsub
                backoff = 0.05
                sink.link_state(True)
                while True:
                    msg = await pubsub.get_message(timeout=1.0)
                    if msg is None:
                        continue
                    if msg["type"] == "subscribe":
                        fut = self._confirm.pop(msg["channel"], None)
                        if fut is not None and not fut.done():
                            fut.set_result(None)
                        continue
                    if msg["type"] != "message":
                        continue
                    chan: bytes = msg["channel"]
                    if chan == events.encode():
                        self._dispatch_event(msg["data"], sink)
                    elif chan.startswith(notify_prefix) and chan.endswith(b"}:n"):
                        name = chan[len(notify_prefix) + 1 : -3].decode()
                        sink.announced(name, int(msg["data"]))
            except (RedisError, OSError, ConnectionError, aioredis.ConnectionError) as exc:
                log.warning("redis feed lost (%s); reconnecting in %.2f s", exc, backoff)
            finally:
                self._pubsub = None
                for fut in self._confirm.values():
                    if not fut.done():
                        fut.set_exception(ConnectionError("the link to Redis dropped"))
                        fut.exception()  # retrieved by the waiter, if still there
                self._confirm.clear()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                with contextlib.suppress(Exception):
                    await client.aclose()
            sink.link_state(False)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, max_backoff)

    def _dispatch_event(self, raw: bytes, sink: AnnouncementListener) -> None:
        header, _, body = raw.partition(b"\n")
        event = orjson.loads(header)
        if event.get("o") == self._conn.origin:
            return
        if event["k"] == "d":
            sink.doc_updated(event["doc"], body)
        elif event["k"] == "p":
            member = parse_member(event["member"])
            sink.presence_changed(PresenceChange(event["room"], event["event"], member))
