"""Abuse of the Engine.IO / Socket.IO layer, by raw sockets against real hubs.

Each test runs its attack against a hub process while a Bystander keeps
publishing and receiving on the same hub, and checks the hub's resident
memory stays within a stated bound. The hosts differ in their websocket
read loops (aiohttp: rtkit's own; tornado: python-engineio's), so the
attacks run on both; the suite runs again with RTKIT_FAST_PATHS=0.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from rtkit.hub.auth import mint_token
from tests.integration.helpers import RawClient
from tests.security.attack import Bystander, RawSocket, rss_mb

SECRET = "transport-abuse-secret-0123456789abcdef"
SERVERS = ["aiohttp", "tornado"]
# A second loopback address stands for an attacker's host, so that the
# per-address cap can be told apart from the bystander's 127.0.0.1.
ATTACKER = "127.0.0.2"
FRAME = 900_000  # just under the hub's 1 MB frame limit

pytestmark = pytest.mark.timeout(60)


def token(user: str = "bob", *, grants: bool = True) -> str:
    if grants:
        return mint_token(SECRET, user, publish=["*"], subscribe=["*"])
    return mint_token(SECRET, user, publish=[], subscribe=[])


def start_hub(factory: Any, server: str, *extra: str) -> Any:
    return factory(secret=SECRET, extra_args=["--server", server, *extra])


async def wait_until(condition: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within}s: {what}")
        await asyncio.sleep(0.05)


async def send_until_closed(sock: RawSocket, frames: int, payload: bytes) -> int:
    """Send up to ``frames`` binary frames; stop when the hub has closed the
    connection (a write fails). Returns how many were written."""
    sent = 0
    for _ in range(frames):
        try:
            await sock.send_binary(payload)
        except (ConnectionError, OSError):
            break
        sent += 1
    return sent


async def keep_serving(bystander: Bystander) -> None:
    """Let the bystander get its share of publishes through after the attack."""
    target = len(bystander.acked) + 5
    await wait_until(lambda: len(bystander.acked) >= target, 10, "bystander publishes")


def lines(hub: Any, needle: str) -> list[str]:
    return [line for line in list(hub.log) if needle in line]


def violations(hub: Any) -> list[str]:
    return lines(hub, "protocol violation") + lines(hub, "not Engine.IO")


# -- item 2: binary attachments -----------------------------------------------


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize(
    ("announced", "joined"),
    [
        (9_999_999_999, True),  # more attachments than any event carries
        (2, True),  # a plausible count, but 1.8 MB of attachments
        (9_999_999_999, False),  # before the namespace CONNECT
    ],
    ids=["count", "bytes", "unjoined"],
)
async def test_attachment_flood_closes_the_socket(
    rt_hub_factory: Any, server: str, announced: int, joined: bool
) -> None:
    hub = start_hub(rt_hub_factory, server)
    async with Bystander(hub.url, token=token("bystander")) as bystander:
        before = rss_mb(hub)
        sock = await RawSocket.open(hub.url, source=ATTACKER)
        if joined:
            # A token with no grants at all is enough to get this far.
            answer = await sock.connect_namespace({"token": token("mallory", grants=False)})
            assert answer.startswith("40/rtkit"), answer
        header = {"channel": "x", "data": {"_placeholder": True, "num": 0}}
        await sock.send_text(f"45{announced}-/rtkit,1" + json.dumps(["publish", header]))
        # 100 frames of 900 KB: an unbounded hub buffers all 90 MB of them.
        await send_until_closed(sock, 100, b"\x01" * FRAME)
        await sock.wait_closed(within=10)
        await sock.close()
        grown = rss_mb(hub) - before
        await keep_serving(bystander)
    bystander.check()
    # Bound: a packet's attachments are capped at 1 MB and the socket is
    # closed at once; 40 MB leaves room for the kernel's socket buffers and
    # the allocator keeping freed frames (measured: a few MB). Unbounded, the
    # hub holds the whole 90 MB until the socket closes.
    assert grown < 40, f"the hub grew by {grown:.0f} MB"
    assert not lines(hub, "Traceback"), lines(hub, "Traceback")[:3]


# -- item 4: junk before login ------------------------------------------------


@pytest.mark.parametrize("server", SERVERS)
async def test_junk_before_connect_logs_a_line_not_a_traceback_per_frame(
    rt_hub_factory: Any, server: str
) -> None:
    hub = start_hub(rt_hub_factory, server)
    async with Bystander(hub.url, token=token("bystander")) as bystander:
        before = rss_mb(hub)
        # One socket, 2,000 small binary frames, never joined: stock
        # python-socketio logs a traceback for every one and reads on.
        sock = await RawSocket.open(hub.url, source=ATTACKER)
        await send_until_closed(sock, 2000, b"\x00junk" * 20)
        await sock.wait_closed(within=10)
        await sock.close()
        # Then 40 sockets with one junk frame each (binary, a text message
        # Socket.IO cannot parse, or a frame that is not Engine.IO): one
        # line each at most, and the
        # hub-wide rate limit keeps even that bounded.
        for n in range(40):
            other = await RawSocket.open(hub.url, source=ATTACKER)
            if n % 3 == 0:
                await other.send_binary(b"\xff" * 64)
            elif n % 3 == 1:
                await other.send_text("4Z not socket.io")
            else:
                await other.send_text("9 not even Engine.IO")
            await other.wait_closed(within=10)
            await other.close()
        grown = rss_mb(hub) - before
        await keep_serving(bystander)
        # The log is read by a thread: wait for the lines that must be there.
        await wait_until(lambda: len(violations(hub)) >= 10, 5, "the violation lines")
    bystander.check()
    violation_lines = violations(hub)
    assert not lines(hub, "Traceback"), lines(hub, "Traceback")[:3]
    # 41 sockets closed within seconds: at most the limiter's burst of 10
    # lines per 10 s window gets out (two windows at most in this test).
    assert len(violation_lines) <= 20, len(violation_lines)
    assert sum(len(line) for line in hub.log) < 50_000, "the hub log grew too much"
    # Bound: nothing is kept per junk frame; 20 MB is the allocator's slack.
    assert grown < 20, f"the hub grew by {grown:.0f} MB"


# -- item 14: sessions that never join -----------------------------------------


@pytest.mark.parametrize("server", SERVERS)
async def test_sessions_that_never_join_are_closed_at_the_deadline(
    rt_hub_factory: Any, server: str
) -> None:
    hub = start_hub(rt_hub_factory, server, "--connect-timeout", "1")
    async with Bystander(hub.url, token=token("bystander")) as bystander:
        before = rss_mb(hub)
        idle = [await RawSocket.open(hub.url, source=ATTACKER) for _ in range(30)]
        joined = await RawSocket.open(hub.url, source=ATTACKER)
        answer = await joined.connect_namespace({"token": token("carol")})
        assert answer.startswith("40/rtkit"), answer
        started = time.monotonic()
        for sock in idle:
            await sock.wait_closed(within=8)
            await sock.close()
        took = time.monotonic() - started
        # The session that joined in time stays and is served.
        await joined.send_text('42/rtkit,7["history",{"channel":"notes"}]')
        reply = await joined.receive()
        assert isinstance(reply, str) and reply.startswith("43/rtkit,7"), reply
        await joined.close()
        grown = rss_mb(hub) - before
        await keep_serving(bystander)
    bystander.check()
    assert took < 6, f"idle sessions lived {took:.1f}s past a 1s deadline"
    assert not lines(hub, "Traceback")
    # Bound: 31 sessions cost well under a megabyte; 20 MB is slack.
    assert grown < 20, f"the hub grew by {grown:.0f} MB"


@pytest.mark.parametrize("server", SERVERS)
async def test_pending_sessions_are_capped_per_address(rt_hub_factory: Any, server: str) -> None:
    cap = 50
    hub = start_hub(
        rt_hub_factory,
        server,
        "--max-pending-per-address",
        str(cap),
        "--connect-timeout",
        "30",
    )
    async with Bystander(hub.url, token=token("bystander")) as bystander:
        before = rss_mb(hub)
        pending = [await RawSocket.open(hub.url, source=ATTACKER) for _ in range(cap)]
        with pytest.raises(ConnectionRefusedError) as refused:
            await RawSocket.open(hub.url, source=ATTACKER)
        assert " 401 " in str(refused.value)
        # Another address is not affected: a stock client connects and works.
        client = await RawClient(hub.url, token=token("dave"), name="newcomer").connect()
        try:
            ack = await client.publish("newcomer", {"hello": 1})
            assert ack["ok"], ack
        finally:
            await client.close()
        # A pending session that joins frees its place for the next one.
        answer = await pending[0].connect_namespace({"token": token("erin")})
        assert answer.startswith("40/rtkit"), answer
        extra = await RawSocket.open(hub.url, source=ATTACKER)
        grown = rss_mb(hub) - before
        await keep_serving(bystander)
        for sock in [*pending, extra]:
            await sock.close()
    bystander.check()
    # Bound: 51 sessions are well under a megabyte; 20 MB is slack.
    assert grown < 20, f"the hub grew by {grown:.0f} MB"


# -- reserved event names (found by the soak test's fuzzer) --------------------


@pytest.mark.parametrize("server", SERVERS)
async def test_events_named_connect_or_disconnect_are_refused(
    rt_hub_factory: Any, server: str
) -> None:
    """python-socketio hands an EVENT named ``connect`` to the server's own
    connect handler, with the client's arguments: it failed in a task with a
    traceback, and the client got no answer."""
    hub = start_hub(rt_hub_factory, server)
    client = await RawClient(hub.url, token=token("mallory"), name="mallory").connect()
    try:
        for event in ["connect", "disconnect"]:
            ack = await client.call(event, {"token": token("eve")})
            assert ack["error"]["code"] == "bad_request", ack
            assert event in ack["error"]["message"]
        assert client.connected
        assert (await client.publish("still.here", 1))["ok"]
    finally:
        await client.close()
    assert not lines(hub, "Traceback"), lines(hub, "Traceback")[:3]
    assert not lines(hub, "exception was never retrieved")
