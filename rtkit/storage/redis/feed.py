"""The Redis store's feed: every message any hub stored in a watched
channel, delivered to this hub's sink in the store's seq order.

There is one order for every hub, the store's. An announcement (from
:mod:`.announcements`) only says "seq N exists"; the pump here reads every
message after the last one delivered up to N from the stream and hands
them to :meth:`FeedSink.stored <rtkit.storage.base.FeedSink.stored>` in seq
order. A lost announcement (the link to Redis dropped) is therefore just a
bigger read on the next one, and after a reconnect every watched channel is
read up to its head. This hub's own messages are not read back: the store
tells the feed each run it stored (:meth:`RedisFeed.stored_here`), and one
that is next in its channel is delivered as soon as its publishers' acks
have left; another hub's message before it is read and delivered first. A
channel nobody here follows any more is unwatched by a periodic sweep.

While the link is down the feed is not ``up``: the hub is not ready
(``/readyz`` 503) and answers requests with ``unavailable``; its clients
stay connected and resume once it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from ...errors import Unavailable
from ..base import FeedSink, Message, PresenceChange
from .announcements import RedisAnnouncements
from .channels import RedisChannels

__all__ = ["READ_BATCH", "UNWATCH_AFTER", "RedisFeed"]

log = logging.getLogger(__name__)

# Most messages one store read delivers.
READ_BATCH = 1000
# A channel nobody here subscribes to stays watched this long (a subscribe in
# progress has watched it but not yet joined the fan-out).
UNWATCH_AFTER = 10.0


class RedisFeed:
    """A :class:`~rtkit.storage.base.Feed` over a Redis store's announcements.

    >>> await store.feed.start(sink)     # waits until the link is up
    >>> await store.feed.watch("prices")  # before reading a subscriber's backlog
    >>> await store.feed.stop()
    """

    def __init__(self, announcements: RedisAnnouncements, channels: RedisChannels) -> None:
        self._announcements = announcements
        self._channels = channels
        channels.listener = self
        self._sink: FeedSink | None = None
        self._last: dict[str, int] = {}  # watched channel -> last seq delivered
        self._target: dict[str, int] = {}  # channel -> highest seq announced
        # channel -> this hub's append calls on their way, and the newest
        # seq Redis announced meanwhile (see announced)
        self._appending: dict[str, int] = {}
        self._held: dict[str, int] = {}
        self._watching: dict[str, asyncio.Future[None]] = {}
        self._watched_at: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._resync = False
        self._tasks: list[asyncio.Task[Any]] = []
        self._up = asyncio.Event()
        # A plain attribute, not a property: the hub reads it on every request.
        self.up = False
        self.outages = 0
        self.messages_read = 0

    # -- lifecycle ----------------------------------------------------------

    async def start(self, sink: FeedSink, within: float = 10.0) -> None:
        """Deliver to ``sink``; returns once the link to Redis is up."""
        if self._sink is not None:
            raise RuntimeError("RedisFeed.start() on a feed that already has a sink")
        self._sink = sink
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._announcements.run(self), name="rtkit redis announcements"),
            loop.create_task(self._pump(), name="rtkit redis feed pump"),
            loop.create_task(self._sweep(), name="rtkit redis feed sweep"),
        ]
        await asyncio.wait_for(self._up.wait(), within)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def status(self) -> dict[str, Any] | None:
        return {
            "up": self.up,
            "outages": self.outages,
            "watched": len(self._last),
            "messages_read": self.messages_read,
        }

    # -- subscriptions ------------------------------------------------------

    async def watch(self, channel: str) -> None:
        """Make sure ``channel``'s messages reach the sink. When this
        returns, every message stored later will be delivered; read the
        subscriber's backlog after it."""
        self._watched_at[channel] = time.monotonic()
        if channel in self._last:
            return
        pending = self._watching.get(channel)
        if pending is not None:
            await asyncio.shield(pending)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._watching[channel] = fut
        try:
            try:
                await self._announcements.watch(channel)
                head, _ = await self._channels.head(channel)
            except Exception as exc:
                raise Unavailable(f"the shared store could not follow {channel!r}: {exc}") from None
            self._last[channel] = head
            if self._target.get(channel, 0) > head:
                self._wake.set()
            fut.set_result(None)
        except BaseException as exc:
            fut.set_exception(exc)
            # Mark it retrieved: the waiters (if any) see it themselves.
            fut.exception()
            with contextlib.suppress(Exception):
                await self._announcements.unwatch(channel)
            raise
        finally:
            del self._watching[channel]

    async def unwatch(self, channel: str) -> None:
        """Stop delivering ``channel`` (the sweep does this for channels
        nobody here follows)."""
        self._last.pop(channel, None)
        self._target.pop(channel, None)
        self._watched_at.pop(channel, None)
        await self._announcements.unwatch(channel)

    async def _sweep(self) -> None:
        assert self._sink is not None  # started
        sink = self._sink
        while True:
            await asyncio.sleep(UNWATCH_AFTER / 2)
            cutoff = time.monotonic() - UNWATCH_AFTER
            for channel in list(self._last):
                if (
                    sink.subscribers(channel) == 0
                    and self._watched_at.get(channel, 0) < cutoff
                    and channel not in self._watching
                ):
                    try:
                        await self.unwatch(channel)
                    except Exception:
                        log.warning("could not unwatch %r; it is dropped on reconnect", channel)

    # -- what the announcements tell (AnnouncementListener) ------------------

    def link_state(self, up: bool) -> None:
        if up == self.up:
            return
        self.up = up
        assert self._sink is not None  # started
        if up:
            log.info("shared store link is up; catching up on %d channels", len(self._last))
            self._up.set()
            self._resync = True
            self._wake.set()
        else:
            self.outages += 1
            self._up.clear()
            log.warning("shared store link is down: this hub is not ready until it is back")
        self._sink.state(up)

    def announced(self, channel: str, seq: int) -> None:
        """Redis announced ``seq`` in ``channel``. Held while this hub has
        appends to the channel on their way: the announcement is most
        likely of those, which this hub delivers without reading them back
        (see :meth:`stored_here`); what they do not cover is read after."""
        if seq <= self._last.get(channel, -1):
            return  # delivered already
        if channel in self._appending:
            if seq > self._held.get(channel, 0):
                self._held[channel] = seq
            return
        self._follow(channel, seq)

    def _follow(self, channel: str, seq: int) -> None:
        """Read ``channel`` up to ``seq``."""
        if seq > self._target.get(channel, 0) and seq > self._last.get(channel, -1):
            self._target[channel] = seq
            self._wake.set()

    def presence_changed(self, change: PresenceChange) -> None:
        assert self._sink is not None  # started
        self._sink.presence_changed(change)

    def doc_updated(self, name: str, update: bytes) -> None:
        assert self._sink is not None  # started
        self._sink.doc_updated(name, update)

    # -- delivery -----------------------------------------------------------

    def appending(self, channel: str) -> None:
        """This hub sent an append call for ``channel`` (RedisChannels
        tells); :meth:`stored_here` follows, whatever its outcome."""
        self._appending[channel] = self._appending.get(channel, 0) + 1

    def stored_here(self, channel: str, messages: list[Message]) -> None:
        """An append call of this hub's came back: ``messages`` (perhaps
        none) are what it stored, a gap-free run, and their publishers have
        just been answered. They are delivered in the next turn of the loop,
        after those acks have left, and never read back: one round trip to
        Redis per burst of publishes, not three."""
        asyncio.get_running_loop().call_soon(self._deliver_own, channel, messages)

    def _deliver_own(self, channel: str, messages: list[Message]) -> None:
        """Deliver this hub's own ``messages`` when they come next here, as
        the embedded stores do; otherwise (another hub's messages come
        first) the pump reads the gap and delivers all in order. Then,
        once no append call of this hub's is on its way, follow up what
        Redis announced meanwhile beyond them."""
        left = self._appending.pop(channel, 1) - 1
        if left:
            self._appending[channel] = left
        held = self._held.pop(channel, 0) if not left else 0
        last = self._last.get(channel)
        if messages:
            first, newest = messages[0].seq, messages[-1].seq
            if last is None:
                if channel in self._watching:
                    self._follow(channel, newest)
            elif first > last + 1:
                self._follow(channel, newest)
            elif newest > last:
                fresh = messages if first == last + 1 else messages[last + 1 - first :]
                assert self._sink is not None  # watched, so started
                self._last[channel] = last = newest
                self._sink.stored_many(fresh)
        if held:
            self._follow(channel, held)

    async def _pump(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                if self._resync:
                    self._resync = False
                    for channel in list(self._last):
                        head, _ = await self._channels.head(channel)
                        self._follow(channel, head)
                for channel in list(self._target):
                    await self._catch_up(channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The store is away; the link's reconnect resyncs everything.
                log.warning("reading announced messages failed (%s); retrying", exc)
                self._resync = True
                await asyncio.sleep(0.2)
                self._wake.set()

    async def _catch_up(self, channel: str) -> None:
        target = self._target.pop(channel, 0)
        last = self._last.get(channel)
        if last is None or target <= last:
            return
        try:
            rng = await self._channels.read(channel, since=last, limit=READ_BATCH)
        except BaseException:
            self._follow(channel, target)
            raise
        now = self._last.get(channel)
        if now is None:
            return  # unwatched meanwhile
        if rng.seq < last:
            log.warning("%r restarted in the store (head %d < %d)", channel, rng.seq, last)
            self._last[channel] = rng.seq
            return
        # This hub's own messages may have been delivered meanwhile (stored_here).
        last = max(last, now)
        if not rng.complete and (not rng.messages or rng.messages[0].seq > last + 1):
            log.warning(
                "%r: messages after seq %d are no longer retained; subscribers here "
                "have a gap (they recover it on resubscribing)",
                channel,
                last,
            )
            last = rng.messages[0].seq - 1 if rng.messages else rng.seq
        assert self._sink is not None  # started
        fresh = [msg for msg in rng.messages if msg.seq > last]
        if fresh:
            last = fresh[-1].seq
            self._last[channel] = last
            self.messages_read += len(fresh)
            self._sink.stored_many(fresh)
        if rng.seq > last:
            self._follow(channel, rng.seq)
        elif target > last:
            self._follow(channel, target)
