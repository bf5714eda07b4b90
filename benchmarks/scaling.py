"""Scaling benchmark: 1, 2 and 3 hub processes on one Redis behind nginx.

Usage: ``.venv/bin/python benchmarks/scaling.py [--duration 5] [--no-write]``.
Needs Node.js (``npm ci`` in benchmarks/ first), nginx and a Redis at
``$RTKIT_REDIS`` (default ``redis://127.0.0.1:6379/0``); each run uses a key
prefix of its own and deletes its keys.

Method. The load generator (``loadgen.js``, the same one ``run.py`` uses)
runs its ``fanout`` scenario: one publisher with at most 64 publishes unacked,
100 subscribers, every connection through nginx (round-robin, so the
subscribers and the publisher spread over the hubs), 1 s warm-up and a
``--duration`` s window. "deliveries/s" counts envelopes that reached all
subscribers. CPU is read from /proc for every process of the setup (hubs,
Redis, nginx) over the whole run (warm-up and drain included), and divided by
the messages published, for a per-message cost. A ``latency`` scenario at 200
msg/s to 10 subscribers compares the publish-to-delivery time of the embedded
store with the Redis hop on one hub.

Writes the ``scaling`` section of ``benchmarks/RESULTS.md``
(``results.write_section``).

``--metrics``: instead, the cost of the hub's Prometheus metrics. One hub
(memory store), the same fan-out, in alternating rounds with metrics on
(``/metrics`` scraped every second while the load runs, as Prometheus
would) and off (``rtkit hub --no-metrics``: no counting, no endpoint);
medians of the rounds, hub CPU per delivery included. Writes the
``metrics`` section.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(ROOT))

from results import write_section  # noqa: E402

from rtkit._process import free_port, start_group, stop_groups, wait_for_port  # noqa: E402
from rtkit.deploy import nginx_config  # noqa: E402

REDIS = os.environ.get("RTKIT_REDIS", "redis://127.0.0.1:6379/0")
HZ = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its reaped children."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / HZ


def redis_pid() -> int:
    out = subprocess.run(["pgrep", "-x", "redis-server"], capture_output=True, text=True)
    pids = [int(p) for p in out.stdout.split()]
    return pids[0] if pids else 0


class Setup:
    """``hubs`` hub processes on ``store``, and nginx in front if ``balanced``."""

    def __init__(self, hubs: int, store: str, balanced: bool, extra: Sequence[str] = ()) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.hub_pids: list[int] = []
        self.workdir = tempfile.mkdtemp(prefix="rtkit-scaling-")
        ports = [free_port() for _ in range(hubs)]
        for port in ports:
            cmd = [sys.executable, "-m", "rtkit", "--log-level", "WARNING", "hub"]
            cmd += ["--port", str(port), "--allow-anonymous", "--publish-rate", "0", *extra]
            proc = start_group(
                [*cmd, "--store", store], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            self.procs.append(proc)
            self.hub_pids.append(proc.pid)
        for port, proc in zip(ports, self.procs, strict=True):
            wait_for_port(port, proc)
        self.port = ports[0]
        self.nginx_pid = 0
        if balanced:
            self.port = free_port()
            conf = Path(self.workdir) / "nginx.conf"
            conf.write_text(
                nginx_config(
                    f"127.0.0.1:{self.port}", [f"127.0.0.1:{p}" for p in ports], self.workdir
                )
            )
            nginx = shutil.which("nginx") or "/usr/sbin/nginx"
            proc = start_group(
                [nginx, "-c", str(conf), "-p", self.workdir],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self.procs.append(proc)
            self.nginx_pid = proc.pid
            wait_for_port(self.port, proc)
        time.sleep(1.0)  # let start-up work settle before measuring

    def cpu(self) -> dict[str, float]:
        children = (
            [
                int(p)
                for p in subprocess.run(
                    ["pgrep", "-P", str(self.nginx_pid)], capture_output=True, text=True
                ).stdout.split()
            ]
            if self.nginx_pid
            else []
        )
        return {
            "hubs": sum(cpu_seconds(p) for p in self.hub_pids),
            "nginx": sum(cpu_seconds(p) for p in [self.nginx_pid, *children] if p),
            "redis": cpu_seconds(redis_pid()),
        }

    def stop(self) -> None:
        stop_groups(self.procs[::-1], timeout=10)
        shutil.rmtree(self.workdir, ignore_errors=True)


def loadgen(port: int, **cfg: Any) -> dict[str, Any]:
    node = shutil.which("node") or "node"
    out = subprocess.run(
        [node, str(BENCH_DIR / "loadgen.js"), json.dumps({"port": port, **cfg})],
        cwd=BENCH_DIR,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return {"ok": False, "error": out.stderr.strip()[-300:]}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


class Scraper(threading.Thread):
    """GET ``url`` every ``interval`` seconds until stopped, as Prometheus
    scrapes; counts the scrapes and the time they took."""

    def __init__(self, url: str, interval: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.interval = interval
        self.done = threading.Event()
        self.scrapes = 0
        self.seconds = 0.0
        self.bytes = 0

    def run(self) -> None:
        while not self.done.wait(self.interval):
            started = time.perf_counter()
            with urllib.request.urlopen(self.url, timeout=5) as response:
                self.bytes = len(response.read())
            self.seconds += time.perf_counter() - started
            self.scrapes += 1

    def stop(self) -> None:
        self.done.set()
        self.join(10)


def run_case(
    hubs: int,
    store: str,
    balanced: bool,
    *,
    extra: Sequence[str] = (),
    scrape: bool = False,
    **cfg: Any,
) -> dict[str, Any]:
    setup = Setup(hubs, store, balanced, extra)
    scraper = Scraper(f"http://127.0.0.1:{setup.port}/metrics") if scrape else None
    try:
        before = setup.cpu()
        if scraper is not None:
            scraper.start()
        result = loadgen(setup.port, **cfg)
        if scraper is not None:
            scraper.stop()
        after = setup.cpu()
    finally:
        setup.stop()
    result["cpu"] = {k: after[k] - before[k] for k in before}
    if scraper is not None:
        result["scrapes"] = scraper.scrapes
        result["scrapeMs"] = 1000 * scraper.seconds / max(1, scraper.scrapes)
        result["scrapeBytes"] = scraper.bytes
    return result


def fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--metrics",
        action="store_true",
        help="compare one hub with metrics on (scraped every second) and off instead",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each, with --metrics")
    args = parser.parse_args()
    if args.metrics:
        return metrics_cost(args)
    prefix = f"bench-{uuid.uuid4().hex[:8]}:"
    redis_store = f"{REDIS}?prefix={prefix}"
    fan = {
        "scenario": "fanout",
        "subscribers": args.subscribers,
        "warmup": 1,
        "duration": args.duration,
    }
    cases = [
        ("embedded (memory), 1 hub, direct", 1, "memory://", False),
        ("redis, 1 hub, direct", 1, redis_store, False),
        ("redis, 1 hub, nginx", 1, redis_store, True),
        ("redis, 2 hubs, nginx", 2, redis_store, True),
        ("redis, 3 hubs, nginx", 3, redis_store, True),
    ]
    rows = []
    for name, hubs, store, balanced in cases:
        r = run_case(hubs, store, balanced, channel=f"fan-{uuid.uuid4().hex[:6]}", **fan)
        print(
            name,
            json.dumps(
                {
                    k: r.get(k)
                    for k in (
                        "deliveriesPerSec",
                        "publishesPerSec",
                        "allComplete",
                        "gaps",
                        "dups",
                        "cpu",
                        "error",
                    )
                }
            ),
            flush=True,
        )
        rows.append((name, r))
    lat = {"scenario": "latency", "subscribers": 10, "rate": 200, "warmup": 1, "duration": 5}
    lat_rows = []
    for name, store in (("embedded (memory)", "memory://"), ("redis", redis_store)):
        r = run_case(1, store, False, channel=f"lat-{uuid.uuid4().hex[:6]}", **lat)
        print(name, json.dumps(r.get("latencyMs") or r.get("error")), flush=True)
        lat_rows.append((name, r))
    _cleanup(prefix)
    section = report(rows, lat_rows, args)
    print(section)
    if not args.no_write:
        write_section("scaling", section)
    return 0


def metrics_cost(args: argparse.Namespace) -> int:
    """Fan-out with metrics on and off, alternating (see the module docstring)."""
    fan = {
        "scenario": "fanout",
        "subscribers": args.subscribers,
        "warmup": 1,
        "duration": args.duration,
    }
    runs: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
    args.load_before = os.getloadavg()[0]
    for i in range(args.rounds):
        for mode in ("on", "off") if i % 2 == 0 else ("off", "on"):
            r = run_case(
                1,
                "memory://",
                False,
                extra=[] if mode == "on" else ["--no-metrics"],
                scrape=mode == "on",
                channel=f"metrics-{uuid.uuid4().hex[:6]}",
                **fan,
            )
            keys = ("deliveriesPerSec", "allComplete", "cpu", "scrapes", "scrapeMs", "error")
            print(f"metrics {mode}", json.dumps({k: r.get(k) for k in keys}), flush=True)
            runs[mode].append(r)
    args.load_after = os.getloadavg()[0]
    section = metrics_report(runs, args)
    print(section)
    if not args.no_write:
        write_section("metrics", section)
    return 0 if all(r.get("allComplete") for rs in runs.values() for r in rs) else 1


def counting_ns_per_publish() -> float:
    """What metrics add to one publish on the hub, timed in this process:
    the ack counted and timed (Hub._answer_now_counted around
    _answer_now), the message and its bytes counted; the best of 5 runs,
    less the same call without them."""
    from rtkit.hub.stats import HubStats

    stats = HubStats()
    ack = {"ok": True, "seq": 1, "ts": 0.0}

    def answer_now() -> dict[str, Any]:
        stats.published_bytes += 16
        stats.stored(False)
        return ack

    def plain() -> dict[str, Any]:
        return ack

    def counted() -> dict[str, Any]:
        started = time.perf_counter()
        answer = answer_now()
        if isinstance(answer, dict):
            stats.publish_answered(answer, started)
        return answer

    def best(fn: Any, n: int = 200_000) -> float:
        runs = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            runs.append((time.perf_counter() - t0) / n)
        return min(runs)

    return 1e9 * (best(counted) - best(plain))


def _cpu_us_per_delivery(r: dict[str, Any], subscribers: int) -> float | None:
    """Hub CPU over the whole run (warm-up and drain too) per envelope
    delivered over it."""
    delivered = (r.get("publishedTotal") or 0) * subscribers
    hub_cpu = r.get("cpu", {}).get("hubs")
    return 1e6 * hub_cpu / delivered if delivered and hub_cpu is not None else None


def metrics_report(runs: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> str:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        "## The cost of metrics: fan-out with /metrics on and off (benchmarks/scaling.py)",
        "",
        f"Generated by `python benchmarks/scaling.py --metrics --rounds {args.rounds}` on "
        f"{when}; Python {platform.python_version()}, {os.cpu_count()} cores shared with the "
        f"load generator. One hub, memory store, one publisher (64 unacked at most), "
        f"{args.subscribers} subscribers, {args.duration:g} s window per round; rounds "
        "alternate on/off. On: the hub counts (rtkit.hub.metrics) and /metrics is scraped "
        "every second during the round; off: `rtkit hub --no-metrics`. The machine's "
        f"load average (1 min) was {args.load_before:.1f} before and {args.load_after:.1f} "
        "after the run.",
        "",
        "| metrics | deliveries/s, each round | median deliveries/s | "
        "hub CPU µs/delivery (median) | scrape ms (mean) |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    medians: dict[str, float] = {}
    for mode in ("off", "on"):
        rates = [r.get("deliveriesPerSec") or 0.0 for r in runs[mode]]
        cpu = [
            c for r in runs[mode] if (c := _cpu_us_per_delivery(r, args.subscribers)) is not None
        ]
        scrape = [r["scrapeMs"] for r in runs[mode] if r.get("scrapes")]
        medians[mode] = statistics.median(rates) if rates else 0.0
        lines.append(
            f"| {mode} | {', '.join(fmt(x) for x in rates)} | {fmt(medians[mode])} "
            f"| {fmt(statistics.median(cpu), 2) if cpu else 'n/a'} "
            f"| {fmt(statistics.mean(scrape), 2) if scrape else '-'} |"
        )
    if medians["off"]:
        cost = 100 * (medians["off"] - medians["on"]) / medians["off"]
        pairs = [
            100 * (off["deliveriesPerSec"] - on["deliveriesPerSec"]) / off["deliveriesPerSec"]
            for on, off in zip(runs["on"], runs["off"], strict=True)
            if on.get("deliveriesPerSec") and off.get("deliveriesPerSec")
        ]
        lines += [
            "",
            f"Throughput cost of metrics: {cost:+.1f} % of the median without them; "
            f"round by round (each 'on' against the 'off' next to it): "
            f"{', '.join(f'{p:+.1f} %' for p in pairs)} (negative: faster with them). "
            "On a machine shared with other jobs the rounds vary more than that.",
        ]
    counting = counting_ns_per_publish()
    off_cpu = [c for r in runs["off"] if (c := _cpu_us_per_delivery(r, args.subscribers))]
    if off_cpu:
        per_message_us = statistics.median(off_cpu) * args.subscribers
        lines += [
            "",
            f"What the counting adds to each publish, timed in-process: {counting:.0f} ns, "
            f"{100 * counting / (1000 * per_message_us):.2f} % of the hub's CPU per published "
            f"message at this fan-out ({per_message_us:.0f} µs without metrics). The fan-out "
            "itself adds one histogram observation per channel and delivery round, nothing "
            "per subscriber.",
        ]
    return "\n".join(lines)


def _cleanup(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def report(
    rows: list[tuple[str, dict[str, Any]]],
    lat_rows: list[tuple[str, dict[str, Any]]],
    args: argparse.Namespace,
) -> str:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        "## Scaling out: hubs on one Redis (benchmarks/scaling.py)",
        "",
        f"Generated by `python benchmarks/scaling.py` on {when}; Python "
        f"{platform.python_version()}, {platform.machine()}, {os.cpu_count()} cores shared "
        "with the load generator, nginx and Redis. Method: the module docstring of "
        "[scaling.py](scaling.py). Fan-out: one publisher (64 unacked at most), "
        f"{args.subscribers} subscribers, {args.duration:g} s window.",
        "",
        "| setup | deliveries/s | publishes/s | complete | hub CPU ms/msg | "
        "Redis CPU ms/msg | nginx CPU ms/msg |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for name, r in rows:
        published = r.get("publishedTotal") or 0
        cpu = r.get("cpu", {})

        def per(key: str, cpu: dict[str, float] = cpu, published: int = published) -> str:
            return fmt(1000 * cpu.get(key, 0) / published, 3) if published else "n/a"

        complete = "yes" if r.get("allComplete") else f"no ({r.get('error', 'gaps/dups')})"
        lines.append(
            f"| {name} | {fmt(r.get('deliveriesPerSec'))} | {fmt(r.get('publishesPerSec'))} "
            f"| {complete} | {per('hubs')} | {per('redis') if 'redis' in name else '-'} "
            f"| {per('nginx') if 'nginx' in name else '-'} |"
        )
    lines += [
        "",
        "Latency, one hub, 200 msg/s to 10 subscribers (publish to delivery):",
        "",
        "| store | p50 ms | p90 ms | p99 ms | max ms |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, r in lat_rows:
        ms = r.get("latencyMs") or {}
        lines.append(
            f"| {name} | {fmt(ms.get('p50'), 2)} | {fmt(ms.get('p90'), 2)} "
            f"| {fmt(ms.get('p99'), 2)} | {fmt(ms.get('max'), 2)} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
