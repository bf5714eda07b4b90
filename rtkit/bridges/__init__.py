"""Bridges: messages from the brokers people already run, into hub channels.

>>> from rtkit.bridges import Bridge, TopicMap
>>> from rtkit.bridges.mqtt import MqttSource
>>> source = MqttSource("127.0.0.1", topics=TopicMap([("sensors/+/temp", "sensors.{1}.temp")]))
>>> await Bridge(source, url="http://127.0.0.1:8765").run()

The sources live in their own modules, most needing an optional extra:
:mod:`rtkit.bridges.mqtt` (``rtkit[mqtt]``), :mod:`rtkit.bridges.nats`
(``rtkit[nats]``), :mod:`rtkit.bridges.redis_stream` (``rtkit[redis]``),
:mod:`rtkit.bridges.amqp` (``rtkit[amqp]``), :mod:`rtkit.bridges.postgres`
(``rtkit[postgres]``) and :mod:`rtkit.bridges.web` (websockets and
server-sent events, on aiohttp, which rtkit always has).
"""

from __future__ import annotations

from ._core import (
    Bridge,
    BridgeState,
    Position,
    Source,
    SourceMessage,
    TopicMap,
    Transform,
    decode_payload,
    load_transform,
)

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
