"""Per-channel analytics in the status API (rates, bytes, publishers,
subscribers, last activity), the operator's tables (connections by user,
slow consumers) and ``rtkit top`` reading them from a real hub."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from rtkit.hub.analytics import ChannelAnalytics
from rtkit.pytest_plugin import InProcessHub

from .conftest import SECRET, Connect, token

API_KEY = "analytics-api-key-0123456789abcdef"
KEY = {"X-API-Key": API_KEY}


@pytest.fixture(scope="module")
def hub() -> Iterator[InProcessHub]:
    running = InProcessHub(secret=SECRET, extra_args=["--api-key", API_KEY]).start()
    try:
        yield running
    finally:
        running.terminate(timeout=5)


async def status(hub: InProcessHub) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=hub.url, timeout=10) as http:
        answer = await http.get("/api/status", headers=KEY)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def until(hub: InProcessHub, check: Any, within: float = 10.0) -> dict[str, Any]:
    """The first status for which ``check(status)`` holds (sampled each second)."""
    deadline = time.monotonic() + within
    while True:
        snapshot = await status(hub)
        if check(snapshot):
            return snapshot
        if time.monotonic() > deadline:
            raise AssertionError(f"status never matched within {within}s: {snapshot}")
        await asyncio.sleep(0.2)  # polling the API: the figures are sampled each second


async def test_status_counts_what_was_published(hub: InProcessHub, connect: Connect) -> None:
    watcher = await connect(hub.url, token=token("watcher"))
    await watcher.subscribe("hot.prices")
    ann = await connect(hub.url, token=token("ann"))
    bob = await connect(hub.url, token=token("bob"))
    payloads = [{"px": i, "pad": "x" * (i % 7)} for i in range(200)]
    sent_bytes = 0
    for i, data in enumerate(payloads):
        publisher = ann if i % 2 else bob
        assert (await publisher.publish("hot.prices", data))["ok"]
        sent_bytes += len(orjson.dumps(data))
    assert (await ann.publish("quiet.log", {"once": True}))["ok"]

    snapshot = await until(hub, lambda s: s["channels"].get("hot.prices", {}).get("rate", 0) > 0)
    hot, quiet = snapshot["channels"]["hot.prices"], snapshot["channels"]["quiet.log"]
    assert hot["published"] == 200 and hot["seq"] == 200
    assert hot["bytes"] == sent_bytes
    assert hot["publishers"] == 2
    assert hot["subscribers"] == 1
    assert time.time() - hot["last_activity"] < 30
    assert quiet["published"] == 1 and quiet["subscribers"] == 0 and quiet["publishers"] == 1
    assert snapshot["connections_by_user"]["watcher"] == 1
    assert {"ann", "bob"} <= set(snapshot["connections_by_user"])
    assert snapshot["slow_consumers"]["disconnected"] >= 0


async def test_a_batch_counts_each_message(hub: InProcessHub) -> None:
    async with httpx.AsyncClient(base_url=hub.url, timeout=10) as http:
        batch = {"messages": [{"data": {"n": n}} for n in range(50)]}
        answer = await http.post("/api/channels/batch.in/messages", headers=KEY, json=batch)
        assert answer.status_code == 200, answer.text
    snapshot = await status(hub)
    figures = snapshot["channels"]["batch.in"]
    assert figures["published"] == 50
    assert figures["bytes"] == sum(len(orjson.dumps({"n": n})) for n in range(50))


async def test_status_takes_the_api_key(hub: InProcessHub) -> None:
    async with httpx.AsyncClient(base_url=hub.url, timeout=10) as http:
        answer = await http.get(
            "/api/status", headers={"Authorization": f"Bearer {token('mallory')}"}
        )
    assert answer.status_code == 403
    assert "API key" in answer.json()["error"]["message"]


def rtkit_top(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "120", "LINES": "40"}
    env.pop("RTKIT_API_KEY", None)
    return subprocess.run(
        [sys.executable, "-m", "rtkit", "top", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


async def test_rtkit_top_ranks_channels_by_rate(hub: InProcessHub, connect: Connect) -> None:
    sender = await connect(hub.url, token=token("top-sender"))
    for i in range(300):
        assert (await sender.publish("top.busy", {"i": i}))["ok"]
    for i in range(3):
        assert (await sender.publish("top.idle", {"i": i}))["ok"]
    await until(hub, lambda s: s["channels"].get("top.busy", {}).get("rate", 0) > 0)

    shown = await asyncio.to_thread(rtkit_top, "--url", hub.url, "--api-key", API_KEY, "--once")
    assert shown.returncode == 0, shown.stderr
    rows = [line.split()[0] for line in shown.stdout.splitlines() if line.startswith("top.")]
    assert rows.index("top.busy") < rows.index("top.idle"), shown.stdout
    assert "top-sender" in shown.stdout
    assert "\x1b" not in shown.stdout  # --once prints plain text


async def test_rtkit_top_says_what_is_wrong(hub: InProcessHub) -> None:
    refused = await asyncio.to_thread(rtkit_top, "--url", hub.url, "--once")
    assert refused.returncode == 2
    assert "API key" in refused.stderr and "Traceback" not in refused.stderr
    with_bad_key = await asyncio.to_thread(
        rtkit_top, "--url", hub.url, "--api-key", "wrong-key-0123456789", "--once"
    )
    assert with_bad_key.returncode == 2 and "401" in with_bad_key.stderr
    nobody = await asyncio.to_thread(rtkit_top, "--url", "http://127.0.0.1:9", "--once")
    assert nobody.returncode == 2 and "cannot reach the hub" in nobody.stderr


def test_the_table_stays_bounded() -> None:
    """Channels come and go: the table keeps at most max_channels, the least
    recently active dropped first, and forgets idle channels."""
    now = [1000.0]
    seqs: dict[str, tuple[int, int]] = {}
    analytics = ChannelAnalytics(lambda: seqs, max_channels=3, clock=lambda: now[0])
    for i in range(5):
        now[0] += 1
        analytics.published(f"c{i}", "u", 10)
        analytics.sample()
    assert set(analytics.report()) == {"c2", "c3", "c4"}
    now[0] += 601
    analytics.sample()
    assert analytics.report() == {}


def test_top_shows_webhooks_and_bridges() -> None:
    from rtkit.top import render

    screen = render(
        {
            "state": "running",
            "channels": {},
            "webhooks": {"sent": 3, "queued": 1, "failed_attempts": 2, "dropped": 0},
            "bridges": {"plant": {"status": "connected", "lag": 4, "last_position": "S:17"}},
        },
        url="http://hub",
    )
    assert "webhooks sent 3  queued 1  failed attempts 2  dropped 0" in screen
    assert any(
        line.split() == ["plant", "connected", "4", "0", "S:17"] for line in screen.splitlines()
    ), screen
