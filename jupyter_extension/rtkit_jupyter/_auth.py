"""Who an rtkit connection inside jupyter-server is.

Two kinds of credential reach the hub here, both checked on the HTTP request
of the Engine.IO handshake (see ``_handlers``), before any Socket.IO packet:

- **Jupyter's own login**: the browser's login cookie (with Jupyter's XSRF
  and origin rules) or the Jupyter server token. The server's
  IdentityProvider names the user; the server's Authorizer decides whether
  the user may read (connect, subscribe) and write (publish) the ``rtkit``
  resource.
- **Kernel tokens**: short JWTs this server signs with a secret that lives
  only in its memory, handed to the kernels it starts (``RTKIT_TOKEN``). They
  name the user the kernel acts for and die with their kernel (revoked when it
  shuts down, is culled or restarts) and with the server process. They are no
  Jupyter credential: Jupyter's REST API refuses them. A kernel renews its
  token before it expires at ``{base_url}rtkit/kernel-token``
  (``RTKIT_TOKEN_URL``), presenting the current one; the renewals of one
  kernel's token form its *line*, revoked as one.

The handler puts the resulting :class:`~rtkit.hub.auth.Identity` in the
Engine.IO environ; :class:`JupyterAuthenticator` (the hub's plug-in) takes it
from there and checks the Socket.IO ``auth`` payload against it.
"""

from __future__ import annotations

import getpass
import hmac
import os
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import jwt

from rtkit.config import DEFAULT_LIMITS
from rtkit.errors import Unauthorized
from rtkit.hub.auth import (
    ALL_CHANNELS,
    TOKEN_ALGORITHM,
    TOKEN_LEEWAY,
    Identity,
    TokenAuthenticator,
)
from rtkit.hub.presence import safe_color, safe_name

# The Engine.IO environ key under which the handler passes the identity.
IDENTITY_KEY = "rtkit_jupyter.identity"
# The Jupyter Authorizer resource name for everything rtkit serves.
AUTH_RESOURCE = "rtkit"
# A claim that marks a kernel token, so that no other token signed with the
# same secret could pass for one.
_KIND = "rtkit-kernel"
# Identity.extra key holding a kernel token's line id (the "jti" of the
# kernel's first token, which every renewal carries as "line"), so that the
# hub can end the connections made with any token of a line when it is revoked.
TOKEN_ID = "token_id"


def initials_of(name: str) -> str:
    """``"Ada Lovelace"`` -> ``"AL"``, ``"ada"`` -> ``"A"``."""
    parts = [p for p in name.replace("_", " ").replace(".", " ").split() if p]
    return "".join(p[0] for p in parts[:2]).upper() or "?"


def identity_for(
    username: str,
    *,
    name: str = "",
    initials: str | None = None,
    color: str | None = None,
    avatar_url: str | None = None,
    can_publish: bool = True,
    expires_at: float | None = None,
    kind: str = "jupyter",
    max_name_chars: int = DEFAULT_LIMITS.max_name_chars,
) -> Identity:
    """The hub identity of a Jupyter user (or of a kernel acting for one).

    Jupyter users may set their own name, initials and color (PATCH /api/me),
    and others' browsers show them: they are made safe here, as the hub does
    for every member (:func:`~rtkit.hub.presence.safe_color`)."""
    display = safe_name(name, username, max_name_chars)
    initials = safe_name(initials, "", 4) if initials else None
    return Identity(
        user=username,
        name=display,
        color=safe_color(color, username),
        publish=ALL_CHANNELS if can_publish else (),
        subscribe=ALL_CHANNELS,
        expires_at=expires_at,
        extra={
            "initials": initials or initials_of(display),
            "avatar_url": avatar_url,
            "kind": kind,
        },
    )


async def rtkit_authorized(handler: Any, user: Any, action: str) -> bool:
    """Whether the server's Authorizer lets ``user`` do ``action`` ("read",
    "write") on the ``rtkit`` resource; the Authorizer may be async."""
    result = handler.authorizer.is_authorized(handler, user, action, AUTH_RESOURCE)
    if not isinstance(result, bool):
        result = await result
    return bool(result)


def server_user() -> tuple[str, str]:
    """``(username, display name)`` of the person this server runs for, used
    when a kernel is started outside any request (no Jupyter user at hand):
    the JupyterHub user when run by JupyterHub, else the OS user."""
    hub_user = os.environ.get("JUPYTERHUB_USER")
    if hub_user:
        return hub_user, hub_user
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        user = f"uid{os.getuid()}" if hasattr(os, "getuid") else "user"
    return user, user


