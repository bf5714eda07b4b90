"""Channels on the client: publishing, subscriptions, history, gaps.

- :class:`Channel`, one per name and client: its subscription cursor, its
  callbacks (listeners) and its gap callbacks. It resumes itself after a
  reconnect (subscribe again with the last seq and epoch seen, so the hub
  sends what was missed) and reports a resume the hub could not recover
  to its own gap callbacks and the client's ``"gap"`` callbacks.
- :class:`Publisher`, one per client: the publish outbox (an
  :class:`~rtkit.client._queue.Outbox`) and the pump task that sends it in
  call order, with at most ``max_in_flight`` publishes awaiting acks. When a
  connection drops everything unacked is sent again, in order, with its
  original id, so the hub stores each once.
- :class:`Channels`, the client's registry of channels: it routes the hub's
  ``messages`` events to each channel's receiver, resubscribes after every
  reconnect, and keeps the delivery counters.

All of it talks to the hub only through :class:`~rtkit.client._session.Session`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Final, Literal, overload

import orjson

from ..errors import AckTimeout, InternalError, NotFound, RtkitError, TooLarge
from ..protocol import (
    HISTORY,
    MAX_HISTORY_LIMIT,
    MESSAGES,
    PUBLISH,
    SUBSCRIBE,
    UNSUBSCRIBE,
    parse_history,
    parse_publish,
    parse_subscribe,
    validate_channel,
)
from ._cursor import Cursor
from ._queue import Outbox
from ._session import ConnectionLost, Session, TransportError, check_ack, copy_error
from ._types import GapInfo, Message, parse_envelope

if TYPE_CHECKING:
    import pandas as pd

    from ..frames import LiveFrame

__all__ = [
    "MAX_FRAME_BYTES",
    "Channel",
    "Channels",
    "GapCallback",
    "MessageCallback",
    "Publisher",
    "check_frame_args",
    "encoded_size",
]

log = logging.getLogger(__name__)

MessageCallback = Callable[[Message], Any]
"""``callback(msg)``; a plain function or a coroutine function."""

GapCallback = Callable[[str, GapInfo], Any]
"""``callback(channel_name, info)``; a plain function or a coroutine function."""

# Engine.IO servers drop the connection on a frame over 1 MB (python-engineio's
# max_http_buffer_size default). A publish that big would be resent after
# every reconnect and dropped again, forever; refuse it before it is queued.
MAX_FRAME_BYTES: Final = 1_000_000
_FRAME_OVERHEAD: Final = 512  # event name, namespace, channel, id, framing

# How many queued publishes the pump sends before letting other tasks run.
_PUMP_BATCH: Final = 100
_BACKFILL_PAGE: Final = 1000
_FRAME_PIPELINE: Final = 32


def _bytes_len(counter: list[int], obj: Any) -> Any:
    if isinstance(obj, bytes | bytearray | memoryview):
        counter[0] += len(obj)
        return None
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def encoded_size(data: Any) -> int:
    """About how many bytes ``data`` takes on the wire; TypeError if it cannot go."""
    if isinstance(data, bytes | bytearray | memoryview):
        return len(data)
    counter = [0]
    default = partial(_bytes_len, counter)
    try:
        body = orjson.dumps(
            data,
            default=default,
            option=orjson.OPT_NON_STR_KEYS
            | orjson.OPT_PASSTHROUGH_DATETIME
            | orjson.OPT_PASSTHROUGH_DATACLASS
            | orjson.OPT_PASSTHROUGH_SUBCLASS,
        )
    except TypeError:
        # orjson is stricter than json (integers past 64 bits, say); python-socketio
        # encodes with json, so json has the last word.
        counter[0] = 0
        text = json.dumps(data, default=default, separators=(",", ":"))
        return len(text.encode()) + counter[0]
    return len(body) + counter[0]


def check_frame_args(as_frame: bool, columns: Sequence[str] | None) -> None:
    """Refuse ``history(columns=...)`` without ``as_frame=True``."""
    # A list of messages has no columns: ignoring columns= would hide a forgotten as_frame.
    if columns is not None and not as_frame:
        raise TypeError("history(columns=...) picks DataFrame columns: pass as_frame=True too")


# -- publishing -----------------------------------------------------------------


@dataclass(slots=True, eq=False)
class _Publish:
    channel: str
    data: Any
    id: str
    future: asyncio.Future[int]
    timer: asyncio.TimerHandle | None = None
    in_flight: bool = False  # sent on the current connection, ack pending


class Publisher:
    """The client's publish outbox and the pump that sends it in call order.

    Publishes from every channel of a client share it, so they reach the hub
    in the order their ``publish`` calls started, across reconnects too. The
    client wires :meth:`wake`, :meth:`rewind` and :meth:`fail` to the
    session's resume, disconnect and failure hooks.
    """

    def __init__(self, session: Session) -> None:
        self._session = session
        options = session.options
        self._outbox: Outbox[_Publish] = Outbox(options.max_offline_queue)
        self._window = options.max_in_flight
        self._ack_timeout = options.ack_timeout
        self._in_flight = 0
        self._wake_pump = asyncio.Event()
        self.published = 0
        """Publishes acked by the hub."""

    def __len__(self) -> int:
        """Publishes queued or in flight, not yet acked."""
        return len(self._outbox)

    def start(self) -> None:
        """Start the pump (once the session is open)."""
        self._session.spawn(self._pump(), "publisher")

    async def publish(self, channel: str, data: Any, msg_id: str | None) -> int:
        """Queue a publish and return its seq once the hub acked it."""
        session = self._session
        session.check_usable()
        if msg_id is None:
            msg_id = uuid.uuid4().hex
        parse_publish({"channel": channel, "data": data, "id": msg_id})
        size = encoded_size(data)
        if size + _FRAME_OVERHEAD > MAX_FRAME_BYTES:
            raise TooLarge(
                f"publish to {channel!r}: the message is about {size} bytes encoded; "
                f"a Socket.IO frame carries at most {MAX_FRAME_BYTES} bytes "
                "(and the hub's own cap is usually lower: 256 KiB by default)"
            )
        item = _Publish(channel, data, msg_id, asyncio.get_running_loop().create_future())
        self._outbox.push(item, online=session.connected)
        self._wake_pump.set()
        try:
            return await item.future
        except asyncio.CancelledError:
            # Abandoned by the caller: never send it (again). If it is in
            # flight, its ack or timeout still frees its place in the window.
            self._outbox.remove(item)
            raise

    async def _pump(self) -> None:
        """Send the outbox in order, forever; acks arrive in ``_on_ack``.

        At most ``max_in_flight`` publishes wait for acks at a time, so the ack
        timeout measures the hub's answer, not a queue of our own making.
        """
        loop = asyncio.get_running_loop()
        session = self._session
        while True:
            await self._wake_pump.wait()
            self._wake_pump.clear()
            sent = 0
            while session.connected and self._in_flight < self._window:
                item = self._outbox.pop_unsent()
                if item is None:
                    break
                if item.future.done():
                    self._outbox.remove(item)
                    continue
                gen = session.generation
                try:
                    await session.emit(
                        PUBLISH,
                        {"channel": item.channel, "data": item.data, "id": item.id},
                        partial(self._on_ack, item),
                    )
                except (TypeError, ValueError) as exc:  # json could not encode it
                    self._outbox.remove(item)
                    if not item.future.done():
                        item.future.set_exception(exc)
                    continue
                except TransportError:
                    break  # the socket is going away; the rewind resends this item
                if gen == session.generation and session.connected:
                    item.in_flight = True
                    self._in_flight += 1
                    item.timer = loop.call_later(self._ack_timeout, self._on_timeout, item)
                sent += 1
                if sent % _PUMP_BATCH == 0:
                    await asyncio.sleep(0)  # let acks and deliveries run during a long flush

    def _release(self, item: _Publish) -> None:
        if item.timer is not None:
            item.timer.cancel()
            item.timer = None
        if item.in_flight:
            item.in_flight = False
            self._in_flight -= 1
            self._wake_pump.set()

    def _on_ack(self, item: _Publish, *args: Any) -> None:
        self._release(item)
        if not self._outbox.remove(item) or item.future.done():
            return  # timed out, abandoned, or failed already
        try:
            ack = check_ack(PUBLISH, args)
            seq = ack.get("seq")
            if isinstance(seq, bool) or not isinstance(seq, int):
                raise InternalError(f"publish: the hub's answer lacks a seq: {ack!r:.200}")
        except RtkitError as exc:
            item.future.set_exception(exc)
            return
        self.published += 1
        item.future.set_result(seq)

    def _on_timeout(self, item: _Publish) -> None:
        item.timer = None
        self._release(item)
        if self._outbox.remove(item) and not item.future.done():
            item.future.set_exception(
                AckTimeout(
                    f"publish to {item.channel!r} (id {item.id}): the hub did not answer "
                    f"within {self._ack_timeout} s"
                )
            )

    def wake(self) -> None:
        """Let the pump look at the outbox again (a connection is up)."""
        self._wake_pump.set()

    def rewind(self) -> None:
        """The connection dropped: everything unacked is to be sent again."""
        for item in self._outbox:
            if item.timer is not None:
                item.timer.cancel()
                item.timer = None
            item.in_flight = False
        self._in_flight = 0
        # Everything not acked goes out again, first, on the next connection.
        self._outbox.rewind()

    def fail(self, exc: RtkitError) -> None:
        """The client stopped: fail every pending publish with (a copy of) ``exc``."""
        for item in self._outbox.drain():
            if item.timer is not None:
                item.timer.cancel()
            if not item.future.done():
                item.future.set_exception(copy_error(exc))


# -- the registry ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Entry:
    channel: Channel
    receive: Callable[[Message], None]
    resume: Callable[[], Awaitable[None]]


class Channels:
    """The client's channels by name, fed by the hub's ``messages`` events.

    Also keeps the counters :attr:`rtkit.aio.Client.metrics` reports.
    """

    def __init__(self, session: Session, publisher: Publisher, client: Any) -> None:
        self.session = session
        self.publisher = publisher
        self.client = client
        """The :class:`rtkit.aio.Client` the channels belong to."""
        self._entries: dict[str, _Entry] = {}
        self.received = 0
        """Messages delivered to subscriptions (duplicates excluded)."""
        self.duplicates = 0
        """Envelopes with seq <= last seen, dropped."""
        self.gaps = 0
        """Resumes the hub could not recover."""
        session.on_event(MESSAGES, self._on_messages)
        session.on_resume(self._resubscribe_all)

    def __iter__(self) -> Iterator[Channel]:
        return iter([entry.channel for entry in self._entries.values()])

    def get(self, name: str) -> Channel:
        """The channel called ``name``, made on first use."""
        entry = self._entries.get(name)
        if entry is None:
            Channel(self, validate_channel(name, "channel"))  # registers itself
            entry = self._entries[name]
        return entry.channel

    def register(
        self,
        channel: Channel,
        *,
        receive: Callable[[Message], None],
        resume: Callable[[], Awaitable[None]],
    ) -> None:
        """Route ``channel``'s messages to ``receive``; run ``resume()`` after
        each reconnect while it is subscribed."""
        self._entries[channel.name] = _Entry(channel, receive, resume)

    def gap(self, channel: str, info: GapInfo) -> None:
        """Count and report a resume that lost messages."""
        self.gaps += 1
        log.warning(
            "rtkit: channel %r could not be resumed after seq %s (epoch %s); "
            "continuing at seq %d (epoch %s): messages in between are lost",
            channel,
            info.last_seq,
            info.last_epoch,
            info.first_seq,
            info.epoch,
        )

    def _on_messages(self, payload: Any) -> None:
        if not isinstance(payload, list):
            log.warning("rtkit: ignored a malformed 'messages' event: %r", payload)
            return
        entries = self._entries
        for env in payload:
            try:
                msg = parse_envelope(env)
            except ValueError as exc:
                log.warning("rtkit: dropped a malformed message: %s", exc)
                continue
            entry = entries.get(msg.channel)
            if entry is not None:
                entry.receive(msg)

    def _resubscribe_all(self) -> None:
        for entry in self._entries.values():
            if entry.channel.subscribed:
                self.session.spawn(entry.resume(), "resubscribe", per_connection=True)


# -- channels -------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class _Listener:
    callback: MessageCallback
    cursor: int  # deliver seq > cursor
    active: bool = True
    # While a late subscriber's history is being fetched, live messages wait here.
    buffer: list[Message] | None = None


class Channel:
    """A named channel on the hub: publish to it, subscribe to it, read its history.

    Get one with :meth:`rtkit.aio.Client.channel`; there is one object per name
    and client.

    >>> ch = hub.channel("prices")
    >>> seq = await ch.publish({"px": 1.0})
    >>> await ch.subscribe(lambda msg: print(msg.seq, msg.data))
    """

    def __init__(self, registry: Channels, name: str) -> None:
        self._registry = registry
        self._session = registry.session
        self._publisher = registry.publisher
        self.name = name
        self._cursor = Cursor(name)
        self._listeners: list[_Listener] = []
        self._gap_callbacks: list[GapCallback] = []
        # Bumped whenever the wanted subscription changes, so that the ack of a
        # superseded subscribe request is ignored.
        self._token = 0
        registry.register(self, receive=self._receive, resume=self._resume)

    def __repr__(self) -> str:
        state = "subscribed" if self._listeners else "not subscribed"
        return f"<rtkit.aio.Channel {self.name!r} {state} last_seq={self._cursor.seq}>"

    @property
    def client(self) -> Any:
        """The :class:`rtkit.aio.Client` this channel belongs to."""
        return self._registry.client

    @property
    def subscribed(self) -> bool:
        """True while at least one callback is subscribed."""
        return bool(self._listeners)

    @property
    def last_seq(self) -> int | None:
        """The last seq received on this channel (None before the first subscribe ack)."""
        return self._cursor.seq

    @property
    def epoch(self) -> str | None:
        """The channel's epoch as of the last subscribe ack."""
        return self._cursor.epoch

    async def publish(self, data: Any, id: str | None = None) -> int:
        """Publish ``data`` (any JSON value, or bytes) and return its seq once stored.

        ``id`` makes the publish idempotent: the hub stores a given
        ``(sender, id)`` once and answers repeats with the first seq. Without
        one the client makes a random id, which is what lets it resend safely
        after a reconnect.

        While disconnected the publish waits in the offline queue and this
        call returns when the hub has acked it after the reconnect. Publishes
        reach the hub in the order their ``publish`` calls started.

        Raises :class:`~rtkit.errors.OfflineQueueFull` when the offline queue
        is full, :class:`~rtkit.errors.AckTimeout` when the connected hub does
        not answer within ``ack_timeout``, and the hub's refusal
        (:class:`~rtkit.errors.Forbidden`, :class:`~rtkit.errors.TooLarge`,
        :class:`~rtkit.errors.RateLimited`, ...) otherwise.
        """
        return await self._publisher.publish(self.name, data, id)

    async def subscribe(self, callback: MessageCallback, since: int | None = None) -> None:
        """Call ``callback(msg)`` for every message of this channel, in seq order.

        ``since=N`` starts after seq N (the hub sends the backlog first);
        ``None`` starts with the next message published. Each message reaches
        each callback once, also across reconnects. Callbacks may be plain or
        ``async``; they run one at a time on the client's event loop, and an
        exception in one is logged without stopping the others.

        Several callbacks may subscribe to one channel; a later one with a
        ``since`` older than what the channel has already seen is first
        given that part of the history.

        Connected, this returns once the hub has confirmed the subscription
        (and raises its refusal, e.g. :class:`~rtkit.errors.Forbidden`);
        disconnected, it returns at once and subscribes on reconnect.
        """
        session = self._session
        session.check_usable()
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {type(callback).__name__}")
        parse_subscribe({"channel": self.name, "since": since})
        listener = _Listener(callback, cursor=-1)
        if self._listeners:
            self._add_listener(listener, since)
            return
        self._listeners.append(listener)
        self._cursor.reset()
        self._cursor.seq = since
        self._token += 1
        if not session.connected:
            return
        try:
            await session.request(
                SUBSCRIBE,
                self._cursor.subscribe_request(),
                on_ack=partial(self._on_subscribe_ack, self._token),
                wait=False,
            )
        except ConnectionLost:
            return  # still wanted: the resume after the reconnect subscribes it
        except BaseException:
            self._remove_listener(listener)
            raise

    async def unsubscribe(self, callback: MessageCallback | None = None) -> None:
        """Stop delivering to ``callback``, or to every callback when it is None.

        Messages already queued for a removed callback are dropped. When no
        callback is left the hub is told to stop sending this channel.
        """
        removed = [
            listener
            for listener in self._listeners
            if callback is None or listener.callback == callback
        ]
        if not removed:
            return
        for listener in removed:
            self._remove_listener(listener)
        if self._listeners or not self._session.connected:
            return
        # A dead connection took its subscriptions with it, and a resubscribe
        # still in flight may not have reached the hub yet: both are fine.
        with contextlib.suppress(ConnectionLost, NotFound):
            await self._session.request(UNSUBSCRIBE, {"channel": self.name}, wait=False)

    @overload
    async def history(
        self,
        since: int | None = None,
        before: int | None = None,
        limit: int | None = None,
        *,
        as_frame: Literal[False] = False,
        columns: None = None,
    ) -> list[Message]: ...

    @overload
    async def history(
        self,
        since: int | None = None,
        before: int | None = None,
        limit: int | None = None,
        *,
        as_frame: Literal[True],
        columns: Sequence[str] | None = None,
    ) -> pd.DataFrame: ...

    @overload
    async def history(
        self,
        since: int | None = None,
        before: int | None = None,
        limit: int | None = None,
        *,
        as_frame: bool,
        columns: Sequence[str] | None = None,
    ) -> list[Message] | pd.DataFrame: ...

    async def history(
        self,
        since: int | None = None,
        before: int | None = None,
        limit: int | None = None,
        *,
        as_frame: bool = False,
        columns: Sequence[str] | None = None,
    ) -> list[Message] | pd.DataFrame:
        """Stored messages of this channel, oldest first.

        ``since=N`` returns messages after seq N, ``before=M`` those before
        seq M, ``limit`` caps the count (the hub applies its own cap too).
        The hub answers a long range in pages of a bounded size; this asks
        for every page and returns the whole range.

        ``as_frame=True`` returns a pandas DataFrame instead (needs
        ``rtkit[pandas]``), built like :meth:`frame`'s: indexed by hub time
        (UTC), frame batches back with their dtypes, a row of missing values
        where seqs are missing; ``columns`` picks and orders its columns.

        >>> df = await ch.history(limit=1000, as_frame=True, columns=["px"])
        """
        check_frame_args(as_frame, columns)
        req: dict[str, Any] = {"channel": self.name}
        for key, value in (("since", since), ("before", before), ("limit", limit)):
            if value is not None:
                req[key] = value
        parse_history(req)
        ack = await self._session.request(HISTORY, req)
        messages = [parse_envelope(env) for env in ack.get("messages") or ()]
        # An ack carries a bounded number of bytes; with "more" it holds only
        # the part of the range nearest 'since' (else the newest part): ask
        # for the rest until the range, or the count asked for, is complete.
        wanted = limit if limit is not None else MAX_HISTORY_LIMIT
        while ack.get("more") and messages and len(messages) < wanted:
            if since is not None:
                req["since"] = messages[-1].seq
            else:
                req["before"] = messages[0].seq
            req["limit"] = wanted - len(messages)
            ack = await self._session.request(HISTORY, req)
            page = [parse_envelope(env) for env in ack.get("messages") or ()]
            if not page:
                break
            messages = messages + page if since is not None else page + messages
        if not as_frame:
            return messages
        from ..frames import decode_messages

        return decode_messages(messages, columns)

    async def frame(
        self,
        window: int | str | Any = 1_000,
        columns: Sequence[str] | None = None,
        since: int | None = None,
    ) -> LiveFrame:
        """A live pandas view of this channel; see :class:`rtkit.frames.LiveFrame`.

        ``window`` is a row count or a time span (``"5min"``); ``columns``
        picks and orders columns; ``since`` is passed to :meth:`subscribe`.
        ``await view.close()`` unsubscribes it. Needs ``rtkit[pandas]``.
        """
        from ..frames import LiveFrame

        async def close() -> None:
            self.off_gap(view.on_gap)  # else the channel keeps the closed view alive
            await self.unsubscribe(view.on_message)

        view = LiveFrame(self.name, window, columns, on_close=close)
        self.on_gap(view.on_gap)
        try:
            await self.subscribe(view.on_message, since=since)
        except BaseException:
            self.off_gap(view.on_gap)
            raise
        return view

    async def publish_frame(self, df: Any, batch_rows: int | None = None) -> list[int]:
        """Publish a pandas DataFrame in column-oriented batches, one message each.

        ``batch_rows`` defaults to :data:`rtkit.frames.DEFAULT_BATCH_ROWS`.
        Returns the seqs of the batches. dtypes (timestamps with their time
        zone included) and missing values survive the round trip through
        :meth:`frame` and ``history(as_frame=True)``.
        """
        from ..frames import DEFAULT_BATCH_ROWS, encode_batches

        payloads = encode_batches(df, DEFAULT_BATCH_ROWS if batch_rows is None else batch_rows)
        seqs: list[int] = []
        # Pipelined, in order, with a bounded number of publishes in the air.
        for start in range(0, len(payloads), _FRAME_PIPELINE):
            group = payloads[start : start + _FRAME_PIPELINE]
            seqs += await asyncio.gather(*(self.publish(p) for p in group))
        return seqs

    async def history_frame(
        self,
        since: int | None = None,
        before: int | None = None,
        limit: int | None = None,
        columns: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Same as ``history(since, before, limit, as_frame=True, columns=columns)``."""
        return await self.history(since, before, limit, as_frame=True, columns=columns)

    def on_gap(self, callback: GapCallback) -> GapCallback:
        """Call ``callback(channel_name, info)`` when a resume loses messages.

        That happens when the hub no longer retains what was missed while
        disconnected, or the channel restarted (a new epoch). ``info`` is a
        :class:`GapInfo`. Usable as a decorator; returns ``callback``.
        """
        self._gap_callbacks.append(callback)
        return callback

    def off_gap(self, callback: GapCallback) -> None:
        """Stop calling a callback given to :meth:`on_gap`."""
        with contextlib.suppress(ValueError):
            self._gap_callbacks.remove(callback)

    # -- internals, all on the client's event loop ------------------------

    def _add_listener(self, listener: _Listener, since: int | None) -> None:
        known = self._cursor.seq
        if since is None:
            listener.cursor = known if known is not None else -1
        elif known is None or since >= known:
            listener.cursor = since
        else:
            listener.cursor = since
            listener.buffer = []
            self._session.spawn(self._backfill(listener, known), "backfill")
        self._listeners.append(listener)

    def _remove_listener(self, listener: _Listener) -> None:
        listener.active = False
        listener.buffer = None
        if listener in self._listeners:
            self._listeners.remove(listener)
        if not self._listeners:
            self._token += 1
            self._cursor.reset()

    def _on_subscribe_ack(self, token: int, ack: dict[str, Any]) -> None:
        """Apply a subscribe ack; runs inside the ack handler, before any later packet."""
        if token != self._token or not self._listeners:
            return
        seq, epoch = ack.get("seq"), ack.get("epoch")
        if isinstance(seq, bool) or not isinstance(seq, int) or epoch is None:
            raise InternalError(f"subscribe {self.name!r}: the hub's answer lacks seq/epoch")
        backlog: list[Message] = []
        for env in ack.get("messages") or ():
            try:
                backlog.append(parse_envelope(env))
            except ValueError as exc:
                log.warning("rtkit: dropped a malformed backlog message: %s", exc)
        backlog.sort(key=lambda msg: msg.seq)
        gap = self._cursor.apply_ack(
            seq=seq, epoch=str(epoch), recovered=bool(ack.get("recovered", True)), backlog=backlog
        )
        if gap is not None:
            self._on_gap(gap)
        for msg in backlog:
            self._receive(msg)

    def _on_gap(self, info: GapInfo) -> None:
        """The hub could not resume: restart the callbacks' positions and tell them."""
        self._registry.gap(self.name, info)
        for listener in self._listeners:
            listener.cursor = -1
        for callback in self._gap_callbacks:
            self._session.dispatch(callback, (self.name, info))
        self._session.emit_state("gap", self.name, info)

    async def _resume(self) -> None:
        """Subscribe again on a new connection, from the last seq seen."""

        def refused() -> None:
            log.error("rtkit: %r gets no more messages: its callbacks are dropped", self.name)
            for listener in list(self._listeners):
                self._remove_listener(listener)

        await self._session.resume(
            # Built at each attempt: the cursor and token move on meanwhile.
            lambda: self._session.request(
                SUBSCRIBE,
                self._cursor.subscribe_request(),
                on_ack=partial(self._on_subscribe_ack, self._token),
                wait=False,
            ),
            f"resubscribe {self.name!r}",
            active=lambda: self.subscribed,
            on_refused=refused,
        )

    def _receive(self, msg: Message) -> None:
        if not self._listeners:
            return
        registry = self._registry
        last = self._cursor.seq
        if not self._cursor.accept(msg.seq):
            registry.duplicates += 1
            return
        if last is not None and msg.seq > last + 1:
            log.warning(
                "rtkit: channel %r jumped from seq %d to %d without a gap notice",
                self.name,
                last,
                msg.seq,
            )
        registry.received += 1
        dispatch = self._session.dispatch
        for listener in self._listeners:
            if listener.buffer is not None:
                listener.buffer.append(msg)
            elif msg.seq > listener.cursor:
                listener.cursor = msg.seq
                dispatch(listener.callback, (msg,), listener)

    async def _backfill(self, listener: _Listener, target: int) -> None:
        """Give a late subscriber history from its ``since`` up to ``target``."""
        epoch = self._cursor.epoch
        pos = listener.cursor
        try:
            while pos < target and listener.active:
                page = await self.history(since=pos, limit=_BACKFILL_PAGE)
                if not page or self._cursor.epoch != epoch or listener.buffer is None:
                    break
                if page[0].seq > pos + 1:
                    log.warning(
                        "rtkit: %r: history from seq %d is no longer retained; "
                        "the new callback starts at %d",
                        self.name,
                        pos + 1,
                        page[0].seq,
                    )
                for msg in page:
                    if msg.seq > target:
                        break
                    self._deliver_to(listener, msg)
                pos = page[-1].seq
        except RtkitError as exc:
            log.warning("rtkit: %r: could not fetch history for a new callback: %s", self.name, exc)
        finally:
            buffered, listener.buffer = listener.buffer or [], None
            for msg in buffered:
                self._deliver_to(listener, msg)

    def _deliver_to(self, listener: _Listener, msg: Message) -> None:
        if listener.active and msg.seq > listener.cursor:
            listener.cursor = msg.seq
            self._session.dispatch(listener.callback, (msg,), listener)
