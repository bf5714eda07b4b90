"""The MQTT source (``pip install 'rtkit[mqtt]'``, on aiomqtt).

MQTT has no positions: a message carries no sequence a bridge could resume
from, so a bridge restart or a lost connection may lose messages (QoS 0) or
repeat them (QoS 1), and nobody can say how many. With ``qos=1`` and a
persistent session (``session="ID"``: a fixed client id, clean session off)
the broker keeps what arrives while the bridge is away and sends it on
reconnect; with QoS 0 it does not. Each reconnect is counted in
:attr:`BridgeState.gaps`, a window in which messages may be missing, and
so is each message dropped because the bridge fell ``max_queued`` behind.

Where the broker is: :func:`broker_address` reads ``$RTKIT_MQTT``
(``host:port``, 127.0.0.1:1883 when unset), which is also what
:class:`MqttSource` and ``rtkit bridge mqtt`` use when given no host.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

from ..errors import ConfigurationError
from ..protocol import MAX_PUBLISH_BATCH
from ._core import BridgeState, SourceMessage, TopicMap, decode_payload

__all__ = ["DEFAULT_BROKER", "MqttSource", "broker_address"]

DEFAULT_BROKER = ("127.0.0.1", 1883)
"""The broker :func:`broker_address` names when ``$RTKIT_MQTT`` is unset."""


def broker_address(value: str | None = None) -> tuple[str, int]:
    """The MQTT broker to use, as ``(host, port)``: ``value``, else
    ``$RTKIT_MQTT``, else 127.0.0.1:1883.

    The text is ``host:port`` or a bare ``host`` (port 1883); an IPv6
    address goes in brackets (``[::1]:1883``).

    >>> broker_address("broker.lan:8883")
    ('broker.lan', 8883)
    """
    text = (value if value is not None else os.environ.get("RTKIT_MQTT", "")).strip()
    if not text:
        return DEFAULT_BROKER
    where = "RTKIT_MQTT" if value is None else "the MQTT broker address"
    host, port_text = text, ""
    if text.startswith("["):  # [v6 address]:port
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ConfigurationError(f"{where}: {text!r} is not [IPv6 address]:port")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    elif ":" in text:
        raise ConfigurationError(f"{where}: put an IPv6 address in brackets: [{text}]:1883")
    if not host:
        raise ConfigurationError(f"{where}: {text!r} names no host (host:port)")
    if not port_text:
        return host, DEFAULT_BROKER[1]
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigurationError(f"{where}: the port in {text!r} is not 1-65535 (host:port)")
    return host, int(port_text)


def _import() -> Any:
    try:
        import aiomqtt
    except ImportError:
        raise ConfigurationError(
            "the MQTT bridge needs aiomqtt: pip install 'rtkit[mqtt]'"
        ) from None
    return aiomqtt


class MqttSource:
    """Messages of the MQTT topics a :class:`TopicMap` names (its patterns
    are the subscriptions).

    Without ``host`` the broker is :func:`broker_address`'s (``$RTKIT_MQTT``);
    without ``port``, the port that names, else 1883.

    >>> source = MqttSource("127.0.0.1", 1883, topics=TopicMap(
    ...     [("sensors/+/temp", "sensors.{1}.temp")], flavor="mqtt"))
    """

    kind = "mqtt"

    def __init__(
        self,
        host: str | None = None,
        port: int | None = None,
        *,
        topics: TopicMap,
        qos: int = 0,
        session: str | None = None,
        username: str | None = None,
        password: str | None = None,
        payload: str = "auto",
        max_queued: int = 100_000,
    ) -> None:
        if qos not in (0, 1, 2):
            raise ConfigurationError(f"MQTT qos is 0, 1 or 2, got {qos}")
        if host is None:
            host, default_port = broker_address()
            port = port or default_port
        self.host, self.port = host, port or DEFAULT_BROKER[1]
        self.topics, self.qos = topics, qos
        self._session = session
        self._username, self._password = username, password
        self._payload = payload
        self._max_queued = max_queued
        self._connections = 0

    async def checkpoint(self) -> str | None:
        return None  # no positions

    async def messages(self, state: BridgeState) -> AsyncIterator[SourceMessage]:
        async for batch in self.batches(state, MAX_PUBLISH_BATCH):
            for msg in batch:
                yield msg

    async def batches(self, state: BridgeState, size: int) -> AsyncIterator[list[SourceMessage]]:
        """Lists of at most ``size`` messages: each what aiomqtt had queued."""
        aiomqtt = _import()
        inboxes: list[asyncio.Queue[Any]] = []

        class Inbox(asyncio.Queue[Any]):
            """aiomqtt's incoming queue, counting what it discards when full."""

            def __init__(self, maxsize: int = 0) -> None:
                super().__init__(maxsize)
                inboxes.append(self)  # drained here without a task per message

            def put_nowait(self, item: Any) -> None:
                try:
                    super().put_nowait(item)
                except asyncio.QueueFull:
                    state.gaps += 1  # a message lost: the bridge fell behind
                    raise

        client = aiomqtt.Client(
            self.host,
            self.port,
            identifier=self._session or f"rtkit-bridge-{uuid.uuid4().hex[:12]}",
            clean_session=self._session is None,
            username=self._username,
            password=self._password,
            # Bounded: past it aiomqtt discards incoming messages (counted above).
            queue_type=Inbox,
            max_queued_incoming_messages=self._max_queued,
        )
        (inbox,) = inboxes
        async with client:
            for pattern in self.topics.patterns:
                await client.subscribe(pattern, qos=self.qos)
            state.connected = True
            if self._connections:
                # Whatever was published while we were away may be lost.
                state.gaps += 1
            self._connections += 1
            # One wait (which also notices a lost connection) per batch; then
            # whatever else is queued already joins it.
            async for message in client.messages:
                batch: list[SourceMessage] = []
                self._convert(message, batch, state)
                while len(batch) < size:
                    try:
                        message = inbox.get_nowait()
                    except asyncio.QueueEmpty:
                        break
                    self._convert(message, batch, state)
                if batch:
                    yield batch

    def _convert(self, message: Any, batch: list[SourceMessage], state: BridgeState) -> None:
        payload = message.payload
        if isinstance(payload, str):
            payload = payload.encode()
        elif not isinstance(payload, bytes | bytearray):
            payload = str(payload).encode()
        try:
            data = decode_payload(payload, self._payload)
        except ValueError as exc:
            state.error(f"{message.topic}: {exc}")
            return
        batch.append(SourceMessage(str(message.topic), data))
