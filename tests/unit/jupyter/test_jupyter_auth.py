"""Kernel tokens and the Jupyter authenticator (no server needed)."""

from __future__ import annotations

import time

import pytest
from rtkit_jupyter._auth import (
    IDENTITY_KEY,
    JupyterAuthenticator,
    KernelTokens,
    identity_for,
    initials_of,
)

from rtkit.errors import Unauthorized
from rtkit.hub.auth import mint_token

JUPYTER_TOKEN = "jupyter-server-token"


def test_initials() -> None:
    assert initials_of("Ada Lovelace") == "AL"
    assert initials_of("ada") == "A"
    assert initials_of("grace.b.hopper") == "GB"
    assert initials_of("") == "?"


def test_a_kernel_token_names_its_user() -> None:
    tokens = KernelTokens(ttl=60)
    ada = identity_for("ada", name="Ada Lovelace", color="#123456")
    identity = tokens.verify(tokens.mint(ada))
    assert (identity.user, identity.name, identity.color) == ("ada", "Ada Lovelace", "#123456")
    assert identity.extra["initials"] == "AL"
    assert identity.extra["kind"] == "kernel"
    assert identity.can_publish("any.channel") and identity.can_subscribe("x")
    assert identity.expires_at is not None


def test_kernel_tokens_die_with_their_server() -> None:
    earlier_run, this_run = KernelTokens(ttl=60), KernelTokens(ttl=60)
    token = earlier_run.mint(identity_for("ada"))
    with pytest.raises(Unauthorized, match="signature"):
        this_run.verify(token)


def test_other_tokens_signed_with_the_secret_are_no_kernel_tokens() -> None:
    tokens = KernelTokens(ttl=60)
    with pytest.raises(Unauthorized, match="kernel token"):
        tokens.verify(mint_token(tokens.secret, "mallory", publish=["*"], subscribe=["*"]))


def test_expired_kernel_token() -> None:
    tokens = KernelTokens(ttl=60)
    token = tokens.mint(identity_for("ada"), now=0)
    with pytest.raises(Unauthorized, match="expired"):
        tokens.verify(token)


async def test_authenticator_takes_the_identity_the_handler_found() -> None:
    tokens = KernelTokens(ttl=60)
    auth = JupyterAuthenticator(tokens, lambda: JUPYTER_TOKEN)
    ada = identity_for("ada", name="Ada")
    environ = {IDENTITY_KEY: ada}
    assert await auth.authenticate(environ, None) is ada
    assert await auth.authenticate(environ, {}) is ada
    assert await auth.authenticate(environ, {"token": JUPYTER_TOKEN}) is ada
    kernel = await auth.authenticate(environ, {"token": tokens.mint(identity_for("bob"))})
    assert kernel.user == "bob"
    with pytest.raises(Unauthorized):
        await auth.authenticate(environ, {"token": "something-else"})
    with pytest.raises(Unauthorized):
        await auth.authenticate(environ, {"token": 42})
    with pytest.raises(Unauthorized, match="log in"):
        await auth.authenticate({}, {"token": JUPYTER_TOKEN})


def test_read_only_users_subscribe_but_do_not_publish() -> None:
    reader = identity_for("eve", can_publish=False)
    assert not reader.can_publish("x")
    assert reader.can_subscribe("x")


def test_a_kernel_token_ends_with_its_kernel() -> None:
    tokens = KernelTokens(ttl=60)
    first = tokens.mint(identity_for("ada"))
    tokens.bind("k1", first)
    assert tokens.verify(first).extra["token_id"]
    rotated = tokens.rotate("k1")  # a restart: a new token, the old one revoked
    assert rotated is not None
    second, old_id = rotated
    assert old_id != tokens.verify(second).extra["token_id"]
    with pytest.raises(Unauthorized, match="revoked"):
        tokens.verify(first)
    assert tokens.verify(second).user == "ada"
    assert tokens.revoke_kernel("k1") is not None  # shut down
    with pytest.raises(Unauthorized, match="revoked"):
        tokens.verify(second)
    assert tokens.revoke_kernel("k1") is None
    assert tokens.rotate("unknown") is None


def test_the_revocation_list_forgets_tokens_that_expired_anyway() -> None:
    tokens = KernelTokens(ttl=60)
    for i in range(50):
        tokens.bind(f"old{i}", tokens.mint(identity_for("ada"), now=0))
        tokens.revoke_kernel(f"old{i}")
    tokens.bind("new", tokens.mint(identity_for("ada")))
    tokens.revoke_kernel("new")
    assert len(tokens._revoked) == 1


def test_a_running_kernel_renews_its_token_and_the_line_ends_with_the_kernel() -> None:
    tokens = KernelTokens(ttl=60)
    first = tokens.mint(identity_for("ada", name="Ada Lovelace"), now=time.time() - 30)
    tokens.bind("k1", first)
    second = tokens.renew(first)
    third = tokens.renew(second)
    renewed = tokens.verify(third)
    assert (renewed.user, renewed.name, renewed.extra["initials"]) == ("ada", "Ada Lovelace", "AL")
    # One line: the same token id for the hub to end connections by.
    ids = {tokens.verify(t).extra["token_id"] for t in (first, second, third)}
    assert len(ids) == 1
    assert (tokens.verify(third).expires_at or 0) > (tokens.verify(first).expires_at or 0)
    # Shutting the kernel down revokes the whole line, not just the latest.
    assert tokens.revoke_kernel("k1") == ids.pop()
    for token in (first, second, third):
        with pytest.raises(Unauthorized, match="revoked"):
            tokens.verify(token)
        with pytest.raises(Unauthorized, match="revoked"):
            tokens.renew(token)


def test_only_a_running_kernels_token_renews() -> None:
    tokens = KernelTokens(ttl=60)
    unbound = tokens.mint(identity_for("ada"))
    with pytest.raises(Unauthorized, match="no running kernel"):
        tokens.renew(unbound)
    with pytest.raises(Unauthorized, match="expired"):
        tokens.renew(tokens.mint(identity_for("ada"), now=0))
    with pytest.raises(Unauthorized, match="kernel token"):
        tokens.renew(mint_token(tokens.secret, "mallory", publish=["*"], subscribe=["*"]))


def test_a_restart_starts_a_new_line() -> None:
    tokens = KernelTokens(ttl=60)
    first = tokens.mint(identity_for("ada"))
    tokens.bind("k1", first)
    renewed = tokens.renew(first)
    rotated = tokens.rotate("k1")
    assert rotated is not None
    new, old_line = rotated
    assert tokens.verify(new).extra["token_id"] != old_line
    for token in (first, renewed):
        with pytest.raises(Unauthorized, match="revoked"):
            tokens.verify(token)


async def test_the_authenticator_refreshes_with_kernel_tokens_only() -> None:
    tokens = KernelTokens(ttl=60)
    auth = JupyterAuthenticator(tokens, lambda: JUPYTER_TOKEN)
    assert (await auth.refresh(tokens.mint(identity_for("bob")))).user == "bob"
    with pytest.raises(Unauthorized, match="kernel token"):
        await auth.refresh(JUPYTER_TOKEN)
