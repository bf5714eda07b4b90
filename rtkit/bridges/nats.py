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
from collections.abc import AsyncIterator
from typing import Any

from ..errors import ConfigurationError
from ._core import BridgeState, Position, SourceMessage, TopicMap, decode_payload

__all__ = ["JetStreamSource", "NatsSource"]


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
        nc = await _connect(self.servers, state, gaps=True)
        try:
            state.connected = True
            subs = [
                await nc.subscribe(p, pending_msgs_limit=self._max_pending)
                for p in self.topics.patterns
            ]
            queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=1)

            async def pump(sub: Any) -> None:
                async for msg in sub.messages:
                    await queue.put(msg)

            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(pump(sub)) for sub in subs]
                try:
                    while True:
                        msg = await queue.get()
                        try:
                            data = decode_payload(msg.data, self._payload)
                        except ValueError as exc:
                            state.error(f"{msg.subject}: {exc}")
                            continue
                        yield SourceMessage(msg.subject, data)
                finally:
                    for task in tasks:
                        task.cancel()
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

    async def _consumer(self, js: Any) -> Any:
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
            start = info.ack_floor.stream_seq + 1
            self._acked_seq = info.ack_floor.stream_seq
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
        return await js.pull_subscribe_bind(durable=self.durable, stream=self.stream)

    async def messages(self, state: BridgeState) -> AsyncIterator[SourceMessage]:
        from nats.errors import TimeoutError as NatsTimeout

        nc = await _connect(self.servers, state, gaps=False)
        try:
            js = nc.jetstream()
            psub = await self._consumer(js)
            generation = self._generation
            expected = 1  # the consumer's delivery numbers have no holes
            state.connected = True
            while True:
                try:
                    msgs = await psub.fetch(self._batch, timeout=1)
                except (NatsTimeout, TimeoutError):
                    continue  # nothing new within a second (or a slow answer): ask again
                state.connected = True
                for msg in msgs:
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
                    yield SourceMessage(
                        msg.subject,
                        data,
                        Position(self.stream, str(meta.sequence.stream)),
                        self._committer(msg, generation),
                        lag=meta.num_pending,
                    )
        finally:
            await nc.close()
