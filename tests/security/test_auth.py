"""Who may connect, with what rights, and for how long (issue #15 items 3, 5, 6).

Each test runs the attack against a real ``rtkit hub`` process as a client
would, with a bystander that must stay served meanwhile, and checks the
hub's resident memory against a stated bound.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from typing import Any

import pytest
import socketio

from rtkit.hub.auth import TOKEN_LEEWAY, mint_token
from tests.integration.helpers import RawClient, assert_error, assert_ok
from tests.security.attack import Bystander, rss_mb

SECRET = "security-auth-secret-0123456789abcdef"


def every_channel(user: str, **kwargs: Any) -> str:
    return mint_token(SECRET, user, publish=["*"], subscribe=["*"], **kwargs)


async def keep_serving(bystander: Bystander, *, at_least: int = 5, within: float = 10) -> None:
    """Wait until the bystander has had ``at_least`` publishes served during
    the attack (check() asks for that many)."""
    deadline = time.monotonic() + within
    while len(bystander.acked) < at_least and not bystander.errors:
        assert time.monotonic() < deadline, "the bystander is not being served"
        await asyncio.sleep(0.05)


def cli_token(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "rtkit", "token", "--secret", SECRET, *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


# -- item 5: a token grants only what it names --------------------------------


async def test_subscribe_only_token_cannot_publish(rt_hub_factory: Any) -> None:
    """``rtkit token --subscribe 'test.*'`` (and mint_token with only
    subscribe=) used to mint publish ["*"]: a read-only token could publish
    everywhere. Now every publish it tries is refused with forbidden, while
    it still reads what it was given."""
    hub = rt_hub_factory(secret=SECRET)
    before = rss_mb(hub)
    async with Bystander(hub.url, token=every_channel("bystander")) as bystander:
        writer = await RawClient(hub.url, token=every_channel("ann")).connect()
        readers = [
            await RawClient(
                hub.url, token=cli_token("--user", "bob", "--subscribe", "test.*")
            ).connect(),
            await RawClient(
                hub.url, token=mint_token(SECRET, "bob", subscribe=["test.*"])
            ).connect(),
        ]
        channel = f"test.{uuid.uuid4().hex[:8]}"
        try:
            for reader in readers:
                assert_ok(await reader.subscribe(channel))
                for target in (channel, "elsewhere", "test.other"):
                    assert_error(await reader.publish(target, {"x": 1}), "forbidden")
            # The write-only case: no --subscribe, no reading.
            publisher = await RawClient(
                hub.url, token=cli_token("--user", "cy", "--publish", "test.*")
            ).connect()
            try:
                assert_ok(await publisher.publish(channel, {"x": 2}))
                assert_error(await publisher.history(channel), "forbidden")
                assert_error(await publisher.subscribe(channel), "forbidden")
            finally:
                await publisher.close()
            seq = assert_ok(await writer.publish(channel, {"x": 3}))["seq"]
            for reader in readers:
                await reader.wait_for_seq(channel, seq)
                assert [m["data"] for m in reader.received[channel]] == [{"x": 2}, {"x": 3}]
            await keep_serving(bystander)
        finally:
            for client in (writer, *readers):
                await client.close()
    bystander.check()
    # A handful of refused requests: anything past noise would be a leak.
    assert rss_mb(hub) - before < 20


# -- item 6: an expired token ends its connection ------------------------------


def expiring_token(user: str, *, in_seconds: float = 2.0) -> str:
    """A token every channel that the hub accepts now and that runs out about
    ``in_seconds`` from now (its exp is already past, inside the hub's leeway)."""
    issued = time.time() - TOKEN_LEEWAY - 10 + in_seconds
    return every_channel(user, now=issued, ttl=10)


async def test_expired_token_ends_its_connection(rt_hub_factory: Any) -> None:
    """Connections whose token expires used to keep receiving messages,
    presence and document updates and stay room members; only new requests
    were refused. Now the hub ends each one at its token's expiry, saying
    why (a ``closing`` event, unauthorized), and the room forgets them."""
    hub = rt_hub_factory(secret=SECRET)
    room, doc, channel = (f"{kind}.{uuid.uuid4().hex[:8]}" for kind in ("room", "doc", "ch"))
    async with Bystander(hub.url, token=every_channel("bystander")) as bystander:
        observer = await RawClient(hub.url, token=every_channel("observer")).connect()
        assert_ok(await observer.call("presence.join", {"room": room}))
        before = rss_mb(hub)
        expiring: list[RawClient] = []
        closing: list[Any] = []
        try:
            for i in range(40):
                client = RawClient(hub.url, token=expiring_token(f"temp{i}", in_seconds=3))
                client.sio.on("closing", closing.append, namespace="/rtkit")
                expiring.append(await client.connect())
                assert_ok(await client.subscribe(channel))
                assert_ok(await client.call("presence.join", {"room": room}))
                assert_ok(await client.call("doc.sync", {"doc": doc}))
            members = assert_ok(await observer.call("presence.list", {"room": room}))["members"]
            assert len(members) == 41
            for client in expiring:
                await client.wait_disconnected(within=10)
            assert len(closing) == 40
            assert all(c["code"] == "unauthorized" and "expired" in c["message"] for c in closing)
            # The room keeps only the live member, at once (no presence timeout).
            members = assert_ok(await observer.call("presence.list", {"room": room}))["members"]
            assert [m["user"] for m in members] == ["observer"]
            # Nothing more reaches them: they are gone, and a reconnect with the
            # same token is refused.
            seq = assert_ok(await observer.publish(channel, {"after": True}))["seq"]
            assert all(c.last_seq(channel) < seq for c in expiring)
            with pytest.raises(socketio.exceptions.ConnectionError):
                await expiring[0].connect()
            assert "expired" in str(expiring[0].connect_errors[-1])
            await keep_serving(bystander)
        finally:
            for client in (observer, *expiring):
                await client.close()
    bystander.check()
    # 40 connections that came and went: their state is gone with them
    # (measured: about +3 MiB on a fixed hub, from allocator noise).
    assert rss_mb(hub) - before < 25


async def test_client_reports_an_expired_token_instead_of_reconnecting(
    rt_hub_factory: Any,
) -> None:
    """rtkit's own client, told its token expired, stops with Unauthorized
    and does not retry the same token in a loop."""
    import rtkit.aio
    from rtkit.errors import Unauthorized

    hub = rt_hub_factory(secret=SECRET)
    async with Bystander(hub.url, token=every_channel("bystander")) as bystander:
        client = await rtkit.aio.connect(hub.url, expiring_token("kate", in_seconds=2))
        try:
            disconnected = asyncio.Event()
            client.on("disconnect", lambda *_: disconnected.set())
            await asyncio.wait_for(disconnected.wait(), 10)
            # It stops: waiting for a connection raises the hub's reason.
            with pytest.raises(Unauthorized, match="expired"):
                await asyncio.wait_for(client.wait_connected(), 10)
            assert client.metrics.reconnects == 0
            await keep_serving(bystander)
        finally:
            await client.close()
    bystander.check()
    refused = [line for line in hub.log if "refused connection" in line]
    assert not refused, refused  # it did not try again with the same token
