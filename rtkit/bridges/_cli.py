"""``rtkit bridge mqtt|nats|redis-stream|websocket|sse|amqp|postgres``: the command line of
the bridges."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shlex
import sys
from collections.abc import Mapping
from typing import Any, NoReturn

import orjson

from ..config import DEFAULT_BRIDGE_CHANNEL
from ..errors import ConfigurationError
from ..protocol import MAX_PUBLISH_BATCH
from ._core import DEFAULT_BATCH, DEFAULT_WINDOW, Bridge, Source, TopicMap
from ._report import REPORT_EVERY

__all__ = ["add_parser", "bridge_from_args", "parse_bridge", "run"]

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
        help="bridge an MQTT, NATS, Redis Streams, websocket, SSE, AMQP or PostgreSQL source "
        "into hub channels",
        description="Read a broker or a stream URL and publish what it carries to hub "
        "channels, reconnecting to both with backoff. Positioned sources (JetStream, "
        "Redis streams, SSE with ids, a PostgreSQL outbox) resume after the last message "
        "the hub acked, exactly once; AMQP acks a delivery once the hub acked it.",
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
    amqp = kinds.add_parser("amqp", help="a RabbitMQ queue (pip install 'rtkit[amqp]')")
    amqp.add_argument(
        "--amqp",
        default=os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
        help="AMQP URL [env AMQP_URL]",
    )
    amqp.add_argument(
        "--queue",
        default=None,
        help="the queue to consume (with --exchange: declared durable and bound; "
        "without: it must exist)",
    )
    amqp.add_argument(
        "--exchange",
        default=None,
        help="bind the queue to this exchange with the --map patterns as routing keys "
        "(without --queue: a server-named queue that lives as long as the connection)",
    )
    amqp.add_argument(
        "--prefetch", type=int, default=1000, help="deliveries in flight, not yet acked"
    )
    postgres = kinds.add_parser(
        "postgres",
        help="PostgreSQL LISTEN/NOTIFY or an outbox table (pip install 'rtkit[postgres]')",
    )
    postgres.add_argument(
        "--dsn",
        default=os.environ.get("PG_DSN", ""),
        help="libpq connection string or URL [env PG_DSN; else libpq's PG* variables]",
    )
    mode = postgres.add_mutually_exclusive_group(required=True)
    mode.add_argument(
        "--listen", action="store_true", help="LISTEN on the --map patterns (channel names)"
    )
    mode.add_argument(
        "--outbox", metavar="TABLE", default=None, help="read this outbox table: exactly once"
    )
    postgres.add_argument(
        "--name",
        default=None,
        help="names the bridge in the hub's status (STATUS_CHANNEL.NAME) and keys an outbox "
        "bridge's position (default: postgres in the status, outbox:TABLE for the position)",
    )
    postgres.add_argument(
        "--notify", default=None, help="the outbox's NOTIFY channel (default: the table name)"
    )
    postgres.add_argument(
        "--create",
        action="store_true",
        help="create the outbox table, its index and NOTIFY trigger when missing",
    )
    postgres.add_argument(
        "--poll", type=float, default=1.0, help="read the outbox this often without a NOTIFY"
    )
    for p in (mqtt, nats, redis, amqp, postgres):
        p.add_argument(
            "--map", action="append", required=True, metavar="PATTERN=TEMPLATE", help=_MAP_HELP
        )
    websocket = kinds.add_parser(
        "websocket", help="a websocket URL sending JSON messages (no positions)"
    )
    sse = kinds.add_parser(
        "sse", help="a server-sent events URL: exactly once where it resumes after Last-Event-ID"
    )
    for p in (websocket, sse):
        p.add_argument("source_url", metavar="URL", help="the websocket or event stream URL")
        p.add_argument(
            "--to",
            required=True,
            metavar="TEMPLATE",
            help="the channel: a name, or a template where {topic} is the --topic-field "
            "value (else the SSE event name, or 'message')",
        )
        p.add_argument(
            "--topic-field",
            default=None,
            metavar="FIELD",
            help="the JSON field whose value fills {topic}; messages without it are dropped",
        )
        p.add_argument(
            "--header",
            action="append",
            default=[],
            metavar="'NAME: VALUE'",
            help="an HTTP header to send (repeat for more), e.g. 'Authorization: Bearer ...'",
        )
        p.add_argument(
            "--header-env",
            action="append",
            default=[],
            metavar="NAME=VARIABLE",
            help="a header whose value is in an environment variable (keeps secrets out of "
            "the process list)",
        )
        p.add_argument(
            "--max-size",
            type=int,
            default=1 << 20,
            metavar="BYTES",
            help="the largest SSE line or event, or websocket message (default 1 MiB): an SSE "
            "event over it is dropped with an error, a websocket message closes the connection",
        )
    sse.add_argument(
        "--state", default=None, help="JSON file keeping the last event id the hub acked"
    )
    sse.add_argument(
        "--last-event-id", default=None, help="resume after this event id when there is no state"
    )
    sse.add_argument(
        "--idle-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="reconnect when nothing, not even a comment, arrives for this long "
        "(default: wait; for servers that send keep-alive comments)",
    )
    sse.add_argument(
        "--name",
        default=None,
        help="names the bridge in the hub's status (STATUS_CHANNEL.NAME), and the stream in "
        "publish ids and the state file (default: sse in the status, a digest of the URL "
        "in ids)",
    )
    for p in (mqtt, nats, redis, amqp, postgres, websocket, sse):
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
            "--batch",
            type=int,
            default=DEFAULT_BATCH,
            help=f"most messages one publish request carries (1-{MAX_PUBLISH_BATCH})",
        )
        p.add_argument(
            "--window",
            type=int,
            default=DEFAULT_WINDOW,
            help="batches waiting for the hub's ack at a time; under load batches grow instead",
        )
        p.add_argument(
            "--report",
            type=float,
            default=30.0,
            help="log the bridge's state every this many seconds (0: never)",
        )
        if p not in (sse, postgres):  # their --name names the bridge too
            p.add_argument(
                "--name",
                default=None,
                help="the bridge's name in the hub's status (default: the source's kind: "
                "mqtt, nats, nats-core, redis, amqp, websocket); its state goes to the channel "
                "STATUS_CHANNEL.NAME",
            )
        p.add_argument(
            "--status-channel",
            default=DEFAULT_BRIDGE_CHANNEL,
            help="where the bridge reports its state for the hub's status and badges "
            "(STATUS_CHANNEL.NAME, announced on STATUS_CHANNEL); '' reports nothing",
        )
        p.add_argument(
            "--status-every",
            type=float,
            default=REPORT_EVERY,
            metavar="SECONDS",
            help="report the state at least this often (and on change, once a second at "
            "most); the hub shows a bridge silent for 3 times this long as stale",
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
    if args.source == "amqp":
        from .amqp import AmqpSource

        return AmqpSource(
            args.amqp,
            topics=TopicMap.parse(args.map, flavor="amqp"),
            queue=args.queue,
            exchange=args.exchange,
            payload=args.payload,
            prefetch=args.prefetch,
        )
    if args.source == "postgres":
        from .postgres import PostgresNotifySource, PostgresOutboxSource

        if args.listen:
            topics = TopicMap.parse(args.map, flavor="plain")
            return PostgresNotifySource(args.dsn, topics=topics, payload=args.payload)
        return PostgresOutboxSource(
            args.dsn,
            topics=TopicMap.parse(args.map, flavor="amqp"),
            table=args.outbox,
            name=args.name,
            notify=args.notify,
            create=args.create,
            poll=args.poll,
        )
    if args.source in ("websocket", "sse"):
        from .web import SseSource, WebSocketSource

        headers = _headers(args.header, args.header_env)
        if args.source == "websocket":
            return WebSocketSource(
                args.source_url,
                topics=args.to,
                topic_field=args.topic_field,
                headers=headers,
                payload=args.payload,
                max_size=args.max_size,
            )
        return SseSource(
            args.source_url,
            topics=args.to,
            topic_field=args.topic_field,
            headers=headers,
            payload=args.payload,
            max_size=args.max_size,
            state_file=args.state,
            name=args.name,
            last_event_id=args.last_event_id,
            idle_timeout=args.idle_timeout,
        )
    from .redis_stream import RedisStreamSource

    return RedisStreamSource(
        args.redis,
        topics=TopicMap.parse(args.map, flavor="plain"),
        state_file=args.state,
        start=args.start,
        field=args.field,
    )


def _headers(specs: list[str], env_specs: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for spec in specs:
        name, sep, value = spec.partition(":")
        if not sep or not name.strip():
            raise ConfigurationError(f"a header is 'NAME: VALUE', got {spec!r}")
        headers[name.strip()] = value.strip()
    for spec in env_specs:
        name, sep, variable = spec.partition("=")
        if not sep or not name.strip() or not variable.strip():
            raise ConfigurationError(f"--header-env is NAME=VARIABLE, got {spec!r}")
        secret = os.environ.get(variable.strip())
        if secret is None:
            raise ConfigurationError(f"--header-env {spec}: ${variable.strip()} is not set")
        headers[name.strip()] = secret
    return headers


class _RefusingParser(argparse.ArgumentParser):
    """Raises ConfigurationError where argparse would print and exit: a
    bridge configured inside a server must not end the server."""

    def error(self, message: str) -> NoReturn:
        raise ConfigurationError(f"{self.prog}: {message}")

    def print_help(self, file: Any = None) -> None:
        pass  # --help: refused by exit() below, with nothing printed

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise ConfigurationError(message or f"{self.prog}: asked to exit (--help?)")


def parse_bridge(spec: str | Mapping[str, Any]) -> argparse.Namespace:
    """The arguments of one bridge, described as ``rtkit bridge`` arguments
    (``"mqtt --port 1883 --map 'sensors/#'"``) or as a mapping of the same
    options (``{"kind": "mqtt", "port": 1883, "map": ["sensors/#"]}``: a
    list repeats its option, True is a switch, ``source_url`` the websocket
    or SSE URL); ConfigurationError when they are wrong."""
    if isinstance(spec, str):
        try:
            argv = shlex.split(spec)
        except ValueError as exc:
            raise ConfigurationError(f"bridge {spec!r}: {exc}") from None
        if argv[:2] == ["rtkit", "bridge"]:
            argv = argv[2:]
        elif argv[:1] == ["bridge"]:
            argv = argv[1:]
    elif isinstance(spec, Mapping):
        options = dict(spec)
        kind = options.pop("kind", None)
        if not isinstance(kind, str):
            raise ConfigurationError(
                f"a bridge mapping needs 'kind' (the source: mqtt, nats...): {spec!r}"
            )
        argv = [kind]
        # The websocket and SSE sources' URL is positional (--url is the hub's).
        if (source_url := options.pop("source_url", None)) is not None:
            argv.append(str(source_url))
        for key, value in options.items():
            flag = "--" + str(key).replace("_", "-")
            for one in value if isinstance(value, list | tuple) else [value]:
                if one is True:  # a switch
                    argv.append(flag)
                elif one is not None and one is not False:
                    argv += [flag, str(one)]
    else:
        raise ConfigurationError(
            f"a bridge is a string of 'rtkit bridge' arguments or a mapping, not {spec!r}"
        )
    parser = _RefusingParser(prog="rtkit")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["bridge", *argv])


def bridge_from_args(
    args: argparse.Namespace, source: Source | None = None, **kwargs: Any
) -> Bridge:
    """The bridge an ``rtkit bridge ...`` command line describes (with
    ``source`` if already built from it); ``kwargs`` go to :class:`Bridge`
    and win over the arguments."""
    options: dict[str, Any] = {
        "url": args.url,
        "token": args.token,
        "transform": args.transform,
        "name": args.name,
        "report_channel": args.status_channel or None,
        "report_every": args.status_every,
        "batch": args.batch,
        "window": args.window,
    }
    options.update(kwargs)
    return Bridge(source or source_from_args(args), **options)


async def run(args: argparse.Namespace) -> int:
    """Run the bridge a parsed ``rtkit bridge`` command line describes."""
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # so --transform finds the user's module
    bridge = bridge_from_args(args)
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
