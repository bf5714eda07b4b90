"""Issue #15, the stores: reads create no state and have a budget (item 7),
seqs beyond what a store holds are bad requests (item 11), idempotency keys
of senders with separators in their names do not collide (item 13), and
retention has byte caps (item 8, the stores' part).

Each test runs real hub processes, attacks them as a raw client would
(pipelining requests on a hand-made websocket), checks that a bystander
stays served, and bounds what the attack left behind: hub memory (RSS, from
/proc), SQLite rows or Redis keys.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sqlite3
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rtkit.hub.auth import mint_token
from rtkit.pytest_plugin import REDIS_URL
from tests.integration.helpers import RawClient
from tests.security.attack import Bystander, RawSocket, rss_mb

SECRET = "s" * 40
# These tests pipeline thousands of requests and publish megabytes at once:
# only the limit under test applies (the others have tests of their own).
NO_READ_LIMIT = [
    "--read-rate",
    "0",
    "--max-requests-in-flight",
    "100000",
    "--publish-bytes-rate",
    "0",
]


def store_url(kind: str, tmp_path: Path, redis_prefix: str | None) -> str:
    if kind == "memory":
        return "memory://"
    if kind == "sqlite":
        return f"sqlite:///{tmp_path}/hub.db"
    return f"{REDIS_URL}?prefix={redis_prefix}"


@pytest.fixture(autouse=True)
def _no_garbage_from_earlier_tests() -> None:
    """Collect what earlier tests of this process left before measuring.
    These tests allocate hundreds of thousands of objects, so the garbage
    collector runs inside them: a client socket an earlier test let go of
    without closing would show here as that test's ResourceWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


