"""The storage contract, split by concern, and the records it speaks in.

A store is three small protocols composed by each backend, as centrifuge
keeps its Broker and PresenceManager apart:

- :class:`ChannelStore` keeps, per channel, a gap-free sequence of messages
  (seq 1, 2, 3...), an ``epoch`` that changes whenever that sequence
  restarts (a memory store after a restart, say), bounded history, and the
  idempotency keys of recent publishes. The hub owns ordering only through
  it: ``append`` assigns the seq, and returns once the message is stored as
  durably as the backend promises.
- :class:`PresenceStore` keeps rooms of members, each with the connections
  that vouch for it and a deadline per connection. Presence is ephemeral:
  the embedded backends keep it in memory; a shared backend (Redis) lets
  every hub see it, and because each connection entry lapses at its
  deadline unless its hub refreshes it, the members of a hub that died
  leave on their own.
- :class:`DocumentStore` keeps shared documents: a snapshot plus the Yjs
  updates stored since.

:class:`Store` is what the hub holds: ``url``, ``open``/``close`` for the
resources the three share (a database file, a Redis client), the three as
``store.channels``, ``store.presence`` and ``store.docs``, and
``store.feed``, a :class:`Feed`: the one way stored messages reach the hub's
:class:`FeedSink`. Every backend has one, so a message takes the same path
from "stored" to "delivered" whatever keeps it, as every centrifuge broker
calls the node's HandlePublication. A store decides where a message is
kept, never how it reaches subscribers.

Where the rest lives: :mod:`rtkit.storage.url` builds a store from its URL;
:mod:`.ids`, :mod:`.dedup`, :mod:`.ranges`, :mod:`.codec` and
:mod:`.presence` hold what several backends share, and :mod:`.feed` the
feed of the embedded backends; each backend is a
package (:mod:`.memory`, :mod:`.sqlite`, :mod:`.redis`) with a module per
concern. No backend imports another.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ..errors import ConfigurationError
from ..protocol import Member as Member  # part of the storage contract
from ..protocol import Message as Message  # part of the storage contract
from ..protocol import PresenceEventName


@dataclass(frozen=True, slots=True)
class Appended:
    """What ``ChannelStore.append`` returns: the stored message, or the earlier one with the
    same idempotency key (``duplicate=True``, nothing new stored)."""

    message: Message
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class Range:
    """What ``ChannelStore.read`` returns.

    ``seq`` is the channel's latest seq (0 when empty), ``epoch`` its epoch.
    ``complete`` is False when ``since`` asked for messages the store no
    longer retains (or never had, for another epoch): the caller has a gap.
    """

    messages: list[Message]
    seq: int
    epoch: str
    complete: bool = True


@dataclass(frozen=True, slots=True)
class Retention:
    """What a channel keeps: its newest ``max_messages`` messages, none older
    than ``max_age`` seconds, and (oldest dropped first) no more than
    ``max_bytes`` of payload (encoded JSON or raw bytes; the newest message
    is always kept). A channel whose messages have all expired is forgotten
    unless someone follows it, so what a store holds is bounded by what it
    retains, never by what was read."""

    max_messages: int = 10_000  # per channel
    max_age: float = 24 * 3600.0  # seconds
    max_bytes: int = 64 * 1024 * 1024  # per channel

    def __post_init__(self) -> None:
        if self.max_messages < 1 or self.max_age <= 0 or self.max_bytes < 1:
            raise ConfigurationError(
                "retention needs max_messages >= 1, max_age > 0 and max_bytes >= 1"
            )


@dataclass(frozen=True, slots=True)
class PresenceChange:
    """A change of a room that members should hear about: ``member`` as it is
    now (for ``leave``: as it was when its last connection went)."""

    room: str
    event: PresenceEventName
    member: Member


@dataclass(frozen=True, slots=True)
class DocRecord:
    """What ``DocumentStore.load`` returns: everything needed to rebuild a document.

    ``snapshot`` is one Yjs update holding the state up to the last
    compaction (None before the first); ``updates`` are the updates stored
    since, oldest first; ``last_id`` identifies the newest of them (0 if
    none) for ``DocumentStore.compact``.
    """

    snapshot: bytes | None
    updates: list[bytes]
    last_id: int


@runtime_checkable
class ChannelStore(Protocol):
    """Messages of channels: numbering, history, idempotency. All methods are
    coroutines and never block the event loop."""

    async def append(
        self,
        channel: str,
        data: Any,
        *,
        sender: str,
        msg_id: str | None,
        ts: float,
        dedup_window: float,
    ) -> Appended:
        """Store one message and return it with its seq.

        ``msg_id`` None means the store makes a unique id. When
        ``(channel, sender, msg_id)`` was appended within ``dedup_window``
        seconds, the earlier message is returned with ``duplicate=True``.
        Returns only once the message is stored; concurrent appends to one
        channel get seqs in the order the calls were made.
        """
        ...

    async def read(
        self,
        channel: str,
        *,
        since: int | None = None,
        before: int | None = None,
        limit: int | None = None,
        last: int | None = None,
    ) -> Range:
        """Messages of a channel in seq order.

        ``since``: seq > since (with ``limit``, the oldest ``limit`` of them).
        ``before``: seq < before. ``last``: the newest ``last`` messages.
        With none of them, the newest ``limit`` (or all retained).
        """
        ...

    async def head(self, channel: str) -> tuple[int, str]:
        """The channel's latest seq (0 if none) and epoch."""
        ...


