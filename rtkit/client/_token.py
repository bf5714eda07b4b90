"""Token providers: where a client gets fresh tokens, and when it asks.

A client given a callable as its ``token`` calls it for a token before it
connects, again before its token runs out (and hands the new one to the hub
on the live connection, ``auth.refresh``), and before a reconnect whose
token is spent. The client reads ``exp`` (and ``iat``) from the JWT without
verifying it: only the hub can, and the client needs nothing but the time.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import aiohttp
import jwt

from ..errors import TokenUnavailable

__all__ = [
    "KernelTokenSource",
    "TokenProvider",
    "call_provider",
    "renew_at",
    "token_claims",
    "token_expiry",
]

TokenProvider = Callable[[], str | Awaitable[str]]
"""A callable (plain or ``async``) that returns a fresh token string."""

# Renew at 80% of a token's lifetime or this many seconds before it
# expires, whichever is earlier: time for a few retries of a provider that
# fails for a moment...
RENEW_BEFORE: Final = 30.0
RENEW_FRACTION: Final = 0.8
# ...but never before half of the lifetime, or a token shorter than about a
# minute would be renewed over and over.
RENEW_NOT_BEFORE: Final = 0.5


def token_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT, unverified; empty for a token that is not one
    (a Jupyter server token, say)."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return {}
    return claims if isinstance(claims, dict) else {}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def token_expiry(token: str) -> float | None:
    """The token's ``exp`` (unix seconds), or None when it has none."""
    return _number(token_claims(token).get("exp"))


def renew_at(token: str, received_at: float) -> float | None:
    """When (unix seconds) to ask for a token to replace ``token``, which
    arrived at ``received_at``; None for a token without ``exp``.

    >>> renew_at(jwt_with(iat=0, exp=3600), 0.0)   # an hour: at 80%
    2880.0
    >>> renew_at(jwt_with(iat=0, exp=60), 0.0)     # a minute: 30 s before
    30.0
    >>> renew_at(jwt_with(iat=0, exp=3), 0.0)      # 3 s: at half-life
    1.5
    """
    claims = token_claims(token)
    expires = _number(claims.get("exp"))
    if expires is None:
        return None
    issued = _number(claims.get("iat"))
    if issued is None or issued > expires:
        issued = min(received_at, expires)
    lifetime = expires - issued
    at = min(issued + RENEW_FRACTION * lifetime, expires - RENEW_BEFORE)
    return max(at, issued + RENEW_NOT_BEFORE * lifetime)


async def call_provider(provider: TokenProvider, budget: float) -> str:
    """A token from ``provider`` within ``budget`` seconds.

    A plain callable runs on a worker thread (it may block on HTTP, say);
    an ``async`` one on this loop. Anything going wrong is a
    :class:`~rtkit.errors.TokenUnavailable` naming why. (Its messages say
    "token source": the client's log filter masks a long word after "token".)
    """
    try:
        async with asyncio.timeout(budget):
            if inspect.iscoroutinefunction(provider) or inspect.iscoroutinefunction(
                getattr(provider, "__call__", None)  # noqa: B004 (an async __call__)
            ):
                result: Any = await provider()  # type: ignore[misc]
            else:
                result = await asyncio.to_thread(provider)
                if inspect.isawaitable(result):
                    result = await result
    except TimeoutError:
        raise TokenUnavailable(f"the token source did not answer within {budget:g} s") from None
    except Exception as exc:
        raise TokenUnavailable(f"the token source failed: {exc!r:.300}") from exc
    if not isinstance(result, str) or not result:
        raise TokenUnavailable(
            f"the token source returned {type(result).__name__}, not a token string"
        )
    return result


class KernelTokenSource:
    """The token provider of a kernel started by a Jupyter server with rtkit's
    extension: ``RTKIT_TOKEN`` first, then each renewal from
    ``RTKIT_TOKEN_URL`` (``{base_url}rtkit/kernel-token``), asked for with
    the current token as ``Authorization: Bearer``.

    >>> source = KernelTokenSource(os.environ["RTKIT_TOKEN"], os.environ["RTKIT_TOKEN_URL"])
    """

    def __init__(self, token: str, url: str) -> None:
        self.token = token
        self.url = url
        self._first = True

    def __repr__(self) -> str:
        return f"<KernelTokenSource {self.url}>"

    async def __call__(self) -> str:
        if self._first:
            self._first = False
            expires = token_expiry(self.token)
            if expires is None or expires > time.time():
                return self.token
        try:
            async with (
                aiohttp.ClientSession() as http,
                http.post(self.url, headers={"Authorization": f"Bearer {self.token}"}) as resp,
            ):
                body: Any = await resp.json(content_type=None)
                status = resp.status
        except (aiohttp.ClientError, ValueError) as exc:
            raise TokenUnavailable(
                f"could not renew the kernel's token at {self.url}: {exc}"
            ) from None
        fresh = body.get("token") if isinstance(body, dict) else None
        if status != 200 or not isinstance(fresh, str) or not fresh:
            error = body.get("error") if isinstance(body, dict) else None
            why = error.get("message") if isinstance(error, dict) else f"{body!r:.200}"
            raise TokenUnavailable(f"{self.url} answered HTTP {status}: {why}")
        self.token = fresh
        return fresh
