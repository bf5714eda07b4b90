"""The hub's server HTTP API: publish, history, channels, presence and
disconnect for services that cannot hold a Socket.IO connection.

The core here knows no web framework: a host turns a request into
:class:`HttpRequest`, calls :meth:`HttpApi.handle` and writes the
:class:`HttpResponse` back (``rtkit.hosts.aiohttp`` under ``/api/``, the
Jupyter extension under ``{base_url}rtkit/api/``). Every request goes
through the hub's own request handlers (``Hub._publish``, ``Hub._history``,
presence's ``list``), so checks, limits, idempotency and order are those of
the wire. Each caller (a token's user, or the API key) has one virtual
connection with the wire's publish, byte and read budgets, kept for a
bounded number of callers.

Authentication (never optional, also on an anonymous hub):

- ``Authorization: Bearer <JWT>``: a token the hub verifies, whose grants
  apply (publish patterns to publish, subscribe patterns to read).
- ``Authorization: apikey <key>`` or ``X-API-Key: <key>``: the hub's API
  key (``rtkit hub --api-key``), full rights; compared in constant time.

Errors are the wire's codes as HTTP statuses, with the wire's body::

    {"ok": false, "error": {"code": "forbidden", "message": "..."}}

>>> api = HttpApi(hub, api_key="k" * 32)
>>> response = await api.handle(HttpRequest("GET", "/channels", {}, {"x-api-key": "k" * 32}))
"""

from __future__ import annotations

import hmac
import logging
import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import orjson

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
from ..protocol import MAX_PUBLISH_BATCH, error_ack
from .auth import ALL_CHANNELS, Identity, TokenAuthenticator
from .connection import Connection
from .limits import TokenBucket
from .openapi import openapi_document

if TYPE_CHECKING:
    from .core import Hub

log = logging.getLogger(__name__)

#: The largest request body read (bytes): the wire's Engine.IO frame limit,
#: so whatever fits one Socket.IO publish fits one HTTP request.
MAX_BODY_BYTES = 1_000_000
#: Callers whose budgets are kept (least recently seen dropped first).
MAX_CALLERS = 10_000
#: The sender of messages published with the API key.
API_KEY_USER = "api"

