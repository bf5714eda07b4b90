"""Bridge state in the hub's status API: a real broker, a real bridge (its
own process, or beside the hub in this one), the status read over HTTP as an
operator would, and the broker or the bridge killed under it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

import rtkit.aio
from rtkit._process import kill_group, start_group, stop_group
from rtkit.bridges import Bridge, TopicMap
from rtkit.hub.auth import mint_token
from rtkit.pytest_plugin import REDIS_URL, InProcessHub

from .brokers import mosquitto, nats_server
from .conftest import SECRET

aiomqtt = pytest.importorskip("aiomqtt")
nats = pytest.importorskip("nats")

API_KEY = "bridge-status-api-key-0123456789"


@pytest.fixture(scope="module")
def hub() -> Iterator[InProcessHub]:
    """A hub with tokens and an API key (the HTTP API always authenticates)."""
    hub = InProcessHub(secret=SECRET, extra_args=["--api-key", API_KEY]).start()
    try:
        yield hub
    finally:
        hub.terminate(timeout=5)


@pytest.fixture
async def http(hub: InProcessHub) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=hub.url, timeout=10) as client:
        yield client


def bridge_token(name: str) -> str:
    """What a bridge needs: its channels, its report channel and the index."""
    return mint_token(
        SECRET,
        f"bridge-{name}",
        publish=["sensors.*", "readings", "bridges", f"bridges.{name}"],
        subscribe=["bridges"],
    )


async def bridges(http: httpx.AsyncClient) -> dict[str, Any]:
    answer = await http.get("/api/status", headers={"X-API-Key": API_KEY})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["ok"] is True and body["state"] == "running"
    return dict(body["bridges"])


async def wait_status(
    http: httpx.AsyncClient,
    name: str,
    check: Callable[[dict[str, Any]], bool],
    within: float = 20.0,
    what: str = "",
) -> dict[str, Any]:
    """The bridge's entry in the status once ``check`` accepts it."""
    deadline = time.monotonic() + within
    seen: dict[str, Any] | None = None
    while True:
        seen = (await bridges(http)).get(name)
        if seen is not None and check(seen):
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"{name}: not {what} within {within} s; last seen {seen}")
        await asyncio.sleep(0.1)


def bridge_process(args: list[str], hub: InProcessHub, log: Path) -> subprocess.Popen[Any]:
    argv = [sys.executable, "-m", "rtkit", "bridge", *args, "--url", hub.url, "--report", "0"]
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        return start_group(argv, stdout=subprocess.DEVNULL, stderr=out)


