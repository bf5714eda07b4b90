"""The bridge framework: topic maps, transforms, state, and the run loop.

A :class:`Bridge` reads a :class:`Source` (MQTT, NATS, JetStream, a Redis
stream...) and publishes what it reads to hub channels through the rtkit
async client:

- a :class:`TopicMap` names each message's channel from its source topic
  (``sensors/+/temp`` -> ``sensors.{1}.temp``);
- an optional transform (``"module:function"``, sync or async) rewrites the
  data or drops the message by returning None;
- where the source has positions (a JetStream stream sequence, a Redis
  stream id) the publish id is derived from the position
  (``"{source}:{stream}:{seq}"``), so a message read again after a crash is
  a duplicate on the hub and stored once; the bridge commits a position back
  to its source only once the hub acked it and everything before it;
- source and hub away: the bridge reconnects with backoff, the client queues
  (bounded) meanwhile, and :class:`BridgeState` says what is going on;
- the state is also published to the hub (``bridges.<name>``, see
  :mod:`rtkit.bridges._report`), where the status API and badge show it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib
import inspect
import logging
import os
import re
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Final, Protocol, cast

import orjson

from ..client._backoff import Backoff
from ..client.channel import Prepared, PublishResult, prepare_many
from ..config import DEFAULT_BRIDGE_CHANNEL
from ..errors import (
    AckTimeout,
    ClientClosed,
    ConfigurationError,
    InternalError,
    NotConnected,
    OfflineQueueFull,
    RateLimited,
    RtkitError,
    Unavailable,
)
from ..protocol import CHANNEL_NAME_RE, MAX_PUBLISH_BATCH
from ._report import REPORT_EVERY, StateReporter

__all__ = [
    "Bridge",
    "BridgeState",
    "Position",
    "Source",
    "SourceMessage",
    "TopicMap",
    "Transform",
    "decode_payload",
    "load_transform",
]

log = logging.getLogger(__name__)

# How often committed positions go back to the source (an ack, a file write).
_COMMIT_INTERVAL = 0.1


# -- topic maps -------------------------------------------------------------------

_TEMPLATE_REF = re.compile(r"\{([^}]*)\}")


def _fill(values: dict[str, str], match: re.Match[str]) -> str:
    return values[match[1]]


@dataclass(frozen=True, slots=True)
class _Rule:
    pattern: str
    regex: re.Pattern[str]
    template: str


class TopicMap:
    """Source topics to channel names, by pattern and template.

    Each rule is ``(pattern, template)``; the first pattern that matches a
    topic wins. Patterns use the source's wildcards: MQTT's ``+`` (one
    level) and ``#`` (the rest), NATS's ``*`` and ``>``, or AMQP's routing
    key ``*`` (one word) and ``#`` (zero or more words, at any level). The template
    names the channel with ``{1}``, ``{2}``... for the topic's wildcard
    levels in order (a multi-level one joined by ``.``) and ``{topic}`` for
    the whole topic (its separators replaced by ``.``).

    >>> TopicMap([("sensors/+/temp", "sensors.{1}.temp")], flavor="mqtt").channel(
    ...     "sensors/kitchen/temp")
    'sensors.kitchen.temp'
    """

    _WILDCARDS = {
        "mqtt": ("/", "+", "#"),
        "nats": (".", "*", ">"),
        "amqp": (".", "*", "#"),
        "plain": ("\0", "\0", "\0"),
    }

    def __init__(self, rules: Sequence[tuple[str, str]], *, flavor: str = "mqtt") -> None:
        if flavor not in self._WILDCARDS:
            raise ConfigurationError(
                f"topic map flavor must be mqtt, nats, amqp or plain: {flavor!r}"
            )
        if not rules:
            raise ConfigurationError("a topic map needs at least one rule (pattern, template)")
        self.flavor = flavor
        self._sep, one, rest = self._WILDCARDS[flavor]
        self._rules = [self._compile(p, t, one, rest) for p, t in rules]

    @property
    def patterns(self) -> list[str]:
        """The patterns, in order (what a source subscribes to)."""
        return [rule.pattern for rule in self._rules]

    def _compile(self, pattern: str, template: str, one: str, rest: str) -> _Rule:
        if not pattern or not template:
            raise ConfigurationError("a topic map rule needs a pattern and a template")
        levels = pattern.split(self._sep)
        sep = re.escape(self._sep)
        regex_text = ""
        wildcards = 0
        for i, level in enumerate(levels):
            # After a leading AMQP "#" the separator is inside its optional group.
            joiner = "" if i == 0 or (i == 1 and levels[0] == rest) else sep
            if level == one:
                regex_text += f"{joiner}([^{sep}]+)"
                wildcards += 1
            elif level == rest and self.flavor == "amqp":
                # AMQP's "#" also matches no word at all, separator included:
                # "a.#" matches "a", "#.b" matches "b" (the level is then "").
                if len(levels) == 1:
                    regex_text += "(.*)"
                elif i == 0:
                    regex_text += f"(?:(.+){sep})?"
                else:
                    regex_text += f"(?:{sep}(.+))?"
                wildcards += 1
            elif level == rest:
                if i != len(levels) - 1:
                    raise ConfigurationError(f"{rest!r} must be the last level of {pattern!r}")
                regex_text += f"{joiner}(.+)"
                wildcards += 1
            elif one in level or rest in level:
                raise ConfigurationError(f"a wildcard must be a whole level in {pattern!r}")
            else:
                regex_text += joiner + re.escape(level)
        for ref in re.findall(r"\{([^}]*)\}", template):
            if ref != "topic" and not (ref.isdigit() and 1 <= int(ref) <= wildcards):
                raise ConfigurationError(
                    f"template {template!r} names {{{ref}}}, but {pattern!r} has "
                    f"{wildcards} wildcard(s): use {{1}}..{{{wildcards}}} or {{topic}}"
                )
        return _Rule(pattern, re.compile(regex_text), template)

    def channel(self, topic: str) -> str | None:
        """The channel for ``topic``, or None when no rule matches it.

        Raises :class:`ValueError` when the template gives a name that is
        not a valid channel name."""
        for rule in self._rules:
            match = rule.regex.fullmatch(topic)
            if match is None:
                continue
            values = {
                str(i): (g or "").replace(self._sep, ".") for i, g in enumerate(match.groups(), 1)
            }
            values["topic"] = topic.replace(self._sep, ".")
            name = _TEMPLATE_REF.sub(partial(_fill, values), rule.template)
            if not CHANNEL_NAME_RE.fullmatch(name):
                raise ValueError(f"topic {topic!r} maps to {name!r}, not a valid channel name")
            return name
        return None

    @classmethod
    def parse(cls, specs: Sequence[str], *, flavor: str) -> TopicMap:
        """From ``PATTERN=TEMPLATE`` strings (a bare ``PATTERN`` maps to ``{topic}``)."""
        rules = []
        for spec in specs:
            pattern, sep, template = spec.partition("=")
            rules.append((pattern.strip(), template.strip() if sep else "{topic}"))
        return cls(rules, flavor=flavor)


# -- messages, positions, sources ------------------------------------------------------


def short_key(text: str, limit: int) -> str:
    """``text`` as a part of a publish id: itself when at most ``limit``
    characters, else ``sha256-`` and 40 hex digits of its digest (publish
    ids are at most 128 characters; broker ids and names may be longer)."""
    if len(text) <= limit:
        return text
    return "sha256-" + hashlib.sha256(text.encode()).hexdigest()[:40]


@dataclass(frozen=True, slots=True)
class Position:
    """Where a message sits in its source: a stream and a sequence or id."""

    stream: str
    seq: str


@dataclass(slots=True)
class SourceMessage:
    """One message read from a source.

    ``position`` is None for sources without positions (core MQTT, NATS
    core); ``commit`` is called once the hub acked this message and every
    one before it: it notes the position, which the source's
    :meth:`Source.checkpoint` then records (an ack, a file)."""

    topic: str
    data: Any
    position: Position | None = None
    commit: Callable[[], None] | None = None
    lag: int | None = None  # messages still waiting in the source, where it says


class Source(Protocol):
    """A plug point: a broker the bridge reads from.

    ``kind`` names it in publish ids (``"nats"``, ``"redis"``...);
    ``messages()`` connects and yields messages until the connection fails
    (it raises) or the bridge stops. A new call resumes: a positioned source
    starts after the last message it was asked to commit, or after the last
    it yielded if that is later (those are still in flight in the client).
    On stop the bridge reads no more but keeps the iterator open until it
    has called :meth:`checkpoint` a last time, then closes it (``aclose``),
    so a source may record positions on the connection it reads from.

    A source may also have ``batches(state, size)``: the same messages as
    lists of at most ``size``, each what it had ready at once; the bridge
    then publishes each list as one request with one future (the MQTT,
    NATS and Redis sources do). From a source without it a task reads
    ``messages()`` ahead, and each batch is what it read meanwhile. A
    positioned source with batches may set ``commit`` on the last message
    of a batch only (per stream), since a commit covers everything before
    it."""

    kind: str
    topics: TopicMap

    def messages(self, state: BridgeState) -> AsyncIterator[SourceMessage]: ...

    async def checkpoint(self) -> str | None:
        """Record the positions committed so far; the last one, as text."""
        ...


def decode_payload(payload: bytes, mode: str = "auto") -> Any:
    """Bytes from a broker as message data.

    ``auto``: JSON if it parses, else text if UTF-8, else the bytes;
    ``json``: JSON or ValueError; ``text``: UTF-8 text; ``bytes``: as is."""
    if mode == "bytes":
        return bytes(payload)
    if mode == "text":
        return bytes(payload).decode()
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        if mode == "json":
            raise ValueError("payload is not JSON") from None
    try:
        return bytes(payload).decode()
    except UnicodeDecodeError:
        return bytes(payload)


def read_positions(path: Path) -> dict[str, str]:
    """The positions a bridge state file keeps (none when it does not exist yet)."""
    try:
        raw = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except orjson.JSONDecodeError as exc:
        raise ConfigurationError(f"bridge state file {path} is not JSON: {exc}") from None
    positions = raw.get("positions", {}) if isinstance(raw, dict) else {}
    return {str(k): str(v) for k, v in positions.items()}


def write_positions(path: Path, positions: dict[str, str]) -> None:
    """Replace the state file atomically: a crash leaves the old one or the new one."""
    data = orjson.dumps({"positions": positions})
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -- transforms ----------------------------------------------------------------


Transform = Callable[[str, Any, SourceMessage], Any]
"""``transform(channel, data, msg)``: the data to publish, None to drop
the message; a plain function or a coroutine function."""


def load_transform(spec: str) -> Transform:
    """The callable named ``"package.module:function"``."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigurationError(f"a transform is 'module:function', got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(
            f"cannot import the transform's module {module_name!r}: {exc}"
        ) from exc
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
    if not callable(obj):
        raise ConfigurationError(f"{spec!r} is not a callable")
    return obj  # type: ignore[no-any-return]


