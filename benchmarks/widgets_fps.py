"""Live chart and pandas view throughput.

Chart (direct path): a standalone ``rtkit hub`` (memory store, publish limit
off, CORS open) and headless Chromium (Debian's package, driven by
Playwright) showing rtkit's LiveChart bundle, mounted with a minimal stand-in
for the anywidget model so that the page subscribes to the hub directly,
exactly as inside JupyterLab. The publisher is ``loadgen.js`` (latency
scenario: one connection, paced by a timer, ``{t, p}`` messages). After a
warm-up, over a ``--duration`` window the script samples once a second: frames
the chart drew, messages it took in, the hub-time lag of the newest point
drawn, and Chromium's main-thread task time (CDP ``Performance.getMetrics``
``TaskDuration``). "Kept up" means the chart took in >= 95 % of the target
rate and its lag did not grow by more than 0.5 s over the window.

frame(): ``LiveFrame(window=100_000)`` fed 1,000-row, 4-column batches
(decoded from JSON as from the wire), in process; rows/s over 600,000 rows,
and the memory of the window's DataFrame (``memory_usage(deep=True)``) and
the process's RSS growth. Then end to end: ``publish_frame`` of 300,000 rows
through the hub to a ``frame()`` view in another client.

Usage: python benchmarks/widgets_fps.py [--rates 1000,10000,50000] [--duration 8]
Appends/replaces the "widgets-fps" section of benchmarks/RESULTS.md and
writes benchmarks/RESULTS-widgets.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.server
import json
import platform
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import rtkit  # noqa: E402
from rtkit.frames import LiveFrame, encode_batches  # noqa: E402
from rtkit.protocol import Message  # noqa: E402
from rtkit.pytest_plugin import HubProcess, free_port  # noqa: E402

sys.path.insert(0, str(REPO / "benchmarks"))
from results import write_section  # noqa: E402

STATIC = REPO / "rtkit" / "widgets" / "static"
CHROMIUM = "/usr/bin/chromium"
RESULTS_MD = REPO / "benchmarks" / "RESULTS.md"
RESULTS_JSON = REPO / "benchmarks" / "RESULTS-widgets.json"

# The benchmark measures the chart from outside it: frames are the animation
# frame callbacks the chart asks for (it draws in each one), messages and lag
# come from a second listener on the page's hub, beside the chart's own.
STATS = """
const stats = {frames: 0, messages: 0, lag: 0, newest: null};
window.rtkitStats = stats;
const raf = window.requestAnimationFrame.bind(window);
window.requestAnimationFrame = (draw) => raf((t) => {
  draw(t);
  stats.frames += 1;
  if (stats.newest !== null) stats.lag = Date.now() / 1000 - stats.newest;
});
const counter = {onMessages(envs) {
  stats.messages += envs.length;
  stats.newest = envs[envs.length - 1].ts;
}, onGap() {}};
const hubs = () => globalThis[Symbol.for("rtkit.widgets.hubs")] || new Map();
"""

CHART = """
const values = {_kind: "chart", channel: "bench", mode: "direct", url: %(hub)s,
  path: "/socket.io/", token: "", series: ["t"], window_rows: %(rows)d, window_seconds: 0,
  paused: false, height: 300, title: ""};
const model = {get: (k) => values[k], set: (k, v) => { values[k] = v; }, save_changes() {},
  on() {}, off() {}, send() {}};
const el = document.getElementById("w");
const {default: widgets} = await import("/widgets.js");
widgets.render({model, el});
window.rtkitEl = el;
"""

PAGE = (
    """<!doctype html><html><body><div id="w" style="width:900px"></div>
<script type="module">"""
    + STATS
    + CHART
    + """
window.countMessages = () => {
  for (const hub of hubs().values()) hub.listen("bench", counter);
};
</script></body></html>"""
)


# The same chart fed in-page at the target rate, in packets every 10 ms as the
# hub coalesces them: isolates the browser side from the hub's ingest limit.
SYNTHETIC = (
    """<!doctype html><html><body><div id="w" style="width:900px"></div>
<script type="module">"""
    + STATS
    + """
const RATE = %(rate)d;
const listeners = new Set([counter]);
const hub = {state: "connected", received: 0, duplicates: 0, latency: null,
  listen(name, l) { listeners.add(l); return () => listeners.delete(l); },
  watch(fn) { fn("connected"); return () => {}; }};
(globalThis[Symbol.for("rtkit.widgets.hubs")] ??= new Map())
  .set("http://synthetic|/socket.io/|", hub);
"""
    + CHART
    + """