class KernelTokens:
    """Mints, verifies and revokes the kernel tokens of one server process.

    >>> tokens = KernelTokens(ttl=3600)
    >>> token = tokens.mint(identity_for("ada"))
    >>> identity = tokens.verify(token)
    >>> tokens.bind("kernel-id", token)
    >>> tokens.revoke_kernel("kernel-id")  # verify(token) raises Unauthorized now
    """

    def __init__(self, *, ttl: float) -> None:
        # Never stored: a restarted server cannot verify its predecessor's
        # tokens, so a kernel token lives at most as long as its server.
        self.secret = secrets.token_urlsafe(32)
        self.ttl = ttl
        self._verifier = TokenAuthenticator(self.secret)
        self._by_kernel: dict[str, str] = {}  # kernel id -> its current token
        # Revoked token ids -> when the token would have expired anyway; an
        # entry goes once that time has passed, so the list stays as small as
        # the number of kernels ended within one ttl.
        self._revoked: dict[str, float] = {}

    def mint(
        self,
        identity: Identity,
        *,
        now: float | None = None,
        line: str = "",
        ttl: float | None = None,
    ) -> str:
        """A kernel token for ``identity``; ``line``: the line of the token it
        renews (none: the first of a new line); ``ttl``: its lifetime in
        seconds (default: the kernel token lifetime)."""
        issued = int(now if now is not None else time.time())
        token_id = uuid.uuid4().hex
        claims: dict[str, Any] = {
            "sub": identity.user,
            "name": identity.name,
            "color": identity.color,
            "initials": identity.extra.get("initials"),
            "iat": issued,
            "exp": issued + int(self.ttl if ttl is None else ttl),
            "jti": token_id,
            "line": line or token_id,
            "kind": _KIND,
            "rtkit": {"publish": list(identity.publish), "subscribe": list(identity.subscribe)},
        }
        return jwt.encode(claims, self.secret, algorithm=TOKEN_ALGORITHM)

    def verify(self, token: str) -> Identity:
        """The identity a kernel token names; Unauthorized if it is not one
        or was revoked."""
        identity = self._verifier.verify(token)
        # The signature is valid (verify raised otherwise): read the rest.
        claims = jwt.decode(token, options={"verify_signature": False})
        if claims.get("kind") != _KIND:
            raise Unauthorized("not an rtkit kernel token")
        token_id = _line_of(claims)
        if not token_id or token_id in self._revoked:
            raise Unauthorized(
                "this kernel token was revoked: its kernel has shut down or restarted "
                "(a running kernel finds its current token in RTKIT_TOKEN)"
            )
        return replace(
            identity,
            extra={
                "initials": str(claims.get("initials") or initials_of(identity.name)),
                "avatar_url": None,
                "kind": "kernel",
                TOKEN_ID: token_id,
            },
        )

    def renew(self, token: str) -> str:
        """The next token of a running kernel's line, for its current (or an
        earlier, unexpired) ``token``; Unauthorized if that is no good or its
        kernel is not running. The old token stays good until it expires:
        the kernel's connection refreshes to the new one meanwhile."""
        identity = self.verify(token)
        line = str(identity.extra[TOKEN_ID])
        for kernel_id, current in self._by_kernel.items():
            if _line_of(jwt.decode(current, options={"verify_signature": False})) == line:
                new = self.mint(identity, line=line)
                self._by_kernel[kernel_id] = new
                return new
        raise Unauthorized("this kernel token belongs to no running kernel of this server")

    def bind(self, kernel_id: str, token: str) -> None:
        """Record ``token`` as the one kernel ``kernel_id`` runs with."""
        self._by_kernel[kernel_id] = token

    def rotate(self, kernel_id: str) -> tuple[str, str] | None:
        """A new token for a kernel that restarts, with its old identity; the
        old one is revoked. ``(new token, revoked token id)``, or None for a
        kernel this server gave no token (or whose token no longer verifies)."""
        old = self._by_kernel.get(kernel_id)
        if old is None:
            return None
        try:
            identity = self.verify(old)
        except Unauthorized:
            self.revoke_kernel(kernel_id)
            return None
        new = self.mint(identity)
        self._by_kernel[kernel_id] = new
        return new, self.revoke(old)

    def revoke_kernel(self, kernel_id: str) -> str | None:
        """Revoke the token of a kernel that is gone; its token id, if any."""
        token = self._by_kernel.pop(kernel_id, None)
        return self.revoke(token) if token is not None else None

    def revoke(self, token: str) -> str:
        """Revoke a token and its whole line (pass the line's latest token: its
        expiry bounds the line's); the line's id."""
        claims = jwt.decode(token, options={"verify_signature": False})
        now = time.time()
        for token_id, until in list(self._revoked.items()):
            if until < now:
                del self._revoked[token_id]
        token_id = _line_of(claims)
        self._revoked[token_id] = float(claims.get("exp", now)) + TOKEN_LEEWAY
        return token_id

    @staticmethod
    def looks_like_one(token: str) -> bool:
        """A JWT has three dot-separated parts; a Jupyter token has none."""
        return token.count(".") == 2


def _line_of(claims: Mapping[str, Any]) -> str:
    return str(claims.get("line") or claims.get("jti") or "")


class JupyterAuthenticator:
    """The hub's Authenticator inside jupyter-server.

    The handler has already authenticated the HTTP request and left the
    identity in the environ. A Socket.IO ``auth.token``, when sent, must be a
    credential too: this server's Jupyter token (the identity stays the
    Jupyter user's) or a kernel token (which then names the identity).
    """

    def __init__(self, tokens: KernelTokens, jupyter_token: Callable[[], str | None]) -> None:
        self._tokens = tokens
        self._jupyter_token = jupyter_token

    async def authenticate(self, environ: Mapping[str, Any], auth: Any) -> Identity:
        identity = environ.get(IDENTITY_KEY)
        if not isinstance(identity, Identity):
            raise Unauthorized("not authenticated: log in to Jupyter or send its token")
        token = auth.get("token") if isinstance(auth, Mapping) else None
        if not token:
            return identity
        if not isinstance(token, str):
            raise Unauthorized("auth.token must be a string")
        server_token = self._jupyter_token()
        if server_token and hmac.compare_digest(token.encode(), server_token.encode()):
            return identity
        if KernelTokens.looks_like_one(token):
            return self._tokens.verify(token)
        raise Unauthorized("auth.token is neither this server's Jupyter token nor a kernel token")

    async def refresh(self, token: str) -> Identity:
        """``auth.refresh`` takes a kernel token (a kernel's renewed
        RTKIT_TOKEN); browsers, logged in to Jupyter, have nothing to renew."""
        if not KernelTokens.looks_like_one(token):
            raise Unauthorized("auth.refresh takes a kernel token here (a kernel's RTKIT_TOKEN)")
        return self._tokens.verify(token)
