"""The jupyter-server extension: options, lifecycle, kernel environment.

Everything Jupyter-specific lives here and in the two private modules next to
it; the hub core gets plain, typed arguments (a HubConfig, a store, an
Authenticator) and never sees traitlets or tornado.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode

from jupyter_server.auth.identity import User
from jupyter_server.base.call_context import CallContext
from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, Dict, Float, Int, List, Unicode, Union

from rtkit import __version__
from rtkit.config import (
    DEFAULT_BRIDGE_CHANNEL,
    DEFAULT_LIMITS,
    HubConfig,
    Limits,
    Webhooks,
    hub_default,
    webhook_default,
)
from rtkit.errors import ConfigurationError, Unauthorized
from rtkit.hub import Hub
from rtkit.hub.http_api import HttpApi
from rtkit.hub.metrics import MetricsEndpoint
from rtkit.storage.base import Retention, Store
from rtkit.storage.url import redact_url, store_from_url

from ._auth import (
    TOKEN_ID,
    JupyterAuthenticator,
    KernelTokens,
    identity_for,
    rtkit_authorized,
    server_user,
)
from ._bridges import ServerBridges
from ._handlers import (
    HttpApiHandler,
    KernelTokenHandler,
    MetricsHandler,
    StatusHandler,
    socket_handler,
)

if TYPE_CHECKING:
    from jupyter_server.serverapp import ServerApp

#: Where the hub lives under the server's base_url.
HUB_PATH = "rtkit"
# Under HUB_PATH: where a kernel renews its token (outside the HTTP API's
# api/ paths, which take Jupyter's login).
KERNEL_TOKEN_PATH = "kernel-token"


class RtkitExtension(ExtensionApp):
    """rtkit's hub inside jupyter-server.

    Configure it like any Jupyter app, e.g. in ``jupyter_server_config.py``::

        c.RtkitExtension.store = "sqlite:////srv/rtkit/hub.db"
        c.RtkitExtension.publish_rate = 200
    """

    name = "rtkit_jupyter"
    description = "rtkit: live channels for notebooks, served by this Jupyter server"
    load_other_extensions = True

    store = Unicode(
        "",
        config=True,
        help="""Store URL: memory://, sqlite:///relative.db or sqlite:////absolute.db.
        Empty (the default): a SQLite file in Jupyter's data directory
        (rtkit/hub.db), so history survives a server restart.""",
    )
    api_key = Unicode(
        None,
        allow_none=True,
        config=True,
        help="""Key for services calling the HTTP API ({base_url}rtkit/api/...) with
        full rights (header X-API-Key), on top of Jupyter's login. At least 16
        characters. None (the default): Jupyter users act with their own rights.""",
    )
    # Defaults come from rtkit's own config objects, as the CLI's do.
    retention_max_messages = Int(
        Retention().max_messages,
        config=True,
        help="Messages kept per channel (older ones are dropped).",
    )
    retention_max_age = Float(
        Retention().max_age, config=True, help="Seconds a message is kept in history."
    )
    retention_max_bytes = Int(
        Retention().max_bytes,
        config=True,
        help="Payload bytes kept per channel (the oldest messages are dropped first).",
    )
    max_payload_bytes = Int(
        DEFAULT_LIMITS.max_payload_bytes,
        config=True,
        help="Largest message data in bytes (too_large above).",
    )
    publish_rate = Float(
        DEFAULT_LIMITS.publish_rate,
        config=True,
        help="Sustained publishes per second per connection (0: no cap).",
    )
    publish_burst = Int(
        DEFAULT_LIMITS.publish_burst,
        config=True,
        help="Publish burst per connection (token bucket).",
    )
    read_rate = Float(
        DEFAULT_LIMITS.read_rate,
        config=True,
        help="Reads (history, subscribe, presence.list, doc.sync) per second per connection "
        "(0: no cap).",
    )
    read_burst = Int(
        DEFAULT_LIMITS.read_burst,
        config=True,
        help="Read burst per connection (token bucket).",
    )
    publish_bytes_rate = Float(
        DEFAULT_LIMITS.publish_bytes_rate,
        config=True,
        help="Bytes of publishes and document updates per second per connection (0: no cap).",
    )
    publish_bytes_burst = Int(
        DEFAULT_LIMITS.publish_bytes_burst,
        config=True,
        help="Byte burst per connection above publish_bytes_rate (token bucket).",
    )
    max_doc_bytes = Int(
        DEFAULT_LIMITS.max_doc_bytes,
        config=True,
        help="Largest stored size of a shared document in bytes (too_large above).",
    )
    max_name_chars = Int(
        DEFAULT_LIMITS.max_name_chars,
        config=True,
        help="Longest presence display name in characters (longer ones are cut).",
    )
    max_subscriptions = Int(
        DEFAULT_LIMITS.max_subscriptions,
        config=True,
        help="Channels one connection may subscribe to.",
    )
    max_connections_per_user = Int(
        DEFAULT_LIMITS.max_connections_per_user,
        config=True,
        help="Concurrent connections per user.",
    )
    max_attachments = Int(
        DEFAULT_LIMITS.max_attachments,
        config=True,
        help="Binary attachments one Socket.IO packet may announce; more closes the socket.",
    )
    connect_timeout = Float(
        hub_default("connect_timeout"),
        config=True,
        help="Seconds a new connection has to complete its Socket.IO CONNECT.",
    )
    max_pending_per_address = Int(
        hub_default("max_pending_per_address"),
        config=True,
        help="""Connections from one address still completing their CONNECT (0: no
        cap). The address is tornado's remote_ip (behind a proxy, set the server's
        trust_xheaders).""",
    )
    max_pending_bytes = Int(
        DEFAULT_LIMITS.max_pending_bytes,
        config=True,
        help="""Bytes a connection may leave unread: above it, history, subscribe
        and doc.sync wait before reading anything, and deliveries drop the
        connection as a slow consumer (it resumes with since).""",
    )
    slow_consumer_timeout = Float(
        DEFAULT_LIMITS.slow_consumer_timeout,
        config=True,
        help="Seconds a request waits for its connection to read before the "
        "connection is dropped as a slow consumer.",
    )
    max_ack_bytes = Int(
        DEFAULT_LIMITS.max_ack_bytes,
        config=True,
        help="Largest history or subscribe backlog in one ack (history pages on).",
    )
    max_requests_in_flight = Int(
        DEFAULT_LIMITS.max_requests_in_flight,
        config=True,
        help="Requests of one connection answered at once, publishes aside (rate_limited above).",
    )
    ping_interval = Float(
        hub_default("ping_interval"),
        config=True,
        help="Engine.IO heartbeat interval in seconds.",
    )
    ping_timeout = Float(
        hub_default("ping_timeout"),
        config=True,
        help="Engine.IO heartbeat timeout in seconds.",
    )
    websocket_compression = Bool(
        hub_default("websocket_compression"),
        config=True,
        help="permessage-deflate on the hub's websockets (costs fan-out throughput).",
    )
    metrics = Bool(
        hub_default("metrics"),
        config=True,
        help="""Serve the hub's Prometheus metrics at {base_url}rtkit/metrics (behind
        Jupyter's login, like the status API). Off, the hub also skips the
        per-request counting behind them.""",
    )
    metrics_top_channels = Int(
        hub_default("metrics_top_channels"),
        config=True,
        help="Channels and shared documents with series of their own in the metrics "
        "(the busiest), so their number stays bounded.",
    )
    kernel_env = Bool(
        True,
        config=True,
        help="""Give kernels started by this server RTKIT_URL and RTKIT_TOKEN, so
        that rtkit.connect() needs no arguments in a notebook.""",
    )
    kernel_url = Unicode(
        "",
        config=True,
        help="""RTKIT_URL for kernels. Empty: this server on loopback,
        http://127.0.0.1:<port><base_url>rtkit. Set it when kernels reach the
        server by another address (remote kernels, containers).""",
    )
    kernel_token_ttl = Float(
        7 * 24 * 3600.0,
        config=True,
        help="""Lifetime of a kernel token in seconds, a backstop: a kernel's
        token is revoked (and its connections ended) when the kernel shuts down,
        is culled or restarts (a restarted kernel gets a new one), and every
        token stops working when the server stops (the key that signs them is
        never stored). A running kernel's client renews its token before it
        expires (at RTKIT_TOKEN_URL, {base_url}rtkit/kernel-token) and hands
        the new one to the hub on its live connection.""",
    )
    direct_writes = Bool(
        True,
        config=True,
        help="""Write each delivery's prebuilt websocket frame straight to the
        sockets (the fast path). Off: every write goes through Engine.IO's
        per-connection queue, as in a plain python-socketio app; for
        comparison and troubleshooting.""",
    )
    freeze_gc = Bool(
        True,
        config=True,
        help="""Move the objects alive when the server has started out of the
        cyclic garbage collector's full collections (gc.freeze), which
        otherwise pause the server for tens of milliseconds at a time.""",
    )
    stop_timeout = Float(
        5.0, config=True, help="Seconds to drain clients and flush the store on shutdown."
    )
    webhook_url = Unicode(
        None,
        allow_none=True,
        config=True,
        help="""URL the hub POSTs lifecycle events to (channel occupied/vacated,
        presence join/leave, connection closed), in signed JSON batches; see
        rtkit's operations docs. None (the default): no webhooks.""",
    )
    webhook_secret = Unicode(
        None,
        allow_none=True,
        config=True,
        help="""Key of the webhooks' HMAC-SHA256 signature (X-Rtkit-Signature),
        at least 16 characters; required with webhook_url.""",
    )
    webhook_max_batch = Int(
        webhook_default("max_batch"), config=True, help="Most webhook events in one POST."
    )
    webhook_batch_delay = Float(
        webhook_default("batch_delay"),
        config=True,
        help="Seconds a webhook event waits for others to share its POST.",
    )
    webhook_max_queue = Int(
        webhook_default("max_queue"),
        config=True,
        help="""Webhook events kept while the receiver is away; beyond, the oldest
        are dropped (and counted in the status).""",
    )
    webhook_timeout = Float(
        webhook_default("timeout"), config=True, help="Seconds a webhook POST may take."
    )
    webhook_retry_max = Float(
        webhook_default("retry_max"),
        config=True,
        help="Longest wait between retries of a failed webhook POST (the wait doubles).",
    )
    bridges = List(
        Union([Unicode(), Dict()]),
        default_value=[],
        config=True,
        help="""Bridges this server runs into its own hub, each written as the
        arguments of `rtkit bridge` ("mqtt --host broker --map 'sensors/+/temp=sensors.{1}'")
        or as a dict of the same options ({"kind": "mqtt", "host": "broker", "map":
        ["sensors/+/temp=sensors.{1}"]}; a list repeats its option). Each connects
        with a token the server mints and reports its state on
        bridge_channel.<name>; give bridges of the same kind a "name" each. A
        bridge that fails is logged and shown in the status; the server goes on.""",
    )
    bridge_channel = Unicode(
        DEFAULT_BRIDGE_CHANNEL,
        config=True,
        help="""The channel bridges announce themselves on (their states on
        <it>.<name>): the status lists them, StatusBadge(bridges=True) shows them.
        Empty: no bridge listed or reported.""",
    )

    # The SQLite store's lock file, held while this server runs.
    _lock: IO[str] | None = None

    @property
    def _server(self) -> ServerApp:
        if self.serverapp is None:
            raise RuntimeError("the rtkit extension is not linked to a Jupyter server yet")
        return self.serverapp

    # -- ExtensionApp hooks -------------------------------------------------

    def initialize_settings(self) -> None:
        self._wire_logging()
        self.kernel_tokens = KernelTokens(ttl=self.kernel_token_ttl)
        store_url, store = self._open_store()
        self.hub_config = HubConfig(
            store=store_url,
            # Kernel tokens are signed with this; browsers use Jupyter's login.
            secret=self.kernel_tokens.secret,
            limits=Limits(
                max_payload_bytes=self.max_payload_bytes,
                publish_rate=self.publish_rate,
                publish_burst=self.publish_burst,
                read_rate=self.read_rate,
                read_burst=self.read_burst,
                max_subscriptions=self.max_subscriptions,
                max_connections_per_user=self.max_connections_per_user,
                publish_bytes_rate=self.publish_bytes_rate,
                publish_bytes_burst=self.publish_bytes_burst,
                max_doc_bytes=self.max_doc_bytes,
                max_name_chars=self.max_name_chars,
                max_attachments=self.max_attachments,
                max_pending_bytes=self.max_pending_bytes,
                slow_consumer_timeout=self.slow_consumer_timeout,
                max_ack_bytes=self.max_ack_bytes,
                max_requests_in_flight=self.max_requests_in_flight,
            ),
            connect_timeout=self.connect_timeout,
            max_pending_per_address=self.max_pending_per_address,
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_timeout,
            websocket_compression=self.websocket_compression,
            # The socket handler applies Jupyter's own Origin rules
            # (allow_origin, allow_origin_pat) before the hub sees a request.
            check_origin=False,
            api_key=self.api_key or None,
            webhooks=self._webhooks(),
            metrics=self.metrics,
            metrics_top_channels=self.metrics_top_channels,
            bridge_channel=self.bridge_channel or None,
        )
        self.server_bridges = ServerBridges(
            self.bridges, self.log, report_channel=self.bridge_channel or None
        )
        self.hub = Hub(
            self.hub_config,
            store=store,
            authenticator=JupyterAuthenticator(self.kernel_tokens, self._jupyter_token),
            async_mode="tornado",
        )
        if self.kernel_env:
            self._install_kernel_env()

    def initialize_handlers(self) -> None:
        api_path = f"{self._server.base_url}{HUB_PATH}/api"
        self.handlers.extend(
            [
                (
                    rf"/{HUB_PATH}/socket.io/",
                    socket_handler(self.hub, self.kernel_tokens, direct_writes=self.direct_writes),
                ),
                (rf"/{HUB_PATH}/api/status", StatusHandler, {"app": self}),
                *(
                    [
                        (
                            rf"/{HUB_PATH}/metrics",
                            MetricsHandler,
                            # Jupyter's login is the check: no token of its own.
                            {"endpoint": MetricsEndpoint(self.hub, check_token=False)},
                        )
                    ]
                    if self.metrics
                    else []
                ),
                (
                    rf"/{HUB_PATH}/{KERNEL_TOKEN_PATH}",
                    KernelTokenHandler,
                    {"tokens": self.kernel_tokens},
                ),
                (
                    rf"/{HUB_PATH}/api/(.*)",
                    HttpApiHandler,
                    {
                        "api": HttpApi(self.hub, server_url=api_path),
                        "prefix": api_path,
                        "tokens": self.kernel_tokens,
                    },
                ),
            ]
        )

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        await self.hub.start()
        if self.freeze_gc:
            # A jupyter server holds hundreds of thousands of long-lived objects
            # (JupyterLab and other extensions); a full collection walks them
            # all, stopping the event loop for tens of milliseconds, and shows
            # up as the hub's tail latency. Everything alive once the server
            # has started moves to the permanent generation (gc.freeze).
            gc.collect()
            gc.freeze()
            self.log.debug("rtkit: froze %d objects out of the GC's way", gc.get_freeze_count())
        self.log.info(
            "rtkit %s hub at %s%s/socket.io/ (store %s)",
            __version__,
            self._server.base_url,
            HUB_PATH,
            redact_url(self.hub.store.url),
        )
        if self.bridges:
            self._start_bridges()

    def _start_bridges(self) -> None:
        if self._server.sock and not self.kernel_url:
            self.log.error(
                "rtkit: the server listens on a unix socket; its bridges cannot reach the "
                "hub unless c.RtkitExtension.kernel_url is set. No bridge started."
            )
            return
        self.server_bridges.start(self.hub_url(), self._bridge_token)

    def _bridge_token(self, name: str, ttl: float) -> str:
        """A token for the bridge ``name``: user ``bridge.<name>``, every channel."""
        identity = identity_for(f"bridge.{name}", name=f"bridge {name}", kind="bridge")
        return self.kernel_tokens.mint(identity, ttl=ttl)

    async def stop_extension(self) -> None:
        try:
            # Bridges first: their last publishes and reports need the hub.
            await self.server_bridges.stop(self.stop_timeout)
        except Exception:  # stopping goes on whatever a bridge does
            self.log.exception("rtkit: stopping the bridges failed")
        try:
            await asyncio.wait_for(
                self.hub.stop(drain_timeout=self.stop_timeout), self.stop_timeout * 2
            )
        except TimeoutError:
            self.log.error("rtkit hub did not stop within %.0f s", self.stop_timeout * 2)
        finally:
            self._release_lock()

    def _webhooks(self) -> Webhooks | None:
        if not self.webhook_url:
            return None
        if not self.webhook_secret:
            raise ConfigurationError(
                "c.RtkitExtension.webhook_url needs c.RtkitExtension.webhook_secret: "
                "receivers check each POST's signature with it"
            )
        return Webhooks(
            self.webhook_url,
            secret=self.webhook_secret,
            max_batch=self.webhook_max_batch,
            batch_delay=self.webhook_batch_delay,
            max_queue=self.webhook_max_queue,
            timeout=self.webhook_timeout,
            retry_initial=min(webhook_default("retry_initial"), self.webhook_retry_max),
            retry_max=self.webhook_retry_max,
        )

    def _wire_logging(self) -> None:
        """rtkit's loggers write to the server's log, at the server's level."""
        server_log = self._server.log
        rtkit_log = logging.getLogger("rtkit")
        if rtkit_log.handlers or not server_log.handlers:
            return  # the application configured logging itself
        for handler in server_log.handlers:
            rtkit_log.addHandler(handler)
        rtkit_log.setLevel(server_log.getEffectiveLevel())
        rtkit_log.propagate = False

    # -- status ---------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        """The hub's status plus where its Socket.IO endpoint lives."""
        status = await self.hub.status()
        status["bridges"] = self.server_bridges.status(status["bridges"])
        status["socketio_path"] = f"{self._server.base_url}{HUB_PATH}/socket.io/"
        return status

    # -- store ----------------------------------------------------------------

    def _open_store(self) -> tuple[str, Store]:
        """The configured store, or the default SQLite file.

        SQLite allows one hub per file: an exclusive lock next to it keeps a
        second server of the same user (same data directory) from sharing it.
        That server falls back to memory when the file is the default one, and
        refuses to start rtkit when the file was configured explicitly.
        """
        url = self.store
        if not url:
            path = Path(self.data_dir) / "rtkit" / "hub.db"
            path.parent.mkdir(parents=True, exist_ok=True)
            url = f"sqlite:///{path}" if path.is_absolute() else f"sqlite:///{path.resolve()}"
            if not self._lock_file(path):
                self.log.warning(
                    "rtkit: %s is in use by another Jupyter server; this server's hub "
                    "keeps history in memory only. Set c.RtkitExtension.store to give "
                    "it a file of its own.",
                    path,
                )
                url = "memory://"
        elif url.startswith("sqlite:"):
            path = Path(str(getattr(store_from_url(url), "path", "")))
            if not self._lock_file(path):
                raise ConfigurationError(f"rtkit store {path} is in use by another process")
        url = self._with_retention(url)
        return url, store_from_url(url)

    def _with_retention(self, url: str) -> str:
        """The store URL with the retention options, unless it names its own."""
        # Not urlunsplit: it turns sqlite:////abs into sqlite://abs.
        base, _, query_string = url.partition("?")
        query = dict(parse_qsl(query_string))
        query.setdefault("max_messages", str(self.retention_max_messages))
        query.setdefault("max_age", f"{self.retention_max_age:g}")
        query.setdefault("max_bytes", str(self.retention_max_bytes))
        return f"{base}?{urlencode(query)}"

    def _lock_file(self, db: Path) -> bool:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no advisory locks here
            return True
        lock = (db.parent / f"{db.name}.lock").open("a")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            return False
        self._lock = lock
        return True

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    # -- kernels --------------------------------------------------------------

    def _jupyter_token(self) -> str | None:
        token = self._server.identity_provider.token
        return str(token) if token else None

    def kernel_environment(self, user: User | None, *, can_publish: bool = True) -> dict[str, str]:
        """RTKIT_URL and a kernel token for a kernel that acts for ``user``
        (the Jupyter user whose request starts it; else the server's user),
        with the publish right the Authorizer gives that user."""
        if user is not None:
            identity = identity_for(
                user.username,
                name=user.display_name or user.name,
                initials=user.initials,
                color=user.color,
                can_publish=can_publish,
                kind="kernel",
                max_name_chars=self.max_name_chars,
            )
        else:
            username, display = server_user()
            identity = identity_for(username, name=display, kind="kernel")
        hub_url = self.hub_url()
        return {
            "RTKIT_URL": hub_url,
            "RTKIT_TOKEN": self.kernel_tokens.mint(identity),
            # Where the kernel's client renews RTKIT_TOKEN before it expires.
            "RTKIT_TOKEN_URL": f"{hub_url.rstrip('/')}/{KERNEL_TOKEN_PATH}",
        }

    def hub_url(self) -> str:
        """The hub's URL for kernels: loopback unless configured."""
        if self.kernel_url:
            return self.kernel_url
        server = self._server
        scheme = "https" if server.certfile else "http"
        host = (server.ip or "localhost").strip("[]")
        if host in {"localhost", "0.0.0.0", "::"} or _is_loopback(host):
            # Kernels run on this machine: loopback reaches a wildcard bind too.
            host = "[::1]" if host == "::1" else "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        return f"{scheme}://{host}:{server.port}{server.base_url}{HUB_PATH}"

    def _install_kernel_env(self) -> None:
        """Add RTKIT_URL and RTKIT_TOKEN to the environment of every kernel
        this server starts (new kernels only; a restart keeps its env).

        jupyter_server offers no hook for a kernel's environment, so the
        kernel manager's ``start_kernel`` is wrapped on this one instance.
        """
        km = self._server.kernel_manager
        if self._server.sock:
            self.log.warning(
                "rtkit: the server listens on a unix socket; kernels get no RTKIT_URL "
                "unless c.RtkitExtension.kernel_url is set"
            )
            if not self.kernel_url:
                return
        start: Callable[..., Awaitable[str]] = km.start_kernel
        shutdown: Callable[..., Awaitable[Any]] = km.shutdown_kernel
        restart: Callable[..., Awaitable[Any]] = km.restart_kernel
        app = self
        tokens = self.kernel_tokens

        async def start_kernel(*args: Any, **kwargs: Any) -> str:
            kernel_id = kwargs.get("kernel_id")
            token = None
            if kernel_id is None or kernel_id not in km:
                env = dict(kwargs.get("env") or os.environ)
                handler, user = _requesting()
                # A kernel gets what its user gets from the Authorizer in a
                # browser: no token without "read", no publishing without "write".
                if user is None or await rtkit_authorized(handler, user, "read"):
                    can_publish = user is None or await rtkit_authorized(handler, user, "write")
                    env.update(app.kernel_environment(user, can_publish=can_publish))
                    token = env["RTKIT_TOKEN"]
                kwargs["env"] = env
            try:
                kernel_id = await start(*args, **kwargs)
            except BaseException:
                if token is not None:
                    tokens.revoke(token)
                raise
            if token is not None:
                tokens.bind(kernel_id, token)
            return kernel_id

        # A kernel's token ends with it: shut down (by a user or the culler,
        # which call this same method) or restarted (a new process, a new token).
        async def shutdown_kernel(kernel_id: str, *args: Any, **kwargs: Any) -> Any:
            app._revoked(tokens.revoke_kernel(kernel_id), f"kernel {kernel_id} shut down")
            return await shutdown(kernel_id, *args, **kwargs)

        async def restart_kernel(kernel_id: str, *args: Any, **kwargs: Any) -> Any:
            rotated = tokens.rotate(kernel_id)
            if rotated is not None:
                new_token, old_id = rotated
                # jupyter_client's documented way to change a kernel's env for
                # its next start (restart keeps the launch arguments).
                km.get_kernel(kernel_id).update_env(env={"RTKIT_TOKEN": new_token})
                app._revoked(old_id, f"kernel {kernel_id} restarted")
            return await restart(kernel_id, *args, **kwargs)

        # Assigning to methods is the point here (see the docstring).
        km.start_kernel = start_kernel  # type: ignore[method-assign]
        km.shutdown_kernel = shutdown_kernel  # type: ignore[method-assign]
        km.restart_kernel = restart_kernel  # type: ignore[method-assign]

    def _revoked(self, token_id: str | None, why: str) -> None:
        """End the hub connections made with a revoked kernel token."""
        if token_id is None:
            return
        ended = self.hub.disconnect_where(
            lambda identity: identity.extra.get(TOKEN_ID) == token_id,
            Unauthorized(f"the kernel token was revoked: {why}"),
        )
        self.log.info("rtkit: %s; revoked its token, ending %d connection(s)", why, ended)


def _requesting() -> tuple[Any, User | None]:
    """The request handler being run, and its Jupyter user, if any."""
    handler = CallContext.get(CallContext.JUPYTER_HANDLER)
    user = getattr(handler, "current_user", None) if handler is not None else None
    return handler, user if isinstance(user, User) else None


def _is_loopback(host: str) -> bool:
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host).is_loopback
    return False
