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

import jwt
import pytest

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
            await RawClient(hub.url, token=cli_token("--user", "bob", "--subscribe", "test.*"))
            .connect(),
            await RawClient(hub.url, token=mint_token(SECRET, "bob", subscribe=["test.*"]))
            .connect(),
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
