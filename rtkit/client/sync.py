"""The blocking client: :mod:`rtkit.client.aio` on a thread of its own.

Each :class:`Client` starts one I/O thread running its own asyncio event loop
(an anyio blocking portal) and drives an :class:`rtkit.client.aio.Client`
there; every method here is a thin call into that loop. It never touches the
caller's event loop, so it works the same in a script, a thread, or a Jupyter
kernel whose own loop is already running (where tasks created from a cell
would stall until the next cell runs: ipykernel #1510).

Callbacks run on the I/O thread, one at a time, in delivery order. Keep them
short: while one runs, no other callback runs and the connection's heartbeat
waits. A callback must not call the blocking methods that wait for the hub
(``publish``, ``history``): the hub's answer arrives on the very thread the
callback occupies. Make such a callback ``async def`` and use the async twin,
``await channel.aio.publish(...)``. ``subscribe``/``unsubscribe`` called from
a callback are scheduled and return at once.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterator, MutableMapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, TypeVar, Unpack, overload

import anyio
from anyio.from_thread import start_blocking_portal

from ..errors import ClientClosed, NotConnected
from ..protocol import Member
from . import aio
from ._session import StateEvent, TokenSource, resolve_target
from ._types import ClientMetrics, Message
from ._url import split_url
from .channel import check_frame_args, prepare
from .docs import SharedCallback
from .presence import MemberCallback, PresenceEvent

if TYPE_CHECKING:
    import pandas as pd

    from ..frames import LiveFrame
    from ..record import SyncRecorder

__all__ = ["Channel", "Client", "Presence", "SharedDoc", "connect"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# How long close() (and interpreter exit) waits for the I/O thread to finish.
CLOSE_TIMEOUT = 5.0

_BLOCKING_IN_CALLBACK = (
    "rtkit: {what} waits for the hub's answer, which arrives on the client's I/O "
    "thread, and this callback is running on that thread. Make the callback "
    "`async def` and use `await {aio_what}` instead."
)


class _Runner:
    """The I/O thread and the async client inside it.

    Kept apart from :class:`Client` so that the finalizer that closes it
    holds no reference to the facade (the facade can then be collected).
    """

    def __init__(self) -> None:
        self._portal_cm = start_blocking_portal("asyncio", name="rtkit-io")
        self.portal = self._portal_cm.__enter__()
        self.thread_id: int = self.portal.call(threading.get_ident)
        self.client: aio.Client | None = None
        # The facade, while it has subscriptions: callbacks keep coming even if
        # the application dropped every reference (`connect().channel(c).subscribe(f)`).
        self.keepalive: Client | None = None
        self.closed = False
        self._lock = threading.Lock()

    def on_io_thread(self) -> bool:
        return threading.get_ident() == self.thread_id

    def run(self, what: str, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Await ``fn(*args)`` on the I/O thread and return its result."""
        if self.closed:
            raise ClientClosed("this client is closed; create a new one with rtkit.connect()")
        if self.on_io_thread():
            raise RuntimeError(
                _BLOCKING_IN_CALLBACK.format(what=f"{what}()", aio_what=f".aio.{what}(...)")
            )
        future = self.portal.start_task_soon(fn, *args)
        try:
            return future.result()
        except BaseException:
            # Interrupted (Ctrl-C in a notebook): abandon the operation as well,
            # so an interrupted publish is not sent later behind the user's back.
            future.cancel()
            raise

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Call the plain function ``fn(*args)`` on the I/O thread."""
        if self.on_io_thread():
            return fn(*args)
        if self.closed:
            raise ClientClosed("this client is closed; create a new one with rtkit.connect()")
        return self.portal.call(fn, *args)

    def spawn(self, what: str, coro_fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """From the I/O thread: run ``coro_fn(*args)`` as a task of the client."""
        assert self.client is not None
        self.client.session.spawn(_logged(what, coro_fn, *args), what)

    def shutdown(self) -> None:
        """Close the async client and stop the thread; idempotent, never hangs.

        The work happens on a helper thread: handing anything to the I/O loop
        blocks while that loop is busy (a callback that never returns, say),
        and neither ``close()`` nor interpreter exit may hang on that. The
        helper is also what lets a callback, or a finalizer that garbage
        collection runs on the I/O thread, close the client: the I/O thread
        cannot wait for itself to stop.
        """
        with self._lock:
            if self.closed:
                return
            self.closed = True
        helper = threading.Thread(target=self._stop, name="rtkit-close", daemon=True)
        helper.start()
        if self.on_io_thread():
            return
        helper.join(CLOSE_TIMEOUT)
        if helper.is_alive():
            # The I/O thread is a daemon: leave it rather than hang the caller.
            log.warning(
                "rtkit: the client did not close within %s s (is a callback blocking?)",
                CLOSE_TIMEOUT,
            )

    def _stop(self) -> None:
        try:
            if self.client is not None:
                self.portal.call(self.client.close)
        except Exception:
            log.debug("rtkit: error while closing", exc_info=True)
        self._portal_cm.__exit__(None, None, None)


async def _logged(what: str, coro_fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
    try:
        await coro_fn(*args)
    except Exception:
        log.exception("rtkit: %s (scheduled from a callback) failed", what)


async def _wait_connected(client: aio.Client, seconds: float | None) -> None:
    try:
        with anyio.fail_after(seconds):
            await client.wait_connected()
    except TimeoutError:
        raise NotConnected(f"not connected to {client.url} after {seconds} s") from None


async def _flush_publishes(client: aio.Client, seconds: float | None) -> None:
    try:
        with anyio.fail_after(seconds):
            await client.flush()
    except TimeoutError:
        pending = client.metrics.pending_publishes
        raise NotConnected(
            f"{pending} publishes not acked by the hub at {client.url} after {seconds} s"
        ) from None


class Channel:
    """A named channel: the blocking twin of :class:`rtkit.aio.Channel`.

    >>> ch = hub.channel("prices")
    >>> ch.publish({"px": 1.0})
    1
    >>> ch.subscribe(lambda msg: print(msg.seq, msg.data))
    """

    def __init__(self, client: Client, runner: _Runner, channel: aio.Channel) -> None:
        self._client = client  # a channel in use keeps its client open
        self._runner = runner
        self.aio = channel
        """The async channel underneath, for ``async def`` callbacks."""
        self.name = channel.name

    def __repr__(self) -> str:
        return repr(self.aio).replace("rtkit.aio.", "rtkit.", 1)

    @property
    def subscribed(self) -> bool:
        return self.aio.subscribed

    @property
    def last_seq(self) -> int | None:
        return self.aio.last_seq

    @property
    def epoch(self) -> str | None:
        return self.aio.epoch

    @overload
    def publish(self, data: Any, id: str | None = None, *, wait: Literal[True] = True) -> int: ...

    @overload
    def publish(
        self, data: Any, id: str | None = None, *, wait: Literal[False]
    ) -> concurrent.futures.Future[int]: ...

    @overload
    def publish(
        self, data: Any, id: str | None = None, *, wait: bool
    ) -> int | concurrent.futures.Future[int]: ...

    def publish(
        self, data: Any, id: str | None = None, *, wait: bool = True
    ) -> int | concurrent.futures.Future[int]:
        """Publish ``data`` and return its seq once the hub has stored it.

        ``wait=False`` returns at once with a ``concurrent.futures.Future``
        of the seq; the client batches what queues meanwhile, so publishing
        row by row keeps up with thousands of rows per second. Failures are
        in the futures, logged, and raised by :meth:`Client.flush`.
        ``future.cancel()`` withdraws a publish not sent yet. While
        ``max_offline_queue`` publishes are pending, this blocks until the
        hub has acked some (offline it raises OfflineQueueFull instead).

        The value is converted by the rule in the README ("What you can
        publish"): numpy, pandas, datetime, Decimal, UUID and set values
        included, NaN as null. A value that cannot be published raises
        :class:`~rtkit.errors.UnsupportedData` here, before anything is
        queued.

        Disconnected, a waiting publish blocks until the hub is back and
        has acked (the publish waits in the offline queue meanwhile);
        interrupting the call withdraws the publish unless it was already
        sent. See :meth:`rtkit.aio.Channel.publish`.

        >>> seq = ch.publish({"px": 1.0})
        >>> for row in rows:
        ...     ch.publish(row, wait=False)
        >>> hub.flush()
        """
        if self._runner.closed:
            raise ClientClosed("this client is closed; create a new one with rtkit.connect()")
        # Checked and converted here, so a value that cannot be published
        # fails in the caller's own line, before anything is queued.
        prepared = prepare(self.name, data, id)
        publisher = self._client.aio.publisher
        if not wait:
            return publisher.submit(prepared)
        seq = self._runner.run("publish", publisher.publish, prepared)
        assert isinstance(seq, int)
        return seq

    def subscribe(self, callback: aio.MessageCallback, since: int | None = None) -> None:
        """Call ``callback(msg)`` for each message, in seq order, on the I/O thread.

        See :meth:`rtkit.aio.Channel.subscribe`; ``callback`` may also be
        ``async def`` (it then runs on the I/O thread's event loop).
        """
        if self._runner.on_io_thread():
            self._runner.spawn("subscribe", self.aio.subscribe, callback, since)
        else:
            self._runner.run("subscribe", self.aio.subscribe, callback, since)
        self._runner.keepalive = self._client

    def unsubscribe(self, callback: aio.MessageCallback | None = None) -> None:
        """Stop ``callback``, or every callback when None.

        See :meth:`rtkit.aio.Channel.unsubscribe`.
        """
        if self._runner.on_io_thread():
            self._runner.spawn("unsubscribe", self.aio.unsubscribe, callback)
            return
        self._runner.run("unsubscribe", self.aio.unsubscribe, callback)
        if not self._runner.call(lambda: self._client.aio.metrics.subscriptions):
            self._runner.keepalive = None

    @overload
    def history(
        self,
        since: int | None = None,
        before: int | None = None,
        limit: int | None = None,
        *,
        as_frame: Literal[False] = False,
        columns: None = None,
    ) -> list[Message]: ...

    @overload
    def history(
        self,
        since: int | None = None,
        before: int | None = None,
        limit: int | None = None,
        *,
        as_frame: Literal[True],
        columns: Sequence[str] | None = None,
    ) -> pd.DataFrame: ...

    @overload
    def history(
        self,
        since: int | None = None,
        before: int | None = None,
        limit: int | None = None,
        *,
        as_frame: bool,
        columns: Sequence[str] | None = None,
    ) -> list[Message] | pd.DataFrame: ...

    def history(
        self,
        since: int | None = None,
        before: int | None = None,
        limit: int | None = None,
        *,
        as_frame: bool = False,
        columns: Sequence[str] | None = None,
    ) -> list[Message] | pd.DataFrame:
        """Stored messages, oldest first, or with ``as_frame=True`` a DataFrame
        indexed by hub time; see :meth:`rtkit.aio.Channel.history`.

        >>> df = hub.channel("prices").history(limit=1000, as_frame=True)
        """
        check_frame_args(as_frame, columns)
        messages = self._runner.run("history", self.aio.history, since, before, limit)
        if not as_frame:
            return messages
        from ..frames import decode_messages

        # Built here, not on the I/O thread, where it would hold up callbacks
        # and the connection's heartbeat for as long as pandas works.
        return decode_messages(messages, columns)

    def frame(
        self,
        window: int | str | Any = 1_000,
        columns: Sequence[str] | None = None,
        since: int | None = None,
    ) -> LiveFrame:
        """A live pandas view whose ``.df`` follows the channel.

        ``window`` is a row count or a time span (``"5min"``). See
        :meth:`rtkit.aio.Channel.frame` and :class:`rtkit.frames.LiveFrame`;
        ``view.close()`` unsubscribes it.

        >>> view = hub.channel("prices").frame(window="5min")
        >>> view.df.tail()
        """
        from ..frames import LiveFrame

        def close() -> None:
            self.off_gap(view.on_gap)  # else the channel keeps the closed view alive
            self.unsubscribe(view.on_message)

        view = LiveFrame(self.name, window, columns, on_close=close)
        self.on_gap(view.on_gap)
        try:
            self.subscribe(view.on_message, since=since)
        except BaseException:
            self.off_gap(view.on_gap)
            raise
        return view

    def publish_frame(self, df: Any, batch_rows: int | None = None) -> list[int]:
        """Publish a DataFrame in batches; see :meth:`rtkit.aio.Channel.publish_frame`."""
        return self._runner.run("publish_frame", self.aio.publish_frame, df, batch_rows)

    def record(self, path: str | os.PathLike[str], **options: Any) -> SyncRecorder:
        """Record this channel to ``path`` (``.parquet`` or ``.jsonl``) until
        ``close()``; see :meth:`rtkit.aio.Channel.record`.

        >>> with hub.channel("prices").record("prices.jsonl") as rec:
        ...     time.sleep(60)
        """
        from ..record import record_sync

        return record_sync(self._client, [self.name], path, **options)

    def history_frame(
        self,
        since: int | None = None,
        before: int | None = None,
        limit: int | None = None,
        columns: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Same as ``history(since, before, limit, as_frame=True, columns=columns)``."""
        return self.history(since, before, limit, as_frame=True, columns=columns)

    def on_gap(self, callback: aio.GapCallback) -> aio.GapCallback:
        """Call ``callback(channel_name, info)`` when a resume loses messages."""
        return self._runner.call(self.aio.on_gap, callback)

    def off_gap(self, callback: aio.GapCallback) -> None:
        """Stop calling a callback given to :meth:`on_gap`."""
        self._runner.call(self.aio.off_gap, callback)


class Presence:
    """A presence room: the blocking twin of :class:`rtkit.aio.Presence`.

    >>> room = hub.presence("analysis", state={"status": "reading"})
    >>> room.on("join", lambda member: print(member.name, "joined"))
    >>> room.update({"cell": 4})
    >>> [m.name for m in room.members]
    ['Ada', 'Grace']
    """

    def __init__(self, client: Client, runner: _Runner, presence: aio.Presence) -> None:
        self._client = client  # a room in use keeps its client open
        self._runner = runner
        self.aio = presence
        """The async object underneath, for ``async def`` callbacks."""
        self.room = presence.room

    def __repr__(self) -> str:
        return repr(self.aio).replace("rtkit.aio.", "rtkit.", 1)

    @property
    def members(self) -> list[Member]:
        """The room's members, in the order they joined (this client included)."""
        return self._runner.call(lambda: self.aio.members)

    @property
    def me(self) -> Member | None:
        """This client's own member, once the hub confirmed the join."""
        return self._runner.call(lambda: self.aio.me)

    @property
    def state(self) -> dict[str, Any]:
        return self._runner.call(lambda: self.aio.state)

    def update(self, state: dict[str, Any]) -> None:
        """Merge ``state`` into this member's state; see :meth:`rtkit.aio.Presence.update`."""
        if self._runner.on_io_thread():
            self._runner.spawn("presence update", self.aio.update, state)
        else:
            self._runner.run("update", self.aio.update, state)

    def leave(self) -> None:
        """Leave the room."""
        if self._runner.on_io_thread():
            self._runner.spawn("presence leave", self.aio.leave)
        else:
            self._runner.run("leave", self.aio.leave)

    def on(self, event: PresenceEvent, callback: MemberCallback) -> MemberCallback:
        """Call ``callback(member)`` on ``"join"``, ``"leave"`` or ``"update"``
        (on the I/O thread); usable as a decorator."""
        self._runner.call(self.aio.on, event, callback)
        self._runner.keepalive = self._client
        return callback

    def off(self, event: PresenceEvent, callback: MemberCallback) -> None:
        self._runner.call(self.aio.off, event, callback)


async def _flush(doc: aio.SharedDoc, seconds: float | None) -> None:
    try:
        with anyio.fail_after(seconds):
            await doc.flush()
    except TimeoutError:
        raise NotConnected(
            f"shared document {doc.name!r}: edits not stored by the hub after {seconds} s"
        ) from None


class SharedDoc(MutableMapping[str, Any]):
    """A shared document: the blocking twin of :class:`rtkit.aio.SharedDoc`.

    Reads and writes go straight to the local pycrdt Doc (from any thread;
    the Doc takes care of its own locking) and reach the hub in the
    background.

    >>> params = hub.shared("params")
    >>> params["alpha"] = 0.5
    >>> params.observe(lambda change: print("remote change of", change.keys))
    >>> params.flush()          # optional: wait until the hub stored every edit
    """

    def __init__(self, client: Client, runner: _Runner, doc: aio.SharedDoc) -> None:
        self._client = client
        self._runner = runner
        self.aio = doc
        """The async object underneath."""
        self.name = doc.name
        self.doc = doc.doc
        """The pycrdt Doc (arrays and text live here next to the map)."""
        self.map = doc.map
        """The pycrdt Map this object is a view of."""

    def __repr__(self) -> str:
        return repr(self.aio).replace("rtkit.aio.", "rtkit.", 1)

    def __getitem__(self, key: str) -> Any:
        return self.aio[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._check_open()
        self.aio[key] = value

    def __delitem__(self, key: str) -> None:
        self._check_open()
        del self.aio[key]

    def _check_open(self) -> None:
        if self._runner.closed:
            raise ClientClosed(
                f"shared document {self.name!r}: the client is closed, so an edit would "
                "never reach the hub (reading still works); create a new client with "
                "rtkit.connect() to edit it"
            )

    def __iter__(self) -> Iterator[str]:
        return iter(self.aio)

    def __len__(self) -> int:
        return len(self.aio)

    def __contains__(self, key: object) -> bool:
        return key in self.aio

    def to_dict(self) -> dict[str, Any]:
        """The map as plain Python values."""
        return self.aio.to_dict()

    def transaction(self) -> Any:
        """``with shared.transaction(): ...``: several edits, one update.
        Call no blocking rtkit method inside it."""
        self._check_open()
        return self.aio.transaction()

    @property
    def synced(self) -> bool:
        return self.aio.synced

    @property
    def pending(self) -> int:
        return self.aio.pending

    def observe(self, callback: SharedCallback) -> SharedCallback:
        """Call ``callback(change)`` after each remote update (on the I/O thread)."""
        self._runner.call(self.aio.observe, callback)
        self._runner.keepalive = self._client
        return callback

    def unobserve(self, callback: SharedCallback) -> None:
        self._runner.call(self.aio.unobserve, callback)

    def flush(self, timeout: float | None = None) -> None:
        """Block until the hub stored every edit made so far; NotConnected
        after ``timeout`` seconds. See :meth:`rtkit.aio.SharedDoc.flush`."""
        self._runner.run("flush", _flush, self.aio, timeout)

    def close(self) -> None:
        """Stop syncing (the local copy stays readable)."""
        if self._runner.on_io_thread():
            self._runner.spawn("close", self.aio.close)
        else:
            self._runner.run("close", self.aio.close)


class Client:
    """A blocking connection to an rtkit hub, with its own I/O thread.

    Prefer :func:`rtkit.connect`. Closing is idempotent and happens on
    ``with`` exit, at interpreter exit, and when the client is garbage
    collected; a client with subscriptions stays open until closed.

    >>> with rtkit.connect("http://127.0.0.1:8765") as hub:
    ...     hub.channel("prices").publish({"px": 1.0})
    1
    """

    def __init__(
        self,
        url: str | None = None,
        token: TokenSource | None = None,
        **options: Unpack[aio.ConnectOptions],
    ) -> None:
        # Fail on a bad URL here, before a thread is started for nothing.
        url, token = resolve_target(url, token)
        split_url(url)
        runner = _Runner()
        try:
            runner.client = runner.run("connect", partial(aio.connect, url, token, **options))
        except BaseException:
            runner.shutdown()
            raise
        self._runner = runner
        self.aio: aio.Client = runner.client
        """The async client underneath, for ``async def`` callbacks."""
        self._channels: dict[str, Channel] = {}
        self._rooms: dict[str, Presence] = {}
        self._docs: dict[str, SharedDoc] = {}
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _Runner.shutdown, runner)

    def __repr__(self) -> str:
        return repr(self.aio).replace("rtkit.aio.", "rtkit.", 1)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def url(self) -> str:
        return self.aio.url

    @property
    def connected(self) -> bool:
        """True while a connection to the hub is up."""
        return self.aio.connected

    @property
    def closed(self) -> bool:
        return self._runner.closed

    @property
    def metrics(self) -> ClientMetrics:
        """A snapshot of the client's counters."""
        return self._runner.call(lambda: self.aio.metrics)

    def channel(self, name: str) -> Channel:
        """The :class:`Channel` called ``name`` (one object per name)."""
        with self._lock:
            ch = self._channels.get(name)
            if ch is None:
                ch = self._channels[name] = Channel(
                    self, self._runner, self._runner.call(self.aio.channel, name)
                )
            return ch

    def presence(self, room: str, state: dict[str, Any] | None = None) -> Presence:
        """Join a presence room; see :meth:`rtkit.aio.Client.presence`."""
        presence = self._runner.run("presence", self.aio.presence, room, state)
        with self._lock:
            wrapper = self._rooms.get(room)
            if wrapper is None or wrapper.aio is not presence:
                wrapper = self._rooms[room] = Presence(self, self._runner, presence)
            return wrapper

    def shared(self, name: str) -> SharedDoc:
        """A shared document; see :meth:`rtkit.aio.Client.shared`."""
        doc = self._runner.run("shared", self.aio.shared, name)
        with self._lock:
            wrapper = self._docs.get(name)
            if wrapper is None or wrapper.aio is not doc:
                wrapper = self._docs[name] = SharedDoc(self, self._runner, doc)
            return wrapper

    def on(self, event: StateEvent, callback: Callable[..., Any]) -> Callable[..., Any]:
        """Call ``callback`` on ``"connect"``, ``"disconnect"``, ``"reconnect"``,
        ``"gap"``, ``"revoked"`` or ``"auth_error"``.

        See :meth:`rtkit.aio.Client.on`; callbacks run on the I/O thread.
        """
        return self._runner.call(self.aio.on, event, callback)

    def off(self, event: StateEvent, callback: Callable[..., Any]) -> None:
        self._runner.call(self.aio.off, event, callback)

    def flush(self, timeout: float | None = None) -> None:
        """Block until every publish made so far is acked (or failed).

        Raises the first failure of a ``publish(..., wait=False)`` since the
        last flush, saying how many failed; NotConnected after ``timeout``
        seconds. See :meth:`rtkit.aio.Client.flush`.
        """
        self._runner.run("flush", _flush_publishes, self.aio, timeout)

    def wait_connected(self, timeout: float | None = None) -> None:
        """Block until connected; NotConnected after ``timeout`` seconds."""
        self._runner.run("wait_connected", _wait_connected, self.aio, timeout)

    def close(self) -> None:
        """Disconnect and stop the I/O thread. Idempotent; safe from any thread."""
        self._finalizer()


def connect(
    url: str | None = None,
    token: TokenSource | None = None,
    **options: Unpack[aio.ConnectOptions],
) -> Client:
    """Connect to a hub and return a blocking :class:`Client`.

    ``url`` defaults to ``$RTKIT_URL`` and ``token`` to ``$RTKIT_TOKEN``;
    ``token`` may also be a callable that returns a fresh token, which the
    client calls to renew it before it expires (see :func:`rtkit.aio.connect`).
    The keyword options are those of :class:`rtkit.aio.ConnectOptions`.

    >>> hub = rtkit.connect("http://127.0.0.1:8765")
    >>> hub.channel("prices").publish({"px": 1.0})
    1
    """
    return Client(url, token, **options)
