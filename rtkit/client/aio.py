"""The asyncio client: connection, resume, ordered publishing, subscriptions.

This is the implementation; :mod:`rtkit.client.sync` wraps it for blocking
code and :mod:`rtkit.aio` re-exports it. It runs on python-socketio's
``AsyncClient`` with Socket.IO's own reconnection switched off, because a
resume needs more than a new socket: every channel is subscribed again with
the last seq seen (so the hub sends what was missed), and publishes that were
never acked are sent again, in order, with their original ids (so the hub
stores each once).

Moving parts, all owned by one :class:`Client`:

- a *supervisor* task that reconnects with jittered exponential backoff and
  runs the resume hooks (re-subscribing channels today; presence and shared
  documents can add theirs);
- a *pump* task that sends the publish outbox in call order;
- a *dispatcher* task that runs application callbacks one at a time, in the
  order their events arrived;
- per connection, a fresh ``socketio.AsyncClient`` whose handlers carry the
  connection's generation, so a late event from a dead socket is ignored.

Ack handlers and the ``messages`` handler are plain functions on purpose:
Engine.IO hands every incoming packet to its own task, and only code that
runs before the first ``await`` of that task is guaranteed to see packets in
arrival order. A subscribe ack is applied (backlog included) in that window,
so no live message of the channel can overtake it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import json
import logging
import os
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Final, Literal, TypedDict, Unpack, overload

import orjson
import socketio

from ..errors import (
    AckTimeout,
    BadRequest,
    ClientClosed,
    ConfigurationError,
    Forbidden,
    HubError,
    InternalError,
    NotConnected,
    NotFound,
    RtkitError,
    TooLarge,
    Unauthorized,
    error_for_code,
)
from ..protocol import (
    DOC_UPDATE,
    ERROR_CODES,
    HISTORY,
    MESSAGES,
    NAMESPACE,
    PRESENCE,
    PRESENCE_EVENTS,
    PUBLISH,
    SUBSCRIBE,
    UNSUBSCRIBE,
    parse_history,
    parse_member,
    parse_publish,
    parse_subscribe,
    validate_channel,
    validate_name,
)
from ._backoff import Backoff
from ._cursor import Cursor
from ._queue import Outbox
from ._types import ClientMetrics, GapInfo, Message, parse_envelope
from ._url import split_url
from .docs import SharedChange, SharedDoc
from .presence import Presence

if TYPE_CHECKING:
    import pandas as pd

    from ..frames import LiveFrame

__all__ = [
    "Channel",
    "Client",
    "ClientMetrics",
    "ConnectOptions",
    "GapCallback",
    "GapInfo",
    "Message",
    "MessageCallback",
    "Presence",
    "SharedChange",
    "SharedDoc",
    "connect",
]

log = logging.getLogger(__name__)

# python-socketio and python-engineio log every packet at INFO. They get a
# logger of their own that stays at ERROR unless an application lowers it,
# so turning on INFO for "rtkit" shows rtkit's lifecycle, not the wire.
_wire_log = logging.getLogger("rtkit.client.wire")
if _wire_log.level == logging.NOTSET:
    _wire_log.setLevel(logging.ERROR)

MessageCallback = Callable[[Message], Any]
"""``callback(msg)``; a plain function or a coroutine function."""

GapCallback = Callable[[str, GapInfo], Any]
"""``callback(channel_name, info)``; a plain function or a coroutine function."""

StateEvent = Literal["connect", "disconnect", "reconnect", "gap"]
_STATE_EVENTS: Final = ("connect", "disconnect", "reconnect", "gap")

# Engine.IO servers drop the connection on a frame over 1 MB (python-engineio's
# max_http_buffer_size default). A publish that big would be resent after
# every reconnect and dropped again, forever; refuse it before it is queued.
MAX_FRAME_BYTES: Final = 1_000_000
_FRAME_OVERHEAD: Final = 512  # event name, namespace, channel, id, framing

# Largest websocket message the client accepts: a shared document's first
# sync carries the whole document in one binary attachment.
MAX_INCOMING_MESSAGE: Final = 256 * 1024 * 1024

# How many queued publishes the pump sends before letting other tasks run.
_PUMP_BATCH: Final = 100
_BACKFILL_PAGE: Final = 1000
_FRAME_PIPELINE: Final = 32
# Callbacks waiting to run before the client says they are falling behind.
_CALLBACK_BACKLOG_WARNING: Final = 10_000


class ConnectOptions(TypedDict, total=False):
    """Keyword options of :func:`connect` and :class:`Client` (all optional)."""

    ack_timeout: float
    """Seconds to wait for the hub's answer to a request (default 10)."""
    connect_timeout: float
    """Seconds one connection attempt may take (default 10)."""
    max_offline_queue: int
    """Publishes that may wait while disconnected (default 10,000)."""
    reconnect_delay: float
    """Base of the reconnect backoff in seconds (default 0.25)."""
    reconnect_delay_max: float
    """Cap of the reconnect backoff in seconds (default 10)."""
    max_in_flight: int
    """Publishes sent and not yet acked before the next waits its turn (default 256)."""


