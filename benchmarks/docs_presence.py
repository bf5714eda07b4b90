"""Shared-document benchmarks: sync time of a large document, update latency.

    .venv/bin/python benchmarks/docs_presence.py            # full run, ~1 min
    .venv/bin/python benchmarks/docs_presence.py --quick    # smaller, for a smoke test

Writes the ``docs_presence`` section of benchmarks/RESULTS.md
(``results.write_section``; the head of that file belongs to run.py).

1. **Sync of a document with 10,000 edits to a new client.** A writer makes
   10,000 edits, each its own transaction (text typed at random places, map
   keys set, array items added and removed), flushing every 10 edits, so the
   hub stores about 1,000 updates and compacts them as it goes. Then fresh
   clients (already connected) call ``await hub.shared(name)``, which
   returns once the Yjs sync steps are done and the document applied: timed
   with the hub holding the document in memory ("warm"), and right after a
   hub restart, loading it from SQLite ("cold").
2. **Update round trip between two clients.** Client A sets a key; client B's
   observer sees it and sets a reply key; A's observer sees the reply. The
   round trip (A's edit to A seeing B's reply: two hops through the hub) is
   timed 2,000 times, one at a time. Both clients run in one process and
   one event loop; the hub is a separate process on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pycrdt

import rtkit.aio
from rtkit.pytest_plugin import HubProcess

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import write_section


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def write_document(url: str, name: str, edits: int) -> tuple[int, float]:
    rng = random.Random(7)
    client = await rtkit.aio.connect(url)
    try:
        shared = await client.shared(name)
        text = shared.doc.get("text", type=pycrdt.Text)
        items = shared.doc.get("items", type=pycrdt.Array)
        start = time.perf_counter()
        for i in range(edits):
            kind = i % 10
            if kind < 5:
                text.insert(rng.randint(0, len(text)), rng.choice("abcdefgh "))
            elif kind < 8:
                shared[f"param{rng.randrange(50)}"] = rng.random()
            elif kind == 8 or not len(items):
                items.append({"task": i, "done": False})
            else:
                del items[rng.randrange(len(items))]
            if i % 10 == 9:
                await shared.flush()
        await shared.flush()
        return len(shared.doc.get_update()), time.perf_counter() - start
    finally:
        await client.close()


async def time_syncs(url: str, name: str, rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        client = await rtkit.aio.connect(url)
        try:
            start = time.perf_counter()
            shared = await client.shared(name)
            times.append(time.perf_counter() - start)
            assert len(shared.doc.get("text", type=pycrdt.Text)) > 0
        finally:
            await client.close()
    return times


async def round_trips(url: str, count: int) -> list[float]:
    a = await rtkit.aio.connect(url)
    b = await rtkit.aio.connect(url)
    try:
        da, db = await a.shared("latency"), await b.shared("latency")
        replies: asyncio.Queue[float] = asyncio.Queue()

        def echo(change: rtkit.aio.SharedChange) -> None:
            if "ping" in change.keys:
                db["pong"] = db["ping"]

        def back(change: rtkit.aio.SharedChange) -> None:
            if "pong" in change.keys:
                replies.put_nowait(time.perf_counter())

        db.observe(echo)
        da.observe(back)
        samples = []
        for i in range(count + 50):
            sent = time.perf_counter()
            da["ping"] = i
            while True:
                got = await asyncio.wait_for(replies.get(), 10)
                if da["pong"] == i:
                    break
            if i >= 50:  # warm-up
                samples.append((got - sent) * 1000)
        return samples
    finally:
        await a.close()
        await b.close()


def table(rows: list[list[str]], head: list[str]) -> str:
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join(["---"] * len(head)) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


async def main(quick: bool) -> str:
    edits = 2_000 if quick else 10_000
    rounds = 3 if quick else 7
    trips = 300 if quick else 2_000
    sync_rows, latency_rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for label, store in (("memory", "memory://"), ("sqlite", f"sqlite:///{tmp}/bench.db")):
            hub = HubProcess(store=store).start()
            try:
                size, took = await write_document(hub.url, "big", edits)
                warm = await time_syncs(hub.url, "big", rounds)
                row = [
                    label,
                    f"{edits:,}",
                    f"{size / 1024:.0f} KiB",
                    f"{took:.1f}",
                    f"{statistics.median(warm) * 1000:.1f} / {max(warm) * 1000:.1f}",
                ]
                if store.startswith("sqlite"):
                    cold = []
                    for _ in range(rounds):
                        await asyncio.to_thread(hub.restart)
                        cold += await time_syncs(hub.url, "big", 1)
                    row.append(f"{statistics.median(cold) * 1000:.1f} / {max(cold) * 1000:.1f}")
                else:
                    row.append("n/a (memory is lost on restart)")
                sync_rows.append(row)
                ms = await round_trips(hub.url, trips)
                latency_rows.append(
                    [label, f"{len(ms):,}"]
                    + [f"{percentile(ms, q):.2f}" for q in (50, 90, 99)]
                    + [f"{max(ms):.2f}"]
                )
            finally:
                hub.terminate()
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    cpu = platform.processor() or platform.machine()
    return "\n\n".join(
        [
            "## Shared documents (benchmarks/docs_presence.py)",
            f"Generated by `python benchmarks/docs_presence.py{' --quick' if quick else ''}` "
            f"on {when}; Python {platform.python_version()}, pycrdt {pycrdt.__version__}, "
            f"{cpu}, 2 cores shared with other jobs. Method: the module docstring of "
            "[docs_presence.py](docs_presence.py).",
            "### Time for a new client to sync a document with many edits",
            table(
                sync_rows,
                [
                    "store",
                    "edits",
                    "encoded doc",
                    "writing it (s)",
                    "sync, hub warm: median / max ms",
                    "sync after hub restart: median / max ms",
                ],
            ),
            "### Update round trip between two clients (A edits, B replies, A sees the reply)",
            table(latency_rows, ["store", "round trips", "p50 ms", "p90 ms", "p99 ms", "max ms"]),
        ]
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke test")
    parser.add_argument("--print-only", action="store_true", help="do not touch RESULTS.md")
    args = parser.parse_args()
    result = asyncio.run(main(args.quick))
    print(result)
    if not args.print_only:
        write_section("docs_presence", result)
    sys.exit(0)
