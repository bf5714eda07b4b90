"""The feed of the embedded stores (memory, SQLite): a message is delivered
the moment it is stored.

One hub owns such a store, so there is nobody else's change to hear about
and nothing to watch: the backend's ``append`` hands each newly stored
message (never a duplicate) to :attr:`LocalFeed.deliver` itself, in the
same turn of the event loop that stores it, before the publisher's ack is
returned. The fan-out relies on that for latency and for order: the
messages of a channel reach it in seq order because they are stored in seq
order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .base import FeedSink, Message

__all__ = ["LocalFeed"]


class LocalFeed:
    """A :class:`~rtkit.storage.base.Feed` that is always up.

    >>> feed = LocalFeed()
    >>> await feed.start(sink)
    >>> feed.deliver(message)  # what the backend's append does
    """

    # A plain attribute, not a property: the hub reads it on every request.
    up = True

    def __init__(self) -> None:
        # The sink's bound ``stored``, looked up once: the backends call it
        # on every append, and None (no hub attached) costs one test.
        self.deliver: Callable[[Message], None] | None = None
        self._sink: FeedSink | None = None

    async def start(self, sink: FeedSink) -> None:
        if self.deliver is not None:
            raise RuntimeError("LocalFeed.start() on a feed that already has a sink")
        self.deliver = sink.stored
        self._sink = sink

    async def stop(self) -> None:
        self.deliver = None
        self._sink = None

    def forget(self, channel: str) -> bool:
        """Whether the store may forget ``channel`` (see
        :meth:`~rtkit.storage.base.FeedSink.forget`); True with no sink."""
        return self._sink is None or self._sink.forget(channel)

    async def watch(self, channel: str) -> None:
        """Nothing to do: every message stored here is delivered."""

    async def unwatch(self, channel: str) -> None:
        """Nothing to do: every message stored here is delivered."""

    def status(self) -> dict[str, Any] | None:
        return None
