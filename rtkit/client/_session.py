"""The client session: one connection to the hub at a time, kept alive.

Everything the client's features share lives here, behind a small
package-internal API (the :class:`Session` methods without a leading
underscore); :mod:`.channel`, :mod:`.presence` and :mod:`.docs` use that API
and never each other's members:

- the :class:`Transport` seam, the one object that speaks Socket.IO
  (:class:`SocketIOTransport` wraps python-socketio's ``AsyncClient``; unit
  tests plug in a fake). This module is the only one that knows
  python-socketio;
- connection and supervision: a fresh transport per connection whose
  handlers carry the connection's generation (so a late event from a dead
  socket is ignored), and a supervisor task that reconnects with jittered
  exponential backoff. Socket.IO's own reconnection is off: a resume needs
  more than a new socket;
- request/ack with a time budget (:meth:`Session.request`), and a plain
  emit for the publish pump, which keeps its own window and timers;
- tokens from a token provider (:mod:`._token`): renewed before they expire
  and handed to the hub on the live connection (``auth.refresh``), fetched
  afresh before a reconnect whose token is spent, and the hub's ``revoked``
  events routed to the features (:meth:`Session.on_revoked`);
- the hub-event registry (:meth:`Session.on_event`) and the hooks features
  register for what to redo after a (re)connection, to reset when a
  connection drops, and to fail when the client stops
  (:meth:`Session.on_resume`, :meth:`Session.on_disconnect`,
  :meth:`Session.on_failure`);
- the callback dispatcher: application callbacks run one at a time, in the
  order their events arrived (:meth:`Session.dispatch`);
- task spawning into held sets, one living as long as the session, one as
  long as the current connection (:meth:`Session.spawn`).

Ack handlers and event handlers are plain functions on purpose: Engine.IO
hands every incoming packet to its own task, and only code that runs before
the first ``await`` of that task is guaranteed to see packets in arrival
order. A subscribe ack is applied (backlog included) in that window, so no
live message of the channel can overtake it.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Final, Literal, Protocol
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import orjson
import socketio

from ..errors import (
    AckTimeout,
    BadRequest,
    ClientClosed,
    ConfigurationError,
    Forbidden,
    HubError,
    InternalError,
    NotConnected,
    NotFound,
    RtkitError,
    TokenUnavailable,
    TooLarge,
    Unauthorized,
    error_for_code,
)
from ..protocol import AUTH_REFRESH, CLOSING, ERROR_CODES, NAMESPACE, REVOKED
from ._backoff import Backoff
from ._token import (
    KernelTokenSource,
    TokenProvider,
    call_provider,
    renew_at,
    token_expiry,
)
from ._url import jupyter_hub_url, redact, split_url

__all__ = [
    "STATE_EVENTS",
    "ConnectionLost",
    "HandshakeRefused",
    "Revocable",
    "Session",
    "SessionOptions",
    "SocketIOTransport",
    "StateEvent",
    "Transport",
    "TransportError",
    "TransportFactory",
    "check_ack",
    "copy_error",
    "resolve_target",
]

log = logging.getLogger(__name__)

# python-socketio and python-engineio log every packet at INFO. They get a
# logger of their own that stays at ERROR unless an application lowers it,
# so turning on INFO for "rtkit" shows rtkit's lifecycle, not the wire.
_wire_log = logging.getLogger("rtkit.client.wire")
if _wire_log.level == logging.NOTSET:
    _wire_log.setLevel(logging.ERROR)


class _RedactTokens(logging.Filter):
    """Masks credentials (``?token=``, ``Bearer ...``) in log records: the
    wire log prints URLs with their query, and rtkit's own lines name the
    hub URL."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.msg = record.getMessage()
            record.args = None
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


_wire_log.addFilter(_RedactTokens())
log.addFilter(_RedactTokens())

StateEvent = Literal["connect", "disconnect", "reconnect", "gap", "revoked", "auth_error"]
STATE_EVENTS: Final = ("connect", "disconnect", "reconnect", "gap", "revoked", "auth_error")

# Largest websocket message the client accepts: a shared document's first
# sync carries the whole document in one binary attachment.
MAX_INCOMING_MESSAGE: Final = 256 * 1024 * 1024

# Callbacks waiting to run before the client says they are falling behind.
_CALLBACK_BACKLOG_WARNING: Final = 10_000
# Resubscribes, rejoins and resyncs sent at once after a reconnect: the hub
# answers more than its in-flight cap (32 by default) with rate_limited.
_RESUME_CONCURRENCY: Final = 8


# -- the transport seam -------------------------------------------------------


class TransportError(ConnectionError):
    """The transport cannot send: its connection is going away."""


class HandshakeRefused(TransportError):
    """The server answered the websocket handshake with an HTTP status
    (401/403: authentication, 404: no hub at that path, ...)."""

    def __init__(self, status: int, server: str = "") -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.server = server
        # The URL of the Jupyter server found along the URL's path, if any.
        self.jupyter_base: str | None = None


class _PassingRefusal(Unauthorized):
    """HTTP 401 at the handshake: Unauthorized to the caller of connect(),
    retried by the reconnect loop (it may be a hub's passing cap)."""


# Jupyter servers probed along a refused URL's path, at most.
_MAX_PROBES: Final = 6


