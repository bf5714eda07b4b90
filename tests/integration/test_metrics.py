"""The hub's Prometheus metrics (/metrics) on real hubs: what they count
after real clients did known things, who may read them, their bounded
cardinality, every host serving them, and the Grafana dashboard naming only
metrics that exist."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import rtkit.aio
from rtkit.errors import Forbidden, TooLarge, Unauthorized
from rtkit.hub.stats import Histogram
from rtkit.pytest_plugin import REDIS_URL, HubProcess, InProcessHub

from .conftest import SECRET, token

WAIT = 15.0
METRICS_TOKEN = "metrics-token-0123456789abcdef"
API_KEY = "metrics-api-key-0123456789abcdef"
DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana-dashboard.json"
METRICS_PAGE = Path(__file__).resolve().parents[2] / "docs" / "operations" / "metrics.md"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str, **headers: str) -> Samples:
    """Every sample of ``url``/metrics, parsed by prometheus-client's own
    parser: ``{(name, labels): value}``."""
    response = httpx.get(f"{url}/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def metrics_text(url: str) -> str:
    response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    return response.text


def exposed_names(text: str) -> set[str]:
    """Every metric name a scrape declares, also a labelled family with no
    series yet (nothing refused so far), and its sample names (``_total``,
    ``_bucket``, ``_sum``, ``_count``)."""
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
        names.update(family.name + suffix for suffix in suffixes.get(family.type, []))
    return names


def undocumented(text: str) -> list[str]:
    """The rtkit metrics of a scrape that docs/operations/metrics.md does not name."""
    page = METRICS_PAGE.read_text()
    names = [
        family.name + ("_total" if family.type == "counter" else "")
        for family in text_string_to_metric_families(text)
        if family.name.startswith("rtkit_")
    ]
    return [name for name in names if f"`{name}`" not in page]


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def series(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


async def until(check: Callable[[], bool], what: str) -> None:
    """Wait up to WAIT seconds for ``check()`` (run in a thread: it scrapes
    with a blocking client, which must not stall this test's loop)."""
    deadline = time.monotonic() + WAIT
    while not await asyncio.to_thread(check):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
def secret_hub() -> Iterator[InProcessHub]:
    hub = InProcessHub(secret=SECRET).start()
    try:
        yield hub
    finally:
        hub.terminate(timeout=5)


async def test_metrics_count_what_clients_did(secret_hub: InProcessHub) -> None:
    url = secret_hub.url
    before = scrape(url)
    published_before = value(before, "rtkit_published_messages_total") or 0.0
    delivered_before = value(before, "rtkit_delivered_messages_total") or 0.0
    n, m = 25, 3
    clients = [await rtkit.aio.connect(url, token=token(f"user{i}")) for i in range(m)]
    reader = await rtkit.aio.connect(url, token=token("reader", publish=[]))
    try:
        received: list[list[Any]] = [[] for _ in clients]
        for client, got in zip(clients, received, strict=True):
            await client.channel("metrics.count").subscribe(got.append)
        for i in range(n):
            await clients[0].channel("metrics.count").publish({"i": i})
        with pytest.raises(TooLarge):
            await clients[0].channel("metrics.count").publish("x" * 300_000)
        with pytest.raises(Forbidden):
            await reader.channel("metrics.count").publish({"i": -1})
        with pytest.raises(Unauthorized):
            await rtkit.aio.connect(url, token="not-a-token")

        await until(lambda: all(len(got) == n for got in received), "every delivery")
        samples = scrape(url)
        assert value(samples, "rtkit_connections") == m + 1
        assert value(samples, "rtkit_users") == m + 1
        assert value(samples, "rtkit_published_messages_total") == published_before + n
        assert value(samples, "rtkit_delivered_messages_total") == delivered_before + n * m
        assert (
            value(samples, "rtkit_channel_published_messages_total", channel="metrics.count") == n
        )
        assert value(samples, "rtkit_channel_subscribers", channel="metrics.count") == m
        assert value(samples, "rtkit_requests_total", event="publish", code="ok") == n
        assert value(samples, "rtkit_requests_total", event="publish", code="too_large") == 1
        assert value(samples, "rtkit_requests_total", event="publish", code="forbidden") == 1
        assert value(samples, "rtkit_requests_total", event="subscribe", code="ok") == m
        assert value(samples, "rtkit_connects_refused_total", code="unauthorized") == 1
        assert (value(samples, "rtkit_connects_total") or 0) >= m + 1
        # Every publish's ack was timed, refusals included; each ok payload
        # is 8 or 9 bytes of JSON ({"i":0} .. {"i":24}).
        assert value(samples, "rtkit_publish_ack_seconds_count") == n + 2
        assert value(samples, "rtkit_published_bytes_total") == sum(
            len(json.dumps({"i": i}, separators=(",", ":"))) for i in range(n)
        )
        assert value(samples, "rtkit_publish_ack_seconds_bucket", le="+Inf") == n + 2
        # Each delivery round of the channel was timed from store to socket.
        assert (value(samples, "rtkit_delivery_seconds_count") or 0) >= 1
        assert value(samples, "rtkit_store_seconds_count", op="read") == m
    finally:
        for client in [*clients, reader]:
            await client.close()

    await until(
        lambda: value(scrape(url), "rtkit_connections") == 0, "the closed connections to go"
    )
    samples = scrape(url)
    closed = sum(series(samples, "rtkit_disconnects_total").values())
    assert closed >= m + 1
    assert value(samples, "rtkit_send_queue_packets") == 0


async def test_presence_rooms_and_shared_docs_are_counted(secret_hub: InProcessHub) -> None:
    url = secret_hub.url
    # Two connections of one user: one member of the room, two connections.
    first = await rtkit.aio.connect(url, token=token("pam"))
    second = await rtkit.aio.connect(url, token=token("pam"))
    other = await rtkit.aio.connect(url, token=token("quinn"))
    try:
        for client in (first, second, other):
            await client.presence("metrics.room", state={"cell": 1})
        doc = await first.shared("metrics.doc")
        doc["threshold"] = "x" * 1000
        await doc.flush()
        await until(
            lambda: value(scrape(url), "rtkit_doc_bytes", doc="metrics.doc") is not None,
            "the document's size",
        )
        samples = scrape(url)
        assert value(samples, "rtkit_presence_rooms") == 1
        assert value(samples, "rtkit_presence_members") == 2
        assert value(samples, "rtkit_presence_connections") == 3
        assert value(samples, "rtkit_docs_open") == 1
        assert value(samples, "rtkit_docs_subscribers") == 1
        size = value(samples, "rtkit_doc_bytes", doc="metrics.doc")
        assert size is not None and size > 1000
        assert value(samples, "rtkit_docs_bytes") == size
        assert (value(samples, "rtkit_doc_updates_stored_total") or 0) >= 1
        assert value(samples, "rtkit_requests_total", event="presence.join", code="ok") == 3
    finally:
        for client in (first, second, other):
            await client.close()
    await until(lambda: value(scrape(url), "rtkit_presence_rooms") == 0, "the room to empty")


async def test_a_subscriber_that_does_not_read_fills_its_queue_and_is_dropped() -> None:
    from tests.security.attack import RawSocket

    hub = InProcessHub(
        extra_args=["--max-pending-bytes", "1000000", "--publish-bytes-rate", "0"]
    ).start()
    sock: RawSocket | None = None
    try:
        # A subscriber that never reads what it is sent (a small receive buffer).
        sock = await RawSocket.open(hub.url)
        assert (await sock.connect_namespace({})).startswith("40/rtkit,")
        await sock.send_text('42/rtkit,1["subscribe",{"channel":"metrics.slow"}]')
        async with await rtkit.aio.connect(hub.url) as publisher:
            channel = publisher.channel("metrics.slow")
            await until(
                lambda: value(scrape(hub.url), "rtkit_subscriptions") == 1, "the subscription"
            )
            most_queued = 0.0
            for i in range(200):  # 20 MB at most, the budget is 1 MB
                await channel.publish({"i": i, "pad": "x" * 100_000})
                samples = await asyncio.to_thread(scrape, hub.url)
                most_queued = max(most_queued, value(samples, "rtkit_send_queue_bytes") or 0.0)
                if value(samples, "rtkit_slow_consumer_disconnects_total"):
                    break
            assert value(samples, "rtkit_slow_consumer_disconnects_total") == 1
            assert most_queued > 0
            await until(
                lambda: (
                    value(scrape(hub.url), "rtkit_disconnects_total", reason="server disconnect")
                    == 1
                ),
                "the slow subscriber's disconnect",
            )
    finally:
        if sock is not None:
            await sock.close()
        hub.terminate(timeout=5)


async def test_per_channel_series_are_the_busiest_only() -> None:
    hub = InProcessHub(extra_args=["--metrics-top-channels", "5"]).start()
    try:
        async with await rtkit.aio.connect(hub.url) as client:
            # Channel k gets k publishes: the busiest five are 36..40.
            for k in range(1, 41):
                channel = client.channel(f"metrics.top.{k}")
                for i in range(k):
                    await channel.publish(i)
        samples = scrape(hub.url)
        per_channel = series(samples, "rtkit_channel_published_messages_total")
        assert {dict(labels)["channel"]: v for labels, v in per_channel.items()} == {
            f"metrics.top.{k}": float(k) for k in range(36, 41)
        }
        assert len(series(samples, "rtkit_channel_subscribers")) == 5
        assert value(samples, "rtkit_channels") == 40
        assert value(samples, "rtkit_published_messages_total") == sum(range(1, 41))
    finally:
        hub.terminate(timeout=5)


async def test_a_store_that_queues_appends_is_timed(tmp_path: Path) -> None:
    """On SQLite a publish is acked once its append is done: the ack is
    counted then, and the wait is the store's append latency."""
    hub = InProcessHub(store=f"sqlite:///{tmp_path / 'hub.db'}").start()
    try:
        async with await rtkit.aio.connect(hub.url) as client:
            for i in range(3):
                await client.channel("metrics.sqlite").publish(i)
        samples = await asyncio.to_thread(scrape, hub.url)
        assert value(samples, "rtkit_published_messages_total") == 3
        assert value(samples, "rtkit_requests_total", event="publish", code="ok") == 3
        assert value(samples, "rtkit_publish_ack_seconds_count") == 3
        assert value(samples, "rtkit_store_seconds_count", op="append") == 3
        assert value(samples, "rtkit_hub_info", store="sqlite", version=rtkit.__version__) == 1
    finally:
        hub.terminate(timeout=5)


async def test_webhook_counters_are_exposed() -> None:
    from .test_webhooks import WEBHOOK_SECRET, Receiver

    receiver = await Receiver().start()
    hub = InProcessHub(
        extra_args=["--webhook", receiver.url, "--webhook-secret", WEBHOOK_SECRET]
    ).start()
    try:
        assert value(await asyncio.to_thread(scrape, hub.url), "rtkit_webhook_queue") == 0
        async with await rtkit.aio.connect(hub.url) as client:
            await client.channel("metrics.hooked").subscribe(lambda message: None)
            events = await receiver.wait_for(1)  # channel.occupied
            await until(
                lambda: value(scrape(hub.url), "rtkit_webhook_events_sent_total") == len(events),
                "the sender to count what it sent",
            )
        samples = await asyncio.to_thread(scrape, hub.url)
        assert value(samples, "rtkit_webhook_batches_total") == len(receiver.bodies)
        assert value(samples, "rtkit_webhook_events_dropped_total") == 0
        missing = undocumented(await asyncio.to_thread(metrics_text, hub.url))
        assert not missing, f"docs/operations/metrics.md does not name {missing}"
    finally:
        hub.terminate(timeout=5)
        await receiver.stop()


def test_two_hubs_in_one_process_count_apart() -> None:
    one, two = InProcessHub().start(), InProcessHub().start()
    try:

        async def publish() -> None:
            async with await rtkit.aio.connect(one.url) as client:
                await client.channel("metrics.apart").publish(1)

        asyncio.run(publish())
        assert value(scrape(one.url), "rtkit_published_messages_total") == 1
        assert value(scrape(two.url), "rtkit_published_messages_total") == 0
    finally:
        one.terminate(timeout=5)
        two.terminate(timeout=5)


def test_metrics_token_is_asked_for_when_set() -> None:
    hub = InProcessHub(extra_args=["--metrics-token", METRICS_TOKEN]).start()
    try:
        for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}):
            response = httpx.get(f"{hub.url}/metrics", headers=headers)
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "unauthorized"
            assert response.headers["www-authenticate"].startswith("Bearer")
        samples = scrape(hub.url, Authorization=f"Bearer {METRICS_TOKEN}")
        assert value(samples, "rtkit_hub_ready") == 1
        # The token guards /metrics only: health checks stay open.
        assert httpx.get(f"{hub.url}/healthz").status_code == 200
    finally:
        hub.terminate(timeout=5)


