"""The extension's tornado handlers: the hub's Socket.IO endpoint, the
status API, the HTTP API and the metrics, all behind Jupyter's authentication."""

from __future__ import annotations

import hmac
import json
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from jupyter_server.auth.decorator import authorized, ws_authenticated
from jupyter_server.auth.identity import User
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.utils import origin_matches_pat
from tornado import web

from rtkit.errors import Unauthorized
from rtkit.hosts.tornado import HttpApiHandler as TornadoHttpApiHandler
from rtkit.hosts.tornado import socketio_handler
from rtkit.hub import Hub, Identity
from rtkit.hub.http_api import Caller, HttpApi, HttpResponse
from rtkit.hub.metrics import MetricsEndpoint
from rtkit.hub.transport.jupyter_handler import authenticate_by_header_token

from ._auth import AUTH_RESOURCE, IDENTITY_KEY, KernelTokens, identity_for, rtkit_authorized

if TYPE_CHECKING:
    from .app import RtkitExtension

_BEARER = ("bearer ", "token ")


def socket_handler(
    hub: Hub, tokens: KernelTokens, *, direct_writes: bool = True
) -> type[JupyterHandler]:
    """The handler class for ``{base_url}rtkit/socket.io/``.

    rtkit's tornado host handler (TCP_NODELAY, direct frame writes unless
    ``direct_writes`` or ``RTKIT_FAST_PATHS=0`` turns them off) with
    JupyterHandler's authentication in front: every request, polling or
    websocket, carries a Jupyter login (cookie or token) or a kernel token,
    passes the Authorizer for the ``rtkit`` resource and the server's origin
    rules, or gets a 403 before Engine.IO sees it.
    """
    base: Any = socketio_handler(hub, direct_writes=direct_writes)

    class SocketIOHandler(base, JupyterHandler):  # type: ignore[misc]
        auth_resource = AUTH_RESOURCE
        rtkit_environ: dict[str, Any]

        async def prepare(self) -> None:  # type: ignore[override]
            kernel = self._kernel_identity()
            if kernel is None:
                # Jupyter's login: host check, IdentityProvider (token or
                # cookie), XSRF on POST; 403 when nobody is logged in.
                await JupyterHandler.prepare(self, _redirect_to_login=False)
            else:
                if not self.check_host():
                    raise web.HTTPError(403)
                user = User(
                    username=kernel.user,
                    name=kernel.name,
                    display_name=kernel.name,
                    initials=str(kernel.extra.get("initials") or ""),
                    color=kernel.color,
                )
                # A header credential cannot be forged cross-site: no XSRF.
                authenticate_by_header_token(self, user)
            if not self._origin_allowed():
                raise web.HTTPError(403, "cross-origin connection refused")
            identity = kernel if kernel is not None else await self._jupyter_identity()
            self.rtkit_environ = {IDENTITY_KEY: identity}

        def _kernel_identity(self) -> Identity | None:
            return _kernel_token_identity(self, tokens)

        async def _jupyter_identity(self) -> Identity:
            user = self.current_user
            if not isinstance(user, User):
                raise web.HTTPError(403)
            if not await rtkit_authorized(self, user, "read"):
                raise web.HTTPError(403, f"{user.username} may not use rtkit")
            return identity_for(
                user.username,
                name=user.display_name or user.name,
                initials=user.initials,
                color=user.color,
                avatar_url=user.avatar_url,
                can_publish=await rtkit_authorized(self, user, "write"),
                max_name_chars=hub.config.limits.max_name_chars,
            )

        def _origin_allowed(self) -> bool:
            """The server's origin rules (allow_origin, allow_origin_pat),
            for every request and also when token-authenticated: a page of
            another origin never gets a live connection unless configured."""
            origin = self.request.headers.get("Origin") or self.request.headers.get(
                "Sec-Websocket-Origin"
            )
            host = self.request.headers.get("Host")
            if self.allow_origin == "*" or origin is None or host is None:
                return True
            origin = origin.lower()
            if urlparse(origin).netloc == host:
                return True
            if self.allow_origin:
                allowed = self.allow_origin == origin
            elif self.allow_origin_pat:
                allowed = bool(origin_matches_pat(self.allow_origin_pat, origin))
            else:
                allowed = False
            if not allowed:
                self.log.warning(
                    "rtkit: blocking cross-origin connection. Origin: %s, Host: %s", origin, host
                )
            return allowed

        def check_origin(self, origin: str | None = None) -> bool:
            return self._origin_allowed()

        @ws_authenticated
        async def get(self, *args: Any, **kwargs: Any) -> None:
            await base.get(self, *args, **kwargs)

        @ws_authenticated
        async def post(self, *args: Any, **kwargs: Any) -> None:
            await base.post(self, *args, **kwargs)

    handler: type[JupyterHandler] = SocketIOHandler
    return handler