# -- state ----------------------------------------------------------------------


@dataclass
class BridgeState:
    """What a bridge is doing, updated as it runs (read it any time).

    ``gaps`` counts windows in which messages may have been lost without
    anyone knowing how many: reconnects of a source without positions
    (core MQTT, NATS core) and messages the source itself dropped."""

    source: str
    connected: bool = False
    """The source connection is up."""
    hub_connected: bool = False
    received: int = 0
    """Messages read from the source (a message read again counts again)."""
    published: int = 0
    """Messages the hub acked (a duplicate of a stored one counts)."""
    dropped: int = 0
    """Messages the transform dropped or no topic rule matched."""
    pending: int = 0
    """Messages read and not yet acked by the hub."""
    lag: int | None = None
    """Messages still waiting in the source, where it can say (JetStream, AMQP,
    the PostgreSQL outbox); else None."""
    last_position: str | None = None
    """The last position committed to the source (acked by the hub)."""
    errors: int = 0
    last_error: str | None = None
    gaps: int = 0
    redelivered: int = 0
    """Messages the source says it delivered before (AMQP's redelivered flag)
    and that carry nothing to recognise them by: the hub may store them twice."""
    reconnects: int = 0
    started: float = field(default_factory=time.time)

    def error(self, exc: BaseException | str) -> None:
        self.errors += 1
        self.last_error = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return asdict(self)