async def _find_jupyter(url: str, budget: float) -> str | None:
    """The base URL of a Jupyter server that ``url`` points into, found by
    asking each prefix of its path for Jupyter's public ``api`` endpoint;
    None if none answers like Jupyter. Only after a refused handshake, to
    say which URL would have worked."""
    parts = urlsplit(url.strip())
    segments = [s for s in parts.path.split("/") if s]
    origin = urlunsplit((parts.scheme.replace("ws", "http", 1), parts.netloc, "", "", ""))
    prefixes = [segments[:k] for k in range(len(segments), -1, -1)][:_MAX_PROBES]
    try:
        async with (
            asyncio.timeout(min(budget, 5.0)),
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0)) as http,
        ):
            for prefix in prefixes:
                base = "/".join(["", *prefix, ""])
                async with http.get(f"{origin}{base}api", allow_redirects=False) as resp:
                    if resp.status != 200 or resp.content_type != "application/json":
                        continue
                    body = await resp.json()
                    if isinstance(body, dict) and "version" in body:
                        return f"{origin}{base}"
    except (TimeoutError, aiohttp.ClientError, ValueError):
        pass
    return None


def _handshake_error(exc: BaseException) -> aiohttp.WSServerHandshakeError | None:
    """The HTTP answer behind a failed connect, if there was one.

    python-engineio raises a bare ``ConnectionError("Connection error")``
    from inside its ``except`` of aiohttp's handshake error, so the latter
    is on the chain (``__context__``);
    tests/integration/test_connect_errors.py relies on that fact (a 404 and
    a 403 from real servers)."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(seen, aiohttp.WSServerHandshakeError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


class Transport(Protocol):
    """One Socket.IO connection on the ``/rtkit`` namespace, as the session uses it.

    A transport is used for one connection attempt and thrown away with it.
    ``emit`` raises :class:`TransportError` when the connection is going
    away, and ``TypeError``/``ValueError`` for a payload it cannot encode.
    """

    @property
    def connected(self) -> bool: ...

    def on(self, event: str, handler: Callable[..., Any]) -> None:
        """Call ``handler(*args)`` for each ``event`` from the hub (also
        ``"connect_error"`` and ``"disconnect"``)."""

    async def connect(
        self, origin: str, *, auth: dict[str, str], headers: dict[str, str], path: str
    ) -> None:
        """Connect, or raise why not."""

    async def emit(self, event: str, payload: Any, callback: Callable[..., None]) -> None:
        """Send ``event``; the hub's ack arrives as ``callback(*args)``."""

    async def disconnect(self) -> None:
        """Close the connection (also after a failed connect)."""


TransportFactory = Callable[[float], Transport]
"""Makes a transport for one connection attempt, given the connect timeout."""


class _WireJSON:
    """The ``json`` interface python-socketio's packets use: the standard
    library's ``dumps`` (what the client sends stays exactly as before) and
    orjson's ``loads``. Every message a subscriber receives is decoded here,
    and orjson does it several times faster than the standard library. The
    hub writes its packets with orjson, so whatever it sends reads back
    the same."""

    dumps = staticmethod(json.dumps)

    @staticmethod
    def loads(data: str | bytes, **_: Any) -> Any:
        return orjson.loads(data)


class _Packet(socketio.packet.Packet):  # type: ignore[misc]
    """python-socketio's packet, decoding with :class:`_WireJSON`; passed as
    ``serializer=``, so it applies to this client's connections only."""

    json = _WireJSON


class SocketIOTransport:
    """:class:`Transport` on python-socketio's ``AsyncClient``."""

    def __init__(self, connect_timeout: float) -> None:
        self._timeout = connect_timeout
        self._sio = socketio.AsyncClient(
            reconnection=False,
            handle_sigint=False,
            serializer=_Packet,
            websocket_extra_options={"max_msg_size": MAX_INCOMING_MESSAGE},
            logger=_wire_log,
            engineio_logger=_wire_log,
            request_timeout=connect_timeout,
        )

    @property
    def connected(self) -> bool:
        return bool(self._sio.connected)

    @property
    def sid(self) -> str | None:
        """The hub's id of this connection (Socket.IO's namespace sid)."""
        sid = self._sio.get_sid(NAMESPACE)
        return sid if isinstance(sid, str) else None

    def on(self, event: str, handler: Callable[..., Any]) -> None:
        self._sio.on(event, handler, namespace=NAMESPACE)

    async def connect(
        self, origin: str, *, auth: dict[str, str], headers: dict[str, str], path: str
    ) -> None:
        try:
            await self._sio.connect(
                origin,
                auth=auth,
                headers=headers,
                transports=["websocket"],
                namespaces=[NAMESPACE],
                socketio_path=path,
                wait_timeout=self._timeout,
            )
        except socketio.exceptions.ConnectionError as exc:
            answer = _handshake_error(exc)
            if answer is None:
                raise
            server = answer.headers.get("Server", "") if answer.headers else ""
            raise HandshakeRefused(answer.status, server) from None

    async def emit(self, event: str, payload: Any, callback: Callable[..., None]) -> None:
        try:
            await self._sio.emit(event, payload, namespace=NAMESPACE, callback=callback)
        except socketio.exceptions.SocketIOError as exc:
            raise TransportError(str(exc)) from exc

    async def disconnect(self) -> None:
        await self._sio.disconnect()
        # After a transport error python-engineio resets its state but
        # leaves the aiohttp websocket open (a ResourceWarning later).
        ws = getattr(self._sio.eio, "ws", None)
        if ws is not None and not ws.closed:
            await ws.close()