def test_the_api_key_guards_metrics_without_a_token_of_their_own() -> None:
    hub = InProcessHub(extra_args=["--api-key", API_KEY]).start()
    try:
        assert httpx.get(f"{hub.url}/metrics").status_code == 401
        assert value(scrape(hub.url, **{"X-API-Key": API_KEY}), "rtkit_hub_ready") == 1
        assert value(scrape(hub.url, Authorization=f"Bearer {API_KEY}"), "rtkit_hub_ready") == 1
    finally:
        hub.terminate(timeout=5)


def test_metrics_can_be_turned_off() -> None:
    hub = InProcessHub(extra_args=["--no-metrics"]).start()
    try:

        async def use() -> list[Any]:
            async with await rtkit.aio.connect(hub.url) as client:
                got: list[Any] = []
                await client.channel("metrics.off").subscribe(got.append)
                assert await client.channel("metrics.off").publish(1) == 1
                await until(lambda: len(got) == 1, "the delivery")
                return got

        # The hub works as before, without counting.
        assert [m.data for m in asyncio.run(use())] == [1]
        assert httpx.get(f"{hub.url}/metrics").status_code == 404
        assert httpx.get(f"{hub.url}/healthz").status_code == 200
    finally:
        hub.terminate(timeout=5)


def test_without_prometheus_client_metrics_answer_with_the_install_hint() -> None:
    """prometheus-client is optional (the metrics extra): without it the hub
    runs, and /metrics says what to install."""
    script = (
        "import sys, urllib.request, urllib.error\n"
        "sys.modules['prometheus_client'] = None  # as if not installed\n"
        "from rtkit.pytest_plugin import InProcessHub\n"
        "hub = InProcessHub().start()\n"
        "try:\n"
        "    urllib.request.urlopen(hub.url + '/metrics')\n"
        "except urllib.error.HTTPError as err:\n"
        "    print(err.code, err.read().decode())\n"
        "finally:\n"
        "    hub.terminate(timeout=5)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("501 "), done.stdout
    assert "pip install 'rtkit[metrics]'" in done.stdout


def test_a_short_metrics_token_is_refused() -> None:
    with pytest.raises(Exception, match="metrics token must be at least"):
        InProcessHub(extra_args=["--metrics-token", "short"]).config()


@pytest.mark.slow
@pytest.mark.parametrize("server", ["tornado", "uvicorn"])
def test_every_web_server_serves_metrics(
    rt_hub_factory: Callable[..., HubProcess], server: str
) -> None:
    hub = rt_hub_factory(extra_args=["--server", server, "--metrics-token", METRICS_TOKEN])

    async def publish() -> None:
        async with await rtkit.aio.connect(hub.url) as client:
            await client.channel("metrics.host").publish(1)

    asyncio.run(publish())
    assert httpx.get(f"{hub.url}/metrics").status_code == 401
    samples = scrape(hub.url, Authorization=f"Bearer {METRICS_TOKEN}")
    assert value(samples, "rtkit_published_messages_total") == 1
    assert value(samples, "rtkit_requests_total", event="publish", code="ok") == 1
    # This process's own figures come along (prometheus-client's).
    assert (value(samples, "process_resident_memory_bytes") or 0) > 0


def test_histogram_buckets_are_cumulative_and_inclusive() -> None:
    hist = Histogram((0.001, 0.01))
    for seconds in (0.0005, 0.001, 0.002, 0.5):
        hist.observe(seconds)
    assert hist.cumulative() == [("0.001", 2.0), ("0.01", 3.0), ("+Inf", 4.0)]
    assert hist.total == pytest.approx(0.5035)


# -- the Grafana dashboard -----------------------------------------------------


def _dashboard_metric_names() -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]
    exprs += [
        var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        for var in dashboard.get("templating", {}).get("list", [])
        if var.get("type") == "query"
    ]
    assert exprs, "the dashboard has no queries"
    names = {name for expr in exprs for name in re.findall(r"\b(?:rtkit|process)_[a-z_]+", expr)}
    assert names
    return names