@pytest.fixture(params=["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def store_kind(request: pytest.FixtureRequest) -> Iterator[tuple[str, str | None]]:
    prefix = request.getfixturevalue("rt_redis_prefix") if request.param == "redis" else None
    yield request.param, prefix


async def pipeline(
    sock: RawSocket, requests: list[tuple[str, dict[str, Any]]], window: int = 500
) -> list[dict[str, Any]]:
    """Send ``(event, payload)`` requests with ack ids, ``window`` at a time
    without waiting, and return their acks in order."""
    acks: list[dict[str, Any]] = []
    for start in range(0, len(requests), window):
        chunk = requests[start : start + window]
        for n, (event, payload) in enumerate(chunk, start):
            text = f"42/rtkit,{n}" + json.dumps([event, payload])
            sock.writer.write(sock._frame(0x1, text.encode()))
        await sock.writer.drain()
        got: dict[int, dict[str, Any]] = {}
        while len(got) < len(chunk):
            packet = await sock.receive(within=30)
            assert packet is not None, "the hub closed the socket"
            if packet == "2":
                await sock.send_text("3")
            elif isinstance(packet, str) and packet.startswith("43/rtkit,"):
                body = packet[len("43/rtkit,") :]
                split = body.index("[")
                got[int(body[:split])] = json.loads(body[split:])[0]
        acks.extend(got[n] for n in range(start, start + len(chunk)))
    return acks


async def open_raw(url: str, token: str | None = None) -> RawSocket:
    sock = await RawSocket.open(url, rcvbuf=1 << 20)
    answer = await sock.connect_namespace({"token": token} if token else {})
    assert answer.startswith("40/rtkit"), answer
    return sock


async def served(bystander: Bystander, at_least: int = 5, within: float = 10.0) -> None:
    """Until the bystander has had ``at_least`` publishes acked (the attack
    may be over before it had the chance)."""
    deadline = time.monotonic() + within
    while len(bystander.acked) < at_least:
        assert time.monotonic() < deadline, f"the bystander got {len(bystander.acked)} acks"
        await asyncio.sleep(bystander.interval)


def redis_keys(prefix: str) -> int:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        return sum(1 for _ in client.scan_iter(match=f"{prefix}*", count=1000))
    finally:
        client.close()


def sqlite_channel_rows(path: Path) -> int:
    query = "SELECT count(*) FROM channels WHERE name NOT LIKE 'bystander.%'"
    with sqlite3.connect(path) as db:
        return int(db.execute(query).fetchone()[0])


# -- item 7: reads create no state ---------------------------------------------

# Unique channel names read per store: the numbers, but 20,000 on
# Redis, where 50,000 pipelined reads take ~35 s on a shared 2-core machine
# (each is a MULTI of four commands); the unfixed hub leaves a key per read.
READS = {"memory": 200_000, "sqlite": 50_000, "redis": 20_000}
# Unfixed, 200,000 reads grew a memory hub by ~230 MiB (about 1.2 KiB per
# name, for good). Fixed, what remains is allocator slack from the requests
# themselves: measured at a few MiB; 40 MiB leaves room for a busy machine
# and is still a sixth of the unfixed growth.
RSS_GROWTH_BOUND_MB = 40.0


async def test_reads_of_unknown_channels_create_no_state(
    rt_hub_factory: Any, store_kind: tuple[str, str | None], tmp_path: Path
) -> None:
    kind, prefix = store_kind
    hub = rt_hub_factory(store=store_url(kind, tmp_path, prefix), extra_args=NO_READ_LIMIT)
    n = READS[kind]
    async with Bystander(hub.url) as bystander:
        sock = await open_raw(hub.url)
        await pipeline(sock, [("history", {"channel": "warm.up", "limit": 10})] * 2000)
        before = rss_mb(hub)
        started = time.monotonic()
        acks = await pipeline(
            sock, [("history", {"channel": f"probe.{i}", "limit": 10}) for i in range(n)]
        )
        elapsed = time.monotonic() - started
        bad = [a for a in acks if not (a["ok"] and a["seq"] == 0 and a["messages"] == [])]
        assert not bad, bad[:3]
        # Half of them again: the epoch an empty channel reports is stable.
        again = await pipeline(
            sock, [("history", {"channel": f"probe.{i}"}) for i in range(0, n, 1000)]
        )
        assert [a["epoch"] for a in again] == [acks[i]["epoch"] for i in range(0, n, 1000)]
        after = rss_mb(hub)
        await sock.close()
        await served(bystander)
    bystander.check()
    print(f"{kind}: {n} reads in {elapsed:.1f}s, RSS {before:.0f} -> {after:.0f} MiB")
    assert after - before < RSS_GROWTH_BOUND_MB, f"RSS grew {after - before:.0f} MiB"
    if kind == "sqlite":
        hub.restart()  # whatever was saved is on disk now, and reloaded
        assert sqlite_channel_rows(tmp_path / "hub.db") == 0
        sock = await open_raw(hub.url)
        ack = (await pipeline(sock, [("history", {"channel": "probe.1"})]))[0]
        assert ack["ok"] and ack["epoch"] == acks[1]["epoch"]  # the salt is kept in the file
        await sock.close()
    if kind == "redis":
        assert prefix is not None
        # The salt key and the bystander's channel (seq, epoch, log, bytes).
        assert redis_keys(prefix) <= 5, redis_keys(prefix)


async def test_reads_over_the_budget_are_rate_limited(rt_hub_factory: Any) -> None:
    hub = rt_hub_factory(
        extra_args=[
            "--read-rate",
            "50",
            "--read-burst",
            "100",
            "--max-requests-in-flight",
            "100000",
        ]
    )
    async with Bystander(hub.url) as bystander:
        before = rss_mb(hub)
        sock = await open_raw(hub.url)
        requests = [("history", {"channel": f"c.{i}"}) for i in range(300)]
        requests += [("subscribe", {"channel": f"c.{i}"}) for i in range(300)]
        acks = await pipeline(sock, requests)
        refused = [a for a in acks if not a["ok"]]
        assert {a["error"]["code"] for a in refused} == {"rate_limited"}
        assert "reads/s" in refused[0]["error"]["message"]
        # The burst went through, the rest was refused (a little refills meanwhile).
        assert 100 <= len(acks) - len(refused) < 200
        # Still connected, and served again once the bucket refilled.
        deadline = time.monotonic() + 10
        while not (await pipeline(sock, [("history", {"channel": "c.0"})]))[0]["ok"]:
            assert time.monotonic() < deadline, "the read budget never refilled"
            await asyncio.sleep(0.05)  # waiting for the bucket, not for a condition elsewhere
        assert (await pipeline(sock, [("publish", {"channel": "c.0", "data": 1})]))[0]["ok"]
        await sock.close()
        after = rss_mb(hub)
        await served(bystander)
    bystander.check()
    # Refused reads cost nothing lasting: measured under 2 MiB.
    assert after - before < 20


# -- item 11: seqs beyond what a store holds -----------------------------------


async def test_huge_seqs_are_bad_requests_without_tracebacks(
    rt_hub_factory: Any, store_kind: tuple[str, str | None], tmp_path: Path
) -> None:
    kind, prefix = store_kind
    hub = rt_hub_factory(store=store_url(kind, tmp_path, prefix), extra_args=NO_READ_LIMIT)
    huge = [2**53, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 10**30]
    probes: list[tuple[str, dict[str, Any]]] = []
    for value in huge:
        probes.append(("history", {"channel": "ch", "since": value}))
        probes.append(("history", {"channel": "ch", "before": value}))
        probes.append(("history", {"channel": "ch", "since": 1, "before": value}))
        probes.append(("subscribe", {"channel": "ch", "since": value, "epoch": "x"}))
    async with Bystander(hub.url) as bystander:
        before = rss_mb(hub)
        log_lines = len(hub.log)
        sock = await open_raw(hub.url)
        assert (await pipeline(sock, [("publish", {"channel": "ch", "data": 1})]))[0]["ok"]
        # The flood: 13,800 such requests made 19 MB of log.
        acks = await pipeline(sock, probes * 600)
        for ack in acks:
            assert not ack["ok"] and ack["error"]["code"] == "bad_request", ack
            # 10**30 arrives as a float (over 64 bits): "must be an integer".
            assert "must be <= 9007199254740991" in ack["error"]["message"] or (
                "must be an integer" in ack["error"]["message"]
            )
        ok = await pipeline(sock, [("history", {"channel": "ch", "since": 0})])
        assert ok[0]["ok"] and ok[0]["seq"] == 1
        await sock.close()
        after = rss_mb(hub)
        await served(bystander)
    bystander.check()
    new_log = hub.log[log_lines:]
    assert not [line for line in new_log if "Traceback" in line], new_log[:20]
    assert len(new_log) < 20, new_log[:20]
    assert after - before < 20  # bad requests leave nothing behind (measured ~1 MiB)


# -- item 13: idempotency keys of senders with ':' in their names --------------


async def test_senders_with_colons_do_not_share_idempotency_keys(
    rt_hub_factory: Any, store_kind: tuple[str, str | None], tmp_path: Path
) -> None:
    kind, prefix = store_kind
    hub = rt_hub_factory(store=store_url(kind, tmp_path, prefix), secret=SECRET)
    pairs = [("ann", "b:1"), ("ann:b", "1"), ("ann:b:1", "x"), ("ann", "b:1:x")]
    async with Bystander(
        hub.url, token=mint_token(SECRET, "bystander", publish=["*"], subscribe=["*"])
    ) as bystander:
        before = rss_mb(hub)
        seqs = []
        for user, msg_id in pairs:
            client = await RawClient(
                hub.url, token=mint_token(SECRET, user, publish=["*"], subscribe=["*"])
            ).connect()
            try:
                ack = await client.publish("shared", {"from": user}, id=msg_id)
                assert ack["ok"] and not ack.get("duplicate"), (user, msg_id, ack)
                seqs.append(ack["seq"])
                again = await client.publish("shared", {"from": user}, id=msg_id)
                assert again["ok"] and again.get("duplicate") and again["seq"] == ack["seq"]
            finally:
                await client.close()
        assert seqs == [1, 2, 3, 4]
        reader = await RawClient(
            hub.url, token=mint_token(SECRET, "reader", publish=["*"], subscribe=["*"])
        ).connect()
        history = await reader.history("shared")
        await reader.close()
        after = rss_mb(hub)
        await served(bystander)
    bystander.check()
    assert [m["sender"] for m in history["messages"]] == [user for user, _ in pairs]
    assert after - before < 20  # four messages (measured under 1 MiB)


# -- item 8, the stores: retention byte caps ---------------------------------------

# 600 publishes of 200 KiB (120 MB) over 60 channels.
BIG = 200 * 1024
PUBLISHES = 600
# Per channel 1 MiB, 8 MiB in all. Unfixed, a memory store kept every one of
# these messages (10,000 x 256 KiB per channel were allowed): ~120 MiB more
# RSS. Fixed, it keeps 8 MiB of payload; 40 MiB covers that, the requests'
# allocator slack and a busy machine (measured growth: see the report).
CAPPED = "memory://?max_bytes=1048576&max_total_bytes=8388608"
CAP_RSS_BOUND_MB = 40.0


async def test_memory_retention_byte_caps_bound_memory(rt_hub_factory: Any) -> None:
    hub = rt_hub_factory(store=CAPPED, extra_args=NO_READ_LIMIT)
    payload = "x" * BIG
    async with Bystander(hub.url) as bystander:
        sock = await open_raw(hub.url)
        await pipeline(sock, [("publish", {"channel": "warm", "data": "x"})] * 100)
        before = rss_mb(hub)
        for start in range(0, PUBLISHES, 50):
            acks = await pipeline(
                sock,
                [
                    ("publish", {"channel": f"big.{i % 60}", "data": payload})
                    for i in range(start, start + 50)
                ],
            )
            assert all(a["ok"] for a in acks), acks[0]
        after = rss_mb(hub)
        history = await pipeline(
            sock, [("history", {"channel": f"big.{i}", "limit": 10000}) for i in range(60)]
        )
        await sock.close()
        await served(bystander)
    bystander.check()
    kept = sum(len(h["messages"]) for h in history)
    assert kept * BIG <= 8 * 1024 * 1024, kept
    assert all(h["seq"] == PUBLISHES // 60 for h in history)
    print(f"RSS {before:.0f} -> {after:.0f} MiB, {kept} messages kept")
    assert after - before < CAP_RSS_BOUND_MB, f"RSS grew {after - before:.0f} MiB"
