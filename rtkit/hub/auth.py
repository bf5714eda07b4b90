"""Who a connection is and what it may do.

A connection presents ``auth = {"token": "<JWT>"}``. Tokens are HS256 JWTs::

    {"sub": "alice", "name": "Alice", "exp": 1767225600,
     "rtkit": {"publish": ["prices.*"], "subscribe": ["*"]}}

Patterns are shell-style globs (``fnmatch``) over channel names. A token
grants only what it names: without a "publish" list it may not publish, and
every channel takes an explicit ``"*"``. Hosts that
have their own notion of identity (the Jupyter extension) plug in another
:class:`Authenticator`.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Protocol, runtime_checkable

import jwt

from ..config import MIN_SECRET_BYTES
from ..errors import BadRequest, ConfigurationError, Unauthorized

TOKEN_ALGORITHM = "HS256"
# Seconds a token stays good past its "exp", for clocks that disagree a little.
TOKEN_LEEWAY = 5.0
ALL_CHANNELS = ("*",)
_PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f",
)  # fmt: skip


def color_for(user: str) -> str:
    """A stable color per user, so a person looks the same everywhere."""
    digest = hashlib.sha1(user.encode(), usedforsecurity=False).digest()
    return _PALETTE[digest[0] % len(_PALETTE)]


@dataclass(frozen=True, slots=True)
class Identity:
    user: str
    name: str = ""
    color: str = ""
    # Nothing unless named: whoever builds an Identity says what it grants.
    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()
    expires_at: float | None = None  # unix seconds
    anonymous: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)

    def can_publish(self, channel: str) -> bool:
        return _matches(channel, self.publish)

    def can_subscribe(self, channel: str) -> bool:
        return _matches(channel, self.subscribe)

    def expired(self, now: float | None = None) -> bool:
        return self.expires_at is not None and (now or time.time()) >= self.expires_at


def _matches(channel: str, patterns: Iterable[str]) -> bool:
    return any(p == "*" or p == channel or fnmatchcase(channel, p) for p in patterns)


class Authenticator(Protocol):
    """Turns a connect request into an Identity or raises Unauthorized."""

    async def authenticate(self, environ: Mapping[str, Any], auth: Any) -> Identity: ...


@runtime_checkable
class TokenRefresher(Protocol):
    """An :class:`Authenticator` that also takes fresh tokens on live
    connections (the ``auth.refresh`` request). Optional: the hub refuses
    ``auth.refresh`` when its authenticator is not one."""

    async def refresh(self, token: str) -> Identity:
        """The identity ``token`` names; Unauthorized if it is not good."""
        ...


class TokenAuthenticator:
    """Verifies HS256 tokens minted by :func:`mint_token`."""

    def __init__(self, secret: str, *, leeway: float = TOKEN_LEEWAY) -> None:
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise ConfigurationError(f"a token secret must be at least {MIN_SECRET_BYTES} bytes")
        self._secret = secret
        self._leeway = leeway

    async def authenticate(self, environ: Mapping[str, Any], auth: Any) -> Identity:
        token = auth.get("token") if isinstance(auth, Mapping) else None
        if not token or not isinstance(token, str):
            raise Unauthorized("a token is required: connect with auth={'token': '<JWT>'}")
        return self.verify(token)

    async def refresh(self, token: str) -> Identity:
        return self.verify(token)

    def verify(self, token: str) -> Identity:
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[TOKEN_ALGORITHM],
                leeway=self._leeway,
                options={"require": ["sub", "exp"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the token has expired: mint a new one with 'rtkit token'") from None
        except jwt.InvalidSignatureError:
            raise Unauthorized("the token signature is invalid (wrong secret?)") from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}") from None
        user = claims["sub"]
        grants = claims.get("rtkit") or {}
        if not isinstance(user, str) or not user or not isinstance(grants, Mapping):
            raise Unauthorized("invalid token: 'sub' must name the user")
        return Identity(
            user=user,
            name=str(claims.get("name") or user),
            color=str(claims.get("color") or color_for(user)),
            publish=_patterns(grants.get("publish", ())),
            subscribe=_patterns(grants.get("subscribe", ())),
            # The same leeway as at connect, so a token accepted there keeps
            # working for the requests that follow.
            expires_at=float(claims["exp"]) + self._leeway,
        )


def _patterns(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise Unauthorized("invalid token: channel patterns must be a list of strings")


class AnonymousAuthenticator:
    """Trusts everyone (a loopback-only experiment mode). A client may name
    itself with ``auth={"user": "alice"}`` so its publishes keep one sender
    across reconnects; tokens, when sent, are still verified if a secret is set."""

    def __init__(self, tokens: TokenAuthenticator | None = None) -> None:
        self._tokens = tokens

    async def authenticate(self, environ: Mapping[str, Any], auth: Any) -> Identity:
        if self._tokens is not None and isinstance(auth, Mapping) and auth.get("token"):
            return await self._tokens.authenticate(environ, auth)
        user = auth.get("user") if isinstance(auth, Mapping) else None
        if not isinstance(user, str) or not user or len(user) > 64:
            user = "anonymous"
        return Identity(
            user=user,
            name=user,
            color=color_for(user),
            publish=ALL_CHANNELS,
            subscribe=ALL_CHANNELS,
            anonymous=True,
        )

    async def refresh(self, token: str) -> Identity:
        if self._tokens is None:
            raise BadRequest(
                "auth.refresh: this hub verifies no tokens (anonymous mode without a "
                "secret): there is nothing to refresh"
            )
        return self._tokens.verify(token)


def mint_token(
    secret: str,
    user: str,
    *,
    publish: Iterable[str] = (),
    subscribe: Iterable[str] = (),
    ttl: float = 24 * 3600,
    name: str | None = None,
    now: float | None = None,
) -> str:
    """Sign a token for ``user`` that grants the channel patterns named, and
    nothing else: every channel takes an explicit ``"*"``.

    >>> token = mint_token(secret, "alice", publish=["prices.*"], subscribe=["*"], ttl=3600)
    """
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ConfigurationError(f"a token secret must be at least {MIN_SECRET_BYTES} bytes")
    if not user:
        raise ConfigurationError("a token needs a user name")
    if ttl <= 0:
        raise ConfigurationError("ttl must be positive")
    publish, subscribe = list(publish), list(subscribe)
    issued = int(now if now is not None else time.time())
    claims: dict[str, Any] = {
        "sub": user,
        "iat": issued,
        "exp": issued + int(ttl),
        "rtkit": {"publish": publish, "subscribe": subscribe},
    }
    if name:
        claims["name"] = name
    return jwt.encode(claims, secret, algorithm=TOKEN_ALGORITHM)
