"""Publish-to-delivery latency of the hub inside a real ``jupyter server``,
next to the standalone hub, with the same load generator and scenario as
``run.py``'s latency case (1 publisher at a fixed rate, 10 subscribers).

    .venv/bin/python benchmarks/jupyter_latency.py            # writes its section of RESULTS.md
    .venv/bin/python benchmarks/jupyter_latency.py --rounds 3 --out /tmp/RESULTS.md

Each round starts every server afresh and runs them back to back, in turn, so
that a busy moment on the machine hits all of them alike; the report keeps
every round. The Jupyter server runs with a non-root base_url and the load
generator authenticates its websocket handshakes with the Jupyter token
(``Authorization: token ...``), as a non-browser client does. It writes the
``jupyter-latency`` section of RESULTS.md (``results.write_section``), which
``run.py`` keeps when it rewrites its own part of the file.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(REPO))

from results import write_section as write_results_section  # noqa: E402
from run import free_port, run_loadgen, wait_for_quiet  # noqa: E402

from rtkit._process import start_group, stop_group  # noqa: E402

BASE_URL = "/user/bench/"
TOKEN = "bench-token-0123456789abcdef"


def wait_http(url: str, headers: dict[str, str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer in {timeout}s") from None
            time.sleep(0.1)  # polling a server that is starting up


def start(kind: str, home: Path) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    """Start one server; returns it and the load generator's connection config."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RTKIT_", "JUPYTER"))}
    if kind.startswith("jupyter"):
        for sub in ("data", "runtime", "config", "root"):
            (home / sub).mkdir(parents=True, exist_ok=True)
        env.update(
            JUPYTER_DATA_DIR=str(home / "data"),
            JUPYTER_RUNTIME_DIR=str(home / "runtime"),
            JUPYTER_CONFIG_DIR=str(home / "config"),
        )
        argv = [
            sys.executable, "-m", "jupyter_server", "--no-browser", "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
            f"--ServerApp.base_url={BASE_URL}", f"--IdentityProvider.token={TOKEN}",
            f"--ServerApp.root_dir={home / 'root'}", "--ServerApp.log_level=WARN",
            # As for the standalone hub below: one user, many connections, no rate cap.
            "--RtkitExtension.store=memory://", "--RtkitExtension.publish_rate=0",
            "--RtkitExtension.max_connections_per_user=100000",
            f"--RtkitExtension.direct_writes={kind == 'jupyter'}",
        ]  # fmt: skip
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            argv.append("--allow-root")
        headers = {"Authorization": f"token {TOKEN}"}
        ready = f"http://127.0.0.1:{port}{BASE_URL}rtkit/api/status"
        path = f"{BASE_URL}rtkit/socket.io/"
    else:
        server = kind.split(":")[1]
        argv = [
            sys.executable, "-m", "rtkit", "hub", "--host", "127.0.0.1", "--port", str(port),
            "--allow-anonymous", "--publish-rate", "0", "--max-connections-per-user", "100000",
            "--server", server,
        ]  # fmt: skip
        headers = {}
        ready = f"http://127.0.0.1:{port}/readyz"
        path = "/socket.io/"
    proc = start_group(
        argv, env=env, cwd=home, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_http(ready, headers)
        # The extension starts its hub just after the server listens.
        if kind.startswith("jupyter"):
            deadline = time.monotonic() + 30
            while True:
                req = urllib.request.Request(ready, headers=headers)
                with urllib.request.urlopen(req, timeout=2) as resp:
                    if json.load(resp).get("state") == "running":
                        break
                if time.monotonic() > deadline:
                    raise TimeoutError("rtkit hub inside jupyter did not start")
                time.sleep(0.1)
    except BaseException:
        stop(proc)
        raise
    cfg = {"port": port, "path": path, "headers": headers, "serverPid": proc.pid}
    return proc, cfg


def stop(proc: subprocess.Popen[bytes]) -> None:
    stop_group(proc, timeout=15)


LABELS = {
    "jupyter": "rtkit inside jupyter server (tornado, base_url, token auth)",
    "jupyter-queued": "same, direct frame writes off (every write through Engine.IO)",
    "rtkit:tornado": "rtkit hub standalone, tornado host",
    "rtkit:aiohttp": "rtkit hub standalone, aiohttp host (default)",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--subscribers", type=int, default=10)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--servers", default="jupyter,jupyter-queued,rtkit:tornado,rtkit:aiohttp")
    parser.add_argument(
        "--settle",
        type=float,
        default=5.0,
        help="seconds between a server being ready and the load (start-up work settles)",
    )
    parser.add_argument("--out", default=str(BENCH_DIR / "RESULTS.md"))
    parser.add_argument("--json", default=str(BENCH_DIR / "RESULTS-jupyter.json"))
    args = parser.parse_args()
    if not (BENCH_DIR / "node_modules").exists():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=BENCH_DIR, check=True
        )
    kinds = args.servers.split(",")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="rtkit-jlat-") as tmp:
        for rnd in range(1, args.rounds + 1):
            for kind in kinds:
                wait_for_quiet(10.0)
                home = Path(tmp) / f"{kind.replace(':', '-')}-{rnd}"
                home.mkdir()
                proc, conn = start(kind, home)
                try:
                    # Servers finish starting in the background (JupyterLab's
                    # extensions, imports, the first full GC): not what we measure.
                    time.sleep(args.settle)
                    cfg = {
                        **conn,
                        "scenario": "latency",
                        "rate": args.rate,
                        "subscribers": args.subscribers,
                        "warmup": 2,
                        "duration": args.duration,
                        "drainTimeout": 15,
                        "connectTimeout": 60,
                        "connectConcurrency": 50,
                        "maxOutstanding": 20000,
                        "window": 64,
                        "padBytes": 16,
                    }
                    result = run_loadgen(cfg, pin=False)
                finally:
                    stop(proc)
                result.update(kind=kind, round=rnd)
                rows.append(result)
                lat = result.get("latencyMs") or {}
                print(
                    f"round {rnd} {kind:14s} p50 {lat.get('p50', float('nan')):7.2f} ms  "
                    f"p99 {lat.get('p99', float('nan')):7.2f} ms  ok={result.get('ok')}",
                    file=sys.stderr,
                )
    Path(args.json).write_text(json.dumps(rows, indent=1))
    write_section(Path(args.out), rows, args, kinds)
    return 0 if all(r.get("ok") for r in rows) else 1