def _kernel_token_identity(handler: JupyterHandler, tokens: KernelTokens) -> Identity | None:
    """The identity of a kernel token sent as ``Authorization: Bearer``, or
    None (no such header, or not a valid kernel token)."""
    header = handler.request.headers.get("Authorization", "")
    if not header.lower().startswith(_BEARER):
        return None
    token = header.split(None, 1)[1].strip() if " " in header else ""
    if not KernelTokens.looks_like_one(token):
        return None
    try:
        return tokens.verify(token)
    except Unauthorized as err:
        # Maybe a token of an earlier run of this server; Jupyter's
        # login gets its turn and refuses if it finds nobody.
        handler.log.info("rtkit: kernel token refused: %s", err.message)
        return None


class KernelTokenHandler(JupyterHandler):
    """``POST {base_url}rtkit/kernel-token``: a running kernel's next token.

    The only credential taken is the kernel's current token as
    ``Authorization: Bearer`` (a header, which no other site's page can
    send: no XSRF check, no cookie); the answer is ``{"token", "expires"}``.
    The kernel's client calls it (``RTKIT_TOKEN_URL``) before its token
    expires, then hands the new token to the hub (``auth.refresh``).
    """

    def initialize(self, tokens: KernelTokens) -> None:
        self._tokens = tokens

    async def prepare(self) -> None:  # type: ignore[override]
        if not self.check_host():
            raise web.HTTPError(403)

    def check_xsrf_cookie(self) -> None:
        return  # only a header credential is accepted here

    def post(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        header = self.request.headers.get("Authorization", "")
        token = header.split(None, 1)[1].strip() if header.lower().startswith("bearer ") else ""
        try:
            if not KernelTokens.looks_like_one(token):
                raise Unauthorized("send the kernel's RTKIT_TOKEN as 'Authorization: Bearer'")
            fresh = self._tokens.renew(token)
        except Unauthorized as err:
            self.set_status(401)
            self.finish(json.dumps({"error": {"code": err.code, "message": err.message}}))
            return
        expires = self._tokens.verify(fresh).expires_at
        self.finish(json.dumps({"token": fresh, "expires": expires}))


class StatusHandler(APIHandler):
    """``GET {base_url}rtkit/api/status``: the hub's state as JSON."""

    auth_resource = AUTH_RESOURCE

    def initialize(self, app: RtkitExtension) -> None:
        self.rtkit_app = app

    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(await self.rtkit_app.status()))


class MetricsHandler(APIHandler):
    """``GET {base_url}rtkit/metrics``: the hub's Prometheus metrics, behind
    Jupyter's login like the status API (Prometheus sends the server's token
    as ``Authorization: token <token>``)."""

    auth_resource = AUTH_RESOURCE

    def initialize(self, endpoint: MetricsEndpoint) -> None:
        self.endpoint = endpoint

    @web.authenticated
    @authorized
    async def get(self) -> None:
        answer = self.endpoint.handle({k.lower(): v for k, v in self.request.headers.items()})
        self.set_status(answer.status)
        for name, value in answer.headers.items():
            self.set_header(name, value)
        self.finish(answer.body)


@web.stream_request_body
class HttpApiHandler(TornadoHttpApiHandler, APIHandler):
    """``{base_url}rtkit/api/...``: the hub's HTTP API behind Jupyter's login.

    The caller is the Jupyter user, with its Authorizer rights on the
    ``rtkit`` resource (``read`` to read, ``write`` to publish, ``execute``
    to disconnect users and see every channel); the extension's ``api_key``
    in ``X-API-Key`` gives full rights.
    """

    auth_resource = AUTH_RESOURCE

    def initialize(  # type: ignore[override]
        self, api: HttpApi, prefix: str, tokens: KernelTokens
    ) -> None:
        TornadoHttpApiHandler.initialize(self, api, prefix)
        self._tokens = tokens
        self._kernel: Identity | None = None

    async def prepare(self) -> None:  # type: ignore[override]
        self._kernel = _kernel_token_identity(self, self._tokens)
        if self._kernel is None:
            await APIHandler.prepare(self)
        else:
            # A kernel's RTKIT_TOKEN (Authorization: Bearer) acts for the
            # user who started the kernel, as on the Socket.IO endpoint.
            if not self.check_host():
                raise web.HTTPError(403)
            authenticate_by_header_token(self, User(username=self._kernel.user))
        await TornadoHttpApiHandler.prepare(self)

    async def caller(self) -> Caller | HttpResponse | None:
        if self._kernel is not None:
            return Caller(self._kernel)
        user = self.current_user
        if not isinstance(user, User):
            return self.api.error(
                Unauthorized("log in to Jupyter: send 'Authorization: token <jupyter token>'")
            )
        key = self.request.headers.get("X-API-Key")
        expected = self.api.api_key
        if (
            key is not None
            and expected is not None
            and hmac.compare_digest(key.encode(), expected.encode())
        ):
            return Caller(self.api.key_identity(), admin=True)
        identity = identity_for(
            user.username,
            name=user.display_name or user.name,
            initials=user.initials,
            color=user.color,
            avatar_url=user.avatar_url,
            can_publish=await rtkit_authorized(self, user, "write"),
            max_name_chars=self.api.hub.config.limits.max_name_chars,
        )
        if not await rtkit_authorized(self, user, "read"):
            identity = Identity(user=identity.user, name=identity.name, color=identity.color)
        return Caller(identity, admin=await rtkit_authorized(self, user, "execute"))