STATUS_BY_CODE: Mapping[str, int] = {
    "bad_request": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "too_large": 413,
    "rate_limited": 429,
    "unavailable": 503,
    "internal": 500,
}


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """A request as the host saw it. ``path`` is what follows the API's
    mount point (``/channels/prices/messages``), still percent-encoded;
    ``headers`` has lower-case names."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """What the host sends back: the status, the JSON body and its headers
    (``Content-Type``, and ``Retry-After`` or ``WWW-Authenticate`` where
    they apply)."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who makes a request: an identity, and whether it may act for the
    whole hub (disconnect users, see every channel)."""

    identity: Identity
    admin: bool = False


class HttpApi:
    """The HTTP API of ``hub``; see the module docstring.

    ``authenticate`` replaces the header check (a host with its own login,
    the Jupyter extension, authenticates first and passes the caller to
    :meth:`handle` instead).
    """

    def __init__(
        self,
        hub: Hub,
        *,
        api_key: str | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
        max_callers: int = MAX_CALLERS,
        server_url: str = "/api",
    ) -> None:
        self.hub = hub
        self._api_key = api_key if api_key is not None else hub.config.api_key
        self._tokens = TokenAuthenticator(hub.config.secret) if hub.config.secret else None
        self.max_body_bytes = max_body_bytes
        self._max_callers = max_callers
        self._callers: OrderedDict[str, Connection] = OrderedDict()
        self._document = orjson.dumps(openapi_document(server_url))
        log.info(
            "HTTP API at %s/ (credentials: %s)",
            server_url,
            " or ".join(
                what
                for what, on in (("API key", self._api_key), ("tokens", self._tokens))
                if on is not None
            )
            or "none configured: every request is refused",
        )

    # -- entry point -------------------------------------------------------

    def too_large(self) -> HttpResponse:
        """The answer to a body over :attr:`max_body_bytes` (hosts stop
        reading it there)."""
        return self._error(
            TooLarge(f"the request body is over the {self.max_body_bytes}-byte limit")
        )

    async def handle(self, request: HttpRequest, caller: Caller | None = None) -> HttpResponse:
        """Answer ``request``; never raises."""
        try:
            parts = [unquote(p) for p in request.path.strip("/").split("/")]
            if parts == ["openapi.json"] and request.method in {"GET", "HEAD"}:
                return HttpResponse(200, self._document, {"Content-Type": "application/json"})
            route = self._route(request.method, parts)
            if caller is None:
                caller = self.authenticate(request.headers)
            if caller.identity.expired():
                raise Unauthorized("the token has expired: mint a new one with 'rtkit token'")
            if not self.hub.running:
                raise Unavailable("the hub is not running; retry shortly")
            if not self.hub.feed.up:
                raise Unavailable("the hub lost its shared store; retry shortly")
            conn = self._connection(caller)
            if route == self._publish:
                # Publishes have their own budget (the publish rate), as on the wire.
                body = await route(caller, conn, request, parts)
            else:
                body = await self._bounded(route, caller, conn, request, parts)
            return HttpResponse(200, orjson.dumps(body), {"Content-Type": "application/json"})
        except HubError as exc:
            return self._error(exc, caller)
        except Exception:
            log.exception("HTTP API: %s %s failed", request.method, request.path)
            return self._error(InternalError("the request failed inside the hub; see its log"))

    def authenticate(self, headers: Mapping[str, str]) -> Caller:
        """The caller named by ``Authorization`` / ``X-API-Key``."""
        key = headers.get("x-api-key")
        scheme, _, credential = headers.get("authorization", "").strip().partition(" ")
        credential = credential.strip()
        if key is None and scheme.lower() == "apikey":
            key = credential
        if key is not None:
            if self._api_key is None:
                raise Unauthorized("this hub has no API key (start it with --api-key)")
            if not hmac.compare_digest(key.encode(), self._api_key.encode()):
                raise Unauthorized("the API key is wrong")
            return Caller(self.key_identity(), admin=True)
        if scheme.lower() == "bearer" and credential:
            if self._tokens is None:
                raise Unauthorized("this hub verifies no tokens (it has no secret)")
            return Caller(self._tokens.verify(credential))
        raise Unauthorized(
            "send 'Authorization: Bearer <token>' (a token from 'rtkit token') "
            "or 'X-API-Key: <key>' (the hub's --api-key)"
        )

    @property
    def api_key(self) -> str | None:
        return self._api_key

    @staticmethod
    def key_identity() -> Identity:
        """Who publishes with the API key: user ``api``, every channel."""
        return Identity(
            user=API_KEY_USER, name=API_KEY_USER, publish=ALL_CHANNELS, subscribe=ALL_CHANNELS
        )

    def error(self, exc: HubError) -> HttpResponse:
        """The response to a refusal the host made itself."""
        return self._error(exc)

    # -- routing -----------------------------------------------------------

    Route = Callable[[Caller, Connection, HttpRequest, list[str]], Awaitable[dict[str, Any]]]

    def _route(self, method: str, parts: list[str]) -> HttpApi.Route:
        routes: dict[tuple[str, ...], dict[str, HttpApi.Route]] = {
            ("publish",): {"POST": self._publish},
            ("status",): {"GET": self._status},
            ("channels",): {"GET": self._channels},
            ("channels", "*", "messages"): {"POST": self._publish, "GET": self._history},
            ("rooms", "*", "members"): {"GET": self._members},
            ("users", "*", "disconnect"): {"POST": self._disconnect},
        }
        for shape, methods in routes.items():
            if len(shape) == len(parts) and all(
                (s == "*" and p) or s == p for s, p in zip(shape, parts, strict=True)
            ):
                handler = methods.get(method)
                if handler is None:
                    raise _MethodNotAllowed(
                        f"{method} is not allowed here; use {', '.join(sorted(methods))}"
                    )
                return handler
        raise NotFound(f"no such endpoint: /{'/'.join(parts)} (see openapi.json)")

    # -- endpoints ---------------------------------------------------------

    async def _publish(
        self, caller: Caller, conn: Connection, request: HttpRequest, parts: list[str]
    ) -> dict[str, Any]:
        payload = _json_body(request)
        if len(parts) == 3:
            payload = _with_channel(payload, parts[1])
        items = payload.get("messages") if isinstance(payload, dict) else None
        if isinstance(items, list) and len(items) > MAX_PUBLISH_BATCH:
            raise TooLarge(f"'messages' holds {len(items)} messages; at most {MAX_PUBLISH_BATCH}")
        return await self.hub._publish(conn, payload)

    async def _history(
        self, caller: Caller, conn: Connection, request: HttpRequest, parts: list[str]
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {"channel": parts[1]}
        for key, value in request.query.items():
            if key not in {"since", "before", "limit"}:
                raise BadRequest(f"unknown query parameter {key!r}; known: since, before, limit")
            payload[key] = _integer(key, value)
        conn.reads.take_or_refuse("reads")
        return await self.hub._history(conn, payload)

    async def _channels(
        self, caller: Caller, conn: Connection, request: HttpRequest, parts: list[str]
    ) -> dict[str, Any]:
        if request.query:
            raise BadRequest("this endpoint takes no query parameters")
        conn.reads.take_or_refuse("reads")
        status = await self.hub.status()
        channels = {
            name: stats
            for name, stats in status["channels"].items()
            if caller.admin or caller.identity.can_subscribe(name)
        }
        return {"ok": True, "channels": channels}

    async def _status(
        self, caller: Caller, conn: Connection, request: HttpRequest, parts: list[str]
    ) -> dict[str, Any]:
        # Every channel and user of the hub: for its operator, not its users.
        if not caller.admin:
            raise Forbidden("the hub's status takes the hub's API key")
        if request.query:
            raise BadRequest("this endpoint takes no query parameters")
        conn.reads.take_or_refuse("reads")
        return {"ok": True, **(await self.hub.status())}

    async def _members(
        self, caller: Caller, conn: Connection, request: HttpRequest, parts: list[str]
    ) -> dict[str, Any]:
        conn.reads.take_or_refuse("reads")
        return await self.hub.presence.list(conn, {"room": parts[1]})

    async def _disconnect(
        self, caller: Caller, conn: Connection, request: HttpRequest, parts: list[str]
    ) -> dict[str, Any]:
        if not caller.admin:
            raise Forbidden("disconnecting users takes the hub's API key")
        if request.body.strip() and _json_body(request) != {}:
            raise BadRequest("this endpoint takes no body (or {})")
        user = parts[1]
        count = self.hub.disconnect_where(
            lambda identity: identity.user == user,
            Forbidden("disconnected by the hub's HTTP API"),
        )
        log.info("HTTP API: disconnected %d connections of %r", count, user)
        return {"ok": True, "disconnected": count}

    # -- helpers -----------------------------------------------------------

    async def _bounded(
        self,
        route: HttpApi.Route,
        caller: Caller,
        conn: Connection,
        request: HttpRequest,
        parts: list[str],
    ) -> dict[str, Any]:
        """Run a read as the wire runs one: at most max_requests_in_flight
        of a caller's at once, and one answer that may be large (up to
        max_ack_bytes) built at a time per caller."""
        limit = self.hub.config.limits.max_requests_in_flight
        if conn.in_flight >= limit:
            raise RateLimited(
                f"{limit} requests of this caller are still being answered; "
                "wait for their answers before sending more"
            )
        conn.in_flight += 1
        try:
            async with conn.large_ack:
                return await route(caller, conn, request, parts)
        finally:
            conn.in_flight -= 1

    def _connection(self, caller: Caller) -> Connection:
        """The caller's virtual connection: its budgets, its publish order."""
        key = _caller_key(caller)
        conn = self._callers.get(key)
        if conn is None:
            limits = self.hub.config.limits
            conn = Connection(
                sid=f"http:{key}",
                eio_sid="",
                identity=caller.identity,
                bucket=TokenBucket(limits.publish_rate, limits.publish_burst),
                reads=TokenBucket(limits.read_rate, limits.read_burst),
                byte_bucket=TokenBucket(limits.publish_bytes_rate, limits.publish_bytes_burst),
            )
            self._callers[key] = conn
            while len(self._callers) > self._max_callers:
                self._callers.popitem(last=False)
        elif conn.identity != caller.identity:
            # A fresh token with the same grants (another expiry or name):
            # the budgets and publish order stay.
            conn.identity = caller.identity
        self._callers.move_to_end(key)
        return conn

    def _error(self, exc: HubError, caller: Caller | None = None) -> HttpResponse:
        status = (
            exc.status if isinstance(exc, _MethodNotAllowed) else STATUS_BY_CODE.get(exc.code, 500)
        )
        headers = {"Content-Type": "application/json"}
        if status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="rtkit"'
        if isinstance(exc, RateLimited):
            headers["Retry-After"] = str(self._retry_after(caller))
        return HttpResponse(status, orjson.dumps(error_ack(exc)), headers)

    def _retry_after(self, caller: Caller | None) -> int:
        """Whole seconds until the caller's budgets allow a request again."""
        if caller is None:
            return 1
        key = _caller_key(caller)
        conn = self._callers.get(key)
        if conn is None:
            return 1
        wait = max(conn.bucket.retry_after(), conn.reads.retry_after())
        return max(1, math.ceil(wait))


