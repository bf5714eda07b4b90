from __future__ import annotations

import time

import jwt
import pytest

from rtkit.errors import ConfigurationError, Unauthorized
from rtkit.hub.auth import AnonymousAuthenticator, TokenAuthenticator, color_for, mint_token

SECRET = "unit-test-secret-0123456789abcdef"
OTHER_SECRET = "another-secret-of-thirty-two-bytes!"


async def test_token_round_trip_carries_user_and_patterns() -> None:
    token = mint_token(SECRET, "alice", publish=["lab.*"], subscribe=["*"], name="Alice")
    identity = await TokenAuthenticator(SECRET).authenticate({}, {"token": token})
    assert identity.user == "alice"
    assert identity.name == "Alice"
    assert identity.color == color_for("alice")
    assert identity.can_publish("lab.temps")
    assert not identity.can_publish("prices")
    assert identity.can_subscribe("prices")


@pytest.mark.parametrize(
    ("auth", "fragment"),
    [
        (None, "token is required"),
        ({}, "token is required"),
        ({"token": 42}, "token is required"),
        ({"token": "not-a-jwt"}, "invalid token"),
        ({"token": mint_token(OTHER_SECRET, "mallory", subscribe=["*"])}, "signature is invalid"),
        (
            {"token": mint_token(SECRET, "bob", subscribe=["*"], ttl=10, now=time.time() - 100)},
            "expired",
        ),
    ],
)
async def test_bad_tokens_are_refused_with_a_reason(auth: object, fragment: str) -> None:
    with pytest.raises(Unauthorized, match=fragment):
        await TokenAuthenticator(SECRET).authenticate({}, auth)


async def test_unsigned_token_is_refused() -> None:
    token = jwt.encode({"sub": "eve", "exp": time.time() + 60}, key=None, algorithm="none")
    with pytest.raises(Unauthorized):
        await TokenAuthenticator(SECRET).authenticate({}, {"token": token})


async def test_token_without_expiry_is_refused() -> None:
    token = jwt.encode({"sub": "eve"}, SECRET, algorithm="HS256")
    with pytest.raises(Unauthorized, match="exp"):
        await TokenAuthenticator(SECRET).authenticate({}, {"token": token})


async def test_anonymous_users_may_name_themselves() -> None:
    auth = AnonymousAuthenticator()
    assert (await auth.authenticate({}, {"user": "carol"})).user == "carol"
    identity = await auth.authenticate({}, None)
    assert identity.user == "anonymous"
    assert identity.anonymous


def test_minting_checks_its_inputs() -> None:
    with pytest.raises(ConfigurationError, match="32 bytes"):
        mint_token("short", "alice")
    with pytest.raises(ConfigurationError):
        mint_token(SECRET, "")
    with pytest.raises(ConfigurationError):
        mint_token(SECRET, "alice", ttl=0)


def test_a_token_grants_only_what_it_names() -> None:
    """A read-only token is read-only; every channel takes an explicit '*'."""
    verifier = TokenAuthenticator(SECRET)
    reader = verifier.verify(mint_token(SECRET, "bob", subscribe=["test.*"]))
    assert reader.can_subscribe("test.x") and not reader.can_subscribe("other")
    assert not reader.can_publish("test.x") and not reader.can_publish("other")
    writer = verifier.verify(mint_token(SECRET, "ann", publish=["out"]))
    assert writer.can_publish("out") and not writer.can_subscribe("out")
    everything = verifier.verify(mint_token(SECRET, "cy", publish=["*"], subscribe=["*"]))
    assert everything.can_publish("any.thing") and everything.can_subscribe("any.thing")
