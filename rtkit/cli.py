"""The ``rtkit`` command line: run a hub, mint tokens, publish and tail."""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Coroutine, Sequence
from typing import Any
from urllib.parse import urlsplit

import orjson

from . import __version__
from .config import (
    DEFAULT_LIMITS,
    DEFAULT_PORT,
    DEFAULT_STORE,
    HubConfig,
    Limits,
    Webhooks,
    hub_default,
    webhook_default,
)
from .errors import ConfigurationError, RtkitError
from .hosts import SERVERS
from .logs import LOG_FORMATS, configure_logging

log = logging.getLogger("rtkit")

_PUBLISH_WINDOW = 200  # publishes `rtkit publish` keeps unacked

_DESCRIPTION = """\
rtkit: live channels, presence and shared state for Jupyter.

Start a hub on this machine, then publish and tail from two terminals:

  rtkit hub --allow-anonymous
  rtkit tail prices --url http://127.0.0.1:8765
  echo '{"px": 1.0}' | rtkit publish prices --url http://127.0.0.1:8765
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rtkit",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"rtkit {__version__}")
    parser.add_argument(
        "--log-level",
        default=os.environ.get("RTKIT_LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="how much to log on stderr (default: INFO)",
    )
    log_format_help = (
        "text, or json: one JSON object per line (time, level, logger, message, extra "
        "fields); either way credentials are masked [env RTKIT_LOG_FORMAT]"
    )
    parser.add_argument(
        "--log-format",
        default=os.environ.get("RTKIT_LOG_FORMAT", "text"),
        choices=LOG_FORMATS,
        help=log_format_help + " (default: text)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    hub = sub.add_parser(
        "hub",
        help="run a hub server",
        description="Run a standalone hub. Clients connect with Socket.IO at "
        "http://HOST:PORT/socket.io/ (namespace /rtkit). Health: /healthz, readiness: /readyz.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    hub.add_argument("--host", default=hub_default("host"), help="address to listen on")
    hub.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to listen on")
    hub.add_argument(
        "--store",
        default=os.environ.get("RTKIT_STORE", DEFAULT_STORE),
        help="where messages live: memory://, sqlite:///path.db (durable); "
        "retention as ?max_messages=N&max_age=SECONDS [env RTKIT_STORE]",
    )
    hub.add_argument(
        "--secret",
        default=os.environ.get("RTKIT_SECRET"),
        help="key that signs tokens (mint them with 'rtkit token') [env RTKIT_SECRET]",
    )
    hub.add_argument(
        "--bridge-channel",
        default=hub_default("bridge_channel"),
        metavar="CHANNEL",
        help="the channel bridges announce themselves on (their states on CHANNEL.<name>), "
        "listed by the status API; '' lists none",
    )
    hub.add_argument(
        "--allow-anonymous",
        action="store_true",
        help="let anyone connect without a token (loopback addresses only)",
    )
    hub.add_argument(
        "--api-key",
        default=os.environ.get("RTKIT_API_KEY"),
        help="key for services calling the HTTP API at /api/ with full rights "
        "(X-API-Key header) [env RTKIT_API_KEY]",
    )
    hub.add_argument(
        "--metrics-token",
        default=os.environ.get("RTKIT_METRICS_TOKEN"),
        help="token Prometheus sends as 'Authorization: Bearer' to read /metrics; without "
        "it /metrics asks for the API key if there is one, else it is open "
        "[env RTKIT_METRICS_TOKEN]",
    )
    hub.add_argument(
        "--no-metrics",
        dest="metrics",
        action="store_false",
        help="serve no /metrics and skip the per-request counting behind it",
    )
    hub.add_argument(
        "--metrics-top-channels",
        type=int,
        default=hub_default("metrics_top_channels"),
        help="channels and shared documents with series of their own in /metrics "
        "(the busiest), so their number stays bounded",
    )
    hub.add_argument(
        "--server",
        choices=SERVERS,
        default="aiohttp",
        help="web server that hosts the hub",
    )
    # Also after 'hub' (rtkit hub --log-format json); SUPPRESS keeps the
    # top-level value when it is not given here.
    hub.add_argument(
        "--log-format", default=argparse.SUPPRESS, choices=LOG_FORMATS, help=log_format_help
    )
    _add_webhook_options(hub)
    limits = hub.add_argument_group("limits")
    defaults = DEFAULT_LIMITS
    limits.add_argument(
        "--max-payload",
        type=int,
        default=defaults.max_payload_bytes,
        help="largest message data in bytes",
    )
    limits.add_argument(
        "--publish-rate",
        type=float,
        default=defaults.publish_rate,
        help="publishes per second per connection (0: no limit)",
    )
    limits.add_argument(
        "--publish-burst",
        type=int,
        default=defaults.publish_burst,
        help="publishes allowed in a burst above the rate",
    )
    limits.add_argument(
        "--read-rate",
        type=float,
        default=defaults.read_rate,
        help="reads (history, subscribe, presence.list, doc.sync) per second per connection "
        "(0: no limit)",
    )
    limits.add_argument(
        "--read-burst",
        type=int,
        default=defaults.read_burst,
        help="reads allowed in a burst above the rate",
    )
    limits.add_argument(
        "--max-subscriptions",
        type=int,
        default=defaults.max_subscriptions,
        help="channels one connection may subscribe to",
    )
    limits.add_argument(
        "--max-connections-per-user",
        type=int,
        default=defaults.max_connections_per_user,
        help="concurrent connections of one token user",
    )
    limits.add_argument(
        "--publish-bytes-rate",
        type=float,
        default=defaults.publish_bytes_rate,
        help="bytes of publishes and document updates per second per connection (0: no limit)",
    )
    limits.add_argument(
        "--publish-bytes-burst",
        type=int,
        default=defaults.publish_bytes_burst,
        help="bytes allowed in a burst above --publish-bytes-rate",
    )
    limits.add_argument(
        "--max-doc-bytes",
        type=int,
        default=defaults.max_doc_bytes,
        help="largest stored size of a shared document in bytes",
    )
    limits.add_argument(
        "--max-name-chars",
        type=int,
        default=defaults.max_name_chars,
        help="longest presence display name in characters",
    )
    limits.add_argument(
        "--max-room-members",
        type=int,
        default=defaults.max_room_members,
        help="members (users) per presence room",
    )
    limits.add_argument(
        "--max-attachments",
        type=int,
        default=defaults.max_attachments,
        help="binary attachments one Socket.IO packet may announce (more closes the socket)",
    )
    limits.add_argument(
        "--connect-timeout",
        type=float,
        default=hub_default("connect_timeout"),
        help="seconds a new connection has to complete its Socket.IO CONNECT",
    )
    limits.add_argument(
        "--max-pending-per-address",
        type=int,
        default=hub_default("max_pending_per_address"),
        help="connections from one address still completing their CONNECT (0: no cap)",
    )
    limits.add_argument(
        "--trusted-proxy",
        action="append",
        default=None,
        metavar="ADDRESS",
        help="proxy whose X-Forwarded-For names the client address (repeatable)",
    )
    limits.add_argument(
        "--max-pending-bytes",
        type=int,
        default=defaults.max_pending_bytes,
        help="bytes a connection may leave unread before large acks wait and "
        "deliveries drop it as a slow consumer",
    )
    limits.add_argument(
        "--slow-consumer-timeout",
        type=float,
        default=defaults.slow_consumer_timeout,
        help="seconds a request waits for its connection to read before the "
        "connection is dropped as a slow consumer",
    )
    limits.add_argument(
        "--max-ack-bytes",
        type=int,
        default=defaults.max_ack_bytes,
        help="largest history or subscribe backlog in one ack (history pages on)",
    )
    limits.add_argument(
        "--max-requests-in-flight",
        type=int,
        default=defaults.max_requests_in_flight,
        help="requests of one connection answered at once, publishes aside (rate_limited above)",
    )
    tuning = hub.add_argument_group("tuning")
    tuning.add_argument(
        "--ping-interval",
        type=float,
        default=hub_default("ping_interval"),
        help="seconds between heartbeats",
    )
    tuning.add_argument(
        "--ping-timeout",
        type=float,
        default=hub_default("ping_timeout"),
        help="seconds without a heartbeat answer before a client is dropped",
    )
    tuning.add_argument(
        "--presence-timeout",
        type=float,
        default=hub_default("presence_timeout"),
        help="seconds a presence member stays after its hub stops vouching for its "
        "connection (default: ping interval + ping timeout)",
    )
    tuning.add_argument(
        "--doc-compact-every",
        type=int,
        default=hub_default("doc_compact_every"),
        help="stored updates of a shared document before they are compacted into a snapshot",
    )
    tuning.add_argument(
        "--compression",
        action="store_true",
        help="compress websocket frames (permessage-deflate) for slow links; "
        "costs fan-out throughput",
    )
    tuning.add_argument(
        "--cors-origin",
        action="append",
        default=None,
        metavar="ORIGIN",
        help="browser origin allowed to connect besides the hub's own, e.g. JupyterLab's "
        "http://localhost:8888 for widgets talking to this hub directly (repeatable; '*' "
        "for any). Without it, pages from other origins are refused; clients that send "
        "no Origin (Python, scripts) are not affected",
    )

    token = sub.add_parser(
        "token",
        help="mint a signed token for a user",
        description="Print a token (JWT, HS256) for USER. It grants only the channels "
        "named: no --publish, no publishing (and the same for --subscribe). Patterns "
        "are globs such as 'prices.*'; every channel is an explicit '*' "
        "(--publish '*' --subscribe '*').",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    token.add_argument(
        "--secret",
        default=os.environ.get("RTKIT_SECRET"),
        help="the hub's secret [env RTKIT_SECRET]",
    )
    token.add_argument("--user", required=True, help="user name the token stands for")
    token.add_argument("--name", help="display name (default: the user name)")
    token.add_argument(
        "--publish",
        action="append",
        metavar="PATTERN",
        help="channels the user may publish to (repeatable)",
    )
    token.add_argument(
        "--subscribe",
        action="append",
        metavar="PATTERN",
        help="channels the user may subscribe to and read (repeatable)",
    )
    token.add_argument("--ttl", type=float, default=24 * 3600, help="lifetime in seconds")

    cluster = sub.add_parser(
        "cluster",
        help="run N hubs on one Redis behind nginx, to try a cluster locally",
        description="Start --hubs hub processes sharing --store (Redis) and nginx on --port "
        "in front of them. Arguments after '--' go to every hub.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    cluster.add_argument("--hubs", type=int, default=3, help="hub processes")
    cluster.add_argument("--port", type=int, default=DEFAULT_PORT, help="nginx's port")
    cluster.add_argument(
        "--store", default="redis://127.0.0.1:6379/0", help="the Redis all hubs share"
    )
    cluster.add_argument("hub_args", nargs="*", help="extra 'rtkit hub' arguments")

    for name, text in (
        ("publish", "publish JSON lines from stdin, one message each"),
        ("tail", "print a channel's messages as JSON lines"),
    ):
        p = sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        p.add_argument("channel", metavar="CHANNEL")
        p.add_argument(
            "--url",
            default=os.environ.get("RTKIT_URL"),
            help="hub URL, e.g. http://127.0.0.1:8765 [env RTKIT_URL]",
        )
        p.add_argument(
            "--token",
            default=os.environ.get("RTKIT_TOKEN"),
            help="token from 'rtkit token' [env RTKIT_TOKEN]",
        )
        if name == "tail":
            p.add_argument(
                "--since", type=int, default=None, help="replay messages after this seq first"
            )
            p.add_argument("--count", type=int, default=None, help="exit after this many messages")

    demo = sub.add_parser(
        "demo",
        help="JupyterLab with rtkit, the tutorial notebooks and a live feed",
        description="Start JupyterLab with rtkit's extension in --dir (the tutorial notebooks "
        "are copied there) and publish synthetic prices or sensor readings at --rate "
        "messages/s. Prints the URL to open; Ctrl-C stops it all.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    demo.add_argument(
        "--port",
        type=int,
        default=None,
        help="JupyterLab's port; without it, 8888 or the next free one",
    )
    demo.add_argument("--rate", type=float, default=200.0, help="feed messages per second")
    demo.add_argument("--kind", choices=["prices", "sensors"], default="prices")
    demo.add_argument("--channel", default=None, help="feed channel (default: demo.KIND)")
    demo.add_argument(
        "--dir",
        default="rtkit-demo",
        help="JupyterLab's root directory, relative to the current one; the notebooks "
        "and the hub's history (.rtkit/hub.db) go there",
    )
    top = sub.add_parser(
        "top",
        help="a hub's channels, users and slow consumers, live in the terminal",
        description="Show a hub's channels by message rate, connections by user, the "
        "connections falling behind and the store's state, refreshed in place until "
        "Ctrl-C. A standalone hub's status takes its API key; inside Jupyter, pass "
        "the server's URL followed by /rtkit and the Jupyter token.",
    )
    top.add_argument(
        "--url",
        default=os.environ.get("RTKIT_URL", f"http://127.0.0.1:{DEFAULT_PORT}"),
        help="hub URL, or Jupyter's URL + /rtkit [env RTKIT_URL]",
    )
    top.add_argument(
        "--api-key", default=os.environ.get("RTKIT_API_KEY"), help="[env RTKIT_API_KEY]"
    )
    top.add_argument("--token", default=None, help="the Jupyter server's token")
    top.add_argument("--interval", type=float, default=1.0, help="seconds between screens")
    top.add_argument("--once", action="store_true", help="print one screen and exit")
    _add_record_parsers(sub)
    _add_bridge(sub)
    return parser


def _add_webhook_options(hub: argparse.ArgumentParser) -> None:
    group = hub.add_argument_group(
        "webhooks",
        "POST lifecycle events (channel occupied/vacated, presence join/leave, "
        "connection closed) to a URL, signed; see docs/operations.md",
    )
    group.add_argument(
        "--webhook",
        default=os.environ.get("RTKIT_WEBHOOK_URL"),
        metavar="URL",
        help="where to POST event batches [env RTKIT_WEBHOOK_URL]",
    )
    group.add_argument(
        "--webhook-secret",
        default=os.environ.get("RTKIT_WEBHOOK_SECRET"),
        help="key of the HMAC-SHA256 signature (X-Rtkit-Signature) [env RTKIT_WEBHOOK_SECRET]",
    )
    group.add_argument(
        "--webhook-batch",
        type=int,
        default=webhook_default("max_batch"),
        help="most events in one POST",
    )
    group.add_argument(
        "--webhook-batch-delay",
        type=float,
        default=webhook_default("batch_delay"),
        help="seconds an event waits for others to share its POST",
    )
    group.add_argument(
        "--webhook-max-queue",
        type=int,
        default=webhook_default("max_queue"),
        help="events kept while the receiver is away; beyond, the oldest are dropped",
    )
    group.add_argument(
        "--webhook-timeout",
        type=float,
        default=webhook_default("timeout"),
        help="seconds a POST may take before it is retried",
    )
    group.add_argument(
        "--webhook-retry-max",
        type=float,
        default=webhook_default("retry_max"),
        help="longest wait between retries (the wait doubles from "
        f"{webhook_default('retry_initial')} s)",
    )


def _webhooks(args: argparse.Namespace) -> Webhooks | None:
    if not args.webhook:
        if args.webhook_secret and "RTKIT_WEBHOOK_SECRET" not in os.environ:
            raise ConfigurationError("--webhook-secret without --webhook URL")
        return None
    if not args.webhook_secret:
        raise ConfigurationError(
            "--webhook needs --webhook-secret (or RTKIT_WEBHOOK_SECRET): receivers check "
            "each POST's signature with it"
        )
    return Webhooks(
        args.webhook,
        secret=args.webhook_secret,
        max_batch=args.webhook_batch,
        batch_delay=args.webhook_batch_delay,
        max_queue=args.webhook_max_queue,
        timeout=args.webhook_timeout,
        retry_initial=min(webhook_default("retry_initial"), args.webhook_retry_max),
        retry_max=args.webhook_retry_max,
    )


def _secrets(args: argparse.Namespace) -> list[str]:
    """Values no log line may show: every credential the command was given."""
    values = [
        getattr(args, name, None) for name in ("secret", "api_key", "webhook_secret", "token")
    ]
    for name in ("store", "webhook", "url"):
        url = getattr(args, name, None)
        if isinstance(url, str):
            with contextlib.suppress(ValueError):
                values.append(urlsplit(url).password)
    return [v for v in values if isinstance(v, str) and v]


def _add_bridge(sub: Any) -> None:
    """``rtkit bridge mqtt|nats|redis-stream|websocket|sse|amqp|postgres`` (rtkit.bridges has
    the rest)."""
    from .bridges._cli import add_parser

    add_parser(sub)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level, args.log_format, _secrets(args))
    try:
        if args.command == "hub":
            return _run(_hub(args))
        if args.command == "cluster":
            from .deploy import run_cluster

            return run_cluster(args.hubs, args.port, args.store, args.hub_args)
        if args.command == "token":
            return _token(args)
        if args.command == "publish":
            return _run(_publish(args))
        if args.command == "tail":
            return _run(_tail(args))
        if args.command == "record":
            return _run(_record(args))
        if args.command == "replay":
            return _run(_replay(args))
        if args.command == "bridge":
            from .bridges._cli import run as run_bridge

            return _run(run_bridge(args))
        if args.command == "top":
            from .top import run_top

            if args.interval <= 0:
                raise ConfigurationError("--interval must be a positive number of seconds")
            return run_top(
                args.url,
                api_key=args.api_key,
                token=args.token,
                interval=args.interval,
                once=args.once,
            )
        if args.command == "demo":
            from .demo import run_demo

            return run_demo(args.port, args.rate, args.kind, args.channel, args.dir)
    except RtkitError as exc:
        print(f"rtkit {args.command}: {exc}", file=sys.stderr)
        return 2
    raise AssertionError(args.command)


def _run(coro: Coroutine[Any, Any, int]) -> int:
    """Run until done or until SIGINT/SIGTERM, then clean up."""

    async def runner() -> int:
        task = asyncio.ensure_future(coro)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            return await task
        except asyncio.CancelledError:
            return 0

    return asyncio.run(runner())


def hub_config(args: argparse.Namespace) -> HubConfig:
    """The HubConfig that ``rtkit hub`` runs with, from its parsed arguments
    (also how rtkit's pytest plugin builds its in-process hubs)."""
    limits = Limits(
        max_payload_bytes=args.max_payload,
        publish_rate=args.publish_rate,
        publish_burst=args.publish_burst,
        read_rate=args.read_rate,
        read_burst=args.read_burst,
        max_subscriptions=args.max_subscriptions,
        max_connections_per_user=args.max_connections_per_user,
        max_room_members=args.max_room_members,
        publish_bytes_rate=args.publish_bytes_rate,
        publish_bytes_burst=args.publish_bytes_burst,
        max_doc_bytes=args.max_doc_bytes,
        max_name_chars=args.max_name_chars,
        max_attachments=args.max_attachments,
        max_pending_bytes=args.max_pending_bytes,
        slow_consumer_timeout=args.slow_consumer_timeout,
        max_ack_bytes=args.max_ack_bytes,
        max_requests_in_flight=args.max_requests_in_flight,
    )
    origins: tuple[str, ...] | str | None = None
    if args.cors_origin:
        origins = "*" if "*" in args.cors_origin else tuple(args.cors_origin)
    return HubConfig(
        host=args.host,
        port=args.port,
        store=args.store,
        secret=args.secret,
        allow_anonymous=args.allow_anonymous,
        api_key=args.api_key or None,
        metrics=args.metrics,
        metrics_token=args.metrics_token or None,
        metrics_top_channels=args.metrics_top_channels,
        limits=limits,
        ping_interval=args.ping_interval,
        ping_timeout=args.ping_timeout,
        presence_timeout=args.presence_timeout,
        doc_compact_every=args.doc_compact_every,
        websocket_compression=args.compression,
        cors_allowed_origins=origins,
        connect_timeout=args.connect_timeout,
        max_pending_per_address=args.max_pending_per_address,
        trusted_proxies=tuple(args.trusted_proxy or ()),
        webhooks=_webhooks(args),
        bridge_channel=args.bridge_channel or None,
    )


async def _hub(args: argparse.Namespace) -> int:
    config = hub_config(args)
    from .hosts import raise_open_file_limit
    from .hub.transport.memory import tune_allocator

    tune_allocator()  # before the store starts its threads
    files = raise_open_file_limit()
    logging.getLogger("rtkit.hub").info("open file limit %d (one per connection)", files)
    try:
        if args.server == "tornado":
            from .hosts.tornado import serve
        elif args.server == "uvicorn":
            from .hosts.asgi import serve
        else:
            from .hosts.aiohttp import serve
    except ImportError as exc:
        raise ConfigurationError(
            f"--server {args.server} needs {exc.name}: pip install {exc.name}"
        ) from None

    from .storage.url import redact_url

    def ready(url: str) -> None:
        # Tests and scripts wait for this line.
        print(f"rtkit hub listening on {url} (store {redact_url(config.store)})", flush=True)

    await serve(config, ready=ready)
    return 0


def _token(args: argparse.Namespace) -> int:
    from .hub.auth import mint_token

    if not args.secret:
        print("rtkit token: give --secret or set RTKIT_SECRET (the hub's secret)", file=sys.stderr)
        return 2
    if not args.publish and not args.subscribe:
        print(
            "rtkit token: name the channels the token grants, e.g. --publish 'lab.*' "
            "--subscribe '*'; for every channel pass --publish '*' --subscribe '*'",
            file=sys.stderr,
        )
        return 2
    print(
        mint_token(
            args.secret,
            args.user,
            publish=args.publish or (),
            subscribe=args.subscribe or (),
            ttl=args.ttl,
            name=args.name,
        )
    )
    return 0


async def _publish(args: argparse.Namespace) -> int:
    from .aio import connect

    client = await connect(args.url, args.token)
    try:
        channel = client.channel(args.channel)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        # Keep many publishes in flight: the client sends them in order and
        # the hub stores them in order, so waiting for each ack in turn
        # would only add a round trip per line.
        in_flight: collections.deque[asyncio.Future[int]] = collections.deque()
        count = 0
        async for line in reader:
            text = line.strip()
            if not text:
                continue
            try:
                data = orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                print(f"rtkit publish: skipping a line that is not JSON: {exc}", file=sys.stderr)
                continue
            in_flight.append(asyncio.ensure_future(channel.publish(data)))
            count += 1
            if len(in_flight) >= _PUBLISH_WINDOW:
                await in_flight.popleft()
        for fut in in_flight:
            await fut
        print(f"published {count} message(s) to {args.channel}", file=sys.stderr)
        return 0
    finally:
        await client.close()


async def _tail(args: argparse.Namespace) -> int:
    from .aio import connect

    client = await connect(args.url, args.token)
    done = asyncio.Event()
    seen = 0

    def show(msg: Any) -> None:
        nonlocal seen
        line = orjson.dumps(
            {
                "channel": msg.channel,
                "seq": msg.seq,
                "ts": msg.ts,
                "id": msg.id,
                "sender": msg.sender,
                "data": msg.data if not isinstance(msg.data, bytes) else msg.data.hex(),
            }
        )
        sys.stdout.write(line.decode() + "\n")
        sys.stdout.flush()
        seen += 1
        if args.count is not None and seen >= args.count:
            done.set()

    try:
        await client.channel(args.channel).subscribe(show, since=args.since)
        with contextlib.suppress(asyncio.CancelledError):
            await done.wait()
        return 0
    finally:
        await client.close()


def _add_record_parsers(sub: Any) -> None:
    """``rtkit record`` and ``rtkit replay`` (rtkit.record)."""

    def speed(text: str) -> float:
        if text in ("max", "inf"):
            return 0.0
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number or 'max': {text!r}") from None
        if value < 0:
            raise argparse.ArgumentTypeError("must be >= 0")
        return value

    record = sub.add_parser(
        "record",
        help="record channels to a Parquet or JSON lines file",
        description="Write every message of CHANNEL... to FILE (.parquet or .jsonl) until "
        "Ctrl-C. An existing FILE is resumed from the last seq it holds per channel.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    record.add_argument("channels", nargs="+", metavar="CHANNEL")
    record.add_argument("-o", "--output", required=True, metavar="FILE", help="the recording")
    record.add_argument("--format", choices=["parquet", "jsonl"], help="(default: by suffix)")
    record.add_argument(
        "--since", type=int, default=None, help="start after this seq (default: from now)"
    )
    record.add_argument("--count", type=int, default=None, help="stop after this many rows")
    record.add_argument("--chunk-rows", type=int, default=10_000, help="rows per write")
    replay = sub.add_parser(
        "replay",
        help="publish a recording into a channel, keeping its timing",
        description="Publish each message of FILE to --to, the recorded gaps divided by "
        "--speed ('max' or 0: as fast as possible).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    replay.add_argument("file", metavar="FILE")
    replay.add_argument("--to", required=True, metavar="CHANNEL", help="target channel")
    replay.add_argument("--speed", type=speed, default=1.0, help="time factor, or 'max'")
    replay.add_argument(
        "--loop",
        nargs="?",
        type=int,
        const=0,
        default=None,
        metavar="N",
        help="repeat forever, or N times",
    )
    replay.add_argument("--from", dest="source", metavar="CHANNEL", help="only this channel's rows")
    replay.add_argument("--format", choices=["parquet", "jsonl"], help="(default: by suffix)")
    replay.add_argument(
        "--run", default="", help="a new value replays again within the hub's dedup window"
    )
    for p in (record, replay):
        p.add_argument("--url", default=os.environ.get("RTKIT_URL"), help="hub URL [env RTKIT_URL]")
        p.add_argument(
            "--token", default=os.environ.get("RTKIT_TOKEN"), help="token [env RTKIT_TOKEN]"
        )


async def _record(args: argparse.Namespace) -> int:
    from .aio import connect
    from .record import Recorder

    client = await connect(args.url, args.token)
    try:
        recorder = await Recorder.start(
            client,
            args.channels,
            args.output,
            format=args.format,
            since=args.since,
            chunk_rows=args.chunk_rows,
        )
        try:
            print(
                f"recording {' '.join(args.channels)} to {args.output}", file=sys.stderr, flush=True
            )
            shown = 0
            while args.count is None or recorder.rows < args.count:
                await asyncio.sleep(0.1)
                if args.count is not None:
                    await recorder.flush()
                if recorder.rows != shown:  # at most once a chunk or a flush interval
                    shown = recorder.rows
                    print(f"{shown} row(s) in {args.output}", file=sys.stderr, flush=True)
        finally:
            await recorder.close()
            print(f"recorded {recorder.rows} row(s) to {args.output}", file=sys.stderr)
        return 0
    finally:
        await client.close()


async def _replay(args: argparse.Namespace) -> int:
    from .aio import connect
    from .record import iter_messages, replay

    # A bad file fails here, before the hub is even asked.
    next(iter_messages(args.file, format=args.format, chunk_rows=1), None)
    client = await connect(args.url, args.token)
    try:
        loop: bool | int = False if args.loop is None else (args.loop or True)
        stats = await replay(
            args.file,
            client.channel(args.to),
            speed=args.speed,
            loop=loop,
            source=args.source,
            run=args.run,
            format=args.format,
        )
        print(
            f"replayed {stats.rows} message(s) to {args.to} in {stats.seconds:.2f} s",
            file=sys.stderr,
        )
        return 0
    finally:
        await client.close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
