"""Publishing row by row, as a data scientist does, through real hubs.

- ``publish(..., wait=False)`` from the blocking client keeps up with a
  feed of thousands of rows per second at the hub's default limits: the
  client batches what queues meanwhile into a few requests (a ``publish``
  carrying ``messages``), every row arrives once and in order.
- The batch on the wire: validated, bounded, stored in order (also when the
  connection sends batches without waiting, on a store that appends through
  coroutines), one publish of the rate, refused whole.
- The rate-limit refusal says what to do.
- Values scientists have (numpy, pandas, datetime, Decimal, UUID, sets)
  reach a subscriber by the documented rule; anything else fails in the
  caller's line before anything is queued.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import rtkit
import rtkit.aio
from rtkit.errors import UnsupportedData
from rtkit.protocol import MAX_PUBLISH_BATCH
from rtkit.pytest_plugin import REDIS_URL, InProcessHub

from .conftest import Connect
from .helpers import RawClient, assert_error, assert_ok

WAIT = 30.0


def _channel(prefix: str) -> str:
    return f"{prefix}.{uuid.uuid4().hex[:8]}"


class Collector:
    """A subscriber callback that keeps what it got and says when it has enough."""

    def __init__(self) -> None:
        self.data: list[Any] = []
        self.seqs: list[int] = []
        self._lock = threading.Lock()
        self._enough = threading.Event()
        self._want = 0

    def __call__(self, msg: rtkit.Message) -> None:
        with self._lock:
            self.data.append(msg.data)
            self.seqs.append(msg.seq)
            if len(self.data) >= self._want:
                self._enough.set()

    def wait_for(self, count: int, within: float = WAIT) -> None:
        with self._lock:
            self._want = count
            if len(self.data) >= count:
                return
            self._enough.clear()
        assert self._enough.wait(within), f"got {len(self.data)} of {count} messages"


# -- keeping up with a feed -----------------------------------------------------


@pytest.mark.slow
def test_5000_rows_a_second_for_10_seconds_row_by_row(
    rt_hub_inprocess_factory: Callable[..., InProcessHub],
) -> None:
    """The reported feed: per-row publishing at 5,000 rows/s for 10 s from
    the blocking client, default hub settings (1,000 publishes/s): every row
    delivered once, in order, no error."""
    hub = rt_hub_inprocess_factory()
    channel = _channel("feed")
    rate, seconds = 5_000, 10
    total = rate * seconds
    got = Collector()
    with rtkit.connect(hub.url) as watcher, rtkit.connect(hub.url) as publisher:
        watcher.channel(channel).subscribe(got)
        feed = publisher.channel(channel)
        futures = []
        start = time.perf_counter()
        for i in range(total):
            # Paced like a feed, not a burst: row i is due at start + i/rate.
            due = start + i / rate
            if (ahead := due - time.perf_counter()) > 0.001:
                time.sleep(ahead)
            futures.append(feed.publish({"i": i, "px": 100.0 + i % 7}, wait=False))
        publisher.flush(timeout=WAIT)  # raises the first failure, if any
        elapsed = time.perf_counter() - start
        got.wait_for(total)
        metrics = publisher.metrics
    assert [f.result() for f in futures] == list(range(1, total + 1))
    assert [d["i"] for d in got.data] == list(range(total))  # once each, in order
    assert got.seqs == list(range(1, total + 1))
    assert metrics.publish_failures == 0 and metrics.published == total
    # It kept up (the pacing, not the hub, set the pace), in few requests.
    assert elapsed < seconds + 2, f"{total} rows took {elapsed:.1f} s"
    assert metrics.publish_requests < total / 4, metrics


def test_publishing_without_waiting_batches_and_keeps_order(
    rt_hub_inprocess_factory: Callable[..., InProcessHub],
) -> None:
    """A burst of rows published without waiting goes out in batch requests
    (far fewer than rows, each within the hub's rate), stored in call order
    across channels; waiting publishes in between keep their place."""
    hub = rt_hub_inprocess_factory()
    a, b = _channel("a"), _channel("b")
    got_a, got_b = Collector(), Collector()
    with rtkit.connect(hub.url) as watcher, rtkit.connect(hub.url) as publisher:
        watcher.channel(a).subscribe(got_a)
        watcher.channel(b).subscribe(got_b)
        start = time.perf_counter()
        futures = [
            publisher.channel(a if i % 2 else b).publish({"i": i}, wait=False) for i in range(4_000)
        ]
        seq = publisher.channel(a).publish({"i": "last"})  # waits its turn
        assert seq == 2_001
        publisher.flush(timeout=WAIT)
        elapsed = time.perf_counter() - start
        got_a.wait_for(2_001)
        got_b.wait_for(2_000)
        metrics = publisher.metrics
    assert [d["i"] for d in got_a.data] == [*range(1, 4_000, 2), "last"]
    assert [d["i"] for d in got_b.data] == list(range(0, 4_000, 2))
    assert [f.result() for f in futures[1::2]] == list(range(1, 2_001))
    # Batched: fewer requests than rows, and no more than the client's pace
    # (950 requests/s after a burst of 950) allows.
    assert metrics.publish_requests < 4_001, metrics
    assert metrics.publish_requests <= 950 + 950 * elapsed * 1.05 + 1, (metrics, elapsed)
    assert metrics.publish_failures == 0


async def test_the_async_twin_has_the_same_shape(
    rt_hub_inprocess_factory: Callable[..., InProcessHub],
) -> None:
    hub = rt_hub_inprocess_factory()
    channel = _channel("aio")
    async with rtkit.aio.Client(hub.url) as client:
        ch = client.channel(channel)
        futures = [await ch.publish({"i": i}, wait=False) for i in range(1_000)]
        assert all(isinstance(f, asyncio.Future) for f in futures)
        await client.flush()
        assert [f.result() for f in futures] == list(range(1, 1_001))
        history = await ch.history()
        assert [m.data["i"] for m in history] == list(range(1_000))


def test_a_failed_publish_without_waiting_is_in_its_future_and_in_flush(
    rt_hub_inprocess_factory: Callable[..., InProcessHub],
) -> None:
    hub = rt_hub_inprocess_factory(extra_args=["--max-payload", "1000"])
    channel = _channel("fail")
    with rtkit.connect(hub.url) as client:
        ch = client.channel(channel)
        ok = ch.publish({"i": 1}, wait=False)
        too_big = ch.publish({"blob": "x" * 5_000}, wait=False)
        with pytest.raises(rtkit.TooLarge, match=r"1 publish\(es\) failed since the last flush"):
            client.flush(timeout=WAIT)
        assert ok.result() == 1
        assert isinstance(too_big.exception(), rtkit.TooLarge)
        client.flush(timeout=WAIT)  # reported once
        assert client.metrics.publish_failures == 1


# -- the batch on the wire --------------------------------------------------------


@pytest.fixture(params=["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def any_store_hub(
    request: pytest.FixtureRequest,
    rt_hub_inprocess_factory: Callable[..., InProcessHub],
    tmp_path: Path,
) -> InProcessHub:
    """Default limits on a store that appends at once (memory), one that
    appends through coroutines (SQLite) and one that queues appends (Redis)."""
    if request.param == "sqlite":
        return rt_hub_inprocess_factory(store=f"sqlite:///{tmp_path / 'rows.db'}")
    if request.param == "redis":
        prefix = request.getfixturevalue("rt_redis_prefix")
        return rt_hub_inprocess_factory(store=f"{REDIS_URL}?prefix={prefix}")
    return rt_hub_inprocess_factory()


def _batch(channel: str, rows: range, prefix: str = "") -> dict[str, Any]:
    return {
        "messages": [{"channel": channel, "data": {"i": i}, "id": f"{prefix}{i}"} for i in rows]
    }


async def test_pipelined_batches_are_stored_in_the_order_sent(
    any_store_hub: InProcessHub, connect: Connect
) -> None:
    """Batches and single publishes sent without waiting for acks are
    numbered in the order they were sent, on either kind of store."""
    channel = _channel("order")
    client = await connect(any_store_hub.url)
    calls: list[Coroutine[Any, Any, Any]] = []
    for k in range(40):
        rows = range(k * 20, k * 20 + 20)
        if k % 5 == 4:
            calls.extend(client.publish(channel, {"i": i}) for i in rows)
        else:
            calls.append(client.call("publish", _batch(channel, rows)))
    acks = await asyncio.gather(*calls)
    for ack in acks:
        assert_ok(ack)
    history = assert_ok(await client.history(channel, limit=1_000))
    order = [m["data"]["i"] for m in history["messages"]]
    assert order == list(range(800)), order[:120]
    assert [m["seq"] for m in history["messages"]] == list(range(1, 801))
    first = acks[0]
    assert first["seqs"] == list(range(1, 21)) and len(first["ts"]) == 20


async def test_a_batch_is_idempotent_by_its_ids(shared_hub: InProcessHub, connect: Connect) -> None:
    channel = _channel("dedup")
    client = await connect(shared_hub.url)
    first = assert_ok(await client.call("publish", _batch(channel, range(3))))
    again = assert_ok(await client.call("publish", _batch(channel, range(5))))
    assert again["seqs"] == [*first["seqs"], 4, 5]


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        ({"messages": []}, "non-empty array"),
        ({"messages": "x"}, "non-empty array"),
        ({"messages": [{"channel": "ok", "data": i} for i in range(MAX_PUBLISH_BATCH + 1)]}, "500"),
        ({"messages": [{"channel": "ok", "data": 1}], "channel": "ok"}, "unknown field"),
    ],
    ids=["empty", "not-a-list", "too-many", "mixed"],
)
async def test_a_malformed_batch_is_refused_whole(
    shared_hub: InProcessHub, connect: Connect, payload: dict[str, Any], says: str
) -> None:
    client = await connect(shared_hub.url)
    message = assert_error(await client.call("publish", payload), "bad_request")
    assert says in message
    history = assert_ok(await client.history("ok"))
    assert history["messages"] == []  # nothing of it was stored


async def test_a_refused_message_of_a_batch_does_not_take_the_others_with_it(
    secret_hub: InProcessHub, connect: Connect
) -> None:
    """Each message is accepted or refused as it would be on its own: the
    others are stored, in order, and the ack says which was refused and why."""
    from .conftest import token

    lab = _channel("lab")
    client = await connect(secret_hub.url, token=token(publish=["lab.*"], subscribe=["*"]))
    batch = {
        "messages": [
            {"channel": lab, "data": 0},
            {"channel": "other", "data": 1},
            {"channel": lab, "data": "x" * 300_000},
            {"channel": "a b", "data": 3},
            {"channel": lab},
            7,
            {"channel": lab, "data": 6},
        ]
    }
    ack = assert_ok(await client.call("publish", batch))
    assert ack["seqs"] == [1, None, None, None, None, None, 2]
    codes = [e and e["code"] for e in ack["errors"]]
    assert codes == [
        None,
        "forbidden",
        "too_large",
        "bad_request",
        "bad_request",
        "bad_request",
        None,
    ]
    assert "messages[4]" in ack["errors"][4]["message"]
    history = assert_ok(await client.history(lab))
    assert [m["data"] for m in history["messages"]] == [0, 6]


def test_the_client_reports_a_refused_row_on_its_own(
    rt_hub_inprocess_factory: Callable[..., InProcessHub],
) -> None:
    hub = rt_hub_inprocess_factory(extra_args=["--max-payload", "1000"])
    channel = _channel("fail")
    with rtkit.connect(hub.url) as client:
        ch = client.channel(channel)
        futures = [
            ch.publish({"i": i, "pad": "x" * (5_000 if i == 3 else 1)}, wait=False)
            for i in range(10)
        ]
        with pytest.raises(rtkit.TooLarge, match=r"1 publish\(es\) failed since the last flush"):
            client.flush(timeout=WAIT)
        assert isinstance(futures[3].exception(), rtkit.TooLarge)
        assert [f.result() for i, f in enumerate(futures) if i != 3] == list(range(1, 10))


async def test_a_batch_costs_one_publish_of_the_rate(
    rt_hub_inprocess_factory: Callable[..., InProcessHub], connect: Connect
) -> None:
    """The rate counts requests: 5 batches of 500 rows pass a burst of 5
    publishes, the 6th request is refused, with what to do about it."""
    hub = rt_hub_inprocess_factory(extra_args=["--publish-rate", "1", "--publish-burst", "5"])
    channel = _channel("rate")
    client = await connect(hub.url)
    for k in range(5):
        assert_ok(await client.call("publish", _batch(channel, range(k * 500, k * 500 + 500))))
    message = assert_error(await client.call("publish", _batch(channel, range(3))), "rate_limited")
    assert "over 1 publishes/s on this connection (burst 5)" in message
    assert "publish(..., wait=False)" in message and "publish_frame" in message
    assert "--publish-rate" in message and "c.RtkitExtension.publish_rate" in message
    assert " ms" in message or " s" in message
    assert "0.000 s" not in message
    history = assert_ok(await client.history(channel, limit=10_000))
    assert len(history["messages"]) == 2_500


async def test_rate_limited_single_publishes_say_what_to_do(
    rt_hub_inprocess_factory: Callable[..., InProcessHub], connect: Connect
) -> None:
    """The reported message was `over 1000 publishes/s; retry in 0.000 s`."""
    hub = rt_hub_inprocess_factory(extra_args=["--publish-burst", "20"])
    client: RawClient = await connect(hub.url)
    channel = _channel("flood")
    acks = await asyncio.gather(*(client.publish(channel, i) for i in range(200)))
    refused = [a for a in acks if not a.get("ok")]
    assert refused
    message = assert_error(refused[0], "rate_limited")
    assert "batch" in message and "--publish-rate" in message
    assert "retry in 0.000 s" not in message and "retry in" in message


# -- data types, through a real hub -----------------------------------------------

ROUND_TRIPS: list[tuple[str, Any, Any]] = [
    ("numpy array", np.array([1.5, np.nan, 3.0]), [1.5, None, 3.0]),
    ("numpy 2d", np.arange(4).reshape(2, 2), [[0, 1], [2, 3]]),
    ("numpy scalars", {"f": np.float32(0.5), "i": np.int64(3), "b": np.bool_(False)}, None),
    ("nan and inf", {"x": float("nan"), "y": [float("inf")]}, {"x": None, "y": [None]}),
    ("datetime", dt.datetime(2024, 5, 1, 9, 30, tzinfo=dt.UTC), "2024-05-01T09:30:00+00:00"),
    ("date", dt.date(2024, 5, 1), "2024-05-01"),
    ("time", dt.time(9, 30), "09:30:00"),
    ("pd.Timestamp", pd.Timestamp("2024-05-01 09:30", tz="UTC"), "2024-05-01T09:30:00+00:00"),
    ("pd.Timedelta", pd.Timedelta("90s"), 90.0),
    ("pd.Series", pd.Series({"bid": 1.0, "ask": 1.5}), {"bid": 1.0, "ask": 1.5}),
    ("Decimal", decimal.Decimal("101.25"), "101.25"),
    ("UUID", uuid.UUID(int=7), "00000000-0000-0000-0000-000000000007"),
    ("set", {"b", "a"}, ["a", "b"]),
    ("frozenset", frozenset({2, 1}), [1, 2]),
]


def test_each_data_type_reaches_a_subscriber_by_the_rule(shared_hub: InProcessHub) -> None:
    channel = _channel("types")
    got = Collector()
    with rtkit.connect(shared_hub.url) as watcher, rtkit.connect(shared_hub.url) as publisher:
        watcher.channel(channel).subscribe(got)
        ch = publisher.channel(channel)
        for _, value, _ in ROUND_TRIPS:
            ch.publish(value)
        got.wait_for(len(ROUND_TRIPS))
    for (name, _, expected), data in zip(ROUND_TRIPS, got.data, strict=True):
        if expected is None:
            expected = {"f": 0.5, "i": 3, "b": False}
        assert data == expected, name


def test_an_unsupported_value_fails_in_one_line_before_anything_is_queued(
    shared_hub: InProcessHub,
) -> None:
    channel = _channel("bad")
    with rtkit.connect(shared_hub.url) as client:
        ch = client.channel(channel)
        for wait in (True, False):
            with pytest.raises(UnsupportedData) as caught:
                ch.publish({"ok": 1, "fig": object()}, wait=wait)
            assert "object at data['fig']" in str(caught.value)
            shown = traceback.format_exception(caught.value)
            assert not any("During handling" in line or "direct cause" in line for line in shown)
        assert client.metrics.pending_publishes == 0
        assert ch.publish({"after": True}) == 1  # nothing of the bad ones was stored
        assert [m.data for m in ch.history()] == [{"after": True}]
