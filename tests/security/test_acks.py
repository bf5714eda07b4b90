"""Acks that a client never reads cannot pile up in the hub (issue #15, item 1).

A raw websocket sends many requests whose acks are large (history of a
channel of 100 KB messages, subscribe backlogs, doc.sync of a large
document) and never reads. Before the fix the hub built and queued every
ack (100 x history of 20 MB took it from 359 MB to 2.34 GB). Now such a
request waits for the connection's send budget (--max-pending-bytes)
before it reads anything, one ack carries at most --max-ack-bytes, and a
connection that stays over budget for --slow-consumer-timeout seconds is
dropped as a slow consumer. Each test checks that a bystander keeps being
served and that the hub's resident memory stays within a stated bound.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pycrdt
import pytest

import rtkit.aio
from tests.integration.helpers import RawClient, assert_ok, wait_until
from tests.security.attack import Bystander, RawSocket, rss_mb

pytestmark = pytest.mark.timeout(90)

MESSAGE_BYTES = 100_000
MESSAGES = 100  # a 10 MB channel: each unbounded history ack is ~10 MB
REQUESTS = 40  # before the fix: ~40 acks of 10 MB held at once (measured below)
SLOW_TIMEOUT = 3.0  # --slow-consumer-timeout for these hubs
SLOW_LINE = "it is too slow to keep up"

# What the hub may grow by while one connection does not read: the send
# budget (16 MiB of queued acks), the ack being built and the one the
# writer holds (4 MiB of messages each, in two or three copies while it is
# encoded: dict, JSON text, websocket frame), the store's read chunks, and
# what the allocator keeps after freeing. Measured: +36 to +65 MiB with the
# fix; +250 to +770 MiB without it (40 requests, a 10 MB channel or an
# 8 MB document).
RSS_BOUND_MB = 100.0

STORES = ["memory", "sqlite", "redis"]


def _store_url(kind: str, tmp_path: Any, redis_prefix: Callable[[], str]) -> str:
    if kind == "memory":
        return "memory://"
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'hub.db'}"
    from rtkit.pytest_plugin import REDIS_URL

    return f"{REDIS_URL}?prefix={redis_prefix()}"


# The tests fill channels and documents with megabytes at once, faster than
# the per-connection byte quota allows (it has tests of its own).
NO_BYTE_QUOTA = ["--publish-bytes-rate", "0"]


@pytest.fixture
def store_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    kind: str = request.param
    return _store_url(kind, tmp_path, lambda: request.getfixturevalue("rt_redis_prefix"))


def _start_hub(rt_hub_factory: Any, store: str, *, fast_paths: bool = True) -> Any:
    return rt_hub_factory(
        store=store,
        extra_args=["--slow-consumer-timeout", str(SLOW_TIMEOUT), *NO_BYTE_QUOTA],
        env=None if fast_paths else {"RTKIT_FAST_PATHS": "0"},
    )


async def _fill_channel(url: str, channel: str) -> None:
    client = await RawClient(url, name="filler").connect()
    try:
        for n in range(MESSAGES):
            assert_ok(await client.publish(channel, {"n": n, "pad": "x" * MESSAGE_BYTES}))
    finally:
        await client.close()


async def _attack(
    hub: Any, send: Callable[[RawSocket, int], Awaitable[None]], requests: int = REQUESTS
) -> tuple[float, float, float]:
    """Run the attack of a socket that never reads, with a bystander served
    meanwhile. Returns the hub's RSS before, its peak while the hub held
    the socket, and after the hub dropped it (MiB)."""
    before = rss_mb(hub)
    peak = before
    async with Bystander(hub.url) as bystander:
        sock = await RawSocket.open(hub.url)
        assert (await sock.connect_namespace({})).startswith("40/rtkit,")
        for i in range(requests):
            await send(sock, i)
        # Wait (without reading) for the hub to drop the socket as a slow
        # consumer, sampling its memory meanwhile.
        deadline = time.monotonic() + SLOW_TIMEOUT + 12
        while not any(SLOW_LINE in line for line in hub.log):
            peak = max(peak, rss_mb(hub))
            assert peak - before < RSS_BOUND_MB, (
                f"the hub grew by {peak - before:.0f} MiB (bound {RSS_BOUND_MB})"
            )
            assert time.monotonic() < deadline, (
                "the hub never dropped the socket that reads nothing"
            )
            await asyncio.sleep(0.1)
        peak = max(peak, rss_mb(hub))
        await sock.close()
        await _served_some_more(bystander)
    bystander.check()
    after = rss_mb(hub)
    print(f"RSS before {before:.0f} MiB, peak {peak:.0f} MiB, after {after:.0f} MiB")
    return before, peak, after


async def _served_some_more(bystander: Bystander, count: int = 6) -> None:
    """Let the bystander go on until it has been served ``count`` more times."""
    target = len(bystander.acked) + count
    await wait_until(lambda: len(bystander.acked) >= target, "the bystander to be served")


def _history(channel: str) -> Callable[[RawSocket, int], Awaitable[None]]:
    async def send(sock: RawSocket, i: int) -> None:
        request = json.dumps({"channel": channel, "limit": 10_000})
        await sock.send_text(f'42/rtkit,{i}["history",{request}]')

    return send


@pytest.mark.parametrize("store_url", STORES, indirect=True)
async def test_unread_history_acks_stay_within_the_send_budget(
    rt_hub_factory: Any, store_url: str
) -> None:
    hub = _start_hub(rt_hub_factory, store_url)
    await _fill_channel(hub.url, "big")
    before, peak, after = await _attack(hub, _history("big"))
    assert peak - before < RSS_BOUND_MB
    assert after - before < RSS_BOUND_MB  # nothing of the socket's is kept


@pytest.mark.parametrize(
    ("server", "fast_paths"), [("aiohttp", False), ("tornado", False), ("tornado", True)]
)
async def test_unread_history_acks_are_bounded_on_every_transport(
    rt_hub_factory: Any, server: str, fast_paths: bool
) -> None:
    # RTKIT_FAST_PATHS=0: every ack goes through Engine.IO's queue, where
    # the send budget is counted the same way. Under tornado the queue stays
    # empty (its driver does not wait for write_message): what IOStream
    # buffers counts instead.
    hub = rt_hub_factory(
        extra_args=[
            "--slow-consumer-timeout",
            str(SLOW_TIMEOUT),
            "--server",
            server,
            *NO_BYTE_QUOTA,
        ],
        env=None if fast_paths else {"RTKIT_FAST_PATHS": "0"},
    )
    await _fill_channel(hub.url, "big")
    before, peak, after = await _attack(hub, _history("big"))
    assert peak - before < RSS_BOUND_MB
    assert after - before < RSS_BOUND_MB


@pytest.mark.parametrize("store_url", STORES, indirect=True)
async def test_unread_subscribe_backlogs_stay_within_the_send_budget(
    rt_hub_factory: Any, store_url: str
) -> None:
    hub = _start_hub(rt_hub_factory, store_url)
    await _fill_channel(hub.url, "big")

    async def send(sock: RawSocket, i: int) -> None:
        # A repeated subscribe starts over: each asks for the whole backlog.
        await sock.send_text(f'42/rtkit,{i}["subscribe",{{"channel":"big","since":0}}]')

    before, peak, after = await _attack(hub, send)
    assert peak - before < RSS_BOUND_MB
    assert after - before < RSS_BOUND_MB


async def test_unread_doc_sync_acks_stay_within_the_send_budget(rt_hub_factory: Any) -> None:
    hub = _start_hub(rt_hub_factory, "memory://")
    # A document of 40 x 200 KB = 8 MB, built from updates under the payload cap.
    doc = pycrdt.Doc()
    root = doc.get("root", type=pycrdt.Map)
    writer = await RawClient(hub.url, name="doc-writer").connect()
    try:
        for n in range(40):
            state = doc.get_state()
            root[f"k{n}"] = "z" * 200_000
            update = doc.get_update(state)
            assert_ok(await writer.call("doc.update", {"doc": "big", "update": update}))
    finally:
        await writer.close()

    async def send(sock: RawSocket, i: int) -> None:
        await sock.send_text(f'42/rtkit,{i}["doc.sync",{{"doc":"big"}}]')

    before, peak, after = await _attack(hub, send, requests=30)
    assert peak - before < RSS_BOUND_MB
    assert after - before < RSS_BOUND_MB


async def test_requests_over_the_in_flight_cap_are_refused_at_once(
    rt_hub_factory: Any, tmp_path: Any
) -> None:
    # SQLite reads wait for a thread, so a burst of requests is in flight at
    # once; past --max-requests-in-flight they are answered rate_limited
    # right away instead of waiting in the hub.
    hub = rt_hub_factory(
        store=f"sqlite:///{tmp_path / 'hub.db'}", extra_args=["--max-requests-in-flight", "4"]
    )
    before = rss_mb(hub)
    async with Bystander(hub.url) as bystander:
        # A channel with messages: its reads go to the database's thread.
        writer = await RawClient(hub.url, name="writer").connect()
        await writer.publish("c", {"n": 1})
        await writer.close()
        sock = await RawSocket.open(hub.url)
        assert (await sock.connect_namespace({})).startswith("40/rtkit,")
        burst = b"".join(
            sock._frame(0x1, f'42/rtkit,{i}["history",{{"channel":"c"}}]'.encode())
            for i in range(100)
        )
        sock.writer.write(burst)
        await sock.writer.drain()
        codes: dict[int, str] = {}
        while len(codes) < 100:
            packet = await sock.receive(within=10)
            assert isinstance(packet, str), packet
            if packet == "2":
                await sock.send_text("3")
                continue
            head, _, body = packet.partition("[")
            assert head.startswith("43/rtkit,"), packet
            ack = json.loads("[" + body)[0]
            codes[int(head[len("43/rtkit,") :])] = "ok" if ack["ok"] else ack["error"]["code"]
        await sock.close()
        await _served_some_more(bystander)
    bystander.check()
    assert set(codes.values()) == {"ok", "rate_limited"}, codes
    assert list(codes.values()).count("ok") >= 4
    assert rss_mb(hub) - before < RSS_BOUND_MB


async def test_the_python_client_reads_a_long_history_across_pages(rt_hub_factory: Any) -> None:
    # Acks of at most ~20 KB: 100 messages of 1 KB take several pages.
    hub = rt_hub_factory(extra_args=["--max-payload", "2000", "--max-ack-bytes", "20000"])
    client = await RawClient(hub.url, name="pager").connect()
    try:
        for n in range(1, 101):
            assert_ok(await client.publish("long", {"n": n, "pad": "y" * 1000}))
        raw = assert_ok(await client.history("long", since=0))
        assert raw["more"] is True and 10 <= len(raw["messages"]) < 100
    finally:
        await client.close()
    async with await rtkit.aio.connect(hub.url) as hubc:
        ch = hubc.channel("long")
        assert [m.seq for m in await ch.history(since=0)] == list(range(1, 101))
        assert [m.seq for m in await ch.history()] == list(range(1, 101))
        assert [m.seq for m in await ch.history(limit=50)] == list(range(51, 101))
        assert [m.seq for m in await ch.history(since=10, before=90)] == list(range(11, 90))
        assert [m.seq for m in await ch.history(before=90, limit=30)] == list(range(60, 90))
        assert [m.data["n"] for m in await ch.history(since=95)] == [96, 97, 98, 99, 100]


async def test_a_connection_that_sends_and_never_reads_is_dropped(rt_hub_factory: Any) -> None:
    """Small requests without reading a single answer (the soak test's
    fuzzer does this): their error acks once piled up without bound, since
    only the large acks waited for the send budget."""
    hub = _start_hub(rt_hub_factory, "memory://")
    before = rss_mb(hub)
    peak = before
    async with Bystander(hub.url) as bystander:
        sock = await RawSocket.open(hub.url)
        assert (await sock.connect_namespace({})).startswith("40/rtkit,")
        # 200,000 requests for an event that does not exist, in bursts of
        # 1,000 frames: each gets a small error ack that nobody reads.
        frames = [
            sock._frame(0x1, f'42/rtkit,{i}["no.such.event",{{}}]'.encode()) for i in range(1000)
        ]
        burst = b"".join(frames)
        for _ in range(200):
            try:
                sock.writer.write(burst)
                await asyncio.wait_for(sock.writer.drain(), 5)
            except (ConnectionError, OSError, TimeoutError):
                break  # the hub closed the socket, or stopped reading it
            peak = max(peak, rss_mb(hub))
            if any(SLOW_LINE in line for line in hub.log):
                break
        await wait_until(
            lambda: any(SLOW_LINE in line for line in hub.log), "the hub to drop the socket"
        )
        peak = max(peak, rss_mb(hub))
        await sock.close()
        await _served_some_more(bystander)
    bystander.check()
    print(f"RSS before {before:.0f} MiB, peak {peak:.0f} MiB")
    # Bound: 2,000 unread packets (a few hundred KB) plus the requests still
    # being read. Without the packet budget: +40 MiB and growing.
    assert peak - before < 30, f"the hub grew by {peak - before:.0f} MiB"