# -- the bridge -----------------------------------------------------------------

# Most messages one batch carries from the source into one publish request.
DEFAULT_BATCH: Final = MAX_PUBLISH_BATCH
# Batches waiting for the hub's ack at a time.
DEFAULT_WINDOW: Final = 4
# Topics whose channel is remembered (a feed's topics are few; a bound all the same).
_TOPIC_CACHE: Final = 10_000


@dataclass(slots=True)
class _InFlight:
    """A batch read from the source, waiting for the hub's ack."""

    count: int  # messages read (published or dropped)
    commits: list[Callable[[], None]]  # what the source asked to commit, in order
    future: asyncio.Future[list[PublishResult]] | None  # None: nothing to publish
    # Its messages have positions (the source can give them again), whether
    # or not this part of a source batch carries the batch's commit.
    positioned: bool
    # The ack was looked at (_on_ack). A done future is not enough: its
    # callback may not have run yet when another batch's callback commits
    # what is settled, and a refused batch would pass for a stored one.
    acked: bool = False
    # The hub refused part of it for now (a timeout, rate_limited,
    # unavailable): its positions are not committed, and the bridge reads
    # the source again from the last committed one.
    failed: bool = False


# Failures that a later try may not meet; the others (bad_request,
# forbidden, too_large...) would fail the same way again.
_PASSING = (AckTimeout, NotConnected, RateLimited, Unavailable, InternalError)