@dataclass(frozen=True, slots=True)
class _Options:
    ack_timeout: float = 10.0
    connect_timeout: float = 10.0
    max_offline_queue: int = 10_000
    reconnect_delay: float = 0.25
    reconnect_delay_max: float = 10.0
    max_in_flight: int = 256

    def __post_init__(self) -> None:
        if not self.ack_timeout > 0 or not self.connect_timeout > 0:
            raise ConfigurationError("ack_timeout and connect_timeout must be positive")
        if self.max_offline_queue < 1 or self.max_in_flight < 1:
            raise ConfigurationError("max_offline_queue and max_in_flight must be at least 1")


class _ConnectionLost(NotConnected):
    """The connection dropped before the hub answered (internal signal)."""


@dataclass(slots=True, eq=False)
class _Publish:
    channel: str
    data: Any
    id: str
    future: asyncio.Future[int]
    timer: asyncio.TimerHandle | None = None
    in_flight: bool = False  # sent on the current connection, ack pending


@dataclass(slots=True, eq=False)
class _Listener:
    callback: MessageCallback
    cursor: int  # deliver seq > cursor
    active: bool = True
    # While a late subscriber's history is being fetched, live messages wait here.
    buffer: list[Message] | None = None


_Call = tuple[Callable[..., Any], tuple[Any, ...], "_Listener | None"]


def _resolve(url: str | None, token: str | None) -> tuple[str, str | None]:
    if url is None:
        url = os.environ.get("RTKIT_URL") or None
        if url is None:
            raise ConfigurationError(
                "no hub URL: pass rtkit.connect(url=...) or set RTKIT_URL. "
                "To start a hub on this machine run `rtkit hub --allow-anonymous` "
                "and connect to http://127.0.0.1:8765"
            )
    if token is None:
        token = os.environ.get("RTKIT_TOKEN") or None
    return url, token or None


def _bytes_len(counter: list[int], obj: Any) -> Any:
    if isinstance(obj, bytes | bytearray | memoryview):
        counter[0] += len(obj)
        return None
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _encoded_size(data: Any) -> int:
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


def _check_ack(event: str, args: tuple[Any, ...]) -> dict[str, Any]:
    ack = args[0] if args else None
    if not isinstance(ack, dict):
        raise InternalError(f"{event}: the hub sent a malformed answer: {ack!r:.200}")
    if ack.get("ok") is True:
        return ack
    err = ack.get("error")
    if not isinstance(err, dict):
        raise InternalError(f"{event}: the hub refused without saying why")
    code = err.get("code")
    raise error_for_code(str(code), str(err.get("message") or code))


def _check_frame_args(as_frame: bool, columns: Sequence[str] | None) -> None:
    # A list of messages has no columns: ignoring columns= would hide a forgotten as_frame.
    if columns is not None and not as_frame:
        raise TypeError("history(columns=...) picks DataFrame columns: pass as_frame=True too")


def _callable_name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


