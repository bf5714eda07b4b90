"""Where stored messages enter the hub: the sink of the store's feed.

Every message reaches subscribers the same way, whatever the backend: the
store's :class:`~rtkit.storage.base.Feed` hands it to
:attr:`HubDelivery.stored`, the one entry into the
:class:`~rtkit.hub.fanout.FanOut`. The memory and SQLite stores do that as
they append; the Redis store once it has read the message back in the
store's order, whichever hub published it. A shared store also reports
other hubs' presence changes and document updates here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..storage.base import Message, PresenceChange

if TYPE_CHECKING:
    from .docs import SharedDocs
    from .fanout import FanOut
    from .presence import PresenceRooms

log = logging.getLogger(__name__)


class HubDelivery:
    """A :class:`~rtkit.storage.base.FeedSink` for one hub.

    >>> await store.feed.start(HubDelivery(hub.fanout, hub.presence, hub.docs))
    """

    def __init__(self, fanout: FanOut, presence: PresenceRooms, docs: SharedDocs) -> None:
        self._fanout = fanout
        self._presence = presence
        self._docs = docs
        # The fan-out's push itself, not a method calling it: this is called
        # once per message on the delivery hot path.
        self.stored: Callable[[Message], None] = fanout.push
        self.stored_many: Callable[[list[Message]], None] = fanout.push_many

    def presence_changed(self, change: PresenceChange) -> None:
        self._presence.remote_change(change)

    def doc_updated(self, name: str, update: bytes) -> None:
        self._docs.remote_update(name, update)

    def state(self, up: bool) -> None:
        # The feed logs the outage and keeps its ``up``; the hub reads that.
        log.debug("store feed %s", "up" if up else "down")

    def subscribers(self, channel: str) -> int:
        return self._fanout.subscriber_count(channel)

    def forget(self, channel: str) -> bool:
        return self._fanout.forget(channel)
