"""Benchmark the rtkit hub against plain python-socketio and node socket.io.

One run starts every server under test as a subprocess on a free loopback
port, drives it with the same load generator (``benchmarks/loadgen.js``, raw
``ws`` speaking Engine.IO v4 / Socket.IO v5 by hand) through the same
scenarios, stops it, and writes one markdown file with the machine, the
versions, a table per scenario and notes on method (plus the raw numbers as
JSON next to it).

    python benchmarks/run.py                      # full run, about 5 minutes
    python benchmarks/run.py --quick              # smoke run, under a minute
    python benchmarks/run.py --servers socketio,node --out /tmp/r.md
    python benchmarks/run.py --scenarios connections --out /tmp/c.md

Servers: ``rtkit`` (the hub, ``python -m rtkit hub``), ``socketio`` (plain
python-socketio, ``servers/plain_socketio.py``), ``node`` (socket.io 4.8,
``servers/node_socketio.js``) and ``raw`` (``servers/raw_ws_broadcast.js``, a
bare ``ws`` broadcaster: the ceiling the load generator can receive).

Everything is bounded in time: each phase of the load generator has a
timeout, the load generator has a hard deadline, each server is killed (its
whole process group) in a ``finally`` block, and the run skips what is left
once ``--max-seconds`` is spent. Only loopback addresses are used.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import os
import platform
import queue
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO))

from results import write_head  # noqa: E402

from rtkit._process import free_port, start_group, stop_group, wait_for_port  # noqa: E402

HOST = "127.0.0.1"
# The Redis the "Redis store" cases use; each case writes under a key prefix
# of its own and deletes its keys afterwards. No Redis there: those cases are
# skipped with a note.
REDIS_URL = os.environ.get("RTKIT_BENCH_REDIS", "redis://127.0.0.1:6379/0")
SERVER_NAMES = ("rtkit", "socketio", "node", "raw")
SCENARIOS = ("latency", "fanout", "hosts", "connections")
PY_HOSTS = ("aiohttp", "tornado", "uvicorn")


def log(msg: str) -> None:
    print(f"[run {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def venv_python() -> str:
    candidate = REPO / ".venv" / "bin" / "python"
    return str(candidate) if candidate.exists() else sys.executable


# ---------------------------------------------------------------------------
# Profiles: how long each phase runs.


@dataclasses.dataclass(frozen=True)
class Profile:
    name: str
    warmup: float
    duration: float
    drain_timeout: float
    latency_rate: int = 1000
    # A second latency run well below every server's capacity, so the figures
    # show the path itself rather than a queue (1000 msg/s can saturate a
    # Python server that shares its core with other jobs).
    low_latency_rate: int | None = 100
    latency_subscribers: int = 10
    fanout_sizes: tuple[int, ...] = (100, 1000)
    host_comparison: bool = True
    quiet_wait: float = 3.0  # max seconds to wait for an idle machine per case
    connection_sizes: tuple[int, ...] = (1000, 5000, 10000)


FULL = Profile("full", warmup=2.0, duration=10.0, drain_timeout=30.0)
QUICK = Profile(
    "quick",
    warmup=0.5,
    duration=2.0,
    drain_timeout=10.0,
    low_latency_rate=None,
    fanout_sizes=(100,),
    host_comparison=False,
    quiet_wait=0.0,
    connection_sizes=(1000,),
)

# The connections scenario: idle connections opened this many at a time
# (below the hub's --max-pending-per-address, 128, so none is refused for
# being one too many still joining).
CONNECT_CONCURRENCY = 50
# Seconds the load generator waits for run.py between phases, and the most
# run.py waits for the server's RSS to stop moving once they are all idle.
HOLD_TIMEOUT = 60.0
RSS_SETTLE = 5.0

# Picked by experiment (README.md, "Publisher window"): 64 unacked publishes
# keep every server here busy; more only adds queueing.
FANOUT_WINDOW = 64
# Deliveries allowed on their way (published x subscribers - delivered). It
# keeps a server that acks faster than it delivers from piling up a backlog
# that would take minutes to drain, and is far above what any server here
# needs in flight to stay busy.
FANOUT_MAX_OUTSTANDING = 20_000
PAD_BYTES = 16


# ---------------------------------------------------------------------------
# Servers


@dataclasses.dataclass
class ServerSpec:
    key: str  # e.g. "rtkit", "rtkit+sqlite", "socketio/tornado"
    label: str  # for tables
    argv: Callable[[int, Path], list[str]]  # (port, tmpdir) -> command line
    note: str = ""
    cwd: Path = REPO


def server_env() -> dict[str, str]:
    # RTKIT_* settings of whoever runs the benchmark must not change the hub.
    return {k: v for k, v in os.environ.items() if not k.startswith("RTKIT_")}


def snapshot_rtkit(dest: Path) -> tuple[Path, str]:
    """Copy the rtkit package to dest/rtkit; return (dest, fingerprint).

    Others edit rtkit/ while a run takes minutes: every hub in one run must be
    the same code. `python -m rtkit` started with cwd=dest imports this copy
    (sys.path[0] is the working directory, ahead of the editable install).
    """
    src = REPO / "rtkit"
    shutil.copytree(src, dest / "rtkit", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    digest = hashlib.sha256()
    newest = 0.0
    for path in sorted((dest / "rtkit").rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(dest)).encode() + b"\0" + path.read_bytes())
            newest = max(newest, (src / path.relative_to(dest / "rtkit")).stat().st_mtime)
    stamp = dt.datetime.fromtimestamp(newest, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return dest, f"sha256 {digest.hexdigest()[:12]} (newest file {stamp})"


def rtkit_help(cwd: Path) -> tuple[str | None, str]:
    """Return (hub --help text, top-level --help text), or (None, reason)."""
    py = venv_python()
    try:
        hub = subprocess.run(
            [py, "-m", "rtkit", "hub", "--help"],
            cwd=cwd,
            env=server_env(),
            capture_output=True,
            text=True,
            timeout=30,
        )
        top = subprocess.run(
            [py, "-m", "rtkit", "--help"],
            cwd=cwd,
            env=server_env(),
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"`python -m rtkit hub --help` failed: {exc}"
    if hub.returncode != 0:
        tail = (hub.stderr or hub.stdout).strip().splitlines()[-1:] or ["no output"]
        return None, f"`python -m rtkit hub --help` exited {hub.returncode}: {tail[0]}"
    return hub.stdout, top.stdout


def rtkit_spec(
    hub_help: str,
    top_help: str,
    cwd: Path,
    *,
    server: str | None = None,
    store: str | None = None,
) -> ServerSpec | None:
    """The rtkit hub's command line, adapted to the flags its --help lists."""
    if "--allow-anonymous" not in hub_help:
        return None
    if server is not None and "--server" not in hub_help:
        return None
    if store is not None and "--store" not in hub_help:
        return None
    py = venv_python()
    notes = []

    def argv(port: int, tmp: Path) -> list[str]:
        cmd = [py, "-m", "rtkit"]
        if "--log-level" in top_help:
            cmd += ["--log-level", "WARNING"]
        cmd += ["hub", "--host", HOST, "--port", str(port), "--allow-anonymous"]
        if "--publish-rate" in hub_help:
            cmd += ["--publish-rate", "0"]
        if "--max-connections-per-user" in hub_help:
            # Every anonymous connection is the same user; the default cap
            # (100) would refuse the 1000-subscriber scenario.
            cmd += ["--max-connections-per-user", "100000"]
        if server is not None:
            cmd += ["--server", server]
        if store is not None:
            url = store.replace("<tmpdir>", str(tmp)).replace("<prefix>", redis_prefix(port))
            cmd += ["--store", url]
        return cmd

    key, label = "rtkit", "rtkit hub"
    if store is not None:
        scheme = store.split(":", 1)[0]
        key, label = f"rtkit+{scheme}", f"rtkit hub, {scheme} store"
        notes.append(f"--store {store}")
    if server is not None:
        key, label = f"rtkit/{server}", f"rtkit hub on {server}"
    return ServerSpec(key, label, argv, "; ".join(notes), cwd=cwd)