@runtime_checkable
class ImmediateChannelStore(ChannelStore, Protocol):
    """A channel store that can also append without waiting (the memory store).

    The hub then answers a publish where it reads the request, without a
    task and a coroutine per request. ``append_now`` must do exactly what
    ``append`` does, raising where it would raise.
    """

    def append_now(
        self,
        channel: str,
        data: Any,
        *,
        sender: str,
        msg_id: str | None,
        ts: float,
        dedup_window: float,
    ) -> Appended:
        """:meth:`ChannelStore.append`, done before returning."""
        ...


# What a queued append calls with its result, or with the exception that
# ``append`` would raise.
Answer = Callable[["Appended | Exception"], None]


def into_future(done: asyncio.Future[Appended], result: Appended | Exception) -> None:
    """An :data:`Answer` (with ``functools.partial``) that settles ``done``,
    unless its waiter gave up."""
    if done.done():
        return
    if isinstance(result, Exception):
        done.set_exception(result)
    else:
        done.set_result(result)


@runtime_checkable
class QueuedChannelStore(ChannelStore, Protocol):
    """A channel store that queues appends and answers them together (the
    Redis store: one round trip per burst).

    The hub then answers a publish without a task, a coroutine or a future
    per request: the store calls ``then``, and the hub sends the ack.
    ``append_soon`` must do exactly what ``append`` does, queueing in call
    order, and raise before queueing where ``append`` would raise at once.
    A burst's answers come in one step, before the feed delivers the
    burst, so the acks leave first.
    """

    def append_soon(
        self,
        channel: str,
        data: Any,
        *,
        sender: str,
        msg_id: str | None,
        ts: float,
        dedup_window: float,
        then: Answer,
    ) -> None:
        """:meth:`ChannelStore.append`, queued: ``then`` is called once,
        with its result or exception."""
        ...


@runtime_checkable
class PresenceStore(Protocol):
    """Rooms of members with per-connection deadlines. All methods are
    coroutines and never block the event loop."""

    async def join(
        self,
        room: str,
        conn: str,
        member: Member,
        *,
        expires: float,
        max_members: int,
        max_state_bytes: int,
    ) -> PresenceChange | None:
        """Add connection ``conn`` to ``member`` in ``room``; the
        connection's deadline, for every room it is in, becomes ``expires``.

        ``member.state`` is a patch merged into the member's state (see
        :func:`rtkit.protocol.merge_state`); ``member.connections`` is
        ignored. A new member makes a ``join``, more connections or another
        state an ``update``; None when nothing others can see changed.
        Raises Forbidden when the room already has ``max_members`` members
        and TooLarge when the merged state is over ``max_state_bytes``.
        """
        ...

    async def update(
        self, room: str, member_id: str, patch: dict[str, Any], *, max_state_bytes: int
    ) -> PresenceChange | None:
        """Merge ``patch`` into a member's state; None if it is not in the
        room or nothing changed."""
        ...

    async def leave(self, room: str, member_id: str, conn: str) -> PresenceChange | None:
        """Remove one connection: ``leave`` if it was the member's last,
        ``update`` (fewer connections) otherwise, None if it was not there."""
        ...

    async def members(self, room: str) -> list[Member]:
        """The room's members, in the order they joined."""
        ...

    async def refresh(self, conns: Collection[str], expires: float) -> None:
        """Move the deadline of these connections (in every room) to
        ``expires``; connections in no room are left out."""
        ...

    async def expire(self, now: float) -> list[PresenceChange]:
        """Drop connection entries whose deadline is before ``now``; returns
        what that changed, for the hub to tell the rooms."""
        ...