async def _invoke(fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        result = fn(*args)
        if inspect.isawaitable(result):
            await result
    except Exception:
        # An application bug must not stop delivery to anyone else.
        log.exception("rtkit: callback %s raised; the client carries on", _callable_name(fn))


class Channel:
    """A named channel on the hub: publish to it, subscribe to it, read its history.

    Get one with :meth:`Client.channel`; there is one object per name and client.

    >>> ch = hub.channel("prices")
    >>> seq = await ch.publish({"px": 1.0})
    >>> await ch.subscribe(lambda msg: print(msg.seq, msg.data))
    """

    def __init__(self, client: Client, name: str) -> None:
        self._client = client
        self.name = name
        self._cursor = Cursor(name)
        self._listeners: list[_Listener] = []
        self._gap_callbacks: list[GapCallback] = []
        # Bumped whenever the wanted subscription changes, so that the ack of a
        # superseded subscribe request is ignored.
        self._token = 0

    def __repr__(self) -> str:
        state = "subscribed" if self._listeners else "not subscribed"
        return f"<rtkit.aio.Channel {self.name!r} {state} last_seq={self._cursor.seq}>"

    @property
    def client(self) -> Client:
        return self._client

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
        return await self._client._publish(self.name, data, id)

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
        client = self._client
        client._check_usable()
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
        if not client.connected:
            return
        try:
            await client._request(
                SUBSCRIBE,
                self._cursor.subscribe_request(),
                on_ack=partial(self._on_subscribe_ack, self._token),
                wait=False,
            )
        except _ConnectionLost:
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
        if self._listeners or not self._client.connected:
            return
        # A dead connection took its subscriptions with it, and a resubscribe
        # still in flight may not have reached the hub yet: both are fine.
        with contextlib.suppress(_ConnectionLost, NotFound):
            await self._client._request(UNSUBSCRIBE, {"channel": self.name}, wait=False)

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

        ``as_frame=True`` returns a pandas DataFrame instead (needs
        ``rtkit[pandas]``), built like :meth:`frame`'s: indexed by hub time
        (UTC), frame batches back with their dtypes, a row of missing values
        where seqs are missing; ``columns`` picks and orders its columns.

        >>> df = await ch.history(limit=1000, as_frame=True, columns=["px"])
        """
        _check_frame_args(as_frame, columns)
        req: dict[str, Any] = {"channel": self.name}
        for key, value in (("since", since), ("before", before), ("limit", limit)):
            if value is not None:
                req[key] = value
        parse_history(req)
        ack = await self._client._request(HISTORY, req)
        messages = [parse_envelope(env) for env in ack.get("messages") or ()]
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

        view = LiveFrame(self.name, window, columns)
        self.on_gap(view.on_gap)
        try:
            await self.subscribe(view.on_message, since=since)
        except BaseException:
            self.off_gap(view.on_gap)
            raise

        async def close() -> None:
            self.off_gap(view.on_gap)  # else the channel keeps the closed view alive
            await self.unsubscribe(view.on_message)

        view._close = close
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
            self._client._spawn(self._backfill(listener, known), "backfill")
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
            self._client._on_gap(self, gap)
        for msg in backlog:
            self._receive(msg)

    def _receive(self, msg: Message) -> None:
        if not self._listeners:
            return
        client = self._client
        last = self._cursor.seq
        if not self._cursor.accept(msg.seq):
            client._duplicates += 1
            return
        if last is not None and msg.seq > last + 1:
            log.warning(
                "rtkit: channel %r jumped from seq %d to %d without a gap notice",
                self.name,
                last,
                msg.seq,
            )
        client._received += 1
        for listener in self._listeners:
            if listener.buffer is not None:
                listener.buffer.append(msg)
            elif msg.seq > listener.cursor:
                listener.cursor = msg.seq
                client._dispatch(listener.callback, (msg,), listener)

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
            self._client._dispatch(listener.callback, (msg,), listener)


class Client:
    """An asyncio connection to an rtkit hub that survives disconnects.

    Prefer :func:`connect`; the class is also an async context manager.
    Options are the keyword arguments listed in :class:`ConnectOptions`.

    >>> async with Client("http://127.0.0.1:8765") as hub:
    ...     await hub.channel("prices").publish({"px": 1.0})
    1
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        **options: Unpack[ConnectOptions],
    ) -> None:
        self._url, self._token = _resolve(url, token)
        self._origin, self._path = split_url(self._url)
        self._opts = _Options(**options)
        self._backoff = Backoff(self._opts.reconnect_delay, self._opts.reconnect_delay_max)
        self._channels: dict[str, Channel] = {}
        self._outbox: Outbox[_Publish] = Outbox(self._opts.max_offline_queue)
        self._inflight: set[asyncio.Future[dict[str, Any]]] = set()  # requests
        self._publishes_in_flight = 0
        self._state_callbacks: dict[str, list[Callable[..., Any]]] = {e: [] for e in _STATE_EVENTS}
        # Hub-to-client events and what to redo after a reconnect. Presence and
        # shared documents plug in here the same way channels do.
        self._event_handlers: dict[str, Callable[[Any], None]] = {
            MESSAGES: self._on_messages,
            PRESENCE: self._on_presence,
            DOC_UPDATE: self._on_doc_update,
        }
        self._resume_hooks: list[Callable[[], None]] = [
            self._resubscribe_all,
            self._rejoin_rooms,
            self._resync_docs,
        ]
        self._rooms: dict[str, Presence] = {}
        self._docs: dict[str, SharedDoc] = {}
        self._sio: Any = None  # the socketio.AsyncClient of the current connection
        self._generations = itertools.count(1)
        self._generation = 0
        self._connected = False
        self._state: Literal["new", "opening", "open", "closed"] = "new"
        self._failure: RtkitError | None = None
        self._tasks: set[asyncio.Task[Any]] = set()  # live as long as the client
        self._conn_tasks: set[asyncio.Task[Any]] = set()  # live as long as a connection
        self._calls: asyncio.Queue[_Call] = asyncio.Queue()
        self._backlog_warn_at = _CALLBACK_BACKLOG_WARNING
        self._online = asyncio.Event()
        self._lost = asyncio.Event()
        self._wake_pump = asyncio.Event()
        self._received = 0
        self._duplicates = 0
        self._published = 0
        self._reconnects = 0
        self._gaps = 0

    def __repr__(self) -> str:
        state = "connected" if self._connected else self._state
        return f"<rtkit.aio.Client {self._url} {state}>"

    async def __aenter__(self) -> Client:
        if self._state == "new":
            await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- public -----------------------------------------------------------

    @property
    def url(self) -> str:
        return self._url

    @property
    def connected(self) -> bool:
        """True while a connection to the hub is up."""
        return self._connected

    @property
    def metrics(self) -> ClientMetrics:
        """A snapshot of this client's counters."""
        return ClientMetrics(
            connected=self._connected,
            messages_received=self._received,
            duplicates_dropped=self._duplicates,
            published=self._published,
            pending_publishes=len(self._outbox),
            reconnects=self._reconnects,
            gaps=self._gaps,
            subscriptions=sum(1 for ch in self._channels.values() if ch.subscribed),
        )

    async def open(self) -> Client:
        """Connect (once; later disconnects reconnect on their own) and return self.

        Raises :class:`~rtkit.errors.Unauthorized` when the hub refuses the
        token and :class:`~rtkit.errors.NotConnected` when it cannot be reached.
        """
        if self._state != "new":
            raise RuntimeError(f"this client is already {self._state}; open() runs once")
        self._state = "opening"
        try:
            await self._connect_once()
        except BaseException:
            self._state = "closed"
            raise
        if self._closed():  # close() ran while we were connecting
            sio, self._sio = self._sio, None
            self._connected = False
            await self._dispose(sio)
            raise ClientClosed("the client was closed while connecting")
        self._state = "open"
        self._spawn(self._supervise(), "supervisor")
        self._spawn(self._pump(), "publisher")
        self._spawn(self._run_callbacks(), "callbacks")
        log.info("rtkit: connected to %s", self._url)
        self._after_connect(attempts=0)
        return self

    async def close(self) -> None:
        """Disconnect and stop; idempotent. Unacked publishes fail with ClientClosed."""
        if self._state == "closed":
            return
        was_open = self._state == "open"
        self._state = "closed"
        self._connected = False
        self._online.set()  # wake waiters so they see the client is closed
        current = asyncio.current_task()
        tasks = [t for t in (*self._tasks, *self._conn_tasks) if t is not current]
        for task in tasks:
            task.cancel()
        self._fail_pending(ClientClosed("the client was closed before the hub acked"))
        sio, self._sio = self._sio, None
        await self._dispose(sio)
        await asyncio.gather(*tasks, return_exceptions=True)
        if was_open:
            log.info("rtkit: closed the connection to %s", self._url)

    def channel(self, name: str) -> Channel:
        """The :class:`Channel` called ``name`` (one object per name)."""
        ch = self._channels.get(name)
        if ch is None:
            ch = self._channels[validate_channel(name, "channel")] = Channel(self, name)
        return ch

    async def presence(self, room: str, state: dict[str, Any] | None = None) -> Presence:
        """Join the presence room ``room`` and return its :class:`Presence`.

        ``state`` (an object: status, cursor, selected cell...) is merged into
        this user's member state. One object per room and client; asking
        again returns it (merging ``state`` in). Connected, this returns once
        the hub confirmed the join (``.members`` is filled) and raises its
        refusal (e.g. :class:`~rtkit.errors.Forbidden`); offline, it returns
        at once and joins on reconnect.
        """
        self._check_usable()
        validate_name(room, "room", "presence")
        if state is not None and not isinstance(state, dict):
            raise TypeError(f"state must be a dict, got {type(state).__name__}")
        existing = self._rooms.get(room)
        if existing is not None:
            if state:
                await existing.update(state)
            return existing
        obj = self._rooms[room] = Presence(self, room, state or {})
        if self._connected:
            try:
                await obj._join()
            except _ConnectionLost:
                pass  # joins on reconnect
            except BaseException:
                self._rooms.pop(room, None)
                raise
        return obj

    async def shared(self, name: str) -> SharedDoc:
        """The shared document ``name``, as a :class:`SharedDoc` (one per name).

        Connected, this returns once the first sync with the hub is done (so
        it shows what others wrote) and raises the hub's refusal; offline,
        it returns at once, edits wait, and it syncs on reconnect.
        """
        self._check_usable()
        validate_name(name, "doc", "shared")
        doc = self._docs.get(name)
        if doc is not None:
            return doc
        doc = self._docs[name] = SharedDoc(self, name)
        if self._connected:
            try:
                await doc._sync()
            except _ConnectionLost:
                pass  # syncs on reconnect
            except BaseException:
                self._docs.pop(name, None)
                await doc.close()
                raise
        return doc

    def on(self, event: StateEvent, callback: Callable[..., Any]) -> Callable[..., Any]:
        """Call ``callback`` on a connection event; returns it (usable as a decorator).

        ``"connect"``: ``callback()`` after every successful (re)connection;
        ``"disconnect"``: ``callback(reason)`` when the connection drops;
        ``"reconnect"``: ``callback(attempts)`` after a reconnection (after
        ``"connect"``); ``"gap"``: ``callback(channel_name, info)`` when a
        channel could not be resumed without loss (see :meth:`Channel.on_gap`).
        """
        if event not in self._state_callbacks:
            raise ConfigurationError(
                f"unknown event {event!r}; use one of {', '.join(_STATE_EVENTS)}"
            )
        self._state_callbacks[event].append(callback)
        return callback

    def off(self, event: StateEvent, callback: Callable[..., Any]) -> None:
        """Undo :meth:`on`."""
        with contextlib.suppress(KeyError, ValueError):
            self._state_callbacks[event].remove(callback)

    async def wait_connected(self) -> None:
        """Return once connected (at once if connected now).

        Raises :class:`~rtkit.errors.ClientClosed` (or the reason the client
        stopped) instead of waiting forever. Bound it with ``asyncio.timeout``.
        """
        while not self._connected:
            self._check_usable()
            await self._online.wait()
            self._check_usable()

    # -- connection lifecycle -------------------------------------------------

    def _auth(self) -> dict[str, str]:
        return {"token": self._token} if self._token else {}

    def _headers(self) -> dict[str, str]:
        # The token also goes in the handshake's Authorization header: a hub
        # inside jupyter-server authenticates the HTTP request itself (a
        # Jupyter token or a kernel token) before any Socket.IO packet.
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    async def _connect_once(self) -> None:
        gen = next(self._generations)
        refusals: list[Any] = []
        sio = socketio.AsyncClient(
            reconnection=False,
            handle_sigint=False,
            websocket_extra_options={"max_msg_size": MAX_INCOMING_MESSAGE},
            logger=_wire_log,
            engineio_logger=_wire_log,
            request_timeout=self._opts.connect_timeout,
        )
        sio.on("connect_error", lambda *args: refusals.extend(args), namespace=NAMESPACE)
        sio.on("disconnect", partial(self._on_sio_disconnect, gen), namespace=NAMESPACE)
        for event, handler in self._event_handlers.items():
            sio.on(event, partial(self._on_sio_event, gen, handler), namespace=NAMESPACE)
        try:
            async with asyncio.timeout(self._opts.connect_timeout):
                await sio.connect(
                    self._origin,
                    auth=self._auth(),
                    headers=self._headers(),
                    transports=["websocket"],
                    namespaces=[NAMESPACE],
                    socketio_path=self._path,
                    wait_timeout=self._opts.connect_timeout,
                )
            if not sio.connected:
                raise socketio.exceptions.ConnectionError("the connection dropped at once")
        except Exception as exc:
            await self._dispose(sio)
            raise self._connect_failure(refusals, exc) from None
        except BaseException:
            await self._dispose(sio)
            raise
        self._sio = sio
        self._generation = gen
        self._connected = True
        self._online.set()

    def _connect_failure(self, refusals: list[Any], exc: Exception) -> RtkitError:
        detail = str(exc) or type(exc).__name__
        for data in refusals:
            if not isinstance(data, dict):
                continue
            # {"code", "message"} per the protocol; python-socketio's
            # ConnectionRefusedError nests extra data under "data".
            inner = data.get("data")
            body = inner if isinstance(inner, dict) and "code" in inner else data
            code = body.get("code")
            message = str(body.get("message") or data.get("message") or "connection refused")
            if isinstance(code, str) and code in ERROR_CODES:
                return error_for_code(code, message)
            # A namespace refusal without a code is the hub's connect handler
            # saying no: an authentication decision.
            return Unauthorized(message)
        if isinstance(exc, TimeoutError):
            detail = f"no answer within {self._opts.connect_timeout} s"
        return NotConnected(
            f"cannot connect to the rtkit hub at {self._url} ({detail}). Is it running? "
            "Start one with `rtkit hub --allow-anonymous`, or point RTKIT_URL at a running hub"
        )

    async def _dispose(self, sio: Any) -> None:
        if sio is None:
            return
        try:
            async with asyncio.timeout(self._opts.connect_timeout):
                await sio.disconnect()
                # After a transport error python-engineio resets its state but
                # leaves the aiohttp websocket open (a ResourceWarning later).
                ws = getattr(sio.eio, "ws", None)
                if ws is not None and not ws.closed:
                    await ws.close()
        except Exception:
            log.debug("rtkit: error while closing a socket", exc_info=True)

    def _on_sio_event(self, gen: int, handler: Callable[[Any], None], *args: Any) -> None:
        if gen != self._generation or not self._connected:
            return  # a late packet from a connection we already gave up on
        try:
            handler(args[0] if args else None)
        except Exception:
            log.exception("rtkit: error while handling a hub event")

    def _on_sio_disconnect(self, gen: int, *args: Any) -> None:
        if gen != self._generation or not self._connected or self._state != "open":
            return
        self._connection_lost(str(args[0]) if args else "unknown reason")

    def _connection_lost(self, reason: str) -> None:
        self._connected = False
        self._online.clear()
        for item in self._outbox:
            if item.timer is not None:
                item.timer.cancel()
                item.timer = None
            item.in_flight = False
        self._publishes_in_flight = 0
        # Everything not acked goes out again, first, on the next connection.
        self._outbox.rewind()
        for fut in self._inflight:
            if not fut.done():
                fut.set_exception(_ConnectionLost("the connection dropped before the hub answered"))
        for task in self._conn_tasks:
            task.cancel()
        for doc in self._docs.values():
            doc._connection_lost()
        log.warning("rtkit: lost the connection to %s (%s); reconnecting", self._url, reason)
        self._emit_state("disconnect", reason)
        self._lost.set()

    async def _supervise(self) -> None:
        while True:
            await self._lost.wait()
            self._lost.clear()
            old, self._sio = self._sio, None
            await self._dispose(old)
            attempt = 0
            while True:
                await asyncio.sleep(self._backoff.delay(attempt))
                attempt += 1
                try:
                    await self._connect_once()
                except Unauthorized as exc:
                    # A token the hub rejects will not improve by retrying.
                    # (Forbidden is retried: "too many connections" lasts only
                    # until the hub notices the connection that just died.)
                    self._stop_for_good(exc)
                    return
                except RtkitError as exc:
                    level = logging.INFO if attempt == 1 or attempt % 20 == 0 else logging.DEBUG
                    log.log(level, "rtkit: reconnect attempt %d failed: %s", attempt, exc)
                    continue
                break
            self._reconnects += 1
            log.info("rtkit: reconnected to %s after %d attempt(s)", self._url, attempt)
            self._after_connect(attempts=attempt)

    def _after_connect(self, attempts: int) -> None:
        for hook in self._resume_hooks:
            hook()
        self._wake_pump.set()
        if attempts:
            self._emit_state("connect")
            self._emit_state("reconnect", attempts)

    def _stop_for_good(self, exc: RtkitError) -> None:
        log.error("rtkit: the hub at %s refused to reconnect: %s; giving up", self._url, exc)
        self._failure = exc
        self._online.set()  # wake waiters so they see the failure
        self._fail_pending(exc)

    def _fail_pending(self, exc: RtkitError) -> None:
        for doc in self._docs.values():
            doc._idle.set()  # flush() waiters see the failure
        for item in self._outbox.drain():
            if item.timer is not None:
                item.timer.cancel()
            if not item.future.done():
                item.future.set_exception(_copy_error(exc))
        for fut in self._inflight:
            if not fut.done():
                fut.set_exception(_copy_error(exc))

    def _closed(self) -> bool:
        # A method, not an inline comparison: another task may close the client
        # across an await, which type narrowing of ``_state`` cannot know.
        return self._state == "closed"

    def _check_usable(self) -> None:
        if self._failure is not None:
            raise _copy_error(self._failure)
        if self._state == "closed":
            raise ClientClosed("this client is closed; create a new one with rtkit.connect()")
        if self._state != "open":
            raise RuntimeError(
                "this client is not open yet: use `await rtkit.aio.connect(...)` "
                "or `async with rtkit.aio.Client(...)`"
            )

    def _spawn(self, coro: Awaitable[Any], name: str, *, per_connection: bool = False) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(f"rtkit-{name}")
        holder = self._conn_tasks if per_connection else self._tasks
        holder.add(task)
        task.add_done_callback(holder.discard)
        task.add_done_callback(_log_crash)

    # -- requests ---------------------------------------------------------

    async def _request(
        self,
        event: str,
        payload: dict[str, Any],
        *,
        on_ack: Callable[[dict[str, Any]], None] | None = None,
        wait: bool = True,
    ) -> dict[str, Any]:
        """Send one event and return its ``ok`` ack; raise its error otherwise.

        ``on_ack`` runs inside the ack handler, before any packet that arrived
        after the ack is handled. With ``wait`` the request waits for a
        connection and is sent again if one drops, all within ``ack_timeout``;
        without, it raises ``_ConnectionLost`` instead.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._opts.ack_timeout
        while True:
            self._check_usable()
            if not self._connected:
                if not wait:
                    raise _ConnectionLost(f"{event}: not connected to {self._url}")
                try:
                    async with asyncio.timeout_at(deadline):
                        await self._online.wait()
                except TimeoutError:
                    raise NotConnected(
                        f"{event}: not connected to {self._url} (still reconnecting)"
                    ) from None
                continue
            fut: asyncio.Future[dict[str, Any]] = loop.create_future()
            self._inflight.add(fut)
            try:
                await self._sio.emit(
                    event,
                    payload,
                    namespace=NAMESPACE,
                    callback=partial(self._on_request_ack, fut, event, on_ack),
                )
                async with asyncio.timeout_at(deadline):
                    return await fut
            except TimeoutError:
                raise AckTimeout(
                    f"{event}: the hub did not answer within {self._opts.ack_timeout} s"
                ) from None
            except _ConnectionLost:
                if not wait:
                    raise
            except socketio.exceptions.SocketIOError as exc:
                # The socket is going away; its disconnect event is on its way.
                if not wait:
                    raise _ConnectionLost(f"{event}: {exc}") from None
                await asyncio.sleep(0.05)
            finally:
                self._inflight.discard(fut)

    def _on_request_ack(
        self,
        fut: asyncio.Future[dict[str, Any]],
        event: str,
        on_ack: Callable[[dict[str, Any]], None] | None,
        *args: Any,
    ) -> None:
        if fut.done():
            return
        try:
            ack = _check_ack(event, args)
            if on_ack is not None:
                on_ack(ack)
        except RtkitError as exc:
            fut.set_exception(exc)
        except Exception as exc:
            fut.set_exception(InternalError(f"{event}: could not use the hub's answer: {exc!r}"))
        else:
            fut.set_result(ack)

    # -- publishing -------------------------------------------------------

    async def _publish(self, channel: str, data: Any, msg_id: str | None) -> int:
        self._check_usable()
        if msg_id is None:
            msg_id = uuid.uuid4().hex
        parse_publish({"channel": channel, "data": data, "id": msg_id})
        size = _encoded_size(data)
        if size + _FRAME_OVERHEAD > MAX_FRAME_BYTES:
            raise TooLarge(
                f"publish to {channel!r}: the message is about {size} bytes encoded; "
                f"a Socket.IO frame carries at most {MAX_FRAME_BYTES} bytes "
                "(and the hub's own cap is usually lower: 256 KiB by default)"
            )
        item = _Publish(channel, data, msg_id, asyncio.get_running_loop().create_future())
        self._outbox.push(item, online=self._connected)
        self._wake_pump.set()
        try:
            return await item.future
        except asyncio.CancelledError:
            # Abandoned by the caller: never send it (again). If it is in
            # flight, its ack or timeout still frees its place in the window.
            self._outbox.remove(item)
            raise

    async def _pump(self) -> None:
        """Send the outbox in order, forever; acks arrive in ``_on_publish_ack``.

        At most ``max_in_flight`` publishes wait for acks at a time, so the ack
        timeout measures the hub's answer, not a queue of our own making.
        """
        loop = asyncio.get_running_loop()
        window = self._opts.max_in_flight
        while True:
            await self._wake_pump.wait()
            self._wake_pump.clear()
            sent = 0
            while self._connected and self._publishes_in_flight < window:
                item = self._outbox.pop_unsent()
                if item is None:
                    break
                if item.future.done():
                    self._outbox.remove(item)
                    continue
                gen = self._generation
                try:
                    await self._sio.emit(
                        PUBLISH,
                        {"channel": item.channel, "data": item.data, "id": item.id},
                        namespace=NAMESPACE,
                        callback=partial(self._on_publish_ack, item),
                    )
                except (TypeError, ValueError) as exc:  # json could not encode it
                    self._outbox.remove(item)
                    if not item.future.done():
                        item.future.set_exception(exc)
                    continue
                except socketio.exceptions.SocketIOError:
                    break  # the socket is going away; the rewind resends this item
                if gen == self._generation and self._connected:
                    item.in_flight = True
                    self._publishes_in_flight += 1
                    item.timer = loop.call_later(
                        self._opts.ack_timeout, self._on_publish_timeout, item
                    )
                sent += 1
                if sent % _PUMP_BATCH == 0:
                    await asyncio.sleep(0)  # let acks and deliveries run during a long flush

    def _release(self, item: _Publish) -> None:
        if item.timer is not None:
            item.timer.cancel()
            item.timer = None
        if item.in_flight:
            item.in_flight = False
            self._publishes_in_flight -= 1
            self._wake_pump.set()

    def _on_publish_ack(self, item: _Publish, *args: Any) -> None:
        self._release(item)
        if not self._outbox.remove(item) or item.future.done():
            return  # timed out, abandoned, or failed already
        try:
            ack = _check_ack(PUBLISH, args)
            seq = ack.get("seq")
            if isinstance(seq, bool) or not isinstance(seq, int):
                raise InternalError(f"publish: the hub's answer lacks a seq: {ack!r:.200}")
        except RtkitError as exc:
            item.future.set_exception(exc)
            return
        self._published += 1
        item.future.set_result(seq)

    def _on_publish_timeout(self, item: _Publish) -> None:
        item.timer = None
        self._release(item)
        if self._outbox.remove(item) and not item.future.done():
            item.future.set_exception(
                AckTimeout(
                    f"publish to {item.channel!r} (id {item.id}): the hub did not answer "
                    f"within {self._opts.ack_timeout} s"
                )
            )

    # -- subscriptions ----------------------------------------------------

    def _on_messages(self, payload: Any) -> None:
        if not isinstance(payload, list):
            log.warning("rtkit: ignored a malformed 'messages' event: %r", payload)
            return
        for env in payload:
            try:
                msg = parse_envelope(env)
            except ValueError as exc:
                log.warning("rtkit: dropped a malformed message: %s", exc)
                continue
            ch = self._channels.get(msg.channel)
            if ch is not None:
                ch._receive(msg)

    def _resubscribe_all(self) -> None:
        for ch in self._channels.values():
            if ch.subscribed:
                self._spawn(self._resubscribe(ch), "resubscribe", per_connection=True)

    async def _resubscribe(self, ch: Channel) -> None:
        def refused() -> None:
            log.error("rtkit: %r gets no more messages: its callbacks are dropped", ch.name)
            for listener in list(ch._listeners):
                ch._remove_listener(listener)

        await self._resume(
            # Built at each attempt: the cursor and token move on meanwhile.
            lambda: self._request(
                SUBSCRIBE,
                ch._cursor.subscribe_request(),
                on_ack=partial(ch._on_subscribe_ack, ch._token),
                wait=False,
            ),
            f"resubscribe {ch.name!r}",
            active=lambda: ch.subscribed,
            on_refused=refused,
        )

    # -- presence and shared documents -------------------------------------

    def _on_presence(self, payload: Any) -> None:
        if not isinstance(payload, dict):
            return
        room = self._rooms.get(str(payload.get("room")))
        if room is None:
            return
        event = payload.get("event")
        try:
            member = parse_member(payload.get("member"))
        except ValueError as exc:
            log.warning("rtkit: ignored a malformed presence event: %s", exc)
            return
        if event in PRESENCE_EVENTS:
            room._on_event(event, member)

    def _on_doc_update(self, payload: Any) -> None:
        doc = self._docs.get(str(payload.get("doc"))) if isinstance(payload, dict) else None
        if doc is not None:
            doc._on_remote_update(payload)

    def _rejoin_rooms(self) -> None:
        for room in self._rooms.values():
            resume = self._resume(room._join, f"rejoin {room.room!r}", active=room._is_active)
            self._spawn(resume, "rejoin", per_connection=True)

    def _resync_docs(self) -> None:
        for doc in self._docs.values():
            resume = self._resume(doc._sync, f"resync {doc.name!r}", active=doc._is_open)
            self._spawn(resume, "resync", per_connection=True)

    async def _resume(
        self,
        request: Callable[[], Awaitable[Any]],
        what: str,
        *,
        active: Callable[[], bool],
        on_refused: Callable[[], None] | None = None,
    ) -> None:
        """Send a resubscribe, rejoin or resync request after a reconnect,
        retrying what may pass later, for as long as ``active()`` (a room
        left or a document closed meanwhile is not joined or synced again)."""
        attempt = 0
        while active():
            try:
                await request()
                return
            except _ConnectionLost:
                return  # the next connection tries again
            except (Unauthorized, Forbidden, BadRequest, NotFound, TooLarge) as exc:
                log.error("rtkit: the hub refused to %s: %s", what, exc)
                if on_refused is not None:
                    on_refused()
                return
            except (AckTimeout, HubError) as exc:
                log.warning("rtkit: could not %s (%s); retrying", what, exc)
                await asyncio.sleep(self._backoff.delay(attempt))
                attempt += 1

    def _forget_room(self, room: Presence) -> None:
        if self._rooms.get(room.room) is room:
            del self._rooms[room.room]

    def _forget_doc(self, doc: SharedDoc) -> None:
        if self._docs.get(doc.name) is doc:
            del self._docs[doc.name]

    def _on_gap(self, ch: Channel, info: GapInfo) -> None:
        self._gaps += 1
        log.warning(
            "rtkit: channel %r could not be resumed after seq %s (epoch %s); "
            "continuing at seq %d (epoch %s): messages in between are lost",
            ch.name,
            info.last_seq,
            info.last_epoch,
            info.first_seq,
            info.epoch,
        )
        for listener in ch._listeners:
            listener.cursor = -1
        for callback in ch._gap_callbacks:
            self._dispatch(callback, (ch.name, info), None)
        self._emit_state("gap", ch.name, info)

    # -- callbacks --------------------------------------------------------

    def _dispatch(
        self, fn: Callable[..., Any], args: tuple[Any, ...], listener: _Listener | None
    ) -> None:
        self._calls.put_nowait((fn, args, listener))
        backlog = self._calls.qsize()
        if backlog >= self._backlog_warn_at:
            log.warning(
                "rtkit: %d callbacks are waiting to run: callbacks are slower than "
                "the messages arriving (memory grows until they catch up)",
                backlog,
            )
            self._backlog_warn_at = backlog * 2

    def _emit_state(self, event: str, *args: Any) -> None:
        for callback in self._state_callbacks[event]:
            self._dispatch(callback, args, None)

    async def _run_callbacks(self) -> None:
        while self._state == "open":
            fn, args, listener = await self._calls.get()
            if self._calls.empty():
                self._backlog_warn_at = _CALLBACK_BACKLOG_WARNING
            if listener is None or listener.active:
                await _invoke(fn, args)
            # Idle here, hold no callback: an unsubscribed one (a closed
            # frame() view, say) is then free to go.
            del fn, args, listener


def _copy_error(exc: RtkitError) -> RtkitError:
    """A fresh instance of ``exc`` (raising one instance twice chains tracebacks)."""
    if isinstance(exc, HubError):
        return error_for_code(exc.code, exc.message)
    return type(exc)(*exc.args)


def _log_crash(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("rtkit: internal task %s crashed", task.get_name(), exc_info=task.exception())


async def connect(
    url: str | None = None, token: str | None = None, **options: Unpack[ConnectOptions]
) -> Client:
    """Connect to a hub and return an open :class:`Client`.

    ``url`` defaults to ``$RTKIT_URL`` and ``token`` to ``$RTKIT_TOKEN``.
    Options are listed in :class:`ConnectOptions`.

    >>> hub = await rtkit.aio.connect("http://127.0.0.1:8765")
    >>> await hub.channel("prices").publish({"px": 1.0})
    """
    client = Client(url, token, **options)
    await client.open()
    return client
