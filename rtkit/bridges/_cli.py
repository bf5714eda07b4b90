"""``rtkit bridge mqtt|nats|redis-stream``: the command line of the bridges."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from typing import Any

import orjson

from ._core import Bridge, Source, TopicMap

__all__ = ["add_parser", "run"]

log = logging.getLogger("rtkit.bridge")

_MAP_HELP = (
    "PATTERN=TEMPLATE: topics matching PATTERN go to the channel TEMPLATE names, "
    "{1}, {2}... being the pattern's wildcards and {topic} the whole topic; repeat for more "
    "(the first match wins)"
)


def add_parser(sub: Any) -> None:
    """Add ``bridge`` and its source subcommands to the ``rtkit`` parser."""
    bridge = sub.add_parser(
        "bridge",
        help="bridge an MQTT, NATS or Redis Streams source into hub channels",
        description="Read a broker and publish what it carries to hub channels, "
        "reconnecting to both with backoff. Positioned sources (JetStream, Redis "
        "streams) resume after the last message the hub acked, exactly once.",
    )
    kinds = bridge.add_subparsers(dest="source", metavar="SOURCE", required=True)
    mqtt = kinds.add_parser("mqtt", help="an MQTT broker (pip install 'rtkit[mqtt]')")
    mqtt.add_argument(
        "--host", default=None, help="broker host [env RTKIT_MQTT=host:port, else 127.0.0.1]"
    )
    mqtt.add_argument(
        "--port", type=int, default=None, help="broker port [RTKIT_MQTT's, else 1883]"
    )
    mqtt.add_argument("--qos", type=int, default=0, choices=[0, 1, 2], help="subscription QoS")
    mqtt.add_argument(
        "--session",
        default=None,
        help="a fixed client id with a persistent session: the broker keeps "
        "QoS 1/2 messages while the bridge is away",
    )
    mqtt.add_argument("--username", default=os.environ.get("MQTT_USERNAME"))
    mqtt.add_argument("--password", default=os.environ.get("MQTT_PASSWORD"))
    nats = kinds.add_parser(
        "nats", help="NATS core subjects, or a JetStream stream (pip install 'rtkit[nats]')"
    )
    nats.add_argument(
        "--server", action="append", default=None, help="NATS URL (default nats://127.0.0.1:4222)"
    )
    nats.add_argument("--stream", default=None, help="a JetStream stream: exactly once")
    nats.add_argument(
        "--durable", default="rtkit-bridge", help="JetStream consumer that keeps the position"
    )
    redis = kinds.add_parser("redis-stream", help="Redis streams (pip install 'rtkit[redis]')")
    redis.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis URL")
    redis.add_argument(
        "--state", default=None, help="JSON file keeping the last entry ids the hub acked"
    )
    redis.add_argument(
        "--start", default="$", help="where to start without a state: $ (new entries) or 0"
    )
    redis.add_argument("--field", default="data", help="the entry field holding the data")
    for p in (mqtt, nats, redis):
        p.add_argument(
            "--map", action="append", required=True, metavar="PATTERN=TEMPLATE", help=_MAP_HELP
        )
        p.add_argument(
            "--transform",
            default=None,
            metavar="MODULE:FUNCTION",
            help="call FUNCTION(channel, data, msg) on each message; its result is "
            "published, None drops the message (the current directory is importable)",
        )
        if p is not redis:
            p.add_argument(
                "--payload",
                default="auto",
                choices=["auto", "json", "text", "bytes"],
                help="how to read payloads: auto tries JSON, then text, then bytes",
            )
        p.add_argument("--url", default=os.environ.get("RTKIT_URL"), help="hub URL [env RTKIT_URL]")
        p.add_argument(
            "--token", default=os.environ.get("RTKIT_TOKEN"), help="hub token [env RTKIT_TOKEN]"
        )
        p.add_argument(
            "--report",
            type=float,
            default=30.0,
            help="log the bridge's state every this many seconds (0: never)",
        )


def source_from_args(args: argparse.Namespace) -> Source:
    """The source an ``rtkit bridge ...`` command line describes."""
    if args.source == "mqtt":
        from .mqtt import MqttSource

        return MqttSource(
            args.host,
            args.port,
            topics=TopicMap.parse(args.map, flavor="mqtt"),
            qos=args.qos,
            session=args.session,
            username=args.username,
            password=args.password,
            payload=args.payload,
        )
    if args.source == "nats":
        from .nats import JetStreamSource, NatsSource

        servers = args.server or ["nats://127.0.0.1:4222"]
        topics = TopicMap.parse(args.map, flavor="nats")
        if args.stream:
            return JetStreamSource(
                servers,
                stream=args.stream,
                durable=args.durable,
                topics=topics,
                payload=args.payload,
            )
        return NatsSource(servers, topics=topics, payload=args.payload)
    from .redis_stream import RedisStreamSource

    return RedisStreamSource(
        args.redis,
        topics=TopicMap.parse(args.map, flavor="plain"),
        state_file=args.state,
        start=args.start,
        field=args.field,
    )


async def run(args: argparse.Namespace) -> int:
    """Run the bridge a parsed ``rtkit bridge`` command line describes."""
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # so --transform finds the user's module
    bridge = Bridge(
        source_from_args(args), url=args.url, token=args.token, transform=args.transform
    )
    log.info("bridge %s: starting", args.source)

    async def report() -> None:
        while True:
            await asyncio.sleep(args.report)
            log.info("bridge state: %s", orjson.dumps(bridge.state.as_dict()).decode())

    reporter = asyncio.ensure_future(report()) if args.report > 0 else None
    try:
        await bridge.run()
    finally:
        if reporter is not None:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
    return 0