# -- configuration and small shared pieces ------------------------------------


@dataclass(frozen=True, slots=True)
class SessionOptions:
    """The checked form of :class:`rtkit.aio.ConnectOptions`."""

    ack_timeout: float = 10.0
    connect_timeout: float = 10.0
    max_offline_queue: int = 10_000
    reconnect_delay: float = 0.25
    reconnect_delay_max: float = 10.0
    max_in_flight: int = 256
    max_publish_rate: float = 950.0

    def __post_init__(self) -> None:
        if not self.ack_timeout > 0 or not self.connect_timeout > 0:
            raise ConfigurationError("ack_timeout and connect_timeout must be positive")
        if self.max_offline_queue < 1 or self.max_in_flight < 1:
            raise ConfigurationError("max_offline_queue and max_in_flight must be at least 1")
        if not self.max_publish_rate >= 0:
            raise ConfigurationError("max_publish_rate must be >= 0 (0: no pacing)")


class ConnectionLost(NotConnected):
    """The connection dropped before the hub answered (internal signal)."""


class Revocable(Protocol):
    """Whatever a dispatched callback belongs to; once inactive, it is skipped."""

    active: bool


TokenSource = str | TokenProvider
"""A token, or a callable that returns a fresh one (see :mod:`._token`)."""


def resolve_target(url: str | None, token: TokenSource | None) -> tuple[str, TokenSource | None]:
    """The hub URL and token: the arguments, else ``$RTKIT_URL``/``$RTKIT_TOKEN``."""
    if url is None:
        url = os.environ.get("RTKIT_URL") or None
        if url is None:
            raise ConfigurationError(
                "no hub URL: pass rtkit.connect(url=...) or set RTKIT_URL. "
                "To start a hub on this machine run `rtkit hub --allow-anonymous` "
                "and connect to http://127.0.0.1:8765"
            )
    if token is None:
        token = os.environ.get("RTKIT_TOKEN") or None
        renew_url = os.environ.get("RTKIT_TOKEN_URL")
        if token is not None and renew_url:
            # A kernel started by Jupyter with rtkit's extension: its token
            # is renewed there before it expires.
            return url, KernelTokenSource(token, renew_url)
    if callable(token):
        return url, token
    if token is not None and not isinstance(token, str):
        raise ConfigurationError(
            f"token must be a string or a callable that returns one, got {type(token).__name__}"
        )
    return url, token or None


def check_ack(event: str, args: tuple[Any, ...]) -> dict[str, Any]:
    """The ``ok`` ack among an ack callback's ``args``; raises the hub's refusal."""
    ack = args[0] if args else None
    if not isinstance(ack, dict):
        raise InternalError(f"{event}: the hub sent a malformed answer: {ack!r:.200}")
    if ack.get("ok") is True:
        return ack
    err = ack.get("error")
    if not isinstance(err, dict):
        raise InternalError(f"{event}: the hub refused without saying why")
    code = err.get("code")
    raise error_for_code(str(code), str(err.get("message") or code))


def copy_error(exc: RtkitError) -> RtkitError:
    """A fresh instance of ``exc`` (raising one instance twice chains tracebacks)."""
    if isinstance(exc, HubError):
        return error_for_code(exc.code, exc.message)
    return type(exc)(*exc.args)


def _callable_name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


def _log_callback_error(fn: Callable[..., Any]) -> None:
    # An application bug must not stop delivery to anyone else.
    log.exception("rtkit: callback %s raised; the client carries on", _callable_name(fn))


async def _invoke_awaitable(fn: Callable[..., Any], result: Awaitable[Any]) -> None:
    try:
        await result
    except Exception:
        _log_callback_error(fn)