def redis_prefix(port: int) -> str:
    """A key prefix no other case (or other user of the Redis) shares."""
    return f"rtkit-bench-{os.getpid()}-{port}:"


def redis_reachable() -> str | None:
    """None when REDIS_URL answers PING, else why not."""
    try:
        import redis
    except ImportError:
        return "redis-py is not installed (pip install 'rtkit[redis]')"
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as exc:
        return f"no Redis at {REDIS_URL}: {exc}"
    return None


def redis_delete_prefix(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for i in range(0, len(keys), 1000):
            client.delete(*keys[i : i + 1000])
    finally:
        client.close()


def redis_server_pid() -> int | None:
    """The local redis-server's pid, to count its CPU beside the hub's."""
    out = subprocess.run(["pgrep", "-x", "redis-server"], capture_output=True, text=True)
    pids = [int(p) for p in out.stdout.split()]
    return pids[0] if len(pids) == 1 else None


def socketio_spec(host: str = "aiohttp") -> ServerSpec:
    py = venv_python()
    script = str(BENCH_DIR / "servers" / "plain_socketio.py")

    def argv(port: int, tmp: Path) -> list[str]:
        return [py, script, "--host", HOST, "--port", str(port), "--server", host]

    key = "socketio" if host == "aiohttp" else f"socketio/{host}"
    return ServerSpec(key, f"python-socketio on {host}", argv)


def node_spec(script: str, key: str, label: str) -> ServerSpec:
    node = shutil.which("node") or "node"
    path = str(BENCH_DIR / "servers" / script)

    def argv(port: int, tmp: Path) -> list[str]:
        return [node, path, "--host", HOST, "--port", str(port)]

    return ServerSpec(key, label, argv)


@contextlib.contextmanager
def running_server(spec: ServerSpec, tmp: Path, pin: bool) -> Iterator[tuple[int, int]]:
    """Start the server in its own process group; yield (port, pid); kill the group."""
    port = free_port()
    logfile = tmp / f"{spec.key.replace('/', '_')}-{port}.log"
    argv = spec.argv(port, tmp)
    preexec = (lambda: os.sched_setaffinity(0, {0})) if pin else None
    with open(logfile, "wb") as out:
        proc = start_group(
            argv,
            cwd=spec.cwd,
            env=server_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=preexec,
        )
    try:
        try:
            wait_for_port(port, proc, host=HOST, within=30)
        except RuntimeError:
            raise RuntimeError(
                f"{spec.label} exited with {proc.returncode} before listening: " + tail(logfile)
            ) from None
        except TimeoutError:
            raise RuntimeError(
                f"{spec.label} did not listen within 30 s: " + tail(logfile)
            ) from None
        yield port, proc.pid
        if proc.poll() is not None:
            raise RuntimeError(f"{spec.label} died during the run: " + tail(logfile))
    finally:
        stop_group(proc, timeout=5)


def tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"


# ---------------------------------------------------------------------------
# Load generator


def machine_busy_cores(seconds: float = 0.5) -> float:
    def busy() -> tuple[float, float]:
        with open("/proc/stat") as f:
            v = [float(x) for x in f.readline().split()[1:]]
        return sum(v) - v[3] - v[4], sum(v)

    b0, t0 = busy()
    time.sleep(seconds)
    b1, t1 = busy()
    ncpu = os.cpu_count() or 1
    return (b1 - b0) / max(t1 - t0, 1) * ncpu


def wait_for_quiet(max_wait: float, threshold: float = 0.3) -> float:
    """Wait up to max_wait s until other jobs use < threshold cores; return the last reading."""
    deadline = time.monotonic() + max_wait
    busy = machine_busy_cores()
    while busy >= threshold and time.monotonic() < deadline:
        busy = machine_busy_cores(1.0)
    return busy


def run_loadgen(cfg: dict[str, Any], pin: bool) -> dict[str, Any]:
    node = shutil.which("node") or "node"
    hard = cfg["connectTimeout"] + cfg["warmup"] + cfg["duration"] + 2 * cfg["drainTimeout"] + 15
    cfg = {**cfg, "hardDeadline": hard}
    preexec = (lambda: os.sched_setaffinity(0, {1})) if pin else None
    proc = start_group(
        [node, str(BENCH_DIR / "loadgen.js"), json.dumps(cfg)],
        cwd=BENCH_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=preexec,
    )
    try:
        out, err = proc.communicate(timeout=hard + 10)
    except subprocess.TimeoutExpired:
        stop_group(proc, timeout=5)
        return {"ok": False, "error": "load generator timed out"}
    finally:
        if proc.poll() is None:
            stop_group(proc, timeout=5)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if not lines:
        return {"ok": False, "error": f"no result (exit {proc.returncode}): {err.strip()[-500:]}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def rss_kib(pid: int) -> int | None:
    """Resident memory of process ``pid`` (VmRSS, KiB), None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def settled_rss_kib(pid: int, within: float) -> int | None:
    """The server's RSS once two readings 0.25 s apart differ by less than
    64 KiB (the last reading if that takes longer than ``within`` s):
    freshly accepted connections may still be finishing their setup."""
    deadline = time.monotonic() + within
    last = rss_kib(pid)
    while last is not None and time.monotonic() < deadline:
        time.sleep(0.25)
        now = rss_kib(pid)
        if now is None or abs(now - last) < 64:
            return now
        last = now
    return last


def run_connections(cfg: dict[str, Any], pid: int, pin: bool) -> dict[str, Any]:
    """The connections scenario: the load generator opens one connection,
    run.py reads the server's RSS (idle), the load generator opens
    ``subscribers`` idle subscribed connections, run.py reads the RSS again
    while they are held, then the load generator checks that every one of
    them still gets a publish. Phases are lines on the load generator's
    stdout, answered with "go" on its stdin (see loadgen.js)."""
    node = shutil.which("node") or "node"
    hard = cfg["connectTimeout"] + 2 * cfg["holdTimeout"] + cfg["drainTimeout"] + 30
    cfg = {**cfg, "hardDeadline": hard}
    preexec = (lambda: os.sched_setaffinity(0, {1})) if pin else None
    with tempfile.TemporaryFile() as err:
        proc = start_group(
            [node, str(BENCH_DIR / "loadgen.js"), json.dumps(cfg)],
            cwd=BENCH_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            preexec_fn=preexec,
        )
        lines: queue.Queue[str | None] = queue.Queue()

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.put(line)
            lines.put(None)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        deadline = time.monotonic() + hard + 10

        def next_message() -> dict[str, Any]:
            while (left := deadline - time.monotonic()) > 0:
                try:
                    line = lines.get(timeout=left)
                except queue.Empty:
                    break
                if line is None:
                    break
                if line.startswith("{"):
                    message: dict[str, Any] = json.loads(line)
                    return message
            return {"ok": False, "error": "the load generator ended or timed out"}

        def go() -> None:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()

        try:
            msg = next_message()
            if msg.get("phase") != "idle":
                return msg
            before = settled_rss_kib(pid, RSS_SETTLE)
            go()
            msg = next_message()
            if msg.get("phase") != "holding":
                return msg
            after = settled_rss_kib(pid, RSS_SETTLE)
            go()
            result = next_message()
        finally:
            stop_group(proc, timeout=5)
            reader.join(timeout=5)
        if not result.get("ok") and "error" in result and not result.get("scenario"):
            err.seek(0)
            result["error"] += ": " + err.read().decode(errors="replace").strip()[-300:]
    n = int(cfg["subscribers"])
    if before is not None and after is not None:
        result.update(
            {
                "serverRssBeforeKiB": before,
                "serverRssAfterKiB": after,
                # KB (1000 bytes) per connection, as the goal is stated.
                "rssPerConnectionKB": round((after - before) * 1024 / n / 1000, 2),
            }
        )
    return result


@dataclasses.dataclass
class Case:
    section: str  # "latency", "fanout", "hosts"
    spec: ServerSpec
    scenario: str  # "latency" | "fanout" | "connections"
    subscribers: int
    rate: int | None = None  # latency: publishes per second


def loadgen_config(case: Case, profile: Profile, port: int, pid: int) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "host": HOST,
        "port": port,
        "serverPid": pid,
        "scenario": case.scenario,
        "subscribers": case.subscribers,
        "warmup": profile.warmup,
        "duration": profile.duration,
        "drainTimeout": profile.drain_timeout,
        "padBytes": PAD_BYTES,
        "connectConcurrency": 50,
        "connectTimeout": 60,
    }
    if case.scenario == "latency":
        cfg["rate"] = case.rate or profile.latency_rate
    elif case.scenario == "connections":
        cfg["connectConcurrency"] = CONNECT_CONCURRENCY
        cfg["connectTimeout"] = 30 + case.subscribers / 100
        cfg["holdTimeout"] = HOLD_TIMEOUT
    else:
        cfg["window"] = FANOUT_WINDOW
        cfg["maxOutstanding"] = FANOUT_MAX_OUTSTANDING
    return cfg


def run_case(
    case: Case, profile: Profile, tmp: Path, pin: bool, quiet_wait: float
) -> dict[str, Any]:
    busy_before = wait_for_quiet(quiet_wait) if quiet_wait > 0 else machine_busy_cores(0.3)
    started = time.monotonic()
    record: dict[str, Any] = {
        "section": case.section,
        "server": case.spec.key,
        "label": case.spec.label,
        "serverNote": case.spec.note,
        "scenario": case.scenario,
        "subscribers": case.subscribers,
        "rate": case.rate,
        "busyCoresBefore": round(busy_before, 2),
    }
    try:
        with running_server(case.spec, tmp, pin) as (port, pid):
            record["argv"] = " ".join(
                os.path.relpath(a, REPO) if a.startswith(str(REPO)) else a
                for a in case.spec.argv(port, tmp)
            )
            cfg = loadgen_config(case, profile, port, pid)
            if case.scenario == "connections":
                record.update(run_connections(cfg, pid, pin))
            else:
                on_redis = case.spec.key == "rtkit+redis"
                if on_redis:
                    cfg["storePid"] = redis_server_pid() or 0
                try:
                    record.update(run_loadgen(cfg, pin))
                finally:
                    if on_redis:
                        redis_delete_prefix(redis_prefix(port))
    except Exception as exc:  # a failed case is reported, the run goes on
        record.update({"ok": False, "error": str(exc)})
    record["caseSeconds"] = round(time.monotonic() - started, 1)
    return record


def summary_line(r: dict[str, Any]) -> str:
    head = f"{r['label']} {r['scenario']} n={r['subscribers']}"
    if not r.get("ok"):
        return f"{head}: FAILED {r.get('error')}"
    cpu = (
        f"server {fmt(r.get('serverCpu'), 2)} loadgen {fmt(r.get('loadgenCpu'), 2)} "
        f"other {fmt(r.get('otherCpu'), 2)} cores"
    )
    if r["scenario"] == "connections":
        return (
            f"{head}: {fmt(r.get('connectsPerSec'))} connects/s, RSS "
            f"{fmt((r.get('serverRssBeforeKiB') or 0) / 1024, 1)} -> "
            f"{fmt((r.get('serverRssAfterKiB') or 0) / 1024, 1)} MiB, "
            f"{fmt(r.get('rssPerConnectionKB'), 1)} KB/connection, "
            f"served {r.get('served')}/{r['subscribers']}; {cpu}"
        )
    if r["scenario"] == "latency":
        lat = r["latencyMs"]
        return (
            f"{head}: p50 {lat['p50']} p99 {lat['p99']} max {lat['max']} ms, "
            f"delivered {r['delivered']}/{r['expected']}; {cpu}"
        )
    return (
        f"{head}: {fmt(r['deliveriesPerSec'])} deliveries/s, "
        f"{fmt(r['publishesPerSec'])} publishes/s, complete={r['allComplete']}; {cpu}"
    )


# ---------------------------------------------------------------------------
# Machine and versions


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {}
    cpu_model = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    info["cpu"] = cpu_model
    info["cores"] = os.cpu_count()
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in lscpu.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("Hypervisor vendor", "Thread(s) per core", "BogoMIPS"):
                info[key.strip()] = value.strip()
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory"] = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    info["kernel"] = platform.release()
    code = (
        "import sys, json, importlib.metadata as m\n"
        "names = ['rtkit', 'python-socketio', 'python-engineio', 'aiohttp', 'tornado',"
        " 'uvicorn', 'wsproto', 'websockets', 'httptools', 'uvloop', 'orjson',"
        " 'simple-websocket']\n"
        "v = {}\n"
        "for n in names:\n"
        "    try: v[n] = m.version(n)\n"
        "    except m.PackageNotFoundError: v[n] = None\n"
        "print(json.dumps({'python': sys.version.split()[0], 'packages': v}))\n"
    )
    try:
        out = subprocess.run(
            [venv_python(), "-c", code], capture_output=True, text=True, timeout=30
        ).stdout
        py = json.loads(out)
        info["python"] = py["python"]
        info["python_packages"] = py["packages"]
    except (OSError, subprocess.SubprocessError, ValueError):
        info["python"] = platform.python_version()
        info["python_packages"] = {}
    try:
        info["node"] = subprocess.run(
            ["node", "--version"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        info["node"] = None
    node_pkgs = {}
    for name, rel in [
        ("socket.io", "node_modules/socket.io"),
        ("engine.io", "node_modules/engine.io"),
        ("ws (load generator, raw server)", "node_modules/ws"),
        ("ws (inside engine.io)", "node_modules/engine.io/node_modules/ws"),
    ]:
        with contextlib.suppress(OSError, ValueError):
            node_pkgs[name] = json.loads((BENCH_DIR / rel / "package.json").read_text())["version"]
    info["node_packages"] = node_pkgs
    try:
        rev = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        info["git"] = rev.stdout.strip() if rev.returncode == 0 else "no commit yet"
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "rtkit"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        if dirty.strip():
            info["git"] += f" (rtkit/ has {len(dirty.splitlines())} uncommitted paths)"
    except (OSError, subprocess.SubprocessError):
        info["git"] = "unknown"
    return info


def ensure_node_modules() -> None:
    if (BENCH_DIR / "node_modules" / "socket.io").is_dir() and (
        BENCH_DIR / "node_modules" / "ws"
    ).is_dir():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("npm not found: install Node.js 18+ (node and npm)")
    log("installing node packages (npm ci) in benchmarks/")
    subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=BENCH_DIR, check=True, timeout=300)


# ---------------------------------------------------------------------------
# Report


def fmt(x: Any, digits: int = 0) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, (int, float)):
        return f"{x:,.{digits}f}"
    return str(x)


def cpu_cell(r: dict[str, Any], who: str) -> str:
    """'0.59 +0.45': CPU used, and time its event-loop thread waited for a CPU."""
    cpu, wait = r.get(f"{who}Cpu"), r.get(f"{who}RunqueueWait")
    if wait is None:
        return fmt(cpu, 2)
    return f"{fmt(cpu, 2)} +{wait:.2f}"


def demand(r: dict[str, Any], who: str) -> float:
    return float(r.get(f"{who}Cpu") or 0) + float(r.get(f"{who}RunqueueWait") or 0)


def flags(r: dict[str, Any]) -> list[str]:
    out = []
    if not r.get("ok"):
        return [f"failed: {r.get('error')}"]
    lg, srv = float(r.get("loadgenCpu") or 0), float(r.get("serverCpu") or 0)
    if lg >= 0.9 or (r.get("scenario") == "fanout" and srv and lg >= 0.75 * srv):
        out.append(
            f"load generator used {lg:.2f} cores against the server's {srv:.2f}: with a core "
            "each it would run out about as soon as the server, so this throughput is a floor"
        )
    if r.get("scenario") == "fanout" and not r.get("allComplete"):
        out.append(
            f"incomplete: {r.get('completeSubscribers')}/{r.get('subscribers')} subscribers "
            f"got every message within {r.get('drainSeconds')} s of drain"
        )
    if r.get("scenario") == "latency":
        if r.get("deliveredRatio") not in (1, 1.0):
            out.append(f"delivered {r.get('delivered')}/{r.get('expected')}")
        got, offered = r.get("deliveriesPerSec"), r.get("offeredDeliveriesPerSec")
        if got is not None and offered and got < 0.95 * offered:
            out.append(
                f"fell behind: delivered {got:,.0f}/s of {offered:,}/s offered during the "
                "window, so its latencies are mostly queueing"
            )
    for key, what in [
        ("ackErrors", "publish errors"),
        ("gaps", "seq gaps"),
        ("dups", "duplicates"),
        ("frameMismatch", "frames with gaps inside"),
        ("connectionErrorCount", "connection errors"),
    ]:
        if r.get(key):
            out.append(f"{r[key]} {what}")
    if r.get("wsExtensions"):
        out.append(f"websocket extensions negotiated: {r['wsExtensions']}")
    return out


def per_cpu(r: dict[str, Any]) -> float | None:
    if not r.get("ok") or not r.get("serverCpu"):
        return None
    return float(r["deliveriesPerSec"]) / float(r["serverCpu"])


def fanout_table(rows: list[dict[str, Any]], first_col: str = "server") -> list[str]:
    out = [
        f"| {first_col} | subscribers | deliveries/s | publishes/s | envelopes/packet "
        "| bytes/envelope | all delivered (drain s) | server CPU +wait "
        "| deliveries per server CPU-s | loadgen CPU +wait | other CPU | server RSS MiB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        if not r.get("ok"):
            out.append(
                f"| {r['label']} | {r['subscribers']} | failed: {r.get('error')} |" + " |" * 9
            )
            continue
        out.append(
            f"| {r['label']} | {r['subscribers']:,} | **{fmt(r['deliveriesPerSec'])}** "
            f"| {fmt(r['publishesPerSec'])} | {fmt(r.get('envelopesPerFrame'), 1)} "
            f"| {fmt(r.get('bytesPerEnvelope'))} "
            f"| {fmt(r['allComplete'])} ({fmt(r.get('drainSeconds'), 1)}) "
            f"| {cpu_cell(r, 'server')} | {fmt(per_cpu(r))} | {cpu_cell(r, 'loadgen')} "
            f"| {fmt(r.get('otherCpu'), 2)} | {fmt(r.get('serverRssMiB'))} |"
        )
    return out


def latency_table(rows: list[dict[str, Any]]) -> list[str]:
    out = [
        "| server | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | delivered / expected "
        "| delivered/s in window / offered | publish ack p50 / p99 ms | server CPU +wait "
        "| loadgen CPU +wait | other CPU |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        if not r.get("ok"):
            out.append(f"| {r['label']} | failed: {r.get('error')} |" + " |" * 10)
            continue
        lat = r["latencyMs"]
        ack = r.get("ackLatencyMs") or {}
        out.append(
            f"| {r['label']} | **{fmt(lat['p50'], 2)}** | {fmt(lat['p90'], 2)} "
            f"| **{fmt(lat['p99'], 2)}** | {fmt(lat['p999'], 2)} | {fmt(lat['max'], 2)} "
            f"| {r['delivered']:,} / {r['expected']:,} "
            f"| {fmt(r.get('deliveriesPerSec'))} / {fmt(r.get('offeredDeliveriesPerSec'))} "
            f"| {fmt(ack.get('p50'), 2)} / {fmt(ack.get('p99'), 2)} "
            f"| {cpu_cell(r, 'server')} | {cpu_cell(r, 'loadgen')} "
            f"| {fmt(r.get('otherCpu'), 2)} |"
        )
    return out


def cpu_us_per_delivery(r: dict[str, Any], who: str = "server") -> float | None:
    cpu, rate = r.get(f"{who}Cpu"), r.get("deliveriesPerSec")
    if not r.get("ok") or cpu is None or not rate:
        return None
    return float(cpu) / float(rate) * 1e6


def store_comparison(results: list[dict[str, Any]]) -> list[str]:
    """The Redis store beside the memory store, case by case, as ratios."""
    pairs: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    for section, scenario, n, what in [
        ("fanout", "fanout", 100, "fan-out to 100"),
        ("fanout", "fanout", 1000, "fan-out to 1,000"),
        ("latency", "latency", None, "latency"),
        ("latency-low", "latency", None, "latency below saturation"),
    ]:
        rows = [
            r for r in results if r["section"] == section and (n is None or r["subscribers"] == n)
        ]
        mem = next((r for r in rows if r["server"] == "rtkit"), None)
        red = next((r for r in rows if r["server"] == "rtkit+redis"), None)
        if mem is not None and red is not None and mem.get("ok") and red.get("ok"):
            if scenario == "latency":
                what += f" at {red.get('rate'):,} msg/s"
            pairs.append((what, mem, red))
    if not pairs:
        return []
    out = [
        "## The Redis store beside the memory store",
        "",
        "Cases of the tables above, one hub each, the memory store and the Redis store "
        "(`--store redis://...` on the local redis-server) back to back. Hub CPU per delivery "
        "is the hub's CPU over the window divided by the envelopes delivered: what predicts a "
        "bigger machine, since on these 2 cores another hub would only share them. "
        "redis-server's CPU is shown beside it.",
        "",
        "| case | measure | memory store | Redis store | Redis / memory |",
        "| --- | --- | ---: | ---: | ---: |",
    ]

    def ratio(a: float | None, b: float | None) -> str:
        return "-" if not a or b is None else f"{b / a:.2f}x"

    for what, mem, red in pairs:
        if mem["scenario"] == "fanout":
            rows = [
                ("deliveries/s", mem["deliveriesPerSec"], red["deliveriesPerSec"], 0),
            ]
        else:
            rows = [
                ("p50 ms", mem["latencyMs"]["p50"], red["latencyMs"]["p50"], 2),
                ("p99 ms", mem["latencyMs"]["p99"], red["latencyMs"]["p99"], 2),
            ]
        rows.append(
            ("hub CPU µs per delivery", cpu_us_per_delivery(mem), cpu_us_per_delivery(red), 2)
        )
        for measure, a, b, digits in rows:
            out.append(
                f"| {what} | {measure} | {fmt(a, digits)} | {fmt(b, digits)} | {ratio(a, b)} |"
            )
        done_mem = mem.get("allComplete", mem.get("deliveredRatio") in (1, 1.0))
        done_red = red.get("allComplete", red.get("deliveredRatio") in (1, 1.0))
        out.append(
            f"| {what} | every delivery accounted for | {fmt(done_mem)} | {fmt(done_red)} | |"
        )
        out.append(f"| {what} | redis-server CPU (cores) | - | {fmt(red.get('storeCpu'), 2)} | |")
    out.append("")
    return out


def connections_table(rows: list[dict[str, Any]]) -> list[str]:
    out = [
        "| server | connections | connects/s | RSS idle MiB | RSS with them MiB "
        "| KB per connection | served after idling | server CPU +wait (connecting) "
        "| loadgen CPU +wait | other CPU |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        if not r.get("ok") and r.get("served") is None:
            out.append(
                f"| {r['label']} | {r['subscribers']:,} | failed: {r.get('error')} |" + " |" * 7
            )
            continue
        before, after = r.get("serverRssBeforeKiB"), r.get("serverRssAfterKiB")
        out.append(
            f"| {r['label']} | {r['subscribers']:,} | **{fmt(r.get('connectsPerSec'))}** "
            f"| {fmt(before / 1024 if before else None, 1)} "
            f"| {fmt(after / 1024 if after else None, 1)} "
            f"| **{fmt(r.get('rssPerConnectionKB'), 1)}** "
            f"| {r.get('served'):,} / {r['subscribers']:,} "
            f"| {cpu_cell(r, 'server')} | {cpu_cell(r, 'loadgen')} | {fmt(r.get('otherCpu'), 2)} |"
        )
    return out


def loadgen_headroom(rows: list[dict[str, Any]]) -> list[str]:
    ok = [r for r in rows if r.get("ok") and r.get("loadgenCpu") is not None]
    if not ok:
        return []
    top = max(ok, key=lambda r: demand(r, "loadgen"))
    lines = [
        "## Load generator headroom",
        "",
        f"- Busiest load generator: {cpu_cell(top, 'loadgen')} cores (CPU +wait; "
        f"{top['label']}, {top['scenario']} {top['subscribers']}). On a shared machine "
        "every process waits for a CPU, so the wait says little about who limits whom; "
        "the CPU each side spends per delivery does (next lines).",
    ]
    for r in ok:
        if r["server"] == "raw" and r.get("deliveriesPerSec"):
            per = float(r["deliveriesPerSec"]) / max(float(r["loadgenCpu"]), 1e-9)
            packets = float(r.get("framesPerSec") or r["deliveriesPerSec"])
            lines.append(
                f"- Calibration, raw ws broadcast to {r['subscribers']}: "
                f"{r['deliveriesPerSec']:,.0f} deliveries/s ({packets:,.0f} packets/s) at "
                f"{r['loadgenCpu']:.2f} load-generator cores, i.e. about {per:,.0f} packets "
                "per load-generator CPU-second: what it can take on one core here."
            )
    lines.append(
        "- Its cost is mostly per packet: a server that coalesces (envelopes/packet > 1) "
        "costs it much less per envelope. A server that delivers about as many packets per "
        "CPU-second as the figure above is at par with the load generator on this 2-core "
        "machine: its throughput is then a floor (flagged below)."
    )
    return lines


CONTENDED = 0.25  # cores used by other processes during a window


def contention_summary(rows: list[dict[str, Any]]) -> str | None:
    others = [float(r["otherCpu"]) for r in rows if r.get("ok") and r.get("otherCpu") is not None]
    busy = [x for x in others if x >= CONTENDED]
    if not busy:
        return None
    others.sort()
    median = others[len(others) // 2]
    return (
        f"**This run shared the machine with other jobs**: in {len(busy)} of {len(others)} "
        f"cases other processes used {CONTENDED} cores or more during the measurement window "
        f"(median {median:.2f}, max {others[-1]:.2f} of {os.cpu_count()} cores; column "
        '"other CPU"). Throughput and latency figures are therefore lower bounds; '
        '"deliveries per server CPU-s" is the figure that carries over to a machine where '
        "the server has a core to itself."
    )


def notes_list(rows: list[dict[str, Any]]) -> list[str]:
    out = []
    if contention_summary(rows):
        out.append("- shared machine: see the note at the top")
    for r in rows:
        for f in flags(r):
            what = f"{r['scenario']} {r['subscribers']}"
            if r["scenario"] == "latency":
                what += f" at {r.get('rate')} msg/s"
            out.append(f"- {r['label']}, {what}: {f}")
    return out


def write_report(
    path: Path, info: dict[str, Any], results: list[dict[str, Any]], meta: dict[str, Any]
) -> None:
    profile: Profile = meta["profile"]
    lines: list[str] = [
        "# rtkit benchmark results",
        "",
        f"Generated by `{meta['command']}` on {meta['date']} "
        f"({profile.name} profile, {meta['seconds']:.0f} s). "
        "How to run and what each scenario measures: [README.md](README.md).",
        "",
    ]
    summary = contention_summary(results)
    if summary:
        lines += [summary, ""]
    lines += [
        "## Machine",
        "",
        "| | |",
        "| --- | --- |",
        f"| CPU | {info['cpu']} ({info['cores']} cores"
        + (f", {info['Hypervisor vendor']} guest" if info.get("Hypervisor vendor") else "")
        + ") |",
        f"| memory | {info.get('memory', '?')} |",
        f"| kernel | {info['kernel']} |",
        f"| Python | {info['python']} (asyncio default event loop) |",
        f"| Node.js | {info['node']} |",
        f"| rtkit tree | {info.get('git')} |",
        f"| rtkit code run | {info.get('rtkit_code', '-')} |",
    ]
    pkgs = ", ".join(f"{k} {v}" for k, v in info["python_packages"].items() if v is not None)
    missing = ", ".join(k for k, v in info["python_packages"].items() if v is None)
    lines.append(f"| Python packages | {pkgs} |")
    if missing:
        lines.append(f"| not installed | {missing} |")
    lines.append(
        "| npm packages | " + ", ".join(f"{k} {v}" for k, v in info["node_packages"].items()) + " |"
    )
    pinning = (
        "server on CPU 0, load generator on CPU 1"
        if meta["pin"]
        else "none (the scheduler places server and load generator)"
    )
    lines.append(f"| pinning | {pinning} |")
    lines.append("")

    by_section: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_section.setdefault(r["section"], []).append(r)

    lines += [
        "## Method",
        "",
        f"- Each case starts a fresh server process on a free loopback port, waits until it "
        f"accepts TCP connections, runs `benchmarks/loadgen.js` once, then kills the server's "
        f"process group. Warm-up {profile.warmup:g} s, measurement window {profile.duration:g} s, "
        f"drain timeout {profile.drain_timeout:g} s.",
        "- All hubs of one run execute the same rtkit code: a copy of `rtkit/` taken when the "
        "run starts (others edit the work tree meanwhile); its fingerprint is in the table above.",
        "- Load generator: one Node.js process, raw `ws` speaking Engine.IO v4 / Socket.IO v5 by "
        "hand over the websocket transport, namespace `/rtkit`, anonymous connect (`40/rtkit,{}`). "
        "Subscribers connect 50 at a time (the 1000-subscriber ramp), all subscribe to channel "
        "`bench` before the first publish.",
        "- **permessage-deflate is off everywhere**: the load generator never offers it "
        "(`ws` option `perMessageDeflate: false`), so aiohttp, tornado and uvicorn, which would "
        "negotiate it when offered, do not; node socket.io and the raw server set "
        "`perMessageDeflate: false`; the rtkit hub runs without `--compression`. Each result "
        "records the extensions the handshake negotiated (`wsExtensions` in the JSON): empty in "
        "every case below unless a note says otherwise.",
        f"- Latency: one publisher paced by a timer at {profile.latency_rate:,} msg/s (and "
        f"again at {profile.low_latency_rate or 0:,} msg/s) with catch-up (not by acks), "
        f"{profile.latency_subscribers} subscribers; the message data carries the send time "
        "(`performance.now()`, same process, same clock). Percentiles over every delivery of every "
        "message sent inside the window; delivered/expected counts those deliveries after a drain.",
        f"- Fan-out: one publisher with at most {FANOUT_WINDOW} unacked publishes and at most "
        f"{FANOUT_MAX_OUTSTANDING:,} deliveries outstanding (published x subscribers - "
        "delivered), so a server that acks faster than it delivers cannot grow an unbounded "
        "queue. deliveries/s = envelopes received by all subscribers in the window / window. "
        'Subscribers count envelopes without parsing JSON (first and last `"seq":` in the '
        'packet, checked against the number of `"seq":` occurrences) and check per subscriber '
        'that seq never skips or repeats. "all delivered" means every subscriber ended at the '
        "last acked seq with exactly one copy of each message, after the drain.",
        f'- Message data: `{{"t": <ms>, "p": "{"x" * PAD_BYTES}"}}`; envelope as wire '
        "protocol v1 (`channel`, `seq`, `ts`, `id`, `sender`, `data`). bytes/envelope is the "
        "Socket.IO packet size over envelopes (it includes the hub's own fields and, for the "
        "plain servers, a 32-hex-digit id and the sender's sid).",
        "- CPU columns are cores busy over the measurement window (1.00 = one core all the "
        "time): server from `/proc/<pid>/stat`, load generator from `process.cpuUsage()`; "
        '"+wait" is the share of the window the process\'s event-loop thread was ready to '
        "run but had no CPU (`/proc/<pid>/schedstat`), so CPU + wait is what it wanted: near "
        "1.00 means it was the busy side; "
        "other = whole machine (`/proc/stat`) minus those two, i.e. anything else running on "
        'the machine at the time. "deliveries per server CPU-s" divides throughput by server '
        "CPU: the steadiest number when other jobs share the machine.",
        f"- The machine has {info['cores']} cores: server and load generator get about one "
        "each. A load generator near 1.00 cores means it, not the server, may be the limit; "
        "the raw `ws` broadcast server (no Socket.IO machinery, each broadcast framed once) "
        "shows the most this load generator receives here.",
        "",
    ]

    if "latency" in by_section:
        lines += [
            f"## Latency: 1 publisher at {profile.latency_rate:,} msg/s, "
            f"{profile.latency_subscribers} subscribers",
            "",
            *latency_table(by_section["latency"]),
            "",
        ]
    if "latency-low" in by_section:
        lines += [
            f"## Latency below saturation: 1 publisher at {profile.low_latency_rate or 0:,} msg/s, "
            f"{profile.latency_subscribers} subscribers",
            "",
            "The same scenario at a tenth of the rate, so that no server here runs near its "
            "capacity: these figures are the delivery path itself, not a queue.",
            "",
            *latency_table(by_section["latency-low"]),
            "",
        ]
    if "fanout" in by_section:
        lines += [
            "## Fan-out: 1 publisher, one channel, N subscribers",
            "",
            *fanout_table(by_section["fanout"]),
            "",
        ]
    lines += store_comparison(results)
    if "connections" in by_section:
        lines += [
            "## Idle connections: memory per connection and connects per second",
            "",
            f"N websocket connections opened {CONNECT_CONCURRENCY} at a time, each through the "
            "Engine.IO handshake, the namespace connect and a `subscribe` to channel `bench` "
            "(acked); connects/s = N / time until the last subscribe ack. Then they stay idle "
            "(answering pings) while run.py reads the server's resident memory "
            "(`VmRSS` in `/proc/<pid>/status`, once it stops moving): KB per connection = "
            "(RSS with them - RSS with one connection) / N, in units of 1000 bytes. Last, "
            "one publish to `bench`: served = connections it reached.",
            "",
            *connections_table(by_section["connections"]),
            "",
        ]
    if "hosts" in by_section:
        lines += [
            "## Host comparison: fan-out to 100 subscribers",
            "",
            "Same server code on each web server (`--server`), back to back. uvicorn runs as "
            "installed here (h11 + wsproto, no uvloop/httptools/websockets unless the versions "
            "table lists them).",
            "",
            *fanout_table(by_section["hosts"], first_col="server / host"),
            "",
        ]
    lines += [*loadgen_headroom(results), ""]
    if meta.get("skipped"):
        lines += ["## Skipped", "", *[f"- {s}" for s in meta["skipped"]], ""]
    notes = notes_list(results)
    lines += ["## Flags raised by this run", ""]
    lines += notes or ["- none"]
    lines += [
        "",
        "## Commands",
        "",
        "Server command lines as run (ports vary):",
        "",
    ]
    seen = set()
    for r in results:
        if r.get("argv") and r["server"] not in seen:
            seen.add(r["server"])
            lines.append(f"- {r['label']}: `{r['argv']}`")
    lines += [
        "",
        f"Raw numbers: [{meta['json_name']}]({meta['json_name']}).",
        "",
    ]
    # The other benchmarks' sections after this part of the file stay.
    write_head("\n".join(lines), path)


# ---------------------------------------------------------------------------


def build_cases(
    profile: Profile,
    wanted: list[str],
    hosts: bool,
    rtkit_cwd: Path | None,
    skipped: list[str],
    scenarios: tuple[str, ...] = SCENARIOS,
) -> list[Case]:
    specs: dict[str, ServerSpec] = {}
    hub_help: str | None = None
    top_help = ""
    if "rtkit" in wanted and rtkit_cwd is not None:
        hub_help, top_help = rtkit_help(rtkit_cwd)
        if hub_help is None:
            skipped.append(f"rtkit hub: {top_help}")
        else:
            spec = rtkit_spec(hub_help, top_help, rtkit_cwd)
            if spec is None:
                skipped.append("rtkit hub: its --help lists no --allow-anonymous")
            else:
                specs["rtkit"] = spec
    if "socketio" in wanted:
        specs["socketio"] = socketio_spec("aiohttp")
    if "node" in wanted:
        specs["node"] = node_spec("node_socketio.js", "node", "node socket.io")
    if "raw" in wanted:
        specs["raw"] = node_spec("raw_ws_broadcast.js", "raw", "raw ws broadcast (calibration)")
    sqlite = redis_store = None
    if "rtkit" in specs and hub_help is not None and rtkit_cwd is not None:
        sqlite = rtkit_spec(hub_help, top_help, rtkit_cwd, store="sqlite:///<tmpdir>/bench.db")
        if sqlite is None:
            skipped.append("rtkit hub with sqlite store: its --help lists no --store")
        why_not = redis_reachable()
        if why_not is not None:
            skipped.append(f"rtkit hub with redis store: {why_not}")
        else:
            redis_store = rtkit_spec(
                hub_help, top_help, rtkit_cwd, store=f"{REDIS_URL}?prefix=<prefix>"
            )

    cases: list[Case] = []
    order = [k for k in SERVER_NAMES if k in specs]
    # A latency figure for the calibration server says nothing: it is left out.
    latency_specs = [specs[k] for k in order if k != "raw"]
    latency_specs += [spec for spec in (sqlite, redis_store) if spec is not None]
    rates = [("latency", profile.latency_rate)] if "latency" in scenarios else []
    if profile.low_latency_rate and "latency" in scenarios:
        rates.append(("latency-low", profile.low_latency_rate))
    for section, rate in rates:
        for spec in latency_specs:
            cases.append(Case(section, spec, "latency", profile.latency_subscribers, rate))
    for n in profile.fanout_sizes if "fanout" in scenarios else ():
        for key in order:
            cases.append(Case("fanout", specs[key], "fanout", n))
            if key == "rtkit" and redis_store is not None:
                # Right after the memory store, so the two compare in one stretch.
                cases.append(Case("fanout", redis_store, "fanout", n))
    # The calibration server only broadcasts: it has no subscribe to ack.
    for n in profile.connection_sizes if "connections" in scenarios else ():
        for key in order:
            if key != "raw":
                cases.append(Case("connections", specs[key], "connections", n))
    if hosts and "hosts" in scenarios:
        if "socketio" in specs:
            for h in PY_HOSTS:
                cases.append(Case("hosts", socketio_spec(h), "fanout", 100))
        if "rtkit" in specs and hub_help is not None and rtkit_cwd is not None:
            for h in PY_HOSTS:
                spec = rtkit_spec(hub_help, top_help, rtkit_cwd, server=h)
                if spec is None:
                    skipped.append(f"rtkit hub on {h}: its --help lists no --server")
                    break
                cases.append(Case("hosts", spec, "fanout", 100))
    return cases


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Benchmark rtkit against python-socketio and node socket.io.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="short smoke run (< 1 minute)")
    parser.add_argument(
        "--servers",
        default=",".join(SERVER_NAMES),
        help=f"comma-separated subset of {','.join(SERVER_NAMES)}",
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated subset of {','.join(SCENARIOS)}",
    )
    parser.add_argument("--out", default=str(BENCH_DIR / "RESULTS.md"), help="markdown file")
    parser.add_argument(
        "--hosts",
        choices=["auto", "yes", "no"],
        default="auto",
        help="host comparison (aiohttp/tornado/uvicorn); auto = full runs only",
    )
    parser.add_argument(
        "--pin", action="store_true", help="pin the server to CPU 0 and the load generator to CPU 1"
    )
    parser.add_argument(
        "--live-rtkit",
        action="store_true",
        help="run the hub from the work tree instead of a copy taken at the start of the run",
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=None,
        help="skip the remaining cases after this long (default: 540 full, 90 quick)",
    )
    args = parser.parse_args()

    profile = QUICK if args.quick else FULL
    wanted = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = set(wanted) - set(SERVER_NAMES)
    if unknown:
        parser.error(f"unknown servers: {', '.join(sorted(unknown))}")
    scenarios = tuple(s.strip() for s in args.scenarios.split(",") if s.strip())
    if set(scenarios) - set(SCENARIOS):
        parser.error(f"unknown scenarios: {', '.join(sorted(set(scenarios) - set(SCENARIOS)))}")
    hosts = profile.host_comparison if args.hosts == "auto" else args.hosts == "yes"
    max_seconds = args.max_seconds or (90.0 if args.quick else 540.0)
    if args.pin and (os.cpu_count() or 1) < 2:
        parser.error("--pin needs at least 2 CPUs")

    ensure_node_modules()
    # Ten thousand connections are ten thousand descriptors in the load
    # generator (and its children inherit this): raise the soft limit to the
    # hard one, as `rtkit hub` does for itself.
    _, hard_nofile = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard_nofile, hard_nofile))
    t_start = time.monotonic()
    skipped: list[str] = []
    if not hosts and "hosts" in scenarios:
        skipped.append(
            "host comparison (not part of --quick; add --hosts yes)"
            if args.quick and args.hosts == "auto"
            else "host comparison (--hosts no)"
        )
    results: list[dict[str, Any]] = []
    rtkit_code = "not measured"
    with tempfile.TemporaryDirectory(prefix="rtkit-bench-") as tmpdir:
        tmp = Path(tmpdir)
        rtkit_cwd: Path | None = None
        if "rtkit" in wanted and (REPO / "rtkit").is_dir():
            if args.live_rtkit:
                rtkit_cwd, rtkit_code = REPO, "the live work tree (--live-rtkit)"
            else:
                rtkit_cwd, rtkit_code = snapshot_rtkit(tmp / "rtkit-src")
                rtkit_code = f"copy of rtkit/ taken at the start of the run, {rtkit_code}"
        cases = build_cases(profile, wanted, hosts, rtkit_cwd, skipped, scenarios)
        quiet_budget = 20.0  # seconds this run may spend waiting for other jobs, in all
        for i, case in enumerate(cases, 1):
            elapsed = time.monotonic() - t_start
            if elapsed > max_seconds:
                skipped.append(
                    f"{case.spec.label} {case.scenario} {case.subscribers}: "
                    f"--max-seconds {max_seconds:g} spent"
                )
                continue
            wait = min(profile.quiet_wait, quiet_budget)
            t_wait = time.monotonic()
            what = f"{case.scenario} n={case.subscribers}"
            if case.rate:
                what += f" {case.rate} msg/s"
            log(f"case {i}/{len(cases)}: {case.spec.label} {what}")
            r = run_case(case, profile, tmp, args.pin, wait)
            quiet_budget -= max(0.0, time.monotonic() - t_wait - r["caseSeconds"])
            results.append(r)
            log(summary_line(r))

    seconds = time.monotonic() - t_start
    out = Path(args.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path = out.with_suffix(".json")
    info = machine_info()
    info["rtkit_code"] = rtkit_code
    meta = {
        "command": "python benchmarks/run.py " + " ".join(sys.argv[1:]),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "profile": profile,
        "seconds": seconds,
        "pin": args.pin,
        "skipped": skipped,
        "json_name": json_path.name,
    }
    json_path.write_text(
        json.dumps(
            {
                "machine": info,
                "profile": dataclasses.asdict(profile),
                "fanout": {"window": FANOUT_WINDOW, "maxOutstanding": FANOUT_MAX_OUTSTANDING},
                "date": meta["date"],
                "command": meta["command"],
                "seconds": round(seconds, 1),
                "skipped": skipped,
                "results": results,
            },
            indent=1,
        )
    )
    write_report(out, info, results, meta)
    log(f"wrote {out} and {json_path.name} in {seconds:.0f} s")
    failed = [r for r in results if not r.get("ok")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
