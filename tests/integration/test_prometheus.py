"""The real Prometheus (Debian's ``prometheus``) scraping a hub under load:
the figures read back through its HTTP API match what the load sent.

Prometheus runs as a subprocess on a free port, with a temporary config that
scrapes the hub every second with the hub's metrics token, and a temporary
data directory. Skipped when the binary is missing
(``scripts/setup-test-machine`` installs it).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import rtkit.aio
from rtkit._process import OutputLines, free_port, start_group, stop_group
from rtkit.pytest_plugin import InProcessHub

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
METRICS_TOKEN = "prometheus-test-token-0123456789"
# Long enough for several 1 s scrapes after the load has ended.
WAIT = 30.0

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(PROMETHEUS).is_file(),
        reason="no prometheus binary (scripts/setup-test-machine installs Debian's prometheus)",
    ),
]


class Prometheus:
    """A Prometheus process scraping ``target`` (host:port) every second."""

    def __init__(self, workdir: Path, target: str, token: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {
                    "job_name": "rtkit",
                    "scrape_interval": "1s",
                    "scrape_timeout": "1s",
                    "authorization": {"credentials": token},
                    "static_configs": [{"targets": [target]}],
                }
            ],
        }
        # JSON is YAML: no YAML library needed.
        self.config = workdir / "prometheus.yml"
        self.config.write_text(json.dumps(config))
        self.data = workdir / "data"
        self.proc: subprocess.Popen[str] | None = None
        self.output: OutputLines | None = None

    def start(self) -> Prometheus:
        self.proc = start_group(
            [
                PROMETHEUS,
                f"--config.file={self.config}",
                f"--storage.tsdb.path={self.data}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=info",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.output = OutputLines(self.proc)
        try:
            self.output.wait_for("Server is ready to receive web requests", within=30)
        except (TimeoutError, RuntimeError):
            self.stop()
            raise RuntimeError("prometheus did not start:\n" + self.output.text(40)) from None
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc, timeout=10)

    def query(self, expr: str) -> float | None:
        """The value of an instant query with one series, None while it has none."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=5)
        body = response.json()
        assert body["status"] == "success", body
        result = body["data"]["result"]
        if not result:
            return None
        assert len(result) == 1, result
        return float(result[0]["value"][1])

    def wait_for(self, expr: str, expected: float) -> None:
        """Poll until ``expr`` is ``expected`` (Prometheus has no change
        feed to wait on; a scrape lands every second)."""
        deadline = time.monotonic() + WAIT
        seen: Any = None
        while time.monotonic() < deadline:
            seen = self.query(expr)
            if seen == expected:
                return
            time.sleep(0.25)
        log = self.output.text(20) if self.output else ""
        raise AssertionError(f"{expr} is {seen}, expected {expected}\n{log}")


@pytest.fixture
def metered_hub() -> Iterator[InProcessHub]:
    hub = InProcessHub(extra_args=["--metrics-token", METRICS_TOKEN]).start()
    try:
        yield hub
    finally:
        hub.terminate(timeout=5)


@pytest.fixture
def prometheus(metered_hub: InProcessHub, tmp_path: Path) -> Iterator[Prometheus]:
    server = Prometheus(tmp_path, f"127.0.0.1:{metered_hub.port}", METRICS_TOKEN).start()
    try:
        yield server
    finally:
        server.stop()


async def test_prometheus_reads_what_the_load_sent(
    metered_hub: InProcessHub, prometheus: Prometheus
) -> None:
    connections, publishes = 6, 600
    clients = [await rtkit.aio.connect(metered_hub.url) for _ in range(connections)]
    try:
        received: list[list[Any]] = [[] for _ in clients]
        for client, got in zip(clients, received, strict=True):
            await client.channel("load.prices").subscribe(got.append)
        # Every client publishes its share, pipelined, while Prometheus scrapes.
        share = publishes // connections
        pending = [
            await client.channel("load.prices").publish({"n": i}, wait=False)
            for i in range(share)
            for client in clients
        ]
        await asyncio.gather(*pending)
        with pytest.raises(rtkit.errors.TooLarge):
            await clients[0].channel("load.prices").publish("x" * 300_000)
        deadline = time.monotonic() + WAIT
        while any(len(got) < publishes for got in received):
            assert time.monotonic() < deadline, [len(got) for got in received]
            await asyncio.sleep(0.05)

        # Prometheus's own view: its scrape of the hub works, with the token.
        await asyncio.to_thread(prometheus.wait_for, 'up{job="rtkit"}', 1)
        payload_bytes = sum(len(json.dumps({"n": i}, separators=(",", ":"))) for i in range(share))
        checks = {
            "rtkit_published_messages_total": publishes,
            "rtkit_published_bytes_total": payload_bytes * connections,
            # The client batches pipelined publishes: fewer requests than
            # messages, each timed once, the refused one too.
            'rtkit_requests_total{event="publish",code="ok"} > bool 0': 1,
            'rtkit_requests_total{event="publish",code="too_large"}': 1,
            'rtkit_publish_ack_seconds_count - on() sum(rtkit_requests_total{event="publish"})': 0,
            'rtkit_requests_total{event="subscribe",code="ok"}': connections,
            "rtkit_connections": connections,
            "rtkit_delivered_messages_total": publishes * connections,
            'rtkit_channel_subscribers{channel="load.prices"}': connections,
            'rtkit_channel_published_messages_total{channel="load.prices"}': publishes,
        }
        for expr, expected in checks.items():
            await asyncio.to_thread(prometheus.wait_for, expr, expected)
        # A PromQL aggregation over the histogram gives a latency.
        p99 = await asyncio.to_thread(
            prometheus.query,
            "histogram_quantile(0.99, sum by (le) (rtkit_publish_ack_seconds_bucket))",
        )
        assert p99 is not None and 0 < p99 < 5
    finally:
        for client in clients:
            await client.close()
    await asyncio.to_thread(prometheus.wait_for, "rtkit_connections", 0)
    await asyncio.to_thread(prometheus.wait_for, "sum(rtkit_disconnects_total)", connections)
