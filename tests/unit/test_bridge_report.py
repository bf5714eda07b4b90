"""Bridge state reports: how a configured bridge is parsed, how the reporter
paces its reports, and how a hub reads them back (a real memory store and a
real in-process hub; no broker needed)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

import rtkit.aio
from rtkit.bridges import BridgeState
from rtkit.bridges._cli import parse_bridge
from rtkit.bridges._report import StateReporter
from rtkit.errors import ConfigurationError
from rtkit.hub.bridges import MAX_BRIDGES, STALE_AFTER, bridge_status
from rtkit.pytest_plugin import InProcessHub
from rtkit.storage.base import Store
from rtkit.storage.url import store_from_url

# -- configured bridges -----------------------------------------------------------


def test_a_bridge_is_rtkit_bridge_arguments_or_a_dict_of_the_same_options() -> None:
    text = parse_bridge("rtkit bridge mqtt --port 1884 --map 'a/+/b=a.{1}' --map 'c/#' --name x")
    mapping = parse_bridge(
        {"kind": "mqtt", "port": 1884, "map": ["a/+/b=a.{1}", "c/#"], "name": "x", "qos": None}
    )
    assert text == mapping
    assert (text.source, text.port, text.name) == ("mqtt", 1884, "x")
    assert text.map == ["a/+/b=a.{1}", "c/#"]
    nats = parse_bridge({"kind": "nats", "server": ["nats://a:1", "nats://b:2"], "map": ["x.>"]})
    assert nats.server == ["nats://a:1", "nats://b:2"]
    every = parse_bridge({"kind": "redis-stream", "map": ["k"], "status_every": 2})
    assert every.status_every == 2.0


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("mqtt", "--map"),
        ("kafka --map a", "invalid choice: 'kafka'"),
        ({"port": 1}, "needs 'kind'"),
        (42, "a string of 'rtkit bridge' arguments or a mapping"),
        ("mqtt --map 'a", "quotation"),
        ("mqtt --map a --port x", "invalid int"),
        ("mqtt --map a --help", "--help"),
    ],
)
def test_a_wrong_bridge_is_a_configuration_error_not_an_exit(
    spec: Any, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        parse_bridge(spec)
    assert capsys.readouterr().out == ""  # --help printed nothing either


@pytest.mark.parametrize(
    ("name", "channel", "every", "message"),
    [
        ("a b", "bridges", 5.0, "bridge name"),
        ("", "bridges", 5.0, "bridge name"),
        ("ok", "*", 5.0, "report channel"),
        ("ok", "bridges", 0.1, "every"),
        ("ok", "bridges", float("nan"), "every"),
    ],
)
def test_a_reporter_refuses_names_and_cadences_it_cannot_use(
    name: str, channel: str, every: float, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        StateReporter(name, BridgeState("mqtt"), channel=channel, every=every)


# -- the reporter against a hub ---------------------------------------------------


@pytest.fixture
async def client(rt_hub_inprocess: InProcessHub) -> AsyncIterator[rtkit.aio.Client]:
    async with rtkit.aio.Client(rt_hub_inprocess.url) as client:
        yield client


async def test_reports_come_on_change_once_a_second_at_most_and_as_keep_alives(
    client: rtkit.aio.Client,
) -> None:
    state = BridgeState("mqtt", connected=True)
    reporter = StateReporter("pace", state, every=1.0)
    task = asyncio.create_task(reporter.run(client))
    try:
        deadline = time.monotonic() + 3.5
        while time.monotonic() < deadline:  # a storm of changes
            state.error("flapping")
            state.received += 1
            await asyncio.sleep(0.01)
        reports = await client.channel("bridges.pace").history()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert 2 <= len(reports) <= 5, [r.data["errors"] for r in reports]
    gaps = [b.ts - a.ts for a, b in itertools.pairwise(reports)]
    assert min(gaps) > 0.9, gaps
    last = reports[-1].data
    assert last["bridge"] == "pace" and last["status"] == "connected" and last["every"] == 1.0
    assert last["errors"] > 100 and last["last_error"] == "flapping"
    assert last["last_message"] is not None
    # Announced once on the index.
    index = await client.channel("bridges").history()
    assert [m.data for m in index] == [{"bridge": "pace", "source": "mqtt"}]
    # The final report says stopped.
    await reporter.final(client)
    final = await client.channel("bridges.pace").history(limit=1)
    assert final[-1].data["status"] == "stopped"


async def test_a_restarted_bridge_does_not_announce_itself_again(
    client: rtkit.aio.Client,
) -> None:
    for _ in range(3):
        await StateReporter("again", BridgeState("nats")).final(client)
    index = await client.channel("bridges").history()
    assert [m.data["bridge"] for m in index].count("again") == 1


# -- what a hub reads back --------------------------------------------------------


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    store = store_from_url("memory://")
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def put(store: Store, channel: str, data: Any, ts: float) -> None:
    await store.channels.append(
        channel, data, sender="test", msg_id=None, ts=ts, dedup_window=300.0
    )


async def test_the_hub_lists_each_announced_bridge_with_its_last_report_and_age(
    store: Store,
) -> None:
    now = time.time()  # the store expires messages by its own clock
    for entry in ({"bridge": "a"}, "junk", {"bridge": 3}, {"bridge": "b c"}, {"bridge": "a"}):
        await put(store, "bridges", entry, now - 100)
    await put(store, "bridges", {"bridge": "quiet"}, now - 100)
    await put(store, "bridges", {"bridge": "gone"}, now - 100)
    await put(store, "bridges", {"bridge": "done"}, now - 100)
    await put(store, "bridges.a", {"status": "connecting", "every": 5}, now - 30)
    await put(store, "bridges.a", {"status": "connected", "every": 5, "lag": 3}, now - 2)
    await put(store, "bridges.gone", {"status": "connected", "every": 2}, now - 6.5)
    await put(store, "bridges.done", {"status": "stopped", "every": 1}, now - 3600)
    listed = await bridge_status(store.channels, "bridges", now)
    assert list(listed) == ["a", "done", "gone", "quiet"]  # by name; junk left out
    assert listed["a"]["status"] == "connected" and listed["a"]["lag"] == 3
    assert listed["a"]["age"] == 2.0 and listed["a"]["reported"] == now - 2
    assert listed["gone"]["status"] == "stale"  # 6.5 s > 3 x 2 s
    assert STALE_AFTER == 3.0
    assert listed["done"]["status"] == "stopped"  # a last word never goes stale
    quiet = {"bridge": "quiet", "status": "unknown", "age": None, "reported": None}
    assert listed["quiet"] == quiet
    assert await bridge_status(store.channels, "elsewhere", now) == {}


async def test_the_hub_lists_the_most_recently_announced_bridges_at_most(store: Store) -> None:
    now = time.time()
    for i in range(MAX_BRIDGES + 10):
        await put(store, "bridges", {"bridge": f"b{i:03d}"}, now)
    listed = await bridge_status(store.channels, "bridges", now)
    assert len(listed) == MAX_BRIDGES
    assert "b000" not in listed and f"b{MAX_BRIDGES + 9:03d}" in listed