async def test_a_bridge_process_shows_in_the_status_connected_then_disconnected_then_stale(
    hub: InProcessHub, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    broker = mosquitto().start()
    log = tmp_path / "bridge.log"
    args = ["mqtt", "--port", str(broker.port), "--map", "sensors/+/temp=sensors.{1}"]
    args += ["--name", "floor1", "--status-every", "1", "--token", bridge_token("floor1")]
    proc = bridge_process(args, hub, log)
    try:
        await wait_status(http, "floor1", lambda b: b["status"] == "connected", what="connected")
        async with aiomqtt.Client("127.0.0.1", broker.port) as pub:
            for i in range(50):
                await pub.publish("sensors/kitchen/temp", orjson.dumps({"i": i}), qos=1)
        entry = await wait_status(
            http, "floor1", lambda b: b["published"] == 50, what="50 published"
        )
        assert entry["source"] == "mqtt"
        assert entry["connected"] is True and entry["hub_connected"] is True
        assert entry["received"] == 50 and entry["pending"] == 0 and entry["errors"] == 0
        assert entry["lag"] is None and entry["last_position"] is None  # MQTT has neither
        assert entry["last_message"] is not None and entry["last_message"] <= time.time()
        assert 0 <= entry["age"] < 3 and entry["every"] == 1.0

        # The broker dies: the bridge says so on its next report.
        broker.kill()
        entry = await wait_status(
            http, "floor1", lambda b: b["status"] == "disconnected", what="disconnected"
        )
        assert entry["connected"] is False and entry["hub_connected"] is True
        assert entry["errors"] >= 1 and entry["last_error"]

        # The status is the operator's: a token is refused.
        reader = mint_token(SECRET, "reader", subscribe=["*"])
        refused = await http.get("/api/status", headers={"Authorization": f"Bearer {reader}"})
        assert refused.status_code == 403

        # The bridge is killed: nobody reports any more, the status says stale.
        kill_group(proc)
        proc = None
        entry = await wait_status(http, "floor1", lambda b: b["status"] == "stale", what="stale")
        assert entry["age"] > 3 * entry["every"]
    finally:
        if proc is not None:
            stop_group(proc, timeout=5)
        broker.stop()


async def test_a_stopped_bridge_says_stopped_and_a_jetstream_one_its_position_and_lag(
    hub: InProcessHub, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    from rtkit.bridges.nats import JetStreamSource

    broker = nats_server(tmp_path / "js").start()
    url = f"nats://127.0.0.1:{broker.port}"
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(name="READINGS", subjects=["readings.>"])
        for i in range(300):
            await js.publish(f"readings.m{i % 3}", orjson.dumps({"i": i}))
        topics = TopicMap([("readings.*", "readings")], flavor="nats")
        source = JetStreamSource(url, stream="READINGS", durable="status", topics=topics)
        async with rtkit.aio.Client(hub.url, bridge_token("meters")) as client:
            bridge = Bridge(source, client=client, name="meters", report_every=1.0)
            task = asyncio.create_task(bridge.run())
            try:
                entry = await wait_status(
                    http,
                    "meters",
                    lambda b: b["last_position"] == "READINGS:300" and b["lag"] == 0,
                    what="at READINGS:300 with no lag",
                )
                assert entry["status"] == "connected" and entry["published"] == 300
                assert entry["source"] == "nats"
            finally:
                bridge.stop()
                await asyncio.wait_for(task, 10)
        entry = await wait_status(http, "meters", lambda b: b["status"] == "stopped")
        assert entry["last_position"] == "READINGS:300"
        # The index names it once, however many reports it made.
        async with rtkit.aio.Client(hub.url, mint_token(SECRET, "r", subscribe=["*"])) as reader:
            index = await reader.channel("bridges").history()
            assert [m.data["bridge"] for m in index].count("meters") == 1
            reports = await reader.channel("bridges.meters").history()
            assert len(reports) >= 2 and reports[-1].data["status"] == "stopped"
    finally:
        await nc.close()
        broker.stop()


@pytest.mark.redis
async def test_every_hub_of_a_cluster_lists_a_bridge_connected_to_another(
    rt_redis_prefix: str,
) -> None:
    from rtkit.bridges.mqtt import MqttSource

    store = f"{REDIS_URL}?prefix={rt_redis_prefix}"
    hubs = [
        InProcessHub(store=store, secret=SECRET, extra_args=["--api-key", API_KEY]).start()
        for _ in range(2)
    ]
    broker = mosquitto().start()
    try:
        topics = TopicMap([("sensors/+/temp", "sensors.{1}")], flavor="mqtt")
        source = MqttSource("127.0.0.1", broker.port, topics=topics)
        # The bridge talks to the first hub only.
        bridge = Bridge(source, url=hubs[0].url, token=bridge_token("east"), name="east")
        task = asyncio.create_task(bridge.run())
        try:
            async with httpx.AsyncClient(base_url=hubs[1].url, timeout=10) as other:
                entry = await wait_status(
                    other, "east", lambda b: b["status"] == "connected", what="connected"
                )
                assert entry["source"] == "mqtt" and entry["age"] < 5
        finally:
            bridge.stop()
            await asyncio.wait_for(task, 10)
        async with httpx.AsyncClient(base_url=hubs[1].url, timeout=10) as other:
            await wait_status(other, "east", lambda b: b["status"] == "stopped", what="stopped")
    finally:
        broker.stop()
        for hub in hubs:
            hub.terminate(timeout=5)


async def test_a_bridge_announces_itself_again_to_a_hub_that_lost_its_memory(
    rt_hub_inprocess_factory: Any,
) -> None:
    from rtkit.bridges.mqtt import MqttSource

    args = ["--api-key", API_KEY]
    first = rt_hub_inprocess_factory(secret=SECRET, extra_args=args)
    broker = mosquitto().start()
    try:
        topics = TopicMap([("sensors/+/temp", "sensors.{1}")], flavor="mqtt")
        source = MqttSource("127.0.0.1", broker.port, topics=topics)
        bridge = Bridge(source, url=first.url, token=bridge_token("west"), name="west")
        task = asyncio.create_task(bridge.run())
        try:
            async with httpx.AsyncClient(base_url=first.url, timeout=10) as http:
                await wait_status(http, "west", lambda b: b["status"] == "connected")
            # The hub restarts on the same port with an empty memory store.
            first.terminate(timeout=15)
            again = rt_hub_inprocess_factory(port=first.port, secret=SECRET, extra_args=args)
            async with httpx.AsyncClient(base_url=again.url, timeout=10) as http:
                entry = await wait_status(
                    http, "west", lambda b: b["status"] == "connected", what="listed again"
                )
            assert entry["hub_connected"] is True
        finally:
            bridge.stop()
            await asyncio.wait_for(task, 10)
    finally:
        broker.stop()