@runtime_checkable
class DocumentStore(Protocol):
    """Shared documents as a snapshot plus the updates stored since. All
    methods are coroutines and never block the event loop."""

    async def load(self, name: str) -> DocRecord:
        """The document's snapshot and the updates stored after it."""
        ...

    async def append(self, name: str, update: bytes) -> int:
        """Store one update durably; returns how many updates the document
        now has after its snapshot (the caller compacts when that grows)."""
        ...

    async def compact(self, name: str, snapshot: bytes, upto: int) -> None:
        """Replace the snapshot with ``snapshot``, which covers every update
        up to id ``upto`` (a ``DocRecord.last_id``), and drop those updates.
        Ignored when a compaction that covers more already happened."""
        ...


@runtime_checkable
class Store(Protocol):
    """What the hub holds: a backend's three concerns and their shared lifecycle.

    >>> store = store_from_url("memory://")
    >>> await store.open()
    >>> appended = await store.channels.append(
    ...     "prices", {"px": 1.0}, sender="ann", msg_id=None, ts=time.time(), dedup_window=300
    ... )
    >>> await store.close()
    """

    url: str

    @property
    def channels(self) -> ChannelStore:
        """Messages of channels."""
        ...

    @property
    def presence(self) -> PresenceStore:
        """Rooms of members."""
        ...

    @property
    def docs(self) -> DocumentStore:
        """Shared documents."""
        ...

    @property
    def feed(self) -> Feed:
        """How newly stored messages reach the hub."""
        ...

    async def open(self) -> None:
        """Acquire resources (files, connections). Called once before use."""

    async def close(self) -> None:
        """Flush pending writes and release resources. Idempotent."""


class FeedSink(Protocol):
    """Where a store's feed delivers: the hub side of the one delivery path.

    ``stored`` (or ``stored_many`` for a burst) is the only way a message
    reaches subscribers, whichever backend stored it and whichever hub
    published it.
    """

    def stored(self, message: Message) -> None:
        """``message`` was stored (once per message, in seq order per channel)."""

    def stored_many(self, messages: list[Message]) -> None:
        """Several messages of one channel were stored, in seq order (a
        burst, delivered together): as ``stored`` for each, in one go."""

    def presence_changed(self, change: PresenceChange) -> None:
        """Another hub changed a room (shared stores only)."""

    def doc_updated(self, name: str, update: bytes) -> None:
        """Another hub stored an update of a shared document (shared stores only)."""

    def state(self, up: bool) -> None:
        """The link to a shared store went away (False) or is back (True)."""

    def subscribers(self, channel: str) -> int:
        """How many here follow ``channel``; a feed may stop watching a
        channel nobody follows."""
        ...

    def forget(self, channel: str) -> bool:
        """The store wants to forget ``channel`` (its messages all expired; a
        later publish starts it over at seq 1 under a new epoch). True when
        nobody here follows it, and the hub then forgets it too; False keeps
        it in the store."""
        ...


@runtime_checkable
class Feed(Protocol):
    """How a store's newly stored messages reach a :class:`FeedSink`.

    The embedded stores feed the sink from ``append`` itself, before it
    returns (:class:`rtkit.storage.feed.LocalFeed`); a shared store (Redis)
    reads what any hub stored and feeds it in the store's order.

    >>> await store.feed.start(sink)
    >>> await store.feed.watch("prices")  # before reading a subscriber's backlog
    >>> await store.feed.stop()
    """

    @property
    def up(self) -> bool:
        """Whether stored messages reach the sink now (False while a shared
        store is out of reach)."""
        ...

    async def start(self, sink: FeedSink) -> None:
        """Deliver to ``sink`` from now on (after ``Store.open``)."""
        ...

    async def stop(self) -> None:
        """Stop delivering (before ``Store.close``)."""
        ...

    async def watch(self, channel: str) -> None:
        """From when this returns, every message of ``channel`` stored later
        reaches the sink."""
        ...

    async def unwatch(self, channel: str) -> None:
        """``channel``'s messages need not reach the sink any more."""
        ...

    def status(self) -> dict[str, Any] | None:
        """A JSON-ready snapshot of the link to a shared store; None for an
        embedded store, which has no link."""
        ...
