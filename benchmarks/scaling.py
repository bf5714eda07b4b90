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
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
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

    def __init__(self, hubs: int, store: str, balanced: bool) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.hub_pids: list[int] = []
        self.workdir = tempfile.mkdtemp(prefix="rtkit-scaling-")
        ports = [free_port() for _ in range(hubs)]
        for port in ports:
            cmd = [sys.executable, "-m", "rtkit", "--log-level", "WARNING", "hub"]
            cmd += ["--port", str(port), "--allow-anonymous", "--publish-rate", "0"]
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


def run_case(hubs: int, store: str, balanced: bool, **cfg: Any) -> dict[str, Any]:
    setup = Setup(hubs, store, balanced)
    try:
        before = setup.cpu()
        result = loadgen(setup.port, **cfg)
        after = setup.cpu()
    finally:
        setup.stop()
    result["cpu"] = {k: after[k] - before[k] for k in before}
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
    args = parser.parse_args()
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
