"""The AMQP source: RabbitMQ queues (``pip install 'rtkit[amqp]'``, on aio-pika).

The bridge consumes one queue with manual acks and a bounded prefetch. It
either reads a queue that exists (``queue=``), or binds a queue to an
exchange with routing-key patterns (``exchange=``: the :class:`TopicMap`'s
patterns, AMQP's ``*`` and ``#``), declaring that queue durable when it is
named. A delivery is acked (``multiple``) only once the hub acked it and
everything before it, so what a bridge killed with ``kill -9`` had not
acked is delivered again to the next one, flagged ``redelivered``.

Whether a redelivery is recognised on the hub depends on the producer:

- a message with an AMQP ``message_id`` is published as
  ``amqp:{queue}:{message_id}``, so the hub stores it once: exactly once,
  as long as producers give each message its own id (aio-pika and aiormq
  set a random one when the producer does not);
- a message without one has nothing stable to be known by (delivery tags
  start again on each channel): it is published with a fresh id, at least
  once, and each redelivered one counts in :attr:`BridgeState.redelivered`.

A queue named by the server (``exchange=`` without ``queue=``) goes away
with the connection: what is published while the bridge is away is lost,
and each reconnect counts in :attr:`BridgeState.gaps`.

:attr:`BridgeState.lag` is the queue's ready messages, as the broker
counts them (asked once a second, by declaring the queue again), plus the
deliveries the bridge has received and not read yet, counted down as the
bridge reads.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from ..errors import ConfigurationError
from ._core import BridgeState, Position, SourceMessage, TopicMap, decode_payload, short_key

__all__ = ["AmqpSource"]

# The most of a queue name or a message id that goes into a publish id as
# is ("amqp:" and two of them stay within the hub's 128 characters).
_ID_PART = 56
# How often the queue's length is asked for (BridgeState.lag).
_LAG_EVERY = 1.0


def _import() -> Any:
    try:
        import aio_pika
    except ImportError:
        raise ConfigurationError(
            "the AMQP bridge needs aio-pika: pip install 'rtkit[amqp]'"
        ) from None
    return aio_pika


def _recording_transport(url: str, writers: list[asyncio.StreamWriter]) -> Any:
    """aiormq's own transport factory, keeping the socket writers it makes.

    aiormq leaves a connection's socket open when the connection is lost
    rather than closed by the client (a broker's ``CONNECTION_FORCED``, EOF;
    https://github.com/mosquito/aiormq/issues/231); a bridge reconnecting
    for days would leak one socket each time. The source closes them itself.
    """
    from aiormq.connection import TCPTransportFactory, TLSTransportFactory

    base = TLSTransportFactory if url.startswith("amqps:") else TCPTransportFactory

    class Recording(base):  # type: ignore[misc,valid-type]
        async def create(self, url: Any, **kwargs: Any) -> Any:
            reader, writer = await super().create(url, **kwargs)
            writers.append(writer)
            return reader, writer

    return Recording()


class AmqpSource:
    """Messages of a RabbitMQ queue, acked once the hub has them.

    ``topics`` is an ``amqp`` :class:`TopicMap` of routing keys; with
    ``exchange`` its patterns are also the queue's bindings.

    >>> source = AmqpSource("amqp://guest:guest@127.0.0.1:5672/", exchange="sensors",
    ...     queue="sensors-to-rtkit",
    ...     topics=TopicMap([("sensors.*.temp", "sensors.{1}.temp")], flavor="amqp"))
    """

    kind = "amqp"

    def __init__(
        self,
        url: str = "amqp://guest:guest@127.0.0.1:5672/",
        *,
        topics: TopicMap,
        queue: str | None = None,
        exchange: str | None = None,
        payload: str = "auto",
        prefetch: int = 1000,
    ) -> None:
        if queue is None and exchange is None:
            raise ConfigurationError("the AMQP bridge reads a queue, an exchange or both")
        if prefetch < 1:
            raise ConfigurationError(f"prefetch must be at least 1, got {prefetch}")
        self.url, self.topics = url, topics
        self.queue_name, self.exchange = queue, exchange
        self._payload = payload
        self._prefetch = prefetch
        self._to_ack: Any = None  # the newest delivery the hub acked, with all before it
        self._acked = 0
        self._generation = 0
        self._connections = 0

    async def checkpoint(self) -> str | None:
        msg, self._to_ack = self._to_ack, None
        if msg is not None:
            # If the channel is gone this raises, and there is nothing to try
            # again: its unacked deliveries are back in the queue.
            await msg.ack(multiple=True)
            self._acked = msg.delivery_tag
        if not self._acked:
            return None
        return f"{self.queue_name or self.exchange}:{self._acked}"

    def _committer(self, msg: Any, generation: int) -> Any:
        def commit() -> None:
            # A delivery tag of a channel closed since would ack, by number,
            # deliveries of the new one the hub never saw: skip it.
            if generation == self._generation:
                self._to_ack = msg

        return commit

    async def _queue(self, connection: Any) -> tuple[Any, Any]:
        """The channel and the queue to consume, declared and bound."""
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=self._prefetch)
        if self.queue_name is None:
            queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        elif self.exchange is None:
            # Someone else's queue: use it as it is (declaring it with other
            # arguments than its owner's would fail).
            queue = await channel.declare_queue(self.queue_name, passive=True)
        else:
            queue = await channel.declare_queue(self.queue_name, durable=True)
        if self.exchange is not None:
            exchange = await channel.get_exchange(self.exchange, ensure=True)
            for pattern in self.topics.patterns:
                await queue.bind(exchange, routing_key=pattern)
        return channel, queue

    async def messages(self, state: BridgeState) -> AsyncIterator[SourceMessage]:
        aio_pika = _import()
        writers: list[asyncio.StreamWriter] = []
        # aio_pika.connect() in two steps, to hand aiormq the transport factory.
        connection = aio_pika.Connection(self.url)
        connection.kwargs["transport_factory"] = _recording_transport(self.url, writers)
        try:
            await connection.connect(timeout=10)
            channel, queue = await self._queue(connection)
            self._generation += 1
            self._to_ack = None
            self._acked = 0
            generation = self._generation
            # Bounded by the prefetch: the server sends no more than that
            # many deliveries the bridge has not acked.
            inbox: asyncio.Queue[Any] = asyncio.Queue()

            async def on_message(message: Any) -> None:
                inbox.put_nowait(message)

            def on_close(sender: Any, exc: BaseException | None = None) -> None:
                inbox.put_nowait(exc or ConnectionError("AMQP channel closed"))

            channel.close_callbacks.add(on_close)
            connection.close_callbacks.add(on_close)
            await queue.consume(on_message)
            state.connected = True
            if self._connections and self.queue_name is None:
                state.gaps += 1  # a new server-named queue: what came meanwhile is gone
            self._connections += 1
            lag_at = 0.0
            while True:
                if time.monotonic() >= lag_at:
                    declared = await queue.declare(timeout=10)
                    state.lag = declared.message_count + inbox.qsize()
                    lag_at = time.monotonic() + _LAG_EVERY
                if inbox.empty():
                    try:  # until the next look at the queue's length
                        item = await asyncio.wait_for(inbox.get(), lag_at - time.monotonic())
                    except TimeoutError:
                        continue
                else:
                    item = inbox.get_nowait()
                if state.lag:  # counted down between looks at the queue
                    state.lag -= 1
                if isinstance(item, BaseException):
                    raise ConnectionError(f"AMQP connection lost: {item!r}") from item
                position = None
                if item.message_id:
                    # AMQP names and ids run to 255 characters each.
                    key = short_key(str(item.message_id), _ID_PART)
                    position = Position(short_key(queue.name, _ID_PART), key)
                elif item.redelivered:
                    state.redelivered += 1
                try:
                    data = decode_payload(item.body, self._payload)
                except ValueError as exc:
                    state.error(f"{item.routing_key}: {exc}")
                    data = None  # dropped, and acked with the rest
                yield SourceMessage(
                    item.routing_key or "",
                    data,
                    position,
                    self._committer(item, generation),
                )
        finally:
            await connection.close()
            for writer in writers:
                if not writer.is_closing():
                    writer.close()
