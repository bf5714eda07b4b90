"""The hub: channels, history and replay on a python-socketio server.

The hub knows nothing of its host. A host (``rtkit.hosts.aiohttp``, the
Jupyter extension) builds it with the Socket.IO ``async_mode`` it serves,
attaches ``hub.sio`` to its web application and calls ``start``/``stop``.
Everything that depends on python-socketio's or python-engineio's internals
is in :mod:`rtkit.hub.transport`; this module uses its interface only.

A publish is checked, appended and answered with its seq here; the message
reaches subscribers only through the store's feed and
:mod:`rtkit.hub.delivery`, the same way for every backend. The fan-out
(:mod:`.fanout`), presence (:mod:`.presence`) and shared documents
(:mod:`.docs`) live in their own modules. A host runs the hub so::

    hub = Hub(HubConfig(secret="s3cret"), async_mode="aiohttp")
    async with hub:
        ...  # serve hub.sio
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import orjson

from .. import __version__
from ..config import HubConfig
from ..errors import (
    BadRequest,
    Forbidden,
    HubError,
    InternalError,
    NotFound,
    RateLimited,
    TooLarge,
    Unauthorized,
    Unavailable,
)
from ..protocol import (
    AUTH_REFRESH,
    CLOSING,
    DOC_SYNC,
    DOC_UPDATE,
    HISTORY,
    MAX_HISTORY_LIMIT,
    NAMESPACE,
    PRESENCE_JOIN,
    PRESENCE_LEAVE,
    PRESENCE_LIST,
    PRESENCE_UPDATE,
    PUBLISH,
    REVOKED,
    SUBSCRIBE,
    UNSUBSCRIBE,
    Message,
    PublishRequest,
    RevokedEvent,
    RevokedKind,
    error_ack,
    parse_auth_refresh,
    parse_history,
    parse_publish_any,
    parse_subscribe,
    parse_unsubscribe,
)
from ..storage.base import (
    Appended,
    ImmediateChannelStore,
    PresenceChange,
    QueuedChannelStore,
    Store,
    into_future,
)
from ..storage.url import redact_url, store_from_url
from .analytics import ChannelAnalytics
from .auth import (
    AnonymousAuthenticator,
    Authenticator,
    Identity,
    TokenAuthenticator,
    TokenRefresher,
)
from .bridges import bridge_status
from .connection import Connection
from .delivery import HubDelivery
from .docs import SharedDocs
from .fanout import FanOut, encode_event
from .limits import TokenBucket
from .origins import OriginCheck
from .pages import Page, read_backward, read_forward
from .presence import PresenceRooms
from .stats import Histogram, HubStats
from .transport import (
    FRAME_WRITER_KEY,
    QUEUED,
    UNDECODABLE,
    WRITE_BUFFERED_KEY,
    ConnectionRefused,
    FrameWriter,
    Queued,
    Reply,
    create_server,
    fast_paths_enabled,
)
from .webhooks import (
    CHANNEL_OCCUPIED,
    CHANNEL_VACATED,
    CONNECTION_CLOSED,
    PRESENCE_JOINED,
    PRESENCE_LEFT,
    WebhookSender,
)

log = logging.getLogger(__name__)

# Most messages a subscribe ack replays; a client further behind than this
# gets the newest ones and recovered=false (it has a gap), so one reconnect
# can never produce an unbounded ack.
MAX_RECOVERY = MAX_HISTORY_LIMIT
# The status API's tables: users by connections, connections furthest behind.
TOP_USERS = 20
TOP_SLOW = 10
# Seconds between samples of the per-channel analytics (see analytics.py).
ANALYTICS_INTERVAL = 1.0
# Attempts to line up a subscriber's backlog with live delivery.
_SUBSCRIBE_ATTEMPTS = 5
# Requests whose ack may be large: each waits for the connection's send
# budget before it reads anything, one at a time per connection.
_LARGE_ACKS = frozenset({HISTORY, SUBSCRIBE, DOC_SYNC})

# What a publisher over the publish rate can do about it (the rate counts
# requests, so a batch of rows costs one).
_PUBLISH_RATE_HINT = (
    "send several rows per request (a batch: the Python client's "
    "publish(..., wait=False) batches for you; publish_frame(df) sends a DataFrame), "
    "or raise the hub's limit (rtkit hub --publish-rate, "
    "c.RtkitExtension.publish_rate inside Jupyter)"
)

# Requests charged to a connection's read budget (Limits.read_rate): each
# costs a store query and an ack (a token refresh: a signature check).
_READS = frozenset({SUBSCRIBE, HISTORY, PRESENCE_LIST, DOC_SYNC, AUTH_REFRESH})

Handler = Callable[["Connection", Any], Awaitable[dict[str, Any]]]


@contextlib.contextmanager
def _append_errors(stats: HubStats | None) -> Iterator[None]:
    """A store that fails to take a message: the publisher gets
    ``unavailable`` (it may retry), the hub's log gets the traceback."""
    try:
        yield
    except HubError:
        raise
    except Exception as exc:
        raise _append_error(exc, stats) from None


def _append_error(exc: Exception, stats: HubStats | None) -> HubError:
    """What the publisher is told of ``exc``, from the store (see
    _append_errors). Not raised here: a failed store call hands the same
    exception to every append it carried, and each raise of one exception
    object lengthens its traceback."""
    if isinstance(exc, HubError):
        return exc
    log.error("store append failed", exc_info=exc)
    if stats is not None:
        stats.store_error("append")
    return Unavailable(f"the store could not take the message: {exc}")


@dataclass(slots=True)
class _Batch:
    """A checked publish batch: the messages to store, in order, and per
    message of the request None (stored) or why it was refused."""

    messages: list[PublishRequest] = field(default_factory=list)
    errors: list[HubError | None] = field(default_factory=list)


def _open_turn(conn: Connection, turn: asyncio.Future[None]) -> None:
    """Let the connection's next publish start its appends (see Hub._wait_turn)."""
    if not turn.done():
        turn.set_result(None)
    if conn.publish_gate is turn:
        conn.publish_gate = None


