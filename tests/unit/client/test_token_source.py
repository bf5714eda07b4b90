"""When the client renews a token, and how it calls a token provider."""

from __future__ import annotations

import asyncio

import jwt
import pytest

from rtkit.client._session import resolve_target
from rtkit.client._token import KernelTokenSource, call_provider, renew_at
from rtkit.errors import ConfigurationError, TokenUnavailable


def _jwt(**claims: float) -> str:
    return jwt.encode(claims, "k" * 32, algorithm="HS256")


@pytest.mark.parametrize(
    ("lifetime", "renew_after"),
    [(3600, 2880), (60, 30), (3, 1.5), (100, 70)],
    ids=["an hour: at 80%", "a minute: 30 s before", "3 s: at half-life", "100 s: 30 s before"],
)
def test_renewal_comes_at_80_percent_or_30_s_before_but_not_before_half(
    lifetime: float, renew_after: float
) -> None:
    assert renew_at(_jwt(iat=1000, exp=1000 + lifetime), 5000.0) == 1000 + renew_after


def test_without_iat_the_lifetime_counts_from_arrival_and_without_exp_nothing_renews() -> None:
    assert renew_at(_jwt(exp=1100), received_at=1000.0) == 1070.0
    assert renew_at(_jwt(iat=1000), 1000.0) is None
    assert renew_at("a-jupyter-server-token", 1000.0) is None


async def test_a_provider_that_hangs_fails_or_returns_no_string_is_token_unavailable() -> None:
    async def hangs() -> str:
        await asyncio.sleep(10)
        return "never"

    with pytest.raises(TokenUnavailable, match=r"within 0\.05 s"):
        await call_provider(hangs, 0.05)
    with pytest.raises(TokenUnavailable, match="ZeroDivisionError"):
        await call_provider(lambda: str(1 / 0), 1.0)
    with pytest.raises(TokenUnavailable, match="NoneType, not a token string"):
        await call_provider(lambda: None, 1.0)  # type: ignore[arg-type, return-value]
    assert await call_provider(lambda: "tok", 1.0) == "tok"


def test_a_kernel_with_a_renewal_url_gets_a_token_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTKIT_URL", "http://127.0.0.1:8888/rtkit")
    monkeypatch.setenv("RTKIT_TOKEN", "a.b.c")
    monkeypatch.setenv("RTKIT_TOKEN_URL", "http://127.0.0.1:8888/rtkit/kernel-token")
    _, token = resolve_target(None, None)
    assert isinstance(token, KernelTokenSource)
    assert token.url.endswith("/rtkit/kernel-token") and token.token == "a.b.c"
    # A token given explicitly is used as it is.
    assert resolve_target(None, "explicit")[1] == "explicit"
    with pytest.raises(ConfigurationError, match="string or a callable"):
        resolve_target(None, 42)  # type: ignore[arg-type]
