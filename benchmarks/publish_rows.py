"""Per-row publishing from the blocking client: rows per second.

    .venv/bin/python benchmarks/publish_rows.py            # full run, ~1 min
    .venv/bin/python benchmarks/publish_rows.py --quick    # smaller, for a smoke test

Writes the ``publish_rows`` section of benchmarks/RESULTS.md
(``results.write_section``; the head of that file belongs to run.py).

One ``rtkit hub`` process with its default settings (memory store, 1,000
publishes/s per connection, burst 2,000) on loopback; the publishing
client (``rtkit.connect``, its own I/O thread) runs in this process, the
subscriber (when there is one) in this process as well, like a notebook
that publishes and shows a live view. Each case publishes ``{"i": n, "px":
...}`` rows to a fresh channel, one call per row:

1. **blocking**: ``channel.publish(row)``, which returns the seq once the
   hub acked it, one row at a time;
2. **non-blocking, as fast as possible**: ``channel.publish(row,
   wait=False)`` for every row, then ``hub.flush()``; the client batches
   what queues meanwhile (``publish`` requests carrying ``messages``);
3. **non-blocking, paced**: the same at a fixed 5,000 rows/s for 10 s (the
   feed of the report this benchmark answers), checking that the subscriber
   got every row once and in order.

Rows/s is rows over the time from the first call to the last ack
(``flush``). "requests" is how many publish requests went on the wire.
"""

from __future__ import annotations

import argparse
import platform
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import rtkit
from rtkit.pytest_plugin import HubProcess

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import write_section


@dataclass
class Result:
    case: str
    subscriber: bool
    rows: int
    seconds: float
    requests: int
    failures: int
    in_order: bool | None

    def cells(self) -> list[str]:
        rate = self.rows / self.seconds
        order = "n/a" if self.in_order is None else ("yes" if self.in_order else "NO")
        return [
            self.case,
            "yes" if self.subscriber else "no",
            f"{self.rows:,}",
            f"{rate:,.0f}",
            f"{self.requests:,}",
            f"{self.rows / max(1, self.requests):.1f}",
            f"{self.failures:,}",
            order,
        ]


class Counter:
    def __init__(self) -> None:
        self.seen: list[int] = []
        self.done = threading.Event()
        self.want = 0

    def __call__(self, msg: rtkit.Message) -> None:
        self.seen.append(msg.data["i"])
        if len(self.seen) >= self.want:
            self.done.set()


def run_case(
    url: str, case: str, rows: int, *, subscriber: bool, rate: float | None = None
) -> Result:
    channel = f"rows.{uuid.uuid4().hex[:8]}"
    counter = Counter()
    counter.want = rows
    watcher = rtkit.connect(url) if subscriber else None
    try:
        if watcher is not None:
            watcher.channel(channel).subscribe(counter)
        with rtkit.connect(url) as hub:
            ch = hub.channel(channel)
            before = hub.metrics
            start = time.perf_counter()
            failures = 0
            if case == "blocking":
                for i in range(rows):
                    ch.publish({"i": i, "px": 100.0 + i % 7})
            else:
                for i in range(rows):
                    if rate is not None:
                        due = start + i / rate
                        if (ahead := due - time.perf_counter()) > 0.001:
                            time.sleep(ahead)
                    ch.publish({"i": i, "px": 100.0 + i % 7}, wait=False)
                try:
                    hub.flush(timeout=120)
                except rtkit.RtkitError as exc:
                    print(f"  {case}: {exc}", file=sys.stderr)
            seconds = time.perf_counter() - start
            after = hub.metrics
            failures = after.publish_failures - before.publish_failures
            requests = after.publish_requests - before.publish_requests
        in_order = None
        if watcher is not None:
            counter.done.wait(60)
            in_order = counter.seen == list(range(rows))
        return Result(case, subscriber, rows, seconds, requests, failures, in_order)
    finally:
        if watcher is not None:
            watcher.close()


def table(rows: list[list[str]], head: list[str]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main(quick: bool) -> str:
    blocking_rows = 1_000 if quick else 3_000
    burst_rows = 10_000 if quick else 50_000
    paced_seconds = 2 if quick else 10
    results: list[Result] = []
    hub = HubProcess().start()
    try:
        for subscriber in (False, True):
            results.append(run_case(hub.url, "blocking", blocking_rows, subscriber=subscriber))
            results.append(run_case(hub.url, "non-blocking", burst_rows, subscriber=subscriber))
            results.append(
                run_case(
                    hub.url,
                    "non-blocking, paced 5,000/s",
                    5_000 * paced_seconds,
                    subscriber=subscriber,
                    rate=5_000,
                )
            )
            for result in results[-3:]:
                print(result, file=sys.stderr)
    finally:
        hub.terminate()
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    cpu = platform.processor() or platform.machine()
    return "\n\n".join(
        [
            "## Per-row publishing from the blocking client (benchmarks/publish_rows.py)",
            f"Generated by `python benchmarks/publish_rows.py{' --quick' if quick else ''}` "
            f"on {when}; Python {platform.python_version()}, {cpu}, 2 cores shared with "
            "other jobs; one `rtkit hub` process with default settings (1,000 publishes/s "
            "per connection). Method: the module docstring of "
            "[publish_rows.py](publish_rows.py).",
            table(
                [r.cells() for r in results],
                [
                    "case",
                    "subscriber",
                    "rows",
                    "rows/s",
                    "requests",
                    "rows per request",
                    "failed",
                    "all delivered in order",
                ],
            ),
            "The report this answers (another machine, before batching and pacing): "
            "641 rows/s waiting without a subscriber and 309 with one; publishing without "
            "waiting ran into the hub's rate limit (2,871 of 10,000 rows refused with "
            "`rate_limited`). A waiting publish is one request per row: the client's "
            "pacing (`max_publish_rate`, 950/s after a burst of 950) keeps a long loop "
            "of them under the hub's 1,000/s instead of into `rate_limited`.",
        ]
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke test")
    parser.add_argument("--print-only", action="store_true", help="do not touch RESULTS.md")
    args = parser.parse_args()
    report = main(args.quick)
    print(report)
    if not args.print_only:
        write_section("publish_rows", report)
