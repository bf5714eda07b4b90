"""What makes a hub one of many: the link to a shared store's feed.

With a :class:`~rtkit.storage.base.SharedStore` (Redis), every message of a
channel, whichever hub stored it, reaches this hub's subscribers through the
store's announcements, never straight from the local publish: so there is
one order, the store's. An announcement only says "seq N exists"; the pump
here reads every message after the last one delivered up to N from the
store and pushes them into the :class:`~rtkit.hub.fanout.FanOut` in seq
order. A lost announcement (the link to Redis dropped) is therefore just a
bigger read on the next one, and after a reconnect every watched channel is
read up to its head.

While the link is down the hub is not ready (``/readyz`` 503) and answers
requests with ``unavailable``; its clients stay connected and resume once it
is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from ..errors import Unavailable
from ..storage.base import PresenceChange, SharedStore

if TYPE_CHECKING:
    from .docs import SharedDocs
    from .fanout import FanOut
    from .presence import PresenceRooms

log = logging.getLogger(__name__)

# Most messages one store read brings into the fan-out.
READ_BATCH = 1000
# A channel nobody here subscribes to stays watched this long (a subscribe in
# progress has watched it but not yet joined the fan-out).
UNWATCH_AFTER = 10.0


class ClusterLink:
    """Feeds a hub's fan-out, presence and documents from a shared store.

    >>> link = ClusterLink(store, hub.fanout, hub.presence, hub.docs)
    >>> await link.start()
    >>> await link.watch("prices")   # before reading a subscriber's backlog
    >>> await link.stop()
    """

    def __init__(
        self,
        store: SharedStore,
        fanout: FanOut,
        presence: PresenceRooms,
        docs: SharedDocs,
    ) -> None:
        self._store = store
        self._fanout = fanout
        self._presence = presence
        self._docs = docs
        self._last: dict[str, int] = {}  # watched channel -> last seq pushed
        self._target: dict[str, int] = {}  # channel -> highest seq announced
        self._watching: dict[str, asyncio.Future[None]] = {}
        self._watched_at: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._resync = False
        self._tasks: list[asyncio.Task[Any]] = []
        self._up = asyncio.Event()
        self.up = False
        self.outages = 0
        self.messages_read = 0

    # -- lifecycle ----------------------------------------------------------

    async def start(self, within: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._store.run_feed(self), name="rtkit cluster feed"),
            loop.create_task(self._pump(), name="rtkit cluster pump"),
            loop.create_task(self._sweep(), name="rtkit cluster sweep"),
        ]
        await asyncio.wait_for(self._up.wait(), within)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def status(self) -> dict[str, Any]:
        return {
            "up": self.up,
            "outages": self.outages,
            "watched": len(self._last),
            "messages_read": self.messages_read,
        }

    # -- subscriptions ------------------------------------------------------

    async def watch(self, channel: str) -> None:
        """Make sure ``channel``'s messages reach the fan-out. When this
        returns, every message stored later will be pushed; read the
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
                await self._store.watch(channel)
                head, _ = await self._store.channels.head(channel)
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
                await self._store.unwatch(channel)
            raise
        finally:
            del self._watching[channel]

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(UNWATCH_AFTER / 2)
            cutoff = time.monotonic() - UNWATCH_AFTER
            for channel in list(self._last):
                if (
                    self._fanout.subscriber_count(channel) == 0
                    and self._watched_at.get(channel, 0) < cutoff
                    and channel not in self._watching
                ):
                    del self._last[channel]
                    self._target.pop(channel, None)
                    self._watched_at.pop(channel, None)
                    try:
                        await self._store.unwatch(channel)
                    except Exception:
                        log.warning("could not unwatch %r; it is dropped on reconnect", channel)

    # -- the feed (FeedSink) -------------------------------------------------

    def feed_state(self, up: bool) -> None:
        if up == self.up:
            return
        self.up = up
        if up:
            log.info("shared store link is up; catching up on %d channels", len(self._last))
            self._up.set()
            self._resync = True
            self._wake.set()
        else:
            self.outages += 1
            self._up.clear()
            log.warning("shared store link is down: this hub is not ready until it is back")

    def feed_seq(self, channel: str, seq: int) -> None:
        if seq > self._target.get(channel, 0):
            self._target[channel] = seq
            self._wake.set()

    def feed_presence(self, change: PresenceChange) -> None:
        self._presence.remote_change(change)

    def feed_doc(self, name: str, update: bytes) -> None:
        self._docs.remote_update(name, update)

    # -- delivery -----------------------------------------------------------

    async def _pump(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                if self._resync:
                    self._resync = False
                    for channel in list(self._last):
                        head, _ = await self._store.channels.head(channel)
                        self.feed_seq(channel, head)
                for channel in list(self._target):
                    await self._catch_up(channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The store is away; the feed's reconnect resyncs everything.
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
            rng = await self._store.channels.read(channel, since=last, limit=READ_BATCH)
        except BaseException:
            self.feed_seq(channel, target)
            raise
        if self._last.get(channel) != last:
            return  # unwatched meanwhile
        if rng.seq < last:
            log.warning("%r restarted in the store (head %d < %d)", channel, rng.seq, last)
            self._last[channel] = rng.seq
            return
        if not rng.complete:
            log.warning(
                "%r: messages after seq %d are no longer retained; subscribers here "
                "have a gap (they recover it on resubscribing)",
                channel,
                last,
            )
            last = rng.messages[0].seq - 1 if rng.messages else rng.seq
        for msg in rng.messages:
            if msg.seq > last:
                self._fanout.push(msg)
                last = msg.seq
                self.messages_read += 1
        self._last[channel] = last
        if rng.seq > last:
            self.feed_seq(channel, rng.seq)
        elif target > last:
            self.feed_seq(channel, target)
