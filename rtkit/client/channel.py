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
import concurrent.futures
import contextlib
import itertools
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Final, Literal, overload

from ..errors import (
    AckTimeout,
    BadRequest,
    ClientClosed,
    HubError,
    InternalError,
    NotFound,
    OfflineQueueFull,
    RateLimited,
    RtkitError,
    TooLarge,
    UnsupportedData,
    error_for_code,
)
from ..protocol import (
    HISTORY,
    MAX_CLIENT_ID_LENGTH,
    MAX_HISTORY_LIMIT,
    MAX_PUBLISH_BATCH,
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
from ._data import to_wire
from ._queue import Outbox
from ._session import ConnectionLost, Session, TransportError, check_ack, copy_error
from ._types import GapInfo, Message, parse_envelope

if TYPE_CHECKING:
    import pandas as pd

    from ..frames import LiveFrame
    from ..record import Recorder

__all__ = [
    "MAX_BATCH_BYTES",
    "MAX_FRAME_BYTES",
    "Channel",
    "Channels",
    "GapCallback",
    "MessageCallback",
    "Prepared",
    "PublishResult",
    "Publisher",
    "check_frame_args",
    "encoded_size",
    "prepare",
    "prepare_many",
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

# Most bytes of data one batch request carries: well inside a frame, and
# inside the hub's byte-quota burst (8 MiB by default, at least one
# max_payload). A message bigger than this goes alone.
MAX_BATCH_BYTES: Final = 256 * 1024
_MESSAGE_OVERHEAD: Final = 64  # a batched message's channel, id and framing
# How many requests the pump sends before letting other tasks run.
_PUMP_BATCH: Final = 100
# Failed publishes nobody awaits are logged at most once per this many seconds.
_FAILURE_LOG_INTERVAL: Final = 5.0
_BACKFILL_PAGE: Final = 1000
_FRAME_PIPELINE: Final = 32


def encoded_size(data: Any) -> int:
    """About how many bytes ``data`` takes on the wire; UnsupportedData if it cannot go."""
    return to_wire(data)[1]


def check_frame_args(as_frame: bool, columns: Sequence[str] | None) -> None:
    """Refuse ``history(columns=...)`` without ``as_frame=True``."""
    # A list of messages has no columns: ignoring columns= would hide a forgotten as_frame.
    if columns is not None and not as_frame:
        raise TypeError("history(columns=...) picks DataFrame columns: pass as_frame=True too")


# -- publishing -----------------------------------------------------------------

_SeqFuture = asyncio.Future[int] | concurrent.futures.Future[int]


@dataclass(frozen=True, slots=True)
class Prepared:
    """A publish checked and converted (:mod:`._data`), ready to queue.

    Made in the caller's thread, so a value that cannot be published fails
    there, before anything is queued."""

    channel: str
    data: Any  # the wire value
    id: str
    size: int  # bytes on the wire, about


PublishResult = int | BaseException
"""Per message of :meth:`Publisher.publish_many`: its seq, or why it failed."""


@dataclass(slots=True, eq=False)
class _Group:
    """Publishes queued together by :meth:`Publisher.publish_many`: one
    future for all of them, settled once the last one is acked or failed."""

    future: asyncio.Future[list[PublishResult]]
    results: list[PublishResult]
    left: int


@dataclass(slots=True, eq=False)
class _Publish:
    channel: str
    data: Any
    id: str
    size: int
    future: _SeqFuture | None  # None: one of a group's publishes
    detached: bool = False  # publish(wait=False): nobody awaits the future
    started: bool = False  # a concurrent future marked running (no cancel after)
    group: _Group | None = None
    index: int = 0  # the place in its group


@dataclass(slots=True, eq=False)
class _Request:
    """One ``publish`` on the wire: one message, or a batch of them."""

    items: list[_Publish]
    batch: bool
    timer: asyncio.TimerHandle | None = None
    in_flight: bool = True


class _Pacer:
    """A token bucket for the publish requests this client sends: under load
    publishes wait a little and leave together as one batch request,
    instead of running into the hub's publish rate."""

    __slots__ = ("_burst", "_last", "_rate", "_tokens")

    def __init__(self, rate: float) -> None:
        self._rate = rate
        # A second's worth: a short run of waiting publishes goes at full
        # speed, and a hub whose burst is at least its rate (the default is
        # twice) never sees more than it allows.
        self._burst = max(1.0, rate)
        self._tokens = self._burst
        self._last = time.monotonic()

    def wait(self) -> float:
        """0 and one request taken, or the seconds until one may go."""
        if self._rate <= 0:
            return 0.0
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self._rate


def prepare(channel: str, data: Any, msg_id: str | None) -> Prepared:
    """Check a publish and convert its data for the wire, in any thread.

    Raises :class:`~rtkit.errors.UnsupportedData`,
    :class:`~rtkit.errors.TooLarge` or :class:`~rtkit.errors.BadRequest`."""
    if msg_id is None:
        msg_id = uuid.uuid4().hex
    parse_publish({"channel": channel, "data": None, "id": msg_id})
    wire, size = to_wire(data)
    if size + _FRAME_OVERHEAD > MAX_FRAME_BYTES:
        raise TooLarge(
            f"publish to {channel!r}: the message is about {size} bytes encoded; "
            f"a Socket.IO frame carries at most {MAX_FRAME_BYTES} bytes "
            "(and the hub's own cap is usually lower: 256 KiB by default)"
        )
    return Prepared(channel, wire, msg_id, size)


# Ids of publish_many's messages that came without one: unique per process
# (a random prefix) and far cheaper than a uuid4 each.
_ID_PREFIX: Final = uuid.uuid4().hex[:16]
_id_counter = itertools.count(1)


def prepare_many(items: Iterable[tuple[str, Any, str | None]]) -> list[Prepared | RtkitError]:
    """:func:`prepare` for many ``(channel, data, id)`` at once, each
    channel name checked once: per item its :class:`Prepared`, or the error
    :func:`prepare` would raise for it."""
    checked: dict[str, RtkitError | None] = {}
    out: list[Prepared | RtkitError] = []
    for channel, data, msg_id in items:
        if channel not in checked:
            try:
                validate_channel(channel, PUBLISH)
                checked[channel] = None
            except BadRequest as exc:
                checked[channel] = exc
        problem = checked[channel]
        if problem is not None:
            out.append(copy_error(problem))
            continue
        if msg_id is None:
            msg_id = f"{_ID_PREFIX}-{next(_id_counter)}"
        elif not isinstance(msg_id, str) or not msg_id or len(msg_id) > MAX_CLIENT_ID_LENGTH:
            out.append(
                BadRequest(
                    f"publish: 'id' must be a non-empty string of at most "
                    f"{MAX_CLIENT_ID_LENGTH} characters, got {msg_id!r:.40}"
                )
            )
            continue
        try:
            wire, size = to_wire(data)
        except UnsupportedData as exc:
            out.append(exc)
            continue
        if size + _FRAME_OVERHEAD > MAX_FRAME_BYTES:
            out.append(
                TooLarge(
                    f"publish to {channel!r}: the message is about {size} bytes encoded; "
                    f"a Socket.IO frame carries at most {MAX_FRAME_BYTES} bytes"
                )
            )
            continue
        out.append(Prepared(channel, wire, msg_id, size))
    return out


def _resolve(future: _SeqFuture, seq: int | None, exc: BaseException | None) -> bool:
    """Settle either kind of future; False if it was settled (or cancelled) already."""
    if future.done():
        return False
    try:
        if exc is None:
            future.set_result(seq)  # type: ignore[arg-type]
        else:
            future.set_exception(exc)
    except (asyncio.InvalidStateError, concurrent.futures.InvalidStateError):
        return False  # cancelled from another thread meanwhile
    return True


class Publisher:
    """The client's publish outbox and the pump that sends it in call order.

    Publishes from every channel of a client share it, so they reach the hub
    in the order their ``publish`` calls started, across reconnects too. The
    client wires :meth:`wake`, :meth:`rewind` and :meth:`fail` to the
    session's resume, disconnect and failure hooks.

    Batching: the pump sends what is queued as one ``publish`` carrying
    ``messages`` (up to :data:`~rtkit.protocol.MAX_PUBLISH_BATCH` and
    :data:`MAX_BATCH_BYTES`) whenever more than one publish waits, and paces
    its requests (``max_publish_rate``), so a fast row-by-row feed becomes a
    few batch requests per second. A lone publish goes out as a plain one.
    The first batch of each connection goes alone: a hub that does not know
    batches refuses it (storing nothing) and the client sends one message
    per request on that connection.

    Bounds: at most ``max_offline_queue`` publishes are pending (queued or
    unacked). Offline, one more raises
    :class:`~rtkit.errors.OfflineQueueFull`; online, it waits for room.
    """

    def __init__(self, session: Session) -> None:
        self._session = session
        options = session.options
        self._outbox: Outbox[_Publish] = Outbox(options.max_offline_queue)
        self._window = options.max_in_flight
        self._ack_timeout = options.ack_timeout
        self._pacer = _Pacer(options.max_publish_rate)
        self._rate = options.max_publish_rate
        self._requests: set[_Request] = set()  # in flight on this connection
        self._batches: bool | None = None  # does this connection's hub take batches?
        self._probe: _Request | None = None  # the batch that asks it
        self._wake_pump = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Admission, shared with the blocking facade's threads.
        self._limit = options.max_offline_queue
        self._room = threading.Condition()
        self._count = 0  # publishes admitted and not settled
        self._stopped: RtkitError | None = None
        self._room_now = asyncio.Event()
        # Publishes handed over by other threads (publish(wait=False)).
        self._handoff: deque[_Publish] = deque()
        self._drain_scheduled = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._failed = 0  # detached publishes failed since the last flush()
        self._first_failure: BaseException | None = None
        self._unlogged = 0
        self._logged_at = 0.0
        self.published = 0
        """Publishes acked by the hub."""
        self.requests = 0
        """Publish requests sent (a batch is one)."""
        self.failures = 0
        """Publishes that failed."""

    def __len__(self) -> int:
        """Publishes queued or in flight, not yet acked."""
        return len(self._outbox) + len(self._handoff)

    def start(self) -> None:
        """Start the pump (once the session is open)."""
        self._loop = asyncio.get_running_loop()
        self._session.spawn(self._pump(), "publisher")

    # -- admitting and queueing ------------------------------------------

    async def publish(self, prepared: Prepared, *, wait: bool = True) -> int | asyncio.Future[int]:
        """Queue a publish; its seq once the hub acked it, or with ``wait``
        false at once a future of it."""
        session = self._session
        session.check_usable()
        await self._admit()
        item = _Publish(
            prepared.channel,
            prepared.data,
            prepared.id,
            prepared.size,
            asyncio.get_running_loop().create_future(),
            detached=not wait,
        )
        self._queue(item)
        future = item.future
        assert isinstance(future, asyncio.Future)
        if not wait:
            future.add_done_callback(_retrieve)
            return future
        try:
            return await future
        except asyncio.CancelledError:
            # Abandoned by the caller: never send it (again). If it is in
            # flight, its ack or timeout still frees its place in the window.
            self._drop(item)
            raise

    async def publish_many(
        self, prepared: Sequence[Prepared]
    ) -> asyncio.Future[list[PublishResult]]:
        """Queue several publishes at once, in order, and return at once one
        future of their results: per message its seq, or the exception it
        failed with (a refusal of the hub, or the client's stop). The
        future itself never fails; cancelling it withdraws what is not
        sent yet.

        For a fast feed (a bridge): one admission and one future for the
        lot instead of one per message. Waits for room as :meth:`publish`
        does, for all of them at once (so at most ``max_offline_queue`` in
        one call); offline and full, raises
        :class:`~rtkit.errors.OfflineQueueFull` and queues none of them."""
        count = len(prepared)
        if not 1 <= count <= self._limit:
            raise ValueError(
                f"publish_many takes 1 to {self._limit} publishes (max_offline_queue), got {count}"
            )
        self._session.check_usable()
        await self._admit(count)
        future: asyncio.Future[list[PublishResult]] = asyncio.get_running_loop().create_future()
        group = _Group(future, [0] * count, count)
        push = self._outbox.push
        for index, one in enumerate(prepared):
            item = _Publish(
                one.channel, one.data, one.id, one.size, None, True, False, group, index
            )
            push(item, online=True)  # admitted: within the bound
        self._idle.clear()
        self._wake_pump.set()
        return future

    @property
    def capacity(self) -> int:
        """How many publishes may be pending at once (``max_offline_queue``)."""
        return self._limit

    def submit(self, prepared: Prepared) -> concurrent.futures.Future[int]:
        """From any thread: queue a publish and return a future of its seq.

        Blocks while the pending publishes are at their bound and the client
        is connected (room comes with acks); raises
        :class:`~rtkit.errors.OfflineQueueFull` when it is offline."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the client is not open yet")
        self._session.check_usable()
        on_loop = _running_loop() is loop
        with self._room:
            while self._count >= self._limit:
                self._check_room()
                if on_loop:
                    raise OfflineQueueFull(
                        f"{self._count} publishes are waiting for acks "
                        f"(max_offline_queue={self._limit}), and a callback cannot wait for room"
                    )
                self._room.wait()
            self._count += 1
        future: concurrent.futures.Future[int] = concurrent.futures.Future()
        item = _Publish(
            prepared.channel, prepared.data, prepared.id, prepared.size, future, detached=True
        )
        self._handoff.append(item)
        if not self._drain_scheduled:
            self._drain_scheduled = True
            try:
                loop.call_soon_threadsafe(self._drain)
            except RuntimeError:  # the loop is closed: so is the client
                self._handoff.remove(item)
                self._release()
                raise ClientClosed(
                    "this client is closed; create a new one with rtkit.connect()"
                ) from None
        return future

    def _check_room(self) -> None:
        """Why a publish may not wait for room (under ``self._room``)."""
        if self._stopped is not None:
            raise copy_error(self._stopped)
        if not self._session.connected:
            raise OfflineQueueFull(
                f"{self._count} publishes are waiting for the hub to come back "
                f"(max_offline_queue={self._limit}); wait for the reconnect or raise the limit"
            )

    async def _admit(self, count: int = 1) -> None:
        while True:
            with self._room:
                if self._count + count <= self._limit:
                    self._count += count
                    return
                self._check_room()
                self._room_now.clear()
            await self._room_now.wait()
            self._session.check_usable()

    def _release(self, count: int = 1) -> None:
        with self._room:
            self._count -= count
            self._room.notify_all()
        self._room_now.set()

    def _drain(self) -> None:
        """On the loop: queue what other threads handed over, in their order."""
        self._drain_scheduled = False
        while self._handoff:
            item = self._handoff.popleft()
            if self._stopped is not None:
                self._release()
                self._finish(item, None, copy_error(self._stopped))
            else:
                self._queue(item)

    def _queue(self, item: _Publish) -> None:
        self._outbox.push(item, online=True)  # admitted: within the bound
        self._idle.clear()
        self._wake_pump.set()

    def _drop(self, item: _Publish) -> None:
        if self._outbox.remove(item):
            self._release()
            self._check_idle()

    def _settle(self, item: _Publish, seq: int | None, exc: BaseException | None) -> None:
        if not self._outbox.remove(item):
            return  # settled, timed out or abandoned already
        self._release()
        self._finish(item, seq, exc)
        self._check_idle()

    def _finish(self, item: _Publish, seq: int | None, exc: BaseException | None) -> None:
        group = item.group
        if group is not None:
            if exc is None:
                self.published += 1
                group.results[item.index] = seq  # type: ignore[assignment]
            else:
                self.failures += 1
                group.results[item.index] = exc
            group.left -= 1
            if group.left == 0 and not group.future.done():
                group.future.set_result(group.results)
            return
        assert item.future is not None
        if exc is None:
            self.published += 1
            _resolve(item.future, seq, None)
            return
        self.failures += 1
        if _resolve(item.future, None, exc) and item.detached:
            self._note_failure(item, exc)

    def _check_idle(self) -> None:
        if not self._outbox and not self._handoff:
            self._idle.set()

    def _note_failure(self, item: _Publish, exc: BaseException) -> None:
        """Nobody awaits a detached publish: its failure is logged (at most
        one line per few seconds) and reported by the next flush()."""
        self._failed += 1
        if self._first_failure is None:
            self._first_failure = exc
        now = time.monotonic()
        if now - self._logged_at < _FAILURE_LOG_INTERVAL:
            self._unlogged += 1
            return
        more = f" ({self._unlogged} more failed since the last report)" if self._unlogged else ""
        self._unlogged = 0
        self._logged_at = now
        log.warning(
            "rtkit: publish to %r (id %s) failed: %s: %s%s",
            item.channel,
            item.id,
            type(exc).__name__,
            exc,
            more,
        )

    async def flush(self) -> None:
        """Wait until every publish so far is acked or failed; raise (a
        copy of) the first failure of a ``wait=False`` publish since the
        last flush, saying how many failed."""
        while len(self):
            self._session.check_usable()
            self._idle.clear()
            self._check_idle()
            await self._idle.wait()
        failed, first = self._failed, self._first_failure
        self._failed, self._first_failure = 0, None
        if first is not None:
            raise _restate(first, f"{failed} publish(es) failed since the last flush; the first: ")

    # -- sending -------------------------------------------------------------

    async def _pump(self) -> None:
        """Send the outbox in order, forever; acks arrive in ``_on_ack``.

        At most ``max_in_flight`` requests wait for acks at a time, so the
        ack timeout measures the hub's answer, not a queue of our own making.
        """
        session = self._session
        while True:
            await self._wake_pump.wait()
            self._wake_pump.clear()
            sent = 0
            while session.connected and len(self._requests) < self._window:
                if self._probe is not None or self._timer is not None:
                    break  # the probe's ack, or the pacer's timer, wakes the pump
                items = self._take()
                if not items:
                    break
                batch = len(items) > 1
                if batch and self._batches is None and self._requests:
                    # The first batch goes alone: wait for what is in flight.
                    self._outbox.unpop(items)
                    break
                delay = self._pacer.wait()
                if delay > 0:
                    self._outbox.unpop(items)
                    self._timer = asyncio.get_running_loop().call_later(delay, self._paced)
                    break
                await self._send(items, batch)
                sent += 1
                if sent % _PUMP_BATCH == 0:
                    await asyncio.sleep(0)  # let acks and deliveries run during a long flush

    def _paced(self) -> None:
        self._timer = None
        self._wake_pump.set()

    def _take(self) -> list[_Publish]:
        """The next unsent publishes for one request, in order."""
        limit = MAX_PUBLISH_BATCH if self._batches is not False else 1
        items: list[_Publish] = []
        size = 0
        while len(items) < limit:
            item = self._outbox.pop_unsent()
            if item is None:
                break
            future = item.future if item.group is None else item.group.future
            assert future is not None
            if isinstance(future, concurrent.futures.Future) and not item.started:
                item.started = True
                if not future.set_running_or_notify_cancel():
                    self._drop(item)  # cancelled before it was sent
                    continue
            elif future.done():
                self._drop(item)  # abandoned before it was sent
                continue
            if items and size + item.size > MAX_BATCH_BYTES:
                self._outbox.unpop([item])
                break
            items.append(item)
            size += item.size + _MESSAGE_OVERHEAD
        return items

    async def _send(self, items: list[_Publish], batch: bool) -> None:
        session = self._session
        gen = session.generation
        payload: dict[str, Any]
        if batch:
            payload = {
                "messages": [
                    {"channel": item.channel, "data": item.data, "id": item.id} for item in items
                ]
            }
        else:
            (item,) = items
            payload = {"channel": item.channel, "data": item.data, "id": item.id}
        request = _Request(items, batch)
        self._requests.add(request)
        request.timer = asyncio.get_running_loop().call_later(
            self._ack_timeout, self._on_timeout, request
        )
        if batch and self._batches is None:
            self._probe = request
        try:
            await session.emit(PUBLISH, payload, partial(self._on_ack, request))
        except (TypeError, ValueError) as exc:  # json could not encode it
            self._release_request(request)
            for item in items:
                self._settle(item, None, UnsupportedData(f"publish: {exc}"))
            return
        except TransportError:
            return  # the socket is going away; the rewind resends these
        self.requests += 1
        if gen != session.generation:
            self._release_request(request)  # a connection that died meanwhile

    def _release_request(self, request: _Request) -> None:
        if request.timer is not None:
            request.timer.cancel()
            request.timer = None
        if request is self._probe:
            self._probe = None
        if request.in_flight:
            request.in_flight = False
            self._requests.discard(request)
            self._wake_pump.set()

    def _on_ack(self, request: _Request, *args: Any) -> None:
        if not request.in_flight:
            return  # timed out, or of a connection given up on
        probe = request is self._probe
        self._release_request(request)
        try:
            ack = check_ack(PUBLISH, args)
            results = _results(ack, len(request.items), request.batch)
        except BadRequest as exc:
            if probe and "messages" in exc.message:
                # A hub without batches refused the whole batch, storing
                # nothing; nothing was sent after it. One message per request
                # from now on, this batch first.
                log.info("rtkit: the hub takes no publish batches; sending one by one")
                self._batches = False
                self._outbox.rewind()
                return
            self._fail_request(request, exc)
            return
        except RtkitError as exc:
            self._fail_request(request, exc)
            return
        if probe:
            self._batches = True
        # _settle for each, with one release of their room for all.
        settled = 0
        for item, result in zip(request.items, results, strict=True):
            if not self._outbox.remove(item):
                continue  # settled, timed out or abandoned already
            settled += 1
            if isinstance(result, RtkitError):
                self._finish(item, None, result)
            else:
                self._finish(item, result, None)
        if settled:
            self._release(settled)
            self._check_idle()

    def _fail_request(self, request: _Request, exc: RtkitError) -> None:
        if isinstance(exc, RateLimited):
            exc = RateLimited(
                f"{exc.message} (this client sends at most {self._rate:g} publish requests/s, "
                "batching the rest: lower it below the hub's rate with "
                "rtkit.connect(..., max_publish_rate=N))"
            )
        for item in request.items:
            self._settle(item, None, copy_error(exc))

    def _on_timeout(self, request: _Request) -> None:
        request.timer = None
        if not request.in_flight:
            return
        self._release_request(request)
        for item in request.items:
            self._settle(
                item,
                None,
                AckTimeout(
                    f"publish to {item.channel!r} (id {item.id}): the hub did not answer "
                    f"within {self._ack_timeout} s"
                ),
            )

    def wake(self) -> None:
        """Let the pump look at the outbox again (a connection is up)."""
        self._wake_pump.set()

    def rewind(self) -> None:
        """The connection dropped: everything unacked is to be sent again."""
        for request in list(self._requests):
            if request.timer is not None:
                request.timer.cancel()
                request.timer = None
            request.in_flight = False
        self._requests.clear()
        self._probe = None
        self._batches = None  # the next connection may reach another hub
        # Everything not acked goes out again, first, on the next connection.
        self._outbox.rewind()
        with self._room:
            self._room.notify_all()  # blocked publishers: offline now
        self._room_now.set()

    def fail(self, exc: RtkitError) -> None:
        """The client stopped: fail every pending publish with (a copy of) ``exc``."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        with self._room:
            self._stopped = exc
            self._room.notify_all()
        self._room_now.set()
        for request in list(self._requests):
            self._release_request(request)
        pending = self._outbox.drain()
        pending += list(self._handoff)
        self._handoff.clear()
        if pending:
            self._release(len(pending))
        for item in pending:
            self._finish(item, None, copy_error(exc))
        self._idle.set()


def _results(ack: dict[str, Any], count: int, batch: bool) -> list[int | RtkitError]:
    """Per message of a publish request: its seq, or why the hub refused it."""
    seqs = ack.get("seqs") if batch else [ack.get("seq")]
    errors = ack.get("errors") if batch else None
    if not isinstance(seqs, list) or len(seqs) != count:
        raise InternalError(f"publish: the hub's answer lacks the seqs: {ack!r:.200}")
    results: list[int | RtkitError] = []
    for index, seq in enumerate(seqs):
        if isinstance(seq, int) and not isinstance(seq, bool):
            results.append(seq)
            continue
        error = errors[index] if isinstance(errors, list) and index < len(errors) else None
        if seq is None and isinstance(error, dict):
            code = str(error.get("code"))
            results.append(error_for_code(code, str(error.get("message") or code)))
        else:
            results.append(InternalError(f"publish: the hub's answer lacks a seq: {ack!r:.200}"))
    return results


def _restate(exc: BaseException, prefix: str) -> BaseException:
    """A fresh exception like ``exc`` whose message starts with ``prefix``."""
    if isinstance(exc, HubError):
        return error_for_code(exc.code, prefix + exc.message)
    try:
        return type(exc)(prefix + str(exc))
    except Exception:
        return RuntimeError(prefix + repr(exc))


def _retrieve(future: asyncio.Future[int]) -> None:
    # A detached publish's failure is logged and reported by flush();
    # asyncio need not also complain that nobody looked at it.
    if not future.cancelled():
        future.exception()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


# -- the registry ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Entry:
    channel: Channel
    receive: Callable[[list[Message]], None]  # a run of the channel's messages
    resume: Callable[[], Awaitable[None]]
    revoked: Callable[[], None]


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
        session.on_revoked("channel", self._revoked)

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
        receive: Callable[[list[Message]], None],
        resume: Callable[[], Awaitable[None]],
        revoked: Callable[[], None],
    ) -> None:
        """Route ``channel``'s messages to ``receive``; run ``resume()`` after
        each reconnect while it is subscribed, ``revoked()`` when the hub
        ended its subscription."""
        self._entries[channel.name] = _Entry(channel, receive, resume, revoked)

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
        # The hub coalesces: each channel gets its run of messages at once.
        entries = self._entries
        run: list[Message] = []
        for env in payload:
            try:
                msg = parse_envelope(env)
            except ValueError as exc:
                log.warning("rtkit: dropped a malformed message: %s", exc)
                continue
            if run and msg.channel != run[0].channel:
                entry = entries.get(run[0].channel)
                if entry is not None:
                    entry.receive(run)
                run = []
            run.append(msg)
        if run:
            entry = entries.get(run[0].channel)
            if entry is not None:
                entry.receive(run)

    def _revoked(self, name: str) -> None:
        """The hub ended ``name``'s subscription (a refreshed token no longer
        grants it): its callbacks are dropped, as after a refused resubscribe."""
        entry = self._entries.get(name)
        if entry is not None:
            entry.revoked()

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
        registry.register(
            self, receive=self._receive, resume=self._resume, revoked=self._drop_listeners
        )

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

    @overload
    async def publish(
        self, data: Any, id: str | None = None, *, wait: Literal[True] = True
    ) -> int: ...

    @overload
    async def publish(
        self, data: Any, id: str | None = None, *, wait: Literal[False]
    ) -> asyncio.Future[int]: ...

    @overload
    async def publish(
        self, data: Any, id: str | None = None, *, wait: bool
    ) -> int | asyncio.Future[int]: ...

    async def publish(
        self, data: Any, id: str | None = None, *, wait: bool = True
    ) -> int | asyncio.Future[int]:
        """Publish ``data`` and return its seq once the hub stored it.

        ``data`` is any JSON value, bytes, or a numpy, pandas, datetime,
        Decimal, UUID or set value, converted by the rule in the README
        ("What you can publish"; NaN and infinities become null); anything
        else raises :class:`~rtkit.errors.UnsupportedData` before anything
        is queued.

        ``wait=False`` returns as soon as the publish is queued, with an
        ``asyncio.Future`` of its seq: publishing row by row then keeps up
        with a fast feed, the client batching what queues meanwhile into
        few requests. Its failure is in the future, logged, and raised by
        :meth:`rtkit.aio.Client.flush`. Either way, while
        ``max_offline_queue`` publishes are pending this waits for room.

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

        >>> seq = await ch.publish({"px": 1.0})
        >>> futures = [await ch.publish(row, wait=False) for row in rows]
        """
        return await self._publisher.publish(prepare(self.name, data, id), wait=wait)

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

    async def record(self, path: str | os.PathLike[str], **options: Any) -> Recorder:
        """Record this channel to ``path`` (``.parquet`` or ``.jsonl``) until the
        recorder is closed; see :class:`rtkit.record.Recorder` for ``options``
        (``format``, ``since``, ``chunk_rows``, ``flush_interval``).

        >>> rec = await ch.record("prices.parquet")
        >>> await rec.close()
        """
        from ..record import Recorder

        return await Recorder.start(self.client, [self.name], path, **options)

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
        if backlog:
            self._receive(backlog)

    def _on_gap(self, info: GapInfo) -> None:
        """The hub could not resume: restart the callbacks' positions and tell them."""
        self._registry.gap(self.name, info)
        for listener in self._listeners:
            listener.cursor = -1
        for callback in self._gap_callbacks:
            self._session.dispatch(callback, (self.name, info))
        self._session.emit_state("gap", self.name, info)

    def _drop_listeners(self) -> None:
        """The hub will send this channel no more: drop every callback."""
        if self._listeners:
            log.error("rtkit: %r gets no more messages: its callbacks are dropped", self.name)
        for listener in list(self._listeners):
            self._remove_listener(listener)

    async def _resume(self) -> None:
        """Subscribe again on a new connection, from the last seq seen."""

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
            on_refused=self._drop_listeners,
        )

    def _receive(self, msgs: list[Message]) -> None:
        """Deliver a run of this channel's messages (in seq order) to every
        callback: per callback one entry of the session's queue."""
        if not self._listeners:
            return
        registry = self._registry
        cursor = self._cursor
        fresh: list[Message] = []
        for msg in msgs:
            last = cursor.seq
            if not cursor.accept(msg.seq):
                registry.duplicates += 1
                continue
            if last is not None and msg.seq > last + 1:
                log.warning(
                    "rtkit: channel %r jumped from seq %d to %d without a gap notice",
                    self.name,
                    last,
                    msg.seq,
                )
            fresh.append(msg)
        if not fresh:
            return
        registry.received += len(fresh)
        dispatch_each = self._session.dispatch_each
        for listener in self._listeners:
            if listener.buffer is not None:
                listener.buffer.extend(fresh)
                continue
            run = fresh
            if run[0].seq <= listener.cursor:
                run = [msg for msg in run if msg.seq > listener.cursor]
                if not run:
                    continue
            listener.cursor = run[-1].seq
            dispatch_each(listener.callback, run, listener)

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
