"""The NATS sources (``pip install 'rtkit[nats]'``, on nats-py).

- :class:`NatsSource`: NATS core subjects. Core NATS has no positions and
  delivers at most once: what is published while the bridge is away, or
  dropped as a slow consumer, is lost. Each disconnect and each slow-consumer
  drop counts in :attr:`BridgeState.gaps`.
- :class:`JetStreamSource`: a JetStream stream through a durable pull
  consumer (named after the bridge) with ``AckPolicy.ALL``. The consumer
  keeps the position on the server: the bridge acks a stream sequence only
  once the hub stored it and everything before it, and a restarted bridge
  gets everything after the last ack again. Publish ids are
  ``nats:{stream}:{sequence}``, so what is read twice is stored once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import orjson

from ..errors import ConfigurationError
from ..protocol import MAX_PUBLISH_BATCH
from ._core import BridgeState, Position, SourceMessage, TopicMap, decode_payload

__all__ = ["JetStreamSource", "NatsSource"]

# A pull request lasts this long on the server (then it answers 408); one
# unanswered for longer than that plus the grace was lost with its connection.
_PULL_EXPIRES = 1.0
_PULL_GRACE = 1.0
_STATUS = "Status"  # the header nats-py puts a status line's code in


def _import() -> Any:
    try:
        import nats
    except ImportError:
        raise ConfigurationError(
            "the NATS bridge needs nats-py: pip install 'rtkit[nats]'"
        ) from None
    return nats


async def _connect(servers: list[str], state: BridgeState, gaps: bool) -> Any:
    nats = _import()

    async def disconnected() -> None:
        state.connected = False
        if gaps:
            state.gaps += 1

    async def reconnected() -> None:
        state.connected = True
        state.reconnects += 1

    async def error(exc: Exception) -> None:
        if type(exc).__name__ == "SlowConsumerError":
            state.gaps += 1
        state.error(exc)

    return await nats.connect(
        servers,
        disconnected_cb=disconnected,
        reconnected_cb=reconnected,
        error_cb=error,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=5,
    )


class NatsSource:
    """Messages of NATS core subjects (a :class:`TopicMap` of NATS patterns).

    >>> source = NatsSource(["nats://127.0.0.1:4222"], topics=TopicMap(
    ...     [("sensors.*.temp", "sensors.{1}.temp")], flavor="nats"))
    """

    kind = "nats-core"

    def __init__(
        self,
        servers: list[str] | str = "nats://127.0.0.1:4222",
        *,
        topics: TopicMap,
        payload: str = "auto",
        max_pending: int = 100_000,
    ) -> None:
        self.servers = [servers] if isinstance(servers, str) else list(servers)
        self.topics = topics
        self._payload = payload
        self._max_pending = max_pending

    async def checkpoint(self) -> str | None:
        return None  # no positions

    async def messages(self, state: BridgeState) -> AsyncIterator[SourceMessage]:
        async for batch in self.batches(state, MAX_PUBLISH_BATCH):
            for msg in batch:
                yield msg

    async def batches(self, state: BridgeState, size: int) -> AsyncIterator[list[SourceMessage]]:
        """Lists of at most ``size`` messages: each what had arrived meanwhile."""
        nc = await _connect(self.servers, state, gaps=True)
        # Messages of every subscription, in arrival order. Bounded: a full
        # buffer holds the subscriptions' callbacks, so nats-py's own pending
        # queues fill (up to max_pending, then slow-consumer drops: gaps).
        buffer: deque[Any] = deque()
        ready = asyncio.Event()
        room = asyncio.Event()
        limit = 4 * size

        async def arrived(msg: Any) -> None:
            while len(buffer) >= limit:
                room.clear()
                await room.wait()
            buffer.append(msg)
            ready.set()

        try:
            for pattern in self.topics.patterns:
                await nc.subscribe(pattern, cb=arrived, pending_msgs_limit=self._max_pending)
            state.connected = True
            while True:
                await ready.wait()
                ready.clear()
                while buffer:
                    batch: list[SourceMessage] = []
                    while buffer and len(batch) < size:
                        msg = buffer.popleft()
                        try:
                            data = decode_payload(msg.data, self._payload)
                        except ValueError as exc:
                            state.error(f"{msg.subject}: {exc}")
                            continue
                        batch.append(SourceMessage(msg.subject, data))
                    room.set()
                    if batch:
                        yield batch
        finally:
            await nc.close()


class JetStreamSource:
    """Messages of a JetStream stream, exactly once into the hub.

    ``durable`` names the consumer that keeps the bridge's position (one per
    bridge); ``topics`` maps the stream's subjects to channels.

    >>> source = JetStreamSource(["nats://127.0.0.1:4222"], stream="SENSORS",
    ...     durable="to-rtkit", topics=TopicMap([("sensors.>", "{topic}")], flavor="nats"))
    """

    kind = "nats"

    def __init__(
        self,
        servers: list[str] | str = "nats://127.0.0.1:4222",
        *,
        stream: str,
        durable: str,
        topics: TopicMap,
        payload: str = "auto",
        batch: int = 500,
        max_ack_pending: int = 50_000,
    ) -> None:
        self.servers = [servers] if isinstance(servers, str) else list(servers)
        self.stream, self.durable, self.topics = stream, durable, topics
        self._payload = payload
        self._batch = batch
        self._max_ack_pending = max_ack_pending
        self._to_ack: Any = None  # the newest message the hub acked, with all before it
        self._acked_seq = 0
        self._generation = 0

    async def checkpoint(self) -> str | None:
        msg, self._to_ack = self._to_ack, None
        if msg is not None:
            seq = msg.metadata.sequence.stream
            try:
                await msg.ack()
            except Exception:
                if self._to_ack is None:
                    self._to_ack = msg  # try again next time
                raise
            self._acked_seq = seq
        return f"{self.stream}:{self._acked_seq}" if self._acked_seq else None

    def _committer(self, msg: Any, generation: int) -> Any:
        def commit() -> None:
            # An ack for a consumer made before the last reconnect would ack
            # the new consumer's deliveries by their numbers: skip it.
            if generation == self._generation:
                self._to_ack = msg

        return commit

    async def _consumer(self, js: Any) -> None:
        """(Re)create the durable consumer at the first sequence not acked.

        Deliveries the last run got but never acked would otherwise come back
        only after the ack wait, and an ack of a later sequence (AckPolicy.ALL)
        would ack them unseen."""
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
        from nats.js.errors import NotFoundError

        try:
            info = await js.consumer_info(self.stream, self.durable)
        except NotFoundError:
            start = None
        else:
            # A consumer (re)made at a start sequence reports an ack floor of
            # 0 until its first ack: it then still starts where it was made,
            # not at the stream's beginning.
            made_at = (info.config.opt_start_seq or 1) - 1
            floor = max(info.ack_floor.stream_seq, made_at)
            start = floor + 1 if floor else None
            self._acked_seq = floor
            await js.delete_consumer(self.stream, self.durable)
        patterns = self.topics.patterns
        await js.add_consumer(
            self.stream,
            ConsumerConfig(
                durable_name=self.durable,
                ack_policy=AckPolicy.ALL,
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE if start else DeliverPolicy.ALL,
                opt_start_seq=start,
                max_ack_pending=self._max_ack_pending,
                ack_wait=60,
                filter_subject=patterns[0] if len(patterns) == 1 else None,
                filter_subjects=patterns if len(patterns) > 1 else None,
            ),
        )
        self._generation += 1
        self._to_ack = None

    async def messages(self, state: BridgeState) -> AsyncIterator[SourceMessage]:
        async for batch in self.batches(state, self._batch):
            for msg in batch:
                yield msg

    async def batches(self, state: BridgeState, size: int) -> AsyncIterator[list[SourceMessage]]:
        """Lists of at most ``size`` messages: what the pull requests brought.

        It pulls itself rather than through nats-py's ``fetch``, which waits
        for each message with a task and a timeout of its own (the bridge's
        largest cost per message): one pull request of ``size`` at a time,
        its messages collected by a subscription callback and handed over
        as they come. A request the server no longer answers (its
        connection was lost) is replaced after its expiry."""
        size = min(size, self._batch)
        nc = await _connect(self.servers, state, gaps=False)
        try:
            await self._consumer(nc.jetstream())
            generation = self._generation
            arrived: deque[Any] = deque()  # at most one request's worth, and its status
            ready = asyncio.Event()

            async def deliver(msg: Any) -> None:
                arrived.append(msg)
                ready.set()

            inbox = nc.new_inbox()
            await nc.subscribe(inbox, cb=deliver)
            next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{self.durable}"
            pull = orjson.dumps({"batch": size, "expires": int(_PULL_EXPIRES * 1e9)})
            owed = 0  # messages the open pull request may still bring
            asked = 0.0
            expected = 1  # the consumer's delivery numbers have no holes
            state.connected = True
            while True:
                if owed <= 0 or time.monotonic() - asked > _PULL_EXPIRES + _PULL_GRACE:
                    await nc.publish(next_subject, pull, reply=inbox)
                    owed, asked = size, time.monotonic()
                if not arrived:
                    ready.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(_PULL_EXPIRES + _PULL_GRACE):
                            await ready.wait()
                    continue
                batch: list[SourceMessage] = []
                last = None
                while arrived:
                    msg = arrived.popleft()
                    headers = msg.headers
                    status = headers.get(_STATUS) if headers else None
                    if status is not None:
                        if status == "409":  # the consumer went away, or a limit of it
                            detail = headers.get("Description", "")
                            raise ConnectionError(f"JetStream pull refused: 409 {detail}")
                        owed = 0  # 408: expired, 404: nothing (the request is over)
                        continue
                    owed -= 1
                    meta = msg.metadata
                    if meta.sequence.consumer != expected:
                        raise ConnectionError(
                            f"JetStream delivery {meta.sequence.consumer} after {expected - 1}: "
                            "resuming from the last acked sequence"
                        )
                    expected += 1
                    try:
                        data = decode_payload(msg.data, self._payload)
                    except ValueError as exc:
                        state.error(f"{msg.subject}: {exc}")
                        data = None
                    batch.append(
                        SourceMessage(
                            msg.subject,
                            data,
                            Position(self.stream, str(meta.sequence.stream)),
                            lag=meta.num_pending,
                        )
                    )
                    last = msg
                if last is not None:
                    # AckPolicy.ALL: acking the last acks the whole batch.
                    batch[-1].commit = self._committer(last, generation)
                    yield batch
        finally:
            await nc.close()