def _log_crash(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("rtkit: internal task %s crashed", task.get_name(), exc_info=task.exception())


def _call_each(
    fn: Callable[[Any], Any], items: list[Any], owner: Revocable | None
) -> Awaitable[None] | None:
    """``fn(item)`` for each item in turn while ``owner`` is active; an
    awaitable result is awaited before the next item (then the rest runs
    in the coroutine returned)."""
    pending, rest = _call_until_awaitable(fn, items, owner)
    return None if pending is None else _call_rest(fn, pending, rest, owner)


async def _call_rest(
    fn: Callable[[Any], Any], pending: Awaitable[Any], items: list[Any], owner: Revocable | None
) -> None:
    next_up: Awaitable[Any] | None = pending
    while next_up is not None:
        await _invoke_awaitable(fn, next_up)
        next_up, items = _call_until_awaitable(fn, items, owner)


def _call_until_awaitable(
    fn: Callable[[Any], Any], items: list[Any], owner: Revocable | None
) -> tuple[Awaitable[Any] | None, list[Any]]:
    """Call ``fn`` on the items until one returns an awaitable: that, and
    the items after it (None and [] once all ran or ``owner`` ended)."""
    for index, item in enumerate(items):
        if owner is not None and not owner.active:
            break
        try:
            result = fn(item)
        except Exception:
            _log_callback_error(fn)
            continue
        if result is not None and inspect.isawaitable(result):
            return result, items[index + 1 :]
    return None, []


# fn, its arguments, the owner it runs for, and how many callbacks it stands for.
_Call = tuple[Callable[..., Any], tuple[Any, ...], Revocable | None, int]


# -- the session --------------------------------------------------------------


class Session:
    """One hub, one connection at a time, and the hooks that resume over it.

    Made (not opened) by :class:`rtkit.aio.Client`; features register their
    event handlers and hooks before :meth:`open`. Everything runs on the
    event loop that opened it.
    """

    def __init__(
        self,
        url: str,
        token: TokenSource | None,
        options: SessionOptions,
        transport_factory: TransportFactory = SocketIOTransport,
    ) -> None:
        # With a provider, the token is the provider's latest (fetched on open).
        self._provider: TokenProvider | None = None
        if callable(token):
            self._provider, token = token, None
        self.token: str | None = token
        self._token_at = time.time()  # when self.token arrived
        self._token_version = 0  # bumped with every new token
        self.token_refreshes = 0
        """Tokens handed to the hub on a live connection (``auth.refresh``)."""
        self._revoke_hooks: dict[str, Callable[[str], None]] = {}
        self.origin, self.path = split_url(url)
        self._target = url
        self.url = redact(url, token)
        """The hub URL as shown in messages and logs: credentials masked."""
        self.options = options
        self.backoff = Backoff(options.reconnect_delay, options.reconnect_delay_max)
        self._new_transport = transport_factory
        self._transport: Transport | None = None  # of the current connection
        self._event_handlers: dict[str, Callable[[Any], None]] = {}
        self._resume_hooks: list[Callable[[], None]] = []
        self._disconnect_hooks: list[Callable[[], None]] = []
        self._failure_hooks: list[Callable[[RtkitError], None]] = []
        self._state_callbacks: dict[str, list[Callable[..., Any]]] = {e: [] for e in STATE_EVENTS}
        self._inflight: set[asyncio.Future[dict[str, Any]]] = set()  # requests
        self._resuming = asyncio.Semaphore(_RESUME_CONCURRENCY)
        self._generations = itertools.count(1)
        self._generation = 0
        self._connected = False
        self._state: Literal["new", "opening", "open", "closed"] = "new"
        self._failure: RtkitError | None = None
        # Why the hub said it was ending the current connection (CLOSING).
        self._closing: RtkitError | None = None
        self._tasks: set[asyncio.Task[Any]] = set()  # live as long as the session
        self._conn_tasks: set[asyncio.Task[Any]] = set()  # live as long as a connection
        # Callbacks to run, in order. A deque and an event rather than an
        # asyncio.Queue: a fast channel puts one here per message and
        # subscriber, and the queue's bookkeeping was most of that cost.
        self._calls: deque[_Call] = deque()
        self._calls_waiting = asyncio.Event()
        self._backlog_warn_at = _CALLBACK_BACKLOG_WARNING
        self._queued_calls = 0  # callbacks the entries of _calls stand for
        self._online = asyncio.Event()
        self._lost = asyncio.Event()
        self.reconnects = 0
        self._event_handlers[REVOKED] = self._on_revoked

    # -- state ------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while a connection to the hub is up."""
        return self._connected

    @property
    def state(self) -> str:
        """``"new"``, ``"opening"``, ``"open"`` or ``"closed"``."""
        return self._state

    @property
    def sid(self) -> str | None:
        """The hub's id of the current connection (None while disconnected)."""
        transport = self._transport
        sid = getattr(transport, "sid", None) if self._connected else None
        return sid if isinstance(sid, str) else None

    @property
    def generation(self) -> int:
        """Which connection is current; it changes with every (re)connection."""
        return self._generation

    def check_usable(self) -> None:
        """Raise why the session cannot be used now (closed, failed, not open)."""
        if self._failure is not None:
            raise copy_error(self._failure)
        if self._state == "closed":
            raise ClientClosed("this client is closed; create a new one with rtkit.connect()")
        if self._state != "open":
            raise RuntimeError(
                "this client is not open yet: use `await rtkit.aio.connect(...)` "
                "or `async with rtkit.aio.Client(...)`"
            )

    async def wait_connected(self) -> None:
        """Return once connected; raise instead when the session stops."""
        while not self._connected:
            self.check_usable()
            await self._online.wait()
            self.check_usable()

    # -- registration -------------------------------------------------------

    def on_event(self, event: str, handler: Callable[[Any], None]) -> None:
        """Route the hub's ``event`` to ``handler(payload)``, on every connection.

        The handler runs in the packet's own handler, before later packets."""
        self._event_handlers[event] = handler

    def on_resume(self, hook: Callable[[], None]) -> None:
        """Call ``hook()`` after every (re)connection, in registration order."""
        self._resume_hooks.append(hook)

    def on_disconnect(self, hook: Callable[[], None]) -> None:
        """Call ``hook()`` when a connection drops (before the reconnect starts)."""
        self._disconnect_hooks.append(hook)

    def on_failure(self, hook: Callable[[RtkitError], None]) -> None:
        """Call ``hook(exc)`` when the session stops: closed, or refused for good."""
        self._failure_hooks.append(hook)

    def on_revoked(self, kind: str, hook: Callable[[str], None]) -> None:
        """Call ``hook(name)`` when the hub ends a ``kind`` ("channel", "room",
        "doc") of this connection because a refreshed token no longer grants it."""
        self._revoke_hooks[kind] = hook

    def on_state(self, event: str, callback: Callable[..., Any]) -> None:
        """Dispatch ``callback`` on a connection event (see :data:`STATE_EVENTS`)."""
        if event not in self._state_callbacks:
            raise ConfigurationError(
                f"unknown event {event!r}; use one of {', '.join(STATE_EVENTS)}"
            )
        self._state_callbacks[event].append(callback)

    def off_state(self, event: str, callback: Callable[..., Any]) -> None:
        """Undo :meth:`on_state`; unknown callbacks are ignored."""
        callbacks = self._state_callbacks.get(event)
        if callbacks is not None and callback in callbacks:
            callbacks.remove(callback)

    # -- lifecycle ----------------------------------------------------------

    async def open(self) -> None:
        """Connect once; later disconnects reconnect on their own."""
        if self._state != "new":
            raise RuntimeError(f"this client is already {self._state}; open() runs once")
        self._state = "opening"
        try:
            if self._provider is not None:
                self._set_token(await call_provider(self._provider, self.options.connect_timeout))
            await self._connect_once()
        except BaseException:
            self._state = "closed"
            raise
        if self._closed():  # close() ran while we were connecting
            transport, self._transport = self._transport, None
            self._connected = False
            await self._dispose(transport)
            raise ClientClosed("the client was closed while connecting")
        self._state = "open"
        self.spawn(self._supervise(), "supervisor")
        self.spawn(self._run_callbacks(), "callbacks")
        if self._provider is not None:
            self.spawn(self._renew_tokens(), "token-renewal")
        log.info("rtkit: connected to %s", self.url)

    def start(self) -> None:
        """Run the resume hooks for the first connection (after :meth:`open`
        and after the features started their own tasks)."""
        self._after_connect(attempts=0)

    async def close(self) -> None:
        """Disconnect and stop; idempotent. Pending work fails with ClientClosed."""
        if self._state == "closed":
            return
        was_open = self._state == "open"
        self._state = "closed"
        self._connected = False
        self._online.set()  # wake waiters so they see the session is closed
        current = asyncio.current_task()
        tasks = [t for t in (*self._tasks, *self._conn_tasks) if t is not current]
        for task in tasks:
            task.cancel()
        self._fail_pending(ClientClosed("the client was closed before the hub acked"))
        transport, self._transport = self._transport, None
        await self._dispose(transport)
        await asyncio.gather(*tasks, return_exceptions=True)
        if was_open:
            log.info("rtkit: closed the connection to %s", self.url)

    def auth(self) -> dict[str, str]:
        """The Socket.IO ``auth`` payload of the handshake."""
        return {"token": self.token} if self.token else {}

    def headers(self) -> dict[str, str]:
        """The handshake's HTTP headers."""
        # The token also goes in the handshake's Authorization header: a hub
        # inside jupyter-server authenticates the HTTP request itself (a
        # Jupyter token or a kernel token) before any Socket.IO packet.
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def connect_failure(self, refusals: list[Any], exc: Exception) -> RtkitError:
        """The error for a failed connect: the hub's refusal, else unreachable."""
        detail = str(exc) or type(exc).__name__
        for data in refusals:
            if not isinstance(data, dict):
                continue
            # {"code", "message"} per the protocol; python-socketio's
            # ConnectionRefusedError nests extra data under "data".
            inner = data.get("data")
            body = inner if isinstance(inner, dict) and "code" in inner else data
            code = body.get("code")
            message = str(body.get("message") or data.get("message") or "connection refused")
            if isinstance(code, str) and code in ERROR_CODES:
                return error_for_code(code, message)
            # A namespace refusal without a code is the hub's connect handler
            # saying no: an authentication decision.
            return Unauthorized(message)
        if isinstance(exc, HandshakeRefused):
            return self._http_refusal(exc)
        if isinstance(exc, TimeoutError):
            detail = f"no answer within {self.options.connect_timeout} s"
        hint = jupyter_hub_url(self._target)
        if hint is not None:
            detail += f"; that URL is a Jupyter page, rtkit's hub is at {hint}"
        return NotConnected(
            f"cannot connect to the rtkit hub at {self.url} ({redact(detail, self.token)}). "
            "Is it running? Start one with `rtkit hub --allow-anonymous`, "
            "or point RTKIT_URL at a running hub"
        )

    def _http_refusal(self, exc: HandshakeRefused) -> RtkitError:
        """The error for an HTTP answer instead of a websocket, with the fix."""
        status = exc.status
        hint = jupyter_hub_url(self._target)
        if exc.jupyter_base is not None:
            hint = exc.jupyter_base + "rtkit"
        if hint is not None and hint.rstrip("/") == self._target.split("?")[0].rstrip("/"):
            hint = None  # the URL is the hub's already: its path is not the trouble
        where = f"the server at {self.url} answered HTTP {status}"
        keep = " (with the same token)" if self.token or "token=" in self._target else ""
        page = f"; this is a Jupyter server, its rtkit hub is at {hint}{keep}" if hint else ""
        if status in (401, 403):
            message = (
                f"{where}: the token is missing or not accepted{page}. Inside Jupyter, "
                "kernels get RTKIT_URL and RTKIT_TOKEN from the server (restart a kernel "
                "started before rtkit was installed); from elsewhere pass the Jupyter "
                "server's token: rtkit.connect(url, token=...), RTKIT_TOKEN, or ?token=... "
                "in the URL (`jupyter server list` shows it). A standalone hub wants a "
                "token from `rtkit token`"
            )
            if status == 401:
                return _PassingRefusal(
                    message + " (a standalone hub also answers 401 for a moment when too "
                    "many connections from one address are opening: --max-pending-per-address)"
                )
            return Unauthorized(message)
        if hint is not None:
            return ConfigurationError(f"{where}{page}")
        if status == 404:
            return ConfigurationError(
                f"{where} (not found): no rtkit hub at that path. A standalone hub "
                "(`rtkit hub`) is at its root, e.g. http://127.0.0.1:8765; inside "
                "Jupyter it is at the server's URL plus /rtkit, e.g. "
                "http://127.0.0.1:8888/rtkit (`jupyter server list` shows the server's URL)"
            )
        return NotConnected(
            f"{where} instead of opening rtkit's websocket: is this an rtkit hub? "
            "(a proxy in between must pass websocket upgrades)"
        )

    async def _connect_once(self) -> None:
        gen = next(self._generations)
        refusals: list[Any] = []
        timeout = self.options.connect_timeout
        transport = self._new_transport(timeout)
        transport.on("connect_error", lambda *args: refusals.extend(args))
        transport.on("disconnect", partial(self._on_transport_disconnect, gen))
        transport.on(CLOSING, partial(self._on_closing, gen))
        for event, handler in self._event_handlers.items():
            transport.on(event, partial(self._on_transport_event, gen, handler))
        try:
            async with asyncio.timeout(timeout):
                await transport.connect(
                    self.origin, auth=self.auth(), headers=self.headers(), path=self.path
                )
            if not transport.connected:
                raise TransportError("the connection dropped at once")
        except Exception as exc:
            await self._dispose(transport)
            if isinstance(exc, HandshakeRefused) and exc.status != 200:
                exc.jupyter_base = await _find_jupyter(self._target, self.options.connect_timeout)
            raise self.connect_failure(refusals, exc) from None
        except BaseException:
            await self._dispose(transport)
            raise
        self._transport = transport
        self._generation = gen
        self._closing = None
        self._connected = True
        self._online.set()

    async def _dispose(self, transport: Transport | None) -> None:
        if transport is None:
            return
        try:
            async with asyncio.timeout(self.options.connect_timeout):
                await transport.disconnect()
        except Exception:
            log.debug("rtkit: error while closing a socket", exc_info=True)

    def _on_transport_event(self, gen: int, handler: Callable[[Any], None], *args: Any) -> None:
        if gen != self._generation or not self._connected:
            return  # a late packet from a connection we already gave up on
        try:
            handler(args[0] if args else None)
        except Exception:
            log.exception("rtkit: error while handling a hub event")

    def _on_closing(self, gen: int, *args: Any) -> None:
        body = args[0] if args else None
        if gen == self._generation and isinstance(body, dict) and body.get("code") in ERROR_CODES:
            self._closing = error_for_code(body["code"], str(body.get("message") or "closing"))

    def _on_transport_disconnect(self, gen: int, *args: Any) -> None:
        if gen != self._generation or not self._connected or self._state != "open":
            return
        reason = str(args[0]) if args else "unknown reason"
        if self._closing is not None:
            reason = f"{reason}: {self._closing}"  # the hub said why (CLOSING)
        self._connection_lost(reason)

    def _connection_lost(self, reason: str) -> None:
        self._connected = False
        self._online.clear()
        for hook in self._disconnect_hooks:
            hook()
        for fut in self._inflight:
            if not fut.done():
                fut.set_exception(ConnectionLost("the connection dropped before the hub answered"))
        for task in self._conn_tasks:
            task.cancel()
        log.warning("rtkit: lost the connection to %s (%s); reconnecting", self.url, reason)
        self.emit_state("disconnect", reason)
        self._lost.set()

    async def _supervise(self) -> None:
        while True:
            await self._lost.wait()
            self._lost.clear()
            old, self._transport = self._transport, None
            await self._dispose(old)
            # The hub ended the connection because its token expired or was
            # revoked: reconnecting with the same token cannot help, a fresh
            # one from the provider can.
            stale = isinstance(self._closing, Unauthorized)
            if stale and self._provider is None:
                assert self._closing is not None
                self._stop_for_good(self._closing)
                return
            attempt = 0
            while True:
                await asyncio.sleep(self.backoff.delay(attempt))
                attempt += 1
                if self._provider is not None and (stale or self._token_spent()):
                    try:
                        self._set_token(
                            await call_provider(self._provider, self.options.connect_timeout)
                        )
                    except TokenUnavailable as exc:
                        self._auth_error(exc)
                        continue
                    stale = False
                try:
                    await self._connect_once()
                except _PassingRefusal as exc:
                    # HTTP 401 is also a hub's cap on connections of one
                    # address still completing their handshake: it passes.
                    log.info("rtkit: reconnect attempt %d refused: %s", attempt, exc)
                    continue
                except Unauthorized as exc:
                    if self._provider is not None:
                        # The provider may have a better token next time.
                        self._auth_error(exc)
                        stale = True
                        continue
                    # A token the hub rejects will not improve by retrying.
                    # (Forbidden is retried: "too many connections" lasts only
                    # until the hub notices the connection that just died.)
                    self._stop_for_good(exc)
                    return
                except RtkitError as exc:
                    level = logging.INFO if attempt == 1 or attempt % 20 == 0 else logging.DEBUG
                    log.log(level, "rtkit: reconnect attempt %d failed: %s", attempt, exc)
                    continue
                break
            self.reconnects += 1
            log.info("rtkit: reconnected to %s after %d attempt(s)", self.url, attempt)
            self._after_connect(attempts=attempt)

    # -- tokens -------------------------------------------------------------

    def _set_token(self, token: str) -> None:
        self.token = token
        self._token_at = time.time()
        self._token_version += 1

    def _token_spent(self) -> bool:
        """True when the current token is past the time to renew it."""
        if self.token is None:
            return True
        at = renew_at(self.token, self._token_at)
        return at is not None and time.time() >= at

    def _auth_error(self, exc: RtkitError) -> None:
        log.warning("rtkit: could not renew the token for %s: %s; retrying", self.url, exc)
        self.emit_state("auth_error", exc)

    async def _renew_tokens(self) -> None:
        """Before each token runs out, get the next from the provider and
        hand it to the hub on the live connection (``auth.refresh``); while
        disconnected, keep it for the reconnect. Failures are retried with
        backoff and reported as ``auth_error``; a token that runs out
        meanwhile ends the connection, and the reconnect asks again."""
        assert self._provider is not None
        while True:
            token, version = self.token, self._token_version
            at = renew_at(token, self._token_at) if token is not None else None
            if token is None or at is None:
                return  # a token without an expiry: nothing to renew
            await asyncio.sleep(max(0.0, at - time.time()))
            attempt = 0
            # Until renewed here, or by a reconnect that fetched its own.
            while self._token_version == version:
                try:
                    await self._renew_once(token, version)
                except ClientClosed:
                    return
                except (TokenUnavailable, HubError, AckTimeout, NotConnected) as exc:
                    if self._token_version != version:
                        break
                    self._auth_error(exc)
                    await asyncio.sleep(self.backoff.delay(attempt))
                    attempt += 1

    async def _renew_once(self, current: str, version: int) -> None:
        assert self._provider is not None
        fresh = await call_provider(self._provider, self.options.connect_timeout)
        if self._token_version != version:
            return  # a reconnect fetched one meanwhile
        old_expiry, new_expiry = token_expiry(current), token_expiry(fresh)
        if old_expiry is not None and (new_expiry is None or new_expiry <= old_expiry):
            raise TokenUnavailable(
                "the token source returned a token that expires no later than the current one"
            )
        if self._connected:
            try:
                await self.request(AUTH_REFRESH, {"token": fresh}, wait=False)
            except ConnectionLost:
                pass  # the reconnect uses the fresh token
            except BadRequest as exc:
                # A hub that takes no refresh (an older one, or one that
                # verifies no tokens): it ends the connection at expiry, and
                # the reconnect presents the fresh token.
                log.warning(
                    "rtkit: %s does not take a fresh token on a live connection: %s", self.url, exc
                )
            else:
                self.token_refreshes += 1
        self._set_token(fresh)
        log.debug("rtkit: renewed the token for %s", self.url)

    def _on_revoked(self, payload: Any) -> None:
        if not isinstance(payload, dict):
            return
        kind, name = payload.get("kind"), payload.get("name")
        code = payload.get("code")
        if not isinstance(kind, str) or not isinstance(name, str):
            return
        error = error_for_code(
            code if isinstance(code, str) and code in ERROR_CODES else "forbidden",
            str(payload.get("message") or f"{kind} {name!r} is no longer granted"),
        )
        log.warning("rtkit: the hub ended %s %r: %s", kind, name, error)
        hook = self._revoke_hooks.get(kind)
        if hook is not None:
            hook(name)
        self.emit_state("revoked", kind, name, error)

    def _after_connect(self, attempts: int) -> None:
        for hook in self._resume_hooks:
            hook()
        if attempts:
            self.emit_state("connect")
            self.emit_state("reconnect", attempts)

    def _stop_for_good(self, exc: RtkitError) -> None:
        log.error("rtkit: the hub at %s refused to reconnect: %s; giving up", self.url, exc)
        self._failure = exc
        self._online.set()  # wake waiters so they see the failure
        self._fail_pending(exc)

    def _fail_pending(self, exc: RtkitError) -> None:
        for hook in self._failure_hooks:
            hook(exc)
        for fut in self._inflight:
            if not fut.done():
                fut.set_exception(copy_error(exc))

    def _closed(self) -> bool:
        # A method, not an inline comparison: another task may close the
        # session across an await, which type narrowing of ``_state`` cannot know.
        return self._state == "closed"

    # -- tasks --------------------------------------------------------------

    def spawn(self, coro: Awaitable[Any], name: str, *, per_connection: bool = False) -> None:
        """Run ``coro`` as a task held by the session (cancelled on close), or
        with ``per_connection`` by the current connection (cancelled when it drops)."""
        task = asyncio.ensure_future(coro)
        task.set_name(f"rtkit-{name}")
        holder = self._conn_tasks if per_connection else self._tasks
        holder.add(task)
        task.add_done_callback(holder.discard)
        task.add_done_callback(_log_crash)

    # -- requests -----------------------------------------------------------

    async def emit(self, event: str, payload: Any, callback: Callable[..., None]) -> None:
        """Send ``event`` on the current connection, the ack going to ``callback``.

        Raises :class:`TransportError` when there is no usable connection,
        ``TypeError``/``ValueError`` when the payload cannot be encoded.
        """
        transport = self._transport
        if transport is None:
            raise TransportError(f"{event}: not connected to {self.url}")
        await transport.emit(event, payload, callback)

    async def request(
        self,
        event: str,
        payload: dict[str, Any],
        *,
        on_ack: Callable[[dict[str, Any]], None] | None = None,
        wait: bool = True,
    ) -> dict[str, Any]:
        """Send one event and return its ``ok`` ack; raise its error otherwise.

        ``on_ack`` runs inside the ack handler, before any packet that arrived
        after the ack is handled. With ``wait`` the request waits for a
        connection and is sent again if one drops, all within ``ack_timeout``;
        without, it raises :class:`ConnectionLost` instead.
        """
        loop = asyncio.get_running_loop()
        timeout = self.options.ack_timeout
        deadline = loop.time() + timeout
        while True:
            self.check_usable()
            if not self._connected:
                if not wait:
                    raise ConnectionLost(f"{event}: not connected to {self.url}")
                try:
                    async with asyncio.timeout_at(deadline):
                        await self._online.wait()
                except TimeoutError:
                    raise NotConnected(
                        f"{event}: not connected to {self.url} (still reconnecting)"
                    ) from None
                continue
            fut: asyncio.Future[dict[str, Any]] = loop.create_future()
            self._inflight.add(fut)
            try:
                await self.emit(event, payload, partial(self._on_request_ack, fut, event, on_ack))
                async with asyncio.timeout_at(deadline):
                    return await fut
            except TimeoutError:
                raise AckTimeout(f"{event}: the hub did not answer within {timeout} s") from None
            except ConnectionLost:
                if not wait:
                    raise
            except TransportError as exc:
                # The socket is going away; its disconnect event is on its way.
                if not wait:
                    raise ConnectionLost(f"{event}: {exc}") from None
                await asyncio.sleep(0.05)
            finally:
                self._inflight.discard(fut)

    def _on_request_ack(
        self,
        fut: asyncio.Future[dict[str, Any]],
        event: str,
        on_ack: Callable[[dict[str, Any]], None] | None,
        *args: Any,
    ) -> None:
        if fut.done():
            return
        try:
            ack = check_ack(event, args)
            if on_ack is not None:
                on_ack(ack)
        except RtkitError as exc:
            fut.set_exception(exc)
        except Exception as exc:
            fut.set_exception(InternalError(f"{event}: could not use the hub's answer: {exc!r}"))
        else:
            fut.set_result(ack)

    async def resume(
        self,
        request: Callable[[], Awaitable[Any]],
        what: str,
        *,
        active: Callable[[], bool],
        on_refused: Callable[[], None] | None = None,
    ) -> None:
        """Send a resubscribe, rejoin or resync request after a reconnect,
        retrying what may pass later, for as long as ``active()`` (a room
        left or a document closed meanwhile is not joined or synced again)."""
        attempt = 0
        while active():
            try:
                async with self._resuming:
                    if not active():
                        return
                    await request()
                return
            except ConnectionLost:
                return  # the next connection tries again
            except (Unauthorized, Forbidden, BadRequest, NotFound, TooLarge) as exc:
                log.error("rtkit: the hub refused to %s: %s", what, exc)
                if on_refused is not None:
                    on_refused()
                return
            except (AckTimeout, HubError) as exc:
                log.warning("rtkit: could not %s (%s); retrying", what, exc)
                await asyncio.sleep(self.backoff.delay(attempt))
                attempt += 1

    # -- callbacks ----------------------------------------------------------

    def dispatch(
        self, fn: Callable[..., Any], args: tuple[Any, ...], owner: Revocable | None = None
    ) -> None:
        """Queue ``fn(*args)`` behind every callback queued before it; skipped
        if ``owner`` is no longer active when its turn comes."""
        self._queue_call((fn, args, owner, 1))

    def dispatch_each(
        self, fn: Callable[[Any], Any], items: list[Any], owner: Revocable | None = None
    ) -> None:
        """:meth:`dispatch` of ``fn(item)`` for each item, in order, as one
        entry: a fast channel's run of messages costs the queue once."""
        if len(items) == 1:
            self._queue_call((fn, (items[0],), owner, 1))
        elif items:
            self._queue_call((_call_each, (fn, items, owner), None, len(items)))

    def _queue_call(self, call: _Call) -> None:
        calls = self._calls
        calls.append(call)
        if len(calls) == 1:
            self._calls_waiting.set()
        self._queued_calls = backlog = self._queued_calls + call[3]
        if backlog >= self._backlog_warn_at:
            log.warning(
                "rtkit: %d callbacks are waiting to run: callbacks are slower than "
                "the messages arriving (memory grows until they catch up)",
                backlog,
            )
            self._backlog_warn_at = backlog * 2

    def emit_state(self, event: str, *args: Any) -> None:
        """Dispatch the callbacks registered for a connection event."""
        for callback in self._state_callbacks[event]:
            self.dispatch(callback, args)

    async def _run_callbacks(self) -> None:
        calls = self._calls
        while self._state == "open":
            if not calls:
                self._calls_waiting.clear()
                await self._calls_waiting.wait()
                continue
            fn, args, owner, weight = calls.popleft()
            self._queued_calls -= weight
            if not calls:
                self._backlog_warn_at = _CALLBACK_BACKLOG_WARNING
            if owner is None or owner.active:
                # A plain function runs here; only a coroutine costs a task step.
                try:
                    result = fn(*args)
                except Exception:
                    _log_callback_error(fn)
                else:
                    if result is not None and inspect.isawaitable(result):
                        await _invoke_awaitable(fn, result)
            # Idle here, hold no callback: an unsubscribed one (a closed
            # frame() view, say) is then free to go.
            del fn, args, owner