def _caller_key(caller: Caller) -> str:
    """Whose budgets a request spends: the API key's, or a user's with
    these grants (two tokens of one user that grant different channels
    never share a virtual connection, so one never acts with the
    other's grants)."""
    if caller.admin:
        return f"key:{caller.identity.user}"
    identity = caller.identity
    return repr(("user", identity.user, identity.publish, identity.subscribe))


class _MethodNotAllowed(BadRequest):
    """A known path with the wrong method: HTTP 405, wire code bad_request."""

    status = 405


def _with_channel(payload: Any, channel: str) -> Any:
    """The wire's publish for a body posted to /channels/{channel}/messages."""
    if not isinstance(payload, dict):
        raise BadRequest("the body must be a JSON object: {'data': ...} or {'messages': [...]}")
    if "channel" in payload:
        raise BadRequest("the channel is in the path; leave 'channel' out of the body")
    items = payload.get("messages")
    if not isinstance(items, list):
        return {**payload, "channel": channel}
    return {
        **payload,
        "messages": [
            {**item, "channel": channel} if isinstance(item, dict) else item for item in items
        ],
    }


def _json_body(request: HttpRequest) -> Any:
    if not request.body:
        raise BadRequest("the request needs a JSON body")
    try:
        return orjson.loads(request.body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not JSON ({exc})") from None


def _integer(key: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise BadRequest(f"query parameter {key!r} must be an integer, got {value!r}") from None