async def test_every_metric_of_the_dashboard_exists_and_is_documented(
    rt_redis_prefix: str, tmp_path: Path
) -> None:
    """A hub on a shared store (so the store link's metrics exist), after
    every kind of request the dashboard shows."""
    hub = InProcessHub(store=f"{REDIS_URL}?prefix={rt_redis_prefix}").start()
    try:
        async with await rtkit.aio.connect(hub.url) as client:
            got: list[Any] = []
            await client.channel("metrics.dash").subscribe(got.append)
            await client.channel("metrics.dash").publish(1)
            await client.channel("metrics.dash").history()
            await client.presence("metrics.dash", state={})
            doc = await client.shared("metrics.dash.doc")
            doc["k"] = 1
            await doc.flush()
            await until(lambda: len(got) == 1, "the delivery")
            families = await asyncio.to_thread(metrics_text, hub.url)
            exposed = exposed_names(families)
            samples = await asyncio.to_thread(scrape, hub.url)
    finally:
        hub.terminate(timeout=5)
    # The shared store's figures: its link, its appends and reads timed.
    assert value(samples, "rtkit_store_link_up") == 1
    assert value(samples, "rtkit_store_seconds_count", op="append") == 1
    assert value(samples, "rtkit_store_seconds_count", op="read") == 2
    assert (value(samples, "rtkit_store_watched_channels") or 0) >= 1
    missing = sorted(_dashboard_metric_names() - exposed)
    assert not missing, f"the dashboard queries metrics the hub does not expose: {missing}"
    # And the operations page names every one of them.
    missing_docs = undocumented(families)
    assert not missing_docs, f"docs/operations/metrics.md does not name {missing_docs}"


def test_dashboard_is_importable_json() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"]
    assert dashboard["schemaVersion"] >= 30
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dashboard["panels"]:
        if panel.get("type") == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