class _Rewind(Exception):
    """A batch of a positioned source failed for now: read it again."""


class Bridge:
    """Runs one source into hub channels until stopped.

    ``client`` is an open :class:`rtkit.aio.Client` (or pass ``url`` and
    ``token`` and the bridge connects, retrying until the hub answers;
    without them it connects where ``rtkit.connect()`` would:
    ``RTKIT_URL`` and ``RTKIT_TOKEN``).

    ``name`` (default: the source's kind) names the bridge in its state
    reports, published on ``<report_channel>.<name>`` every
    ``report_every`` seconds and on change (``report_channel=None``: no
    reports); the hub's status and ``StatusBadge(bridges=True)`` show them.

    Messages move in batches: whatever the source has ready (up to
    ``batch`` messages) goes to the hub as one publish request with one
    future, and its positions are committed once the hub acked it and every
    batch before it. At most ``window`` batches wait for the hub's ack at a
    time: meanwhile what arrives gathers in the source, so under load the
    batches grow instead of the requests multiplying, and at low rates each
    message still leaves at once. At most ``max_pending`` messages are read
    and not yet acked; past that the bridge stops reading the source.

    >>> bridge = Bridge(MqttSource("127.0.0.1", topics=TopicMap(
    ...     [("sensors/+/temp", "sensors.{1}.temp")])), url="http://127.0.0.1:8765")
    >>> task = asyncio.create_task(bridge.run())
    >>> bridge.state.published
    """

    def __init__(
        self,
        source: Source,
        *,
        client: Any = None,
        url: str | None = None,
        token: str | None = None,
        transform: Transform | str | None = None,
        backoff: Backoff | None = None,
        max_pending: int = 10_000,
        batch: int = DEFAULT_BATCH,
        window: int = DEFAULT_WINDOW,
        name: str | None = None,
        report_channel: str | None = DEFAULT_BRIDGE_CHANNEL,
        report_every: float = REPORT_EVERY,
    ) -> None:
        if not 1 <= batch <= MAX_PUBLISH_BATCH:
            raise ConfigurationError(f"batch is 1 to {MAX_PUBLISH_BATCH} messages, got {batch}")
        if window < 1:
            raise ConfigurationError(f"window is at least 1 batch, got {window}")
        if max_pending < batch:
            raise ConfigurationError(
                f"max_pending ({max_pending}) must be at least batch ({batch})"
            )
        self.source = source
        self.state = BridgeState(source.kind)
        self.name = name or source.kind
        self._reporter = (
            StateReporter(self.name, self.state, channel=report_channel, every=report_every)
            if report_channel is not None
            else None
        )
        self._client = client
        self._own_client = client is None
        self._url = url
        self._token = token
        self._transform = load_transform(transform) if isinstance(transform, str) else transform
        self._backoff = backoff or Backoff(0.25, 10.0)
        self._max_pending = max_pending
        self._batch = batch
        self._window = window
        self._unacked = 0  # batches published and not yet acked
        self._inflight: deque[_InFlight] = deque()
        self._pending = 0  # messages in _inflight
        self._settled = asyncio.Event()
        self._rewind = False  # a batch failed for now: read again from the last commit
        self._rewind_flag = asyncio.Event()  # the same, for a reader waiting on the source
        self._rewinds = 0  # in a row, without a batch stored whole in between
        self._stop = asyncio.Event()
        self._channels: dict[str, str | None] = {}

    def stop(self) -> None:
        """Ask :meth:`run` to return (after committing what the hub acked)."""
        self._stop.set()

    async def run(self) -> None:
        """Connect to the hub and the source, and bridge until :meth:`stop`.

        On stop it waits (a few seconds at most) for the publishes in flight
        to be acked and commits their positions."""
        client = await self._connect_hub()
        try:
            async with asyncio.TaskGroup() as tg:
                committer = tg.create_task(self._committer())
                reader = tg.create_task(self._read_loop(client))
                reporter = tg.create_task(self._reporter.run(client)) if self._reporter else None
                await self._stop.wait()
                committer.cancel()
                # The reader reads no more but keeps the source open while
                # what is in flight settles: some sources record positions on
                # the connection they read from (an AMQP or JetStream ack).
                with contextlib.suppress(TimeoutError, RtkitError):
                    async with asyncio.timeout(5):
                        await client.flush()
                await self._commit()
                reader.cancel()
                if reporter is not None:
                    reporter.cancel()
        finally:
            await self._commit()
            if self._reporter is not None:
                await self._reporter.final(client)
            if self._own_client:
                await client.close()

    async def _connect_hub(self) -> Any:
        from ..client.aio import Client

        if self._client is not None:
            self._watch(self._client)
            return self._client
        attempt = 0
        while True:
            client = Client(self._url, self._token)
            try:
                await client.open()
            except RtkitError as exc:
                await client.close()
                self.state.error(exc)
                log.warning("bridge: hub unreachable (%s), retrying", exc)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._backoff.delay(attempt) + 0.05):
                        await self._stop.wait()
                if self._stop.is_set():
                    raise
                attempt += 1
                continue
            self._watch(client)
            self._client = client
            return client

    def _watch(self, client: Any) -> None:
        client.on("connect", self._on_hub_connect)
        client.on("disconnect", self._on_hub_disconnect)
        self.state.hub_connected = client.connected

    def _on_hub_connect(self) -> None:
        self.state.hub_connected = True

    def _on_hub_disconnect(self, reason: str) -> None:
        self.state.hub_connected = False
        self._settled.set()  # a reader waiting for the window may queue offline now

    def _source_batches(self) -> AsyncIterator[list[SourceMessage]]:
        batches = getattr(self.source, "batches", None)
        if batches is not None:
            return cast("AsyncIterator[list[SourceMessage]]", batches(self.state, self._batch))
        # Read ahead as far as the bridge may hold messages anyway.
        return _read_ahead(self.source.messages(self.state), self._batch, self._max_pending)

    async def _read_loop(self, client: Any) -> None:
        state = self.state
        attempt = 0
        # A batch is admitted into the client's queue whole: never more than it holds.
        size = min(self._batch, client.publisher.capacity)
        while not self._stop.is_set():
            batches = self._source_batches()
            try:
                async for batch in self._until_rewind(batches):
                    attempt = 0
                    for start in range(0, len(batch), size):
                        if self._rewind:
                            raise _Rewind
                        await self._handle(client, batch[start : start + size])
                    if self._stop.is_set():
                        # Hold the source open until run() has committed
                        # on it and cancels this task.
                        await asyncio.get_running_loop().create_future()
            except (asyncio.CancelledError, KeyboardInterrupt, ClientClosed):
                raise  # stopped, or the client it publishes through is closed
            except _Rewind:
                log.warning(
                    "bridge %s: the hub refused a batch for now (%s); reading the "
                    "source again from its last committed position",
                    state.source,
                    state.last_error,
                )
                # While the source is open: some record positions on it.
                await self._settle_rewind()
                # Back off as for a source failure: the hub may need a while
                # (a rate limit's window, a store coming back).
                self._rewinds += 1
                attempt = self._rewinds
            except Exception as exc:  # a source failure: reconnect, never crash
                state.error(exc)
                log.warning(
                    "bridge %s: source failed (%s: %s); reconnecting",
                    state.source,
                    type(exc).__name__,
                    exc,
                )
            finally:
                # Close the source's connection now, not whenever the
                # generator is garbage-collected.
                aclose = getattr(batches, "aclose", None)
                if aclose is not None:
                    await aclose()
            state.connected = False
            if self._rewind:  # a batch failed as the source did
                await self._settle_rewind()
            if self._stop.is_set():
                break
            state.reconnects += 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._backoff.delay(attempt)):
                    await self._stop.wait()
            attempt += 1

    async def _until_rewind(
        self, batches: AsyncIterator[list[SourceMessage]]
    ) -> AsyncIterator[list[SourceMessage]]:
        """``batches``, until a batch fails for now: a reader waiting on a
        quiet source must not wait for its next message to read again."""
        it = aiter(batches)
        while True:
            step = asyncio.ensure_future(anext(it))
            flag = asyncio.ensure_future(self._rewind_flag.wait())
            try:
                await asyncio.wait((step, flag), return_when=asyncio.FIRST_COMPLETED)
            finally:
                flag.cancel()
                if not step.done():
                    step.cancel()
                    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                        await step
            if step.cancelled():
                raise _Rewind
            try:
                batch = step.result()
            except StopAsyncIteration:
                return
            yield batch

    def _channel(self, topic: str) -> str | None:
        try:
            return self._channels[topic]
        except KeyError:
            pass
        try:
            channel = self.source.topics.channel(topic)
        except ValueError as exc:
            self.state.error(exc)
            return None  # not remembered: each such message counts as an error
        if len(self._channels) >= _TOPIC_CACHE:
            self._channels.clear()
        self._channels[topic] = channel
        return channel

    async def _handle(self, client: Any, batch: list[SourceMessage]) -> None:
        """Map, transform and publish one batch (of at most ``self._batch``)."""
        state = self.state
        count = len(batch)
        lag = batch[-1].lag
        if lag is not None:
            state.lag = lag
        kind = self.source.kind
        transform = self._transform
        outgoing: list[tuple[str, Any, str | None]] = []
        commits: list[Callable[[], None]] = []
        for msg in batch:
            state.received += 1  # one by one: a transform waiting on one sees it counted
            if msg.commit is not None:
                commits.append(msg.commit)
            channel = self._channel(msg.topic)
            data = msg.data
            # None is a message the source could not read (it said why): dropped
            # here, after its position, without bothering the transform.
            if channel is not None and data is not None and transform is not None:
                try:
                    data = transform(channel, data, msg)
                    if inspect.isawaitable(data):
                        data = await data
                except Exception as exc:  # the user's code: count it, go on
                    state.error(f"transform: {type(exc).__name__}: {exc}")
                    log.exception("bridge transform failed on %r", msg.topic)
                    data = None
            if channel is None or data is None:
                state.dropped += 1
                continue
            position = msg.position
            msg_id = None if position is None else f"{kind}:{position.stream}:{position.seq}"
            outgoing.append((channel, data, msg_id))
        # Room first: a batch is admitted whole, and both bounds hold.
        # (The window holds only while the hub is there: without it, the
        # client's offline queue is what buffers, up to its own bound.)
        while not self._rewind and (
            self._pending + count > self._max_pending
            or (outgoing and self._unacked >= self._window and client.connected)
        ):
            self._settled.clear()
            await self._settled.wait()
        if self._rewind:
            # Behind a failed batch: not published now, read again after it.
            raise _Rewind
        future = await self._publish(client, outgoing) if outgoing else None
        positioned = bool(commits) or any(msg.position is not None for msg in batch)
        self._inflight.append(_InFlight(count, commits, future, positioned))
        self._pending += count
        state.pending = self._pending
        if future is None:
            self._advance()
        else:
            self._unacked += 1
            future.add_done_callback(self._on_ack)

    async def _publish(
        self, client: Any, outgoing: list[tuple[str, Any, str | None]]
    ) -> asyncio.Future[list[PublishResult]] | None:
        publisher = client.publisher
        prepared: list[Prepared] = []
        for result in prepare_many(outgoing):
            if isinstance(result, Prepared):
                prepared.append(result)
            else:  # refused before queueing (too large, bad data)
                self.state.error(result)
        if not prepared:
            return None
        while True:
            try:
                future: asyncio.Future[list[PublishResult]] = await publisher.publish_many(prepared)
                return future
            except OfflineQueueFull:
                # The hub is away and the client's queue is full: stop reading
                # the source until the hub is back (back-pressure, no crash).
                await client.wait_connected()

    def _on_ack(self, future: asyncio.Future[list[PublishResult]]) -> None:
        self._unacked -= 1
        state = self.state
        passing = future.cancelled()
        if passing:
            state.error("publish cancelled")
        else:
            for result in future.result():
                if isinstance(result, BaseException):
                    state.error(result)
                    passing = passing or isinstance(result, _PASSING)
                else:
                    state.published += 1
        entry = next((e for e in self._inflight if e.future is future), None)
        if entry is not None:
            entry.acked = True
        if not passing:
            self._rewinds = 0
        # Without positions there is nothing to read again: counted, gone.
        elif entry is not None and entry.positioned:
            entry.failed = True
            self._rewind = True
            self._rewind_flag.set()
        self._advance()

    async def _settle_rewind(self) -> None:
        """Before reading again: let what is in flight settle (the client
        bounds each wait), keep the commits of the batches before the failed
        one, and forget the rest. The source then starts over from its last
        committed position, and the hub takes what it already stored as
        duplicates (the publish ids come from the positions)."""
        for entry in list(self._inflight):
            if entry.future is not None and not entry.future.done():
                with contextlib.suppress(Exception):
                    await asyncio.shield(entry.future)
        await self._commit()
        self._inflight.clear()
        self._pending = 0
        self.state.pending = 0
        self._rewind = False
        self._rewind_flag.clear()
        self._settled.set()

    async def _committer(self) -> None:
        while True:
            await asyncio.sleep(_COMMIT_INTERVAL)
            await self._commit()

    def _advance(self) -> None:
        """Commit every batch settled in order (the source notes the
        positions; :meth:`_commit` records them) and make room."""
        queue = self._inflight
        while queue and not queue[0].failed and (queue[0].future is None or queue[0].acked):
            entry = queue.popleft()
            self._pending -= entry.count
            for commit in entry.commits:
                commit()
        self.state.pending = self._pending
        self._settled.set()

    async def _commit(self) -> None:
        """Commit what is settled, then checkpoint the source."""
        self._advance()
        try:
            position = await self.source.checkpoint()
        except Exception as exc:  # the source is away: the next checkpoint covers it
            self.state.error(exc)
            return
        if position is not None:
            self.state.last_position = position