let seq = 0;
const t0 = Date.now() / 1000;
function pump() {
  const due = Math.floor((Date.now() / 1000 - t0) * RATE);
  const envs = [];
  while (seq < due) {
    seq += 1;
    const ts = t0 + seq / RATE;
    envs.push({channel: "bench", seq, ts, id: String(seq), sender: "bench",
               data: {t: Math.sin(seq / 500), p: "xxxxxxxxxxxxxxxx"}});
  }
  if (envs.length) for (const l of listeners) l.onMessages(envs);
  setTimeout(pump, 10);
}
window.startFeed = () => pump();
</script></body></html>"""
)


def serve(
    hub_url: str, rows: int, synthetic_rate: int = 0
) -> tuple[http.server.ThreadingHTTPServer, str]:
    if synthetic_rate:
        hub = json.dumps("http://synthetic")
        page = (SYNTHETIC % {"rate": synthetic_rate, "rows": rows, "hub": hub}).encode()
    else:
        page = (PAGE % {"hub": json.dumps(hub_url), "rows": rows}).encode()
    bundle = (STATIC / "widgets.js").read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body, kind = (
                (bundle, "text/javascript") if self.path == "/widgets.js" else (page, "text/html")
            )
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{port}/"


def chart_run(rate: int, duration: float, synthetic: bool, warmup: float = 3.0) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    hub = HubProcess(extra_args=["--publish-rate", "0", "--cors-origin", "*"]).start()
    server, url = serve(hub.url, rows=5_000, synthetic_rate=rate if synthetic else 0)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
            )
            page = browser.new_page(viewport={"width": 1000, "height": 500})
            cdp = page.context.new_cdp_session(page)
            cdp.send("Performance.enable")
            page.goto(url)
            page.wait_for_function("() => window.rtkitEl !== undefined", timeout=30_000)
            if synthetic:
                page.evaluate("() => window.startFeed()")
            else:
                page.wait_for_function(
                    "() => [...(globalThis[Symbol.for('rtkit.widgets.hubs')] || new Map())"
                    ".values()].some((h) => h.state === 'connected' && "
                    "h.channels.get('bench')?.epoch)",
                    timeout=30_000,
                )
                page.evaluate("() => window.countMessages()")
            cfg = {
                "scenario": "latency",
                "port": hub.port,
                "subscribers": 0,
                "rate": rate,
                "warmup": 0,
                "duration": warmup + duration + 1,
                "channel": "bench",
                "drainTimeout": 10,
            }
            gen = None
            if not synthetic:
                gen = subprocess.Popen(
                    ["node", str(REPO / "benchmarks" / "loadgen.js"), json.dumps(cfg)],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                )
            page.wait_for_function("() => window.rtkitStats.messages > 0")
            time.sleep(warmup)  # pacing: the warm-up is a span of time, not a condition

            def sample() -> dict[str, float]:
                stats = page.evaluate("() => ({...window.rtkitStats})")
                metrics = {
                    m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]
                }
                return {
                    "t": time.monotonic(),
                    "frames": stats["frames"],
                    "messages": stats["messages"],
                    "lag": stats.get("lag") or 0.0,
                    "task": metrics["TaskDuration"],
                }

            samples = [sample()]
            while samples[-1]["t"] - samples[0]["t"] < duration:
                time.sleep(1.0)  # pacing: one sample a second
                samples.append(sample())
            out = gen.communicate(timeout=60)[0] if gen is not None else ""
            browser.close()
    finally:
        server.shutdown()
        hub.terminate(timeout=5)
    first, last = samples[0], samples[-1]
    span = last["t"] - first["t"]
    taken = (last["messages"] - first["messages"]) / span
    lags = [s["lag"] for s in samples]
    gen_result = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    kept_up = taken >= 0.95 * rate and (lags[-1] - min(lags[: max(1, len(lags) // 3)])) < 0.5
    return {
        "source": "in-page" if synthetic else "hub",
        "rate": rate,
        "fps": round((last["frames"] - first["frames"]) / span, 1),
        "messages_per_s": round(taken),
        "busy_share": round((last["task"] - first["task"]) / span, 3),
        "lag_start_s": round(lags[0], 3),
        "lag_end_s": round(lags[-1], 3),
        "lag_max_s": round(max(lags), 3),
        "kept_up": kept_up,
        "publisher_ok": gen_result.get("ok"),
    }


def frame_ingest(total_rows: int = 600_000, batch: int = 1_000) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    df = pd.DataFrame(
        {
            "sensor": rng.integers(0, 100, batch),
            "temp": rng.normal(20, 2, batch),
            "site": rng.choice(["a", "b", "c"], batch),
            "at": pd.date_range("2025-01-01", periods=batch, freq="ms", tz="UTC"),
        }
    )
    (payload,) = encode_batches(df, batch_rows=batch)
    wire = json.loads(json.dumps(payload))  # as python-socketio hands it over
    messages = [
        Message("bench", seq, 1.75e9 + seq * 0.01, str(seq), "bench", wire)
        for seq in range(1, total_rows // batch + 1)
    ]
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    view = LiveFrame("bench", window=100_000)
    started = time.perf_counter()
    for msg in messages:
        view.on_message(msg)
    ingest = time.perf_counter() - started
    started = time.perf_counter()
    window = view.df
    read = time.perf_counter() - started
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "rows": total_rows,
        "batch_rows": batch,
        "rows_per_s": round(total_rows / ingest),
        "df_read_ms": round(read * 1000, 1),
        "window_rows": len(window),
        "window_mib": round(window.memory_usage(deep=True).sum() / 2**20, 1),
        "rss_growth_mib": round((rss1 - rss0) / 1024, 1),
    }


def frame_end_to_end(total_rows: int = 300_000) -> dict[str, Any]:
    hub = HubProcess(extra_args=["--publish-rate", "0"]).start()
    try:
        rng = np.random.default_rng(2)
        df = pd.DataFrame(
            {"sensor": rng.integers(0, 100, total_rows), "temp": rng.normal(20, 2, total_rows)}
        )
        with rtkit.connect(hub.url) as pub, rtkit.connect(hub.url) as sub:
            view = sub.channel("e2e").frame(window=100_000)
            started = time.perf_counter()
            pub.channel("e2e").publish_frame(df)
            deadline = time.monotonic() + 120
            while view.rows_received < total_rows and time.monotonic() < deadline:
                time.sleep(0.005)
            elapsed = time.perf_counter() - started
            rows = view.rows_received
            view.close()
    finally:
        hub.terminate(timeout=5)
    return {"rows": rows, "rows_per_s": round(rows / elapsed), "seconds": round(elapsed, 2)}


def write(results: dict[str, Any]) -> None:
    RESULTS_JSON.write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "## Live chart and pandas views (benchmarks/widgets_fps.py)",
        "",
        f"Generated by `python benchmarks/widgets_fps.py` on {results['when']}; "
        f"{results['platform']}, headless Chromium (software rendering), "
        "2 cores shared by the hub, the publisher and the browser. "
        "Method: the module docstring of [widgets_fps.py](widgets_fps.py).",
        "",
        "### LiveChart on the direct path (browser subscribed to the hub)",
        "",
        "| source | target msg/s | taken in msg/s | frames drawn /s | main-thread busy "
        "| lag start / end / max s | kept up |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results["chart"]:
        lines.append(
            f"| {r['source']} | {r['rate']:,} | {r['messages_per_s']:,} | **{r['fps']}** "
            f"| {r['busy_share']:.0%} "
            f"| {r['lag_start_s']} / {r['lag_end_s']} / {r['lag_max_s']} "
            f"| {'yes' if r['kept_up'] else 'no'} |"
        )
    lines += [
        "",
        "Source `hub`: loadgen.js publishes through a standalone hub and the page's "
        'socket.io-client receives the hub\'s coalesced packets. Where "taken in" stays '
        "below the target while the lag stays flat, the hub's publish path (one "
        "publishing connection, with Chromium on the same 2 cores) was the limit, not "
        "the chart. Source `in-page`: the same chart bundle fed in the page at the "
        "target rate in 10 ms packets, envelopes timestamped when due, so a main thread "
        "that fell behind would show as growing lag.",
    ]
    f, e = results["frame"], results["frame_e2e"]
    lines += [
        "",
        "### frame(): ingest and memory",
        "",
        "| path | rows | rows/s | notes |",
        "| --- | --- | --- | --- |",
        f"| in process, {f['batch_rows']:,}-row batches, 4 columns | {f['rows']:,} | "
        f"**{f['rows_per_s']:,}** | window of {f['window_rows']:,} rows: "
        f"{f['window_mib']} MiB as a DataFrame, RSS +{f['rss_growth_mib']} MiB; "
        f"reading .df {f['df_read_ms']} ms |",
        f"| publish_frame -> hub -> frame(), 2 columns | {e['rows']:,} | **{e['rows_per_s']:,}** "
        f"| {e['seconds']} s end to end |",
    ]
    write_section("widgets-fps", "\n".join(lines), RESULTS_MD)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="1000,10000,50000")
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    results: dict[str, Any] = {
        "when": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "platform": f"Python {platform.python_version()}, pandas {pd.__version__}, "
        f"{platform.machine()}",
        "chart": [],
    }
    for synthetic in (False, True):
        for rate in (int(r) for r in args.rates.split(",")):
            r = chart_run(rate, args.duration, synthetic)
            print(json.dumps(r), flush=True)
            results["chart"].append(r)
    results["frame"] = frame_ingest()
    print(json.dumps(results["frame"]), flush=True)
    results["frame_e2e"] = frame_end_to_end()
    print(json.dumps(results["frame_e2e"]), flush=True)
    if not args.no_write:
        write(results)


if __name__ == "__main__":
    main()