def write_section(path: Path, rows: list[dict[str, Any]], args: Any, kinds: list[str]) -> None:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    out = [
        "## Inside Jupyter: latency at 1,000 msg/s, 10 subscribers",
        "",
        f"Generated by `python benchmarks/jupyter_latency.py` on {when}: "
        f"{args.rate} msg/s from one publisher to {args.subscribers} subscribers, 2 s warm-up, "
        f"{args.duration:g} s measured, {args.rounds} rounds; every round starts each server "
        "afresh and runs them back to back. The Jupyter server serves JupyterLab and the other "
        "default extensions too, under base_url "
        f"`{BASE_URL}`; the load generator authenticates each websocket with the Jupyter "
        "token. Memory store and no publish-rate cap everywhere, as in the latency case above. "
        "The second server is the same Jupyter server with "
        "`--RtkitExtension.direct_writes=False`: every delivery goes through Engine.IO's "
        "queue and tornado's `write_message`, as before the tornado host wrote prebuilt "
        "frames to the sockets itself. Each server waits "
        f'{args.settle:g} s after start-up before the load. "other CPU" is what other '
        "processes on the machine used meanwhile (cores): a shared machine's noise shows there.",
        "",
        "| server | round | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | delivered / expected "
        "| server CPU | other CPU |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for kind in kinds:
        for r in (r for r in rows if r["kind"] == kind):
            lat = r.get("latencyMs") or {}

            def ms(key: str, lat: dict[str, Any] = lat) -> str:
                value = lat.get(key)
                return f"{value:.2f}" if isinstance(value, int | float) else "-"

            cpu = r.get("serverCpu")
            out.append(
                f"| {LABELS.get(kind, kind)} | {r['round']} | **{ms('p50')}** | {ms('p90')} "
                f"| **{ms('p99')}** | {ms('p999')} | {ms('max')} "
                f"| {r.get('delivered', '-')} / {r.get('expected', '-')} "
                f"| {cpu if cpu is not None else '-'} | {r.get('otherCpu', '-')} |"
            )
    write_results_section("jupyter-latency", "\n".join(out), path)
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    if shutil.which("node") is None:
        sys.exit("node is needed for the load generator")
    sys.exit(main())