async def _read_ahead(
    messages: AsyncIterator[SourceMessage], size: int, limit: int
) -> AsyncIterator[list[SourceMessage]]:
    """Batches from a source with only ``messages()``.

    A task reads the source ahead into a buffer of at most ``limit``
    messages while the bridge waits for the hub, and each batch is what the
    buffer holds (up to ``size``). A failure of the source comes after the
    messages read before it, which are good."""
    buffer: deque[SourceMessage] = deque()
    ready = asyncio.Event()
    room = asyncio.Event()
    failure: list[BaseException] = []
    finished = False

    async def pump() -> None:
        nonlocal finished
        try:
            async for msg in messages:
                while len(buffer) >= limit:
                    room.clear()
                    await room.wait()
                buffer.append(msg)
                ready.set()
        except Exception as exc:  # handed to the bridge, after what was read
            failure.append(exc)
        finally:
            finished = True
            ready.set()
            close = getattr(messages, "aclose", None)
            if close is not None:
                await close()  # its connection now, not whenever it is collected

    reader = asyncio.create_task(pump(), name="bridge source reader")
    try:
        while True:
            await ready.wait()
            ready.clear()
            while buffer:
                batch = [buffer.popleft() for _ in range(min(size, len(buffer)))]
                room.set()
                yield batch
            if finished and not buffer:
                if failure:
                    raise failure[0]
                return
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