def _origin_rule(config: HubConfig) -> Any:
    """python-engineio's cors_allowed_origins for ``config``: ``[]`` turns
    its check off (the host checks), ``"*"`` allows any origin, else the
    hub's own origin and the configured ones."""
    if not config.check_origin:
        return []
    origins = config.cors_allowed_origins
    if origins == "*" or (isinstance(origins, tuple) and "*" in origins):
        return "*"
    return OriginCheck((origins,) if isinstance(origins, str) else (origins or ()))


async def _within(seconds: float, what: str, step: Coroutine[Any, Any, None]) -> None:
    """Run a step of stopping for at most ``seconds``, then go on without it
    (cancelled, not waited for: a stop must end), saying which step it was."""
    task = asyncio.ensure_future(step)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        task.cancel()
        log.warning("stopping: %s did not stop within %.0f s; going on without it", what, seconds)
    elif not task.cancelled() and task.exception() is not None:
        log.warning("stopping: %s failed: %r", what, task.exception())


class Hub:
    """Channels with history, replay and idempotent publish over Socket.IO."""

    def __init__(
        self,
        config: HubConfig,
        *,
        store: Store | None = None,
        authenticator: Authenticator | None = None,
        async_mode: str = "aiohttp",
    ) -> None:
        self.config = config
        self.store = store if store is not None else store_from_url(config.store)
        if authenticator is None:
            tokens = TokenAuthenticator(config.secret) if config.secret else None
            if config.allow_anonymous:
                authenticator = AnonymousAuthenticator(tokens)
            else:
                assert tokens is not None  # HubConfig insists on a secret
                authenticator = tokens
        self.authenticator = authenticator
        self._refresher = authenticator if isinstance(authenticator, TokenRefresher) else None
        # One switch for every fast path that relies on upstream internals
        # (RTKIT_FAST_PATHS=0: public APIs only); hosts read it from here.
        self.fast_paths = fast_paths_enabled()
        self.sio = create_server(
            fast_paths=self.fast_paths,
            async_mode=async_mode,
            ping_interval=config.ping_interval,
            ping_timeout=config.ping_timeout,
            # Engine.IO drops a connection whose frame exceeds this; keep it
            # well above the payload cap so oversize publishes get too_large.
            max_http_buffer_size=1_000_000,
            cors_allowed_origins=_origin_rule(config),
            logger=False,
            engineio_logger=False,
            max_attachments=config.limits.max_attachments,
            connect_timeout=config.connect_timeout,
            max_pending_per_address=config.max_pending_per_address,
            trusted_proxies=frozenset(config.trusted_proxies),
        )
        self.fanout = FanOut(
            self.sio.transports,
            on_slow=self._disconnect_slow,
            max_pending=config.limits.max_pending_packets,
            max_pending_bytes=config.limits.max_pending_bytes,
            max_delay=config.max_coalesce_delay,
        )
        self.analytics = ChannelAnalytics(self.fanout.channel_stats)
        # Slow consumers seen since start (disconnected for falling behind).
        self.slow_disconnects = 0
        self._connections: dict[str, Connection] = {}
        self.webhooks = WebhookSender(config.webhooks) if config.webhooks is not None else None
        self.presence = PresenceRooms(
            config,
            self.store,
            self.fanout,
            self._connections,
            on_change=self._presence_webhook if self.webhooks is not None else None,
        )
        self.docs = SharedDocs(config, self.store, self.fanout, self._connections)
        # Stored messages reach the fan-out only through the store's feed
        # (with a shared store: one order for every hub), never from here.
        self.feed = self.store.feed
        self.delivery = HubDelivery(self.fanout, self.presence, self.docs)
        # Counters behind /metrics (rtkit.hub.metrics); None: metrics off,
        # and nothing is counted on the request paths.
        self.stats = HubStats() if config.metrics else None
        if self.stats is not None:
            self.fanout.delivery_seconds = Histogram()
        self._per_user: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._state: Literal["new", "running", "stopping", "stopped"] = "new"
        self._started_at = 0.0
        self._handlers: dict[str, Handler] = {
            SUBSCRIBE: self._subscribe,
            UNSUBSCRIBE: self._unsubscribe,
            PUBLISH: self._publish,
            HISTORY: self._history,
            PRESENCE_JOIN: self.presence.join,
            PRESENCE_UPDATE: self.presence.update,
            PRESENCE_LEAVE: self.presence.leave,
            PRESENCE_LIST: self.presence.list,
            DOC_SYNC: self.docs.sync,
            DOC_UPDATE: self.docs.update,
            AUTH_REFRESH: self._refresh,
        }
        self.sio.on("connect", self._on_connect, namespace=NAMESPACE)
        self.sio.on("disconnect", self._on_disconnect, namespace=NAMESPACE)
        self.sio.on(
            "*",
            self._on_event if self.stats is None else self._on_event_counted,
            namespace=NAMESPACE,
        )
        # (An isinstance check against a Protocol is slow: done once, here.)
        self._append_now = (
            self.store.channels.append_now
            if isinstance(self.store.channels, ImmediateChannelStore)
            else None
        )
        self._append_soon = (
            self.store.channels.append_soon
            if isinstance(self.store.channels, QueuedChannelStore)
            else None
        )
        if self._append_now is not None or self._append_soon is not None:
            self.sio.answer_immediately(
                self._answer_now if self.stats is None else self._answer_now_counted
            )

    # -- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        if self._state != "new":
            raise RuntimeError(f"Hub.start() called on a hub that is {self._state}")
        await self.store.open()
        await self.feed.start(self.delivery)
        if self.webhooks is not None:
            await self.webhooks.start()
        self.presence.start()
        self._spawn(self._sample_analytics())
        self._started_at = time.time()
        self._state = "running"
        log.info("rtkit hub %s started (store %s)", __version__, redact_url(self.store.url))
        if isinstance(self.authenticator, AnonymousAuthenticator):
            log.warning(
                "ANONYMOUS MODE: anyone who can reach %s:%s may publish and subscribe "
                "to every channel. Use --secret and 'rtkit token' for anything shared.",
                self.config.host,
                self.config.port,
            )

    async def stop(self, drain_timeout: float = 3.0) -> None:
        """Stop taking requests, tell clients to reconnect, flush the store."""
        if self._state in {"stopping", "stopped"}:
            return
        was_running = self._state == "running"
        self._state = "stopping"
        if was_running:
            self.fanout.flush()
            sids = list(self._connections)
            for conn in self._connections.values():
                conn.close_reason = "hub_stopping"
            if sids:
                log.info("disconnecting %d clients", len(sids))
                disconnects = [
                    asyncio.ensure_future(self.sio.disconnect(sid, namespace=NAMESPACE))
                    for sid in sids
                ]
                # asyncio.wait, not wait_for: on timeout wait_for also waits
                # for the cancelled disconnects to finish, and one stuck in
                # a write that does not end would hold the stop forever.
                _, late = await asyncio.wait(disconnects, timeout=drain_timeout)
                for task in disconnects:
                    if task.done() and not task.cancelled() and task.exception() is not None:
                        log.debug("disconnect failed", exc_info=task.exception())
                if late:
                    # Stopping goes on: the host closes what is left.
                    for task in late:
                        task.cancel()
                    log.warning(
                        "%d clients were still disconnecting after %.0f s",
                        len(late),
                        drain_timeout,
                    )
        await _within(drain_timeout, "presence", self.presence.stop())
        await _within(drain_timeout, "shared documents", self.docs.stop())
        if self.webhooks is not None:
            # After the disconnects above: their events go out too, if the
            # receiver answers within the budget.
            await self.webhooks.stop(drain_timeout)
        await _within(drain_timeout, "the store's feed", self.feed.stop())
        self.fanout.close()
        for task in list(self._tasks):
            task.cancel()
        await _within(drain_timeout, "the store", self.store.close())
        self._state = "stopped"
        log.info(
            "rtkit hub stopped: delivered %d messages in %d packets (%d written directly)",
            self.fanout.messages_delivered,
            self.fanout.packets_sent,
            self.fanout.direct_writes,
        )

    async def __aenter__(self) -> Hub:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def running(self) -> bool:
        return self._state == "running"

    @property
    def started_at(self) -> float:
        """When the hub started (unix seconds; 0 before)."""
        return self._started_at

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    @property
    def user_count(self) -> int:
        return len(self._per_user)

    @property
    def ready(self) -> bool:
        """Running, and (with a shared store) connected to it."""
        return self.running and self.feed.up

    async def status(self) -> dict[str, Any]:
        """A JSON-ready snapshot for health and status endpoints.

        ``channels`` lists every channel subscribed or published to since
        start, with its local subscribers and latest stored seq (read from
        the store, so messages stored by other hubs count too). ``bridges``
        lists the bridges that report to this hub or any hub sharing its
        store, by name, with their last reported state (:mod:`.bridges`).
        ``webhooks`` (when configured) has the webhook sender's counters:
        events sent, failed attempts, dropped, rejected, queue depth.
        """
        channels = self.analytics.report()
        for name, figures in channels.items():
            seq, _ = await self.store.channels.head(name)
            figures["seq"] = max(seq, figures["seq"])
        return {
            "version": __version__,
            "state": self._state,
            "store": redact_url(self.store.url),
            "uptime": time.time() - self._started_at if self._started_at else 0.0,
            "connections": len(self._connections),
            "users": len(self._per_user),
            "channels": channels,
            "connections_by_user": dict(self._per_user.most_common(TOP_USERS)),
            "slow_consumers": self._slow_consumers(),
            "deliveries": {
                "messages": self.fanout.messages_delivered,
                "packets": self.fanout.packets_sent,
                "direct_writes": self.fanout.direct_writes,
                "flushes": self.fanout.flushes,
            },
            "presence": self.presence.status(),
            "shared_docs": self.docs.status(),
            **({"webhooks": self.webhooks.status()} if self.webhooks is not None else {}),
            "bridges": (
                await bridge_status(self.store.channels, index, time.time())
                if (index := self.config.bridge_channel)
                else {}
            ),
            **({"cluster": link} if (link := self.feed.status()) is not None else {}),
        }

    def _slow_consumers(self) -> dict[str, Any]:
        """The connections furthest behind now (packets queued for their
        socket), and how many were disconnected for it since start."""
        behind: list[tuple[int, int, Connection]] = []
        for conn in self._connections.values():
            transport = self.sio.transports.get(conn.eio_sid)
            if transport is not None and (depth := transport.depth()) > 0:
                behind.append((depth, transport.pending_bytes(), conn))
        behind.sort(key=lambda entry: entry[0], reverse=True)
        return {
            "disconnected": self.slow_disconnects,
            "queued": [
                {"sid": conn.sid, "user": conn.identity.user, "packets": depth, "bytes": size}
                for depth, size, conn in behind[:TOP_SLOW]
            ],
        }

    async def _sample_analytics(self) -> None:
        while True:
            await asyncio.sleep(ANALYTICS_INTERVAL)
            self.analytics.sample()

    def _store_op(self, op: str) -> contextlib.AbstractContextManager[None]:
        """Time a store operation for the metrics (and count its errors)."""
        return self.stats.timed(op) if self.stats is not None else contextlib.nullcontext()

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- connections --------------------------------------------------------

    async def _on_connect(self, sid: str, environ: Mapping[str, Any], auth: Any) -> bool:
        try:
            if self._state != "running":
                raise Unavailable("the hub is shutting down; reconnect to another hub")
            identity = await self.authenticator.authenticate(environ, auth)
            limit = self.config.limits.max_connections_per_user
            if not identity.anonymous and self._per_user[identity.user] >= limit:
                raise Forbidden(f"user {identity.user!r} already has {limit} connections")
        except HubError as err:
            log.info("refused connection %s: %s", sid, err.message)
            if self.stats is not None:
                self.stats.refused_connect(err.code)
            raise ConnectionRefused(err) from None
        except Exception:
            log.exception("authentication failed with an unexpected error")
            if self.stats is not None:
                self.stats.refused_connect("internal")
            raise ConnectionRefused(
                InternalError("authentication failed; see the hub log")
            ) from None
        limits = self.config.limits
        eio_sid = self.sio.manager.eio_sid_from_sid(sid, NAMESPACE)
        frame_writer: FrameWriter | None = environ.get(FRAME_WRITER_KEY)
        buffered = environ.get(WRITE_BUFFERED_KEY)
        if self.sio.open_connection(eio_sid, frame_writer, buffered) is None:
            # Engine.IO dropped the socket while the hub authenticated it.
            raise ConnectionRefused(Unavailable("disconnected while connecting"))
        conn = self._connections[sid] = Connection(
            sid=sid,
            eio_sid=eio_sid,
            identity=identity,
            bucket=TokenBucket(limits.publish_rate, limits.publish_burst),
            frame_writer=frame_writer,
            reads=TokenBucket(limits.read_rate, limits.read_burst),
            byte_bucket=TokenBucket(limits.publish_bytes_rate, limits.publish_bytes_burst),
        )
        self._schedule_expiry(conn)
        self._per_user[identity.user] += 1
        if self.stats is not None:
            self.stats.connected()
        log.debug("connected %s as %s", sid, identity.user)
        return True

    async def _on_disconnect(self, sid: str, reason: Any = None) -> None:
        conn = self._connections.pop(sid, None)
        if conn is None:
            return
        if self.stats is not None:
            self.stats.disconnected(reason)
        if conn.expiry is not None:
            conn.expiry.cancel()
        self.sio.close_connection(conn.eio_sid)
        for channel in conn.subscriptions:
            self._remove_subscriber(channel, sid)
        self._per_user[conn.identity.user] -= 1
        if self._per_user[conn.identity.user] <= 0:
            del self._per_user[conn.identity.user]
        self.docs.disconnected(sid)
        await self.presence.disconnected(sid)
        if self.webhooks is not None:
            self.webhooks.emit(
                CONNECTION_CLOSED,
                sid=sid,
                user=conn.identity.user,
                reason=conn.close_reason or str(reason or "unknown").replace(" ", "_"),
                duration=round(time.time() - conn.connected_at, 3),
            )
        log.debug("disconnected %s (%s)", sid, reason)

    def _remove_subscriber(self, channel: str, sid: str) -> None:
        removed = self.fanout.remove(channel, sid)
        if removed and self.webhooks is not None and self.fanout.subscriber_count(channel) == 0:
            self.webhooks.emit(CHANNEL_VACATED, channel=channel)

    def _presence_webhook(self, change: PresenceChange) -> None:
        """Presence changes this hub made (not those it hears of from others)."""
        assert self.webhooks is not None
        if change.event in ("join", "leave"):
            member = change.member
            self.webhooks.emit(
                PRESENCE_JOINED if change.event == "join" else PRESENCE_LEFT,
                room=change.room,
                member={"id": member.id, "user": member.user, "name": member.name},
            )

    def _disconnect_slow(self, sid: str) -> None:
        conn = self._connections.get(sid)
        if conn is None:
            return
        log.warning(
            "disconnecting %s (%s): it is too slow to keep up; it will resume from its last seq",
            sid,
            conn.identity.user,
        )
        self.slow_disconnects += 1
        conn.close_reason = "slow_consumer"
        for channel in conn.subscriptions:
            self._remove_subscriber(channel, sid)
        conn.subscriptions.clear()
        self._spawn(self.sio.disconnect(sid, namespace=NAMESPACE))

    def _schedule_expiry(self, conn: Connection) -> None:
        """(Re)arm the timer that ends ``conn`` with its token: at expiry it
        leaves its rooms and stops getting messages, not just requests."""
        if conn.expiry is not None:
            conn.expiry.cancel()
            conn.expiry = None
        expires_at = conn.identity.expires_at
        if expires_at is not None:
            loop = asyncio.get_running_loop()
            left = max(0.0, expires_at - time.time())
            conn.expiry = loop.call_at(loop.time() + left, self._expire, conn.sid)

    async def _refresh(self, conn: Connection, payload: Any) -> dict[str, Any]:
        """``auth.refresh``: a fresh token for the same user replaces the
        connection's grants and moves its expiry; what the new grants no
        longer allow ends with a ``revoked`` event each, sent before the ack."""
        req = parse_auth_refresh(payload)
        if self._refresher is None:
            raise BadRequest("auth.refresh: this hub's connections do not take token refreshes")
        identity = await self._refresher.refresh(req.token)
        if identity.user != conn.identity.user:
            raise Forbidden(
                f"auth.refresh: the token is {identity.user!r}'s, this connection is "
                f"{conn.identity.user!r}'s: reconnect to change users"
            )
        if self._connections.get(conn.sid) is not conn:
            raise Unavailable("disconnected while refreshing")
        # From here to the ack nothing yields before the revoked events are
        # queued: they reach the client before the ack, and no delivery of
        # a revoked channel, room or document follows them.
        conn.identity = identity
        self._schedule_expiry(conn)
        revoked: list[tuple[RevokedKind, str]] = []
        for channel in sorted(conn.subscriptions):
            if not identity.can_subscribe(channel):
                self._remove_subscriber(channel, conn.sid)
                conn.subscriptions.discard(channel)
                revoked.append(("channel", channel))
        revoked.extend(("doc", name) for name in self.docs.revoke(conn.sid, identity))
        rooms = self.presence.revoke(conn.sid, identity)
        revoked.extend(("room", room) for room, _ in rooms)
        for kind, name in revoked:
            event: RevokedEvent = {
                "kind": kind,
                "name": name,
                "code": "forbidden",
                "message": f"the refreshed token no longer grants {kind} {name!r}",
            }
            self.fanout.send_to(
                conn.sid, conn.eio_sid, encode_event(REVOKED, event), conn.frame_writer
            )
        if revoked:
            log.info(
                "refreshed %s (%s): %d subscription(s) ended by the new grants",
                conn.sid,
                identity.user,
                len(revoked),
            )
        await self.presence.leave_revoked(conn.sid, rooms)
        return {"ok": True, "expires": identity.expires_at}

    def _expire(self, sid: str) -> None:
        conn = self._connections.get(sid)
        if conn is None:
            return
        log.info("disconnecting %s (%s): its token has expired", sid, conn.identity.user)
        conn.close_reason = "token_expired"
        self._end(conn, Unauthorized("the token has expired: reconnect with a fresh token"))

    def disconnect_where(self, match: Callable[[Identity], bool], error: HubError) -> int:
        """End every connection whose identity ``match``es (a host revoking a
        credential), telling each client ``error``; returns how many."""
        ended = [conn for conn in self._connections.values() if match(conn.identity)]
        for conn in ended:
            conn.close_reason = "revoked"
            self._end(conn, error)
        return len(ended)

    def _end(self, conn: Connection, error: HubError) -> None:
        """Stop deliveries to ``conn`` now, tell its client why (the CLOSING
        event), then disconnect it: it leaves its rooms and documents."""
        for channel in conn.subscriptions:
            self._remove_subscriber(channel, conn.sid)
        conn.subscriptions.clear()
        self.docs.disconnected(conn.sid)

        async def end() -> None:
            with contextlib.suppress(Exception):
                await self.sio.emit(
                    CLOSING, dict(error_ack(error)["error"]), to=conn.sid, namespace=NAMESPACE
                )
            await self.sio.disconnect(conn.sid, namespace=NAMESPACE)

        self._spawn(end())

    # -- requests -----------------------------------------------------------

    async def _on_event_counted(self, event: Any, sid: str, *args: Any) -> dict[str, Any]:
        """_on_event, with its ack counted (metrics on)."""
        started = time.perf_counter()
        ack = await self._on_event(event, sid, *args)
        assert self.stats is not None
        self.stats.answered(event, ack, started)
        return ack

    async def _on_event(self, event: Any, sid: str, *args: Any) -> dict[str, Any]:
        conn = self._connections.get(sid)
        if conn is not None and self._over_send_budget(conn):
            # It sends requests and does not read the answers, not even the
            # refusals: each request waits for the budget (a client's own
            # pipelining, up to the in-flight cap); past that the
            # connection is a slow consumer.
            try:
                if conn.in_flight >= self.config.limits.max_requests_in_flight:
                    self._disconnect_slow(conn.sid)
                    raise Unavailable("the connection does not read what the hub sends it")
                conn.in_flight += 1
                try:
                    await self._wait_for_send_budget(conn)
                finally:
                    conn.in_flight -= 1
            except HubError as exc:
                return self._refusal(str(event), sid, exc)
        handler = self._handlers.get(event) if isinstance(event, str) else None
        if event == UNDECODABLE:
            detail = args[0] if args else "?"
            err = BadRequest(f"the request is not JSON ({detail}); NaN and Infinity are not JSON")
            return dict(error_ack(err))
        if handler is None:
            known = ", ".join(sorted(self._handlers))
            return dict(error_ack(BadRequest(f"unknown event {event!r}; known events: {known}")))
        if len(args) != 1:
            return dict(error_ack(BadRequest(f"{event}: send exactly one argument, a JSON object")))
        try:
            if conn is None:
                raise Unauthorized("not connected")
            self._check_request(conn)
            if event in _READS:
                conn.reads.take_or_refuse("reads")
            limit = self.config.limits.max_requests_in_flight
            if event == PUBLISH:
                # Publishes have their own budget (the publish rate's bucket)
                # and clients pipeline them (the Python client up to 256).
                return await handler(conn, args[0])
            if conn.in_flight >= limit:
                # Refused before anything is read or built: a client that
                # sends without waiting for acks cannot pile up work here.
                raise RateLimited(
                    f"{limit} requests of this connection are still being answered; "
                    "wait for their acks before sending more"
                )
            conn.in_flight += 1
            try:
                if event not in _LARGE_ACKS:
                    return await handler(conn, args[0])
                async with conn.large_ack:
                    await self._wait_for_send_budget(conn)
                    # The ack is queued right after the handler returns,
                    # without yielding: the next waiter counts its bytes.
                    return await handler(conn, args[0])
            finally:
                conn.in_flight -= 1
        except Exception as exc:
            return self._refusal(event, sid, exc)

    def _over_send_budget(self, conn: Connection) -> bool:
        limits = self.config.limits
        transport = self.sio.transports.get(conn.eio_sid)
        return transport is not None and (
            transport.pending_bytes() >= limits.max_pending_bytes
            or transport.depth() >= limits.max_pending_packets
        )

    async def _wait_for_send_budget(self, conn: Connection) -> None:
        """Return once the connection has taken enough of what it was sent
        for another large ack; a connection that does not read for
        ``slow_consumer_timeout`` is disconnected as a slow consumer."""
        limits = self.config.limits
        transport = self.sio.transports.get(conn.eio_sid)
        if transport is None or transport.closed:
            raise Unavailable("disconnected")
        # Packets count as well as bytes: many tiny acks cost the hub more
        # memory per byte than their size says, and leave it fragmented.
        if await transport.wait_below(
            limits.max_pending_bytes,
            limits.slow_consumer_timeout,
            packets=limits.max_pending_packets,
        ):
            if self._connections.get(conn.sid) is not conn:
                raise Unavailable("disconnected")
            return
        self._disconnect_slow(conn.sid)
        raise Unavailable(
            f"the connection has not read what the hub sent it for "
            f"{limits.slow_consumer_timeout:g} s; read acks and events, then reconnect"
        )

    def _refusal(self, event: str, sid: str, exc: Exception) -> dict[str, Any]:
        """The error ack of a request that raised ``exc`` (call it from an
        ``except`` block: an unexpected error logs its traceback)."""
        if isinstance(exc, HubError):
            log.debug("%s from %s refused: %s", event, sid, exc.message)
            return dict(error_ack(exc))
        log.exception("%s from %s failed", event, sid)
        return dict(error_ack(InternalError(f"{event} failed inside the hub; see its log")))

    def _check_request(self, conn: Connection) -> None:
        if self._state != "running":
            raise Unavailable("the hub is shutting down; retry after reconnecting")
        if not self.feed.up:
            raise Unavailable("the hub lost its shared store; retry shortly")
        if conn.identity.expired():
            raise Unauthorized("the token has expired: reconnect with a fresh token")

    def _answer_now_counted(
        self, sid: str, data: list[Any], reply: Reply
    ) -> dict[str, Any] | Queued | None:
        """_answer_now, with its ack counted (metrics on)."""
        started = time.perf_counter()
        stats = self.stats
        assert stats is not None

        def counted(ack: dict[str, Any]) -> None:
            # A queued append: its wait is the store's append latency.
            stats.store_time("append", time.perf_counter() - started)
            stats.publish_answered(ack, started)
            reply(ack)

        ack = self._answer_now(sid, data, counted)
        if isinstance(ack, dict):
            stats.publish_answered(ack, started)
        return ack

    def _answer_now(
        self, sid: str, data: list[Any], reply: Reply
    ) -> dict[str, Any] | Queued | None:
        """The ack of a publish, for the server to send without a task: at
        once for a store that appends without waiting
        (:class:`~rtkit.storage.base.ImmediateChannelStore`), or through
        ``reply`` for one that queues appends
        (:class:`~rtkit.storage.base.QueuedChannelStore`); None for any
        other request. The checks, the answer and the refusals are
        _on_event's and _publish's own, in the same order; only the append
        does not take a task."""
        if len(data) != 2 or data[0] != PUBLISH:
            return None
        conn = self._connections.get(sid)
        if conn is None or self._over_send_budget(conn):
            return None  # _on_event answers (or waits for the send budget)
        try:
            self._check_request(conn)
            req = self._publish_request(conn, data[1])
            ts = time.time()
            with _append_errors(self.stats):
                if self._append_now is not None:
                    if isinstance(req, _Batch):
                        results = [
                            self._append_call(self._append_now, conn, one, ts)
                            for one in req.messages
                        ]
                        return self._published_batch(req, results)
                    return self._published(self._append_call(self._append_now, conn, req, ts))
                # One of the two is set, or the server would not ask (see __init__).
                assert self._append_soon is not None
                if isinstance(req, _Batch):
                    answer = self._batch_answer(sid, req, reply)
                    for i, one in enumerate(req.messages):
                        self._append_call(
                            self._append_soon, conn, one, ts, then=functools.partial(answer, i)
                        )
                    if not req.messages:
                        return self._published_batch(req, [])
                else:
                    self._append_call(
                        self._append_soon, conn, req, ts, then=self._answer(sid, reply)
                    )
            return QUEUED
        except Exception as exc:
            return self._refusal(PUBLISH, sid, exc)

    def _append_call(
        self, append: Any, conn: Connection, req: PublishRequest, ts: float, **then: Any
    ) -> Any:
        return append(
            req.channel,
            req.data,
            sender=conn.identity.user,
            msg_id=req.id,
            ts=ts,
            dedup_window=self.config.dedup_window,
            **then,
        )

    def _answer(self, sid: str, reply: Reply) -> Callable[[Appended | Exception], None]:
        """What a queued append calls: ``reply`` with the publish's ack or
        its refusal."""

        def answer(result: Appended | Exception) -> None:
            if isinstance(result, Exception):
                ack = self._refusal(PUBLISH, sid, _append_error(result, self.stats))
            else:
                try:
                    ack = self._published(result)
                except Exception as exc:
                    ack = self._refusal(PUBLISH, sid, exc)
            reply(ack)

        return answer

    def _batch_answer(
        self, sid: str, batch: _Batch, reply: Reply
    ) -> Callable[[int, Appended | Exception], None]:
        """What each queued append of ``batch`` calls with its index: once
        all are answered, ``reply`` with the batch's ack (or the refusal of
        the first that failed)."""
        results: list[Appended | Exception | None] = [None] * len(batch.messages)
        left = len(results)

        def answer(i: int, result: Appended | Exception) -> None:
            nonlocal left
            results[i] = result
            left -= 1
            if left:
                return
            failed = next((r for r in results if isinstance(r, Exception)), None)
            if failed is not None:
                ack = self._refusal(PUBLISH, sid, _append_error(failed, self.stats))
            else:
                try:
                    ack = self._published_batch(batch, cast("list[Appended]", results))
                except Exception as exc:
                    ack = self._refusal(PUBLISH, sid, exc)
            reply(ack)

        return answer

    def _publish_request(self, conn: Connection, payload: Any) -> PublishRequest | _Batch:
        """The checked publish (or batch), charged to the connection's
        budgets: one publish of the rate whatever the batch holds, and the
        bytes of every message stored. A batch's messages are checked one
        by one: a refused one is answered in the ack, the others stored."""
        req = parse_publish_any(payload)
        if isinstance(req, PublishRequest):
            if not conn.identity.can_publish(req.channel):
                raise Forbidden(f"{conn.identity.user!r} may not publish to {req.channel!r}")
            conn.bucket.take_or_refuse("publishes", _PUBLISH_RATE_HINT)
            size = self._check_size(req.data)
            # Charged after the size check: a refused payload costs no quota.
            conn.byte_bucket.take_bytes_or_refuse(size, "publish")
            self.analytics.published(req.channel, conn.identity.user, size)
            if self.stats is not None:
                self.stats.published_bytes += size
            return req
        conn.bucket.take_or_refuse("publishes", _PUBLISH_RATE_HINT)
        batch = _Batch()
        size = 0
        sizes: list[int] = []
        for item in req.items:
            try:
                if isinstance(item, HubError):
                    raise item
                if not conn.identity.can_publish(item.channel):
                    raise Forbidden(f"{conn.identity.user!r} may not publish to {item.channel!r}")
                sizes.append(self._check_size(item.data))
                size += sizes[-1]
            except HubError as exc:
                batch.errors.append(exc)
                continue
            batch.errors.append(None)
            batch.messages.append(item)
        burst = self.config.limits.publish_bytes_burst
        if size > burst and len(batch.messages) > 1:
            # Taken whole or not at all: a batch over the burst could never pass.
            raise TooLarge(
                f"publish: the batch holds {size} bytes, over the {burst}-byte burst of "
                "publish_bytes_rate; send fewer messages per batch"
            )
        conn.byte_bucket.take_bytes_or_refuse(size, "publish")
        for item, item_size in zip(batch.messages, sizes, strict=True):
            self.analytics.published(item.channel, conn.identity.user, item_size)
        if self.stats is not None:
            self.stats.published_bytes += size
        return batch

    async def _publish(self, conn: Connection, payload: Any) -> dict[str, Any]:
        req = self._publish_request(conn, payload)
        if isinstance(req, _Batch):
            return await self._publish_batch(conn, req)
        turn = await self._wait_turn(conn, batch=False)
        if turn is not None:
            _open_turn(conn, turn)  # the append below starts in this same step
        # Nothing between the turn and the append yields to the event loop:
        # a connection's publishes reach the store (which numbers them in
        # call order) in the order they arrived, although python-socketio
        # runs each in its own task.
        started = time.perf_counter()
        with _append_errors(self.stats):
            appended = await self.store.channels.append(
                req.channel,
                req.data,
                sender=conn.identity.user,
                msg_id=req.id,
                ts=time.time(),
                dedup_window=self.config.dedup_window,
            )
        if self.stats is not None:
            self.stats.store_time("append", time.perf_counter() - started)
        return self._published(appended)

    async def _publish_batch(self, conn: Connection, req: _Batch) -> dict[str, Any]:
        """Store a batch in order, as if its messages were published one
        after another, before any later publish of the connection."""
        ts = time.time()
        with _append_errors(self.stats):
            if self._append_now is not None:
                return self._published_batch(
                    req,
                    [self._append_call(self._append_now, conn, one, ts) for one in req.messages],
                )
            if self._append_soon is not None:
                loop = asyncio.get_running_loop()
                queued: list[asyncio.Future[Appended]] = []
                for one in req.messages:
                    done: asyncio.Future[Appended] = loop.create_future()
                    then = functools.partial(into_future, done)
                    self._append_call(self._append_soon, conn, one, ts, then=then)
                    queued.append(done)
                return self._published_batch(req, list(await asyncio.gather(*queued)))
            return self._published_batch(req, await self._append_batch(conn, req, ts))

    async def _append_batch(self, conn: Connection, req: _Batch, ts: float) -> list[Appended]:
        """Append a batch through the store's coroutines.

        A store numbers concurrent appends in the order they start, and a
        task starts after everything already scheduled: the connection's
        later publishes wait on ``publish_gate`` until the last append of
        this batch has started, so none can slip in between."""
        if not req.messages:
            return []
        turn = await self._wait_turn(conn, batch=True)
        assert turn is not None  # a batch always takes a turn

        async def start(coro: Awaitable[Appended], last: bool) -> Appended:
            if last:
                # Waiters wake on a later turn; the append below starts now.
                _open_turn(conn, turn)
            return await coro

        count = len(req.messages)
        tasks = [
            asyncio.ensure_future(
                start(self._append_call(self.store.channels.append, conn, one, ts), i == count - 1)
            )
            for i, one in enumerate(req.messages)
        ]
        try:
            return list(await asyncio.gather(*tasks))
        finally:
            _open_turn(conn, turn)  # also when cancelled before the last task started

    async def _wait_turn(self, conn: Connection, *, batch: bool) -> asyncio.Future[None] | None:
        """Wait until the connection's earlier publishes have started their
        appends (on a store that appends through coroutines); returns this
        publish's own turn, to open once its appends have started, or None
        for a single publish that need not wait (it starts at once)."""
        before = conn.publish_gate
        if not batch and (before is None or before.done()):
            return None
        # Installed before waiting: a later publish waits for this one, even
        # if it runs before this one wakes up.
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        conn.publish_gate = turn
        if before is not None and not before.done():
            try:
                await asyncio.shield(before)
            except BaseException:
                _open_turn(conn, turn)
                raise
        return turn

    def _published_batch(self, batch: _Batch, results: list[Appended]) -> dict[str, Any]:
        """The ack of a stored batch: one seq and one ts per message, null
        for a refused one, whose error is in ``errors``."""
        stats = self.stats
        if stats is not None:
            for appended in results:
                stats.stored(appended.duplicate)
        stored = iter(results)
        seqs: list[int | None] = []
        stamps: list[float | None] = []
        for error in batch.errors:
            if error is None:
                message = next(stored).message
                seqs.append(message.seq)
                stamps.append(message.ts)
            else:
                seqs.append(None)
                stamps.append(None)
        ack: dict[str, Any] = {"ok": True, "seqs": seqs, "ts": stamps}
        if len(results) < len(batch.errors):
            ack["errors"] = [None if e is None else e.to_wire() for e in batch.errors]
        return ack

    def _published(self, appended: Appended) -> dict[str, Any]:
        """The ack of a stored publish. The message itself reaches
        subscribers through the store's feed (for the memory store, before
        append_now returned), so the ack is queued after it."""
        msg = appended.message
        if self.stats is not None:
            self.stats.stored(appended.duplicate)
        ack: dict[str, Any] = {"ok": True, "seq": msg.seq, "ts": msg.ts}
        if appended.duplicate:
            ack["duplicate"] = True
        return ack

    def _check_size(self, data: Any) -> int:
        """The payload's size in bytes; too_large over max_payload_bytes."""
        cap = self.config.limits.max_payload_bytes
        if isinstance(data, bytes | bytearray):
            size = len(data)
        else:
            try:
                size = len(orjson.dumps(data))
            except (TypeError, orjson.JSONEncodeError) as exc:
                raise BadRequest(
                    f"publish: 'data' must be a JSON value or binary ({exc})"
                ) from None
        if size > cap:
            raise TooLarge(f"publish: payload is {size} bytes, over the {cap}-byte limit")
        return size

    async def _subscribe(self, conn: Connection, payload: Any) -> dict[str, Any]:
        req = parse_subscribe(payload)
        channel = req.channel
        if not conn.identity.can_subscribe(channel):
            raise Forbidden(f"{conn.identity.user!r} may not subscribe to {channel!r}")
        if (
            channel not in conn.subscriptions
            and len(conn.subscriptions) >= self.config.limits.max_subscriptions
        ):
            raise Forbidden(
                f"subscription limit reached ({self.config.limits.max_subscriptions} "
                "channels per connection)"
            )
        # A repeated subscribe starts over from what this request asks (the
        # channel stays occupied meanwhile: no webhook either way).
        resubscribed = channel in conn.subscriptions
        if resubscribed:
            self.fanout.remove(channel, conn.sid)
            conn.subscriptions.discard(channel)

        # From here on every message stored reaches the fan-out; the backlog
        # read below covers what came before.
        await self.feed.watch(channel)
        # A backlog that does not fit in one ack (max_ack_bytes) is handled
        # like one over MAX_RECOVERY: the newest messages that fit, and
        # recovered=false, so the client knows it has a gap.
        recovered = True
        max_bytes = self.config.limits.max_ack_bytes
        rng: Page | None
        with self._store_op("read"):
            if req.since is not None:
                rng = await read_forward(
                    self.store.channels,
                    channel,
                    since=req.since,
                    before=None,
                    limit=MAX_RECOVERY + 1,
                    max_bytes=max_bytes,
                )
                same_epoch = req.epoch is None or req.epoch == rng.epoch
                if not (
                    rng.complete
                    and same_epoch
                    and not rng.more
                    and len(rng.messages) <= MAX_RECOVERY
                ):
                    recovered = False
                    rng = await read_backward(
                        self.store.channels,
                        channel,
                        before=None,
                        limit=MAX_RECOVERY,
                        max_bytes=max_bytes,
                    )
            elif req.history:
                rng = await read_backward(
                    self.store.channels,
                    channel,
                    before=None,
                    limit=req.history,
                    max_bytes=max_bytes,
                )
            else:
                rng = None
                head, epoch = await self.store.channels.head(channel)
        backlog: list[Message] = []
        if rng is not None:
            backlog, head, epoch = list(rng.messages), rng.seq, rng.epoch
        cursor = max(head, backlog[-1].seq if backlog else 0)

        # Line the backlog up with live delivery. fanout.add and the return
        # below run without yielding to the event loop, so the ack is queued
        # on the socket before any live message of this channel.
        for _ in range(_SUBSCRIBE_ATTEMPTS):
            if self._connections.get(conn.sid) is not conn:
                raise Unavailable("disconnected while subscribing")
            if not conn.identity.can_subscribe(channel):
                # A token refresh took the right away while the backlog was read.
                raise Forbidden(f"{conn.identity.user!r} may not subscribe to {channel!r}")
            missing = self.fanout.add(channel, conn.sid, conn.eio_sid, cursor, conn.frame_writer)
            if missing is not None:
                backlog.extend(missing)
                break
            more = await self.store.channels.read(channel, since=cursor)
            backlog.extend(more.messages)
            cursor = max(more.seq, cursor)
        else:
            raise Unavailable(f"{channel!r} is too busy to subscribe right now; retry")
        if (
            self.webhooks is not None
            and not resubscribed
            and self.fanout.subscriber_count(channel) == 1
        ):
            self.webhooks.emit(CHANNEL_OCCUPIED, channel=channel)
        conn.subscriptions.add(channel)
        return {
            "ok": True,
            "seq": backlog[-1].seq if backlog else cursor,
            "epoch": epoch,
            "recovered": recovered,
            "messages": [m.envelope() for m in backlog],
        }

    async def _unsubscribe(self, conn: Connection, payload: Any) -> dict[str, Any]:
        req = parse_unsubscribe(payload)
        if req.channel not in conn.subscriptions:
            raise NotFound(f"not subscribed to {req.channel!r}")
        conn.subscriptions.discard(req.channel)
        self._remove_subscriber(req.channel, conn.sid)
        return {"ok": True}

    async def _history(self, conn: Connection, payload: Any) -> dict[str, Any]:
        req = parse_history(payload)
        if not conn.identity.can_subscribe(req.channel):
            raise Forbidden(f"{conn.identity.user!r} may not read {req.channel!r}")
        limit = req.limit or MAX_HISTORY_LIMIT
        max_bytes = self.config.limits.max_ack_bytes
        with self._store_op("read"):
            if req.since is None:
                page = await read_backward(
                    self.store.channels,
                    req.channel,
                    before=req.before,
                    limit=limit,
                    max_bytes=max_bytes,
                )
            else:
                page = await read_forward(
                    self.store.channels,
                    req.channel,
                    since=req.since,
                    before=req.before,
                    limit=limit,
                    max_bytes=max_bytes,
                )
        ack: dict[str, Any] = {
            "ok": True,
            "messages": [m.envelope() for m in page.messages],
            "seq": page.seq,
            "epoch": page.epoch,
            "complete": page.complete,
        }
        if page.more:
            # Only part of the range fits in one ack (max_ack_bytes): the
            # part nearest 'since' if given, else the newest. The client
            # asks again from where this one stops.
            ack["more"] = True
        return ack
