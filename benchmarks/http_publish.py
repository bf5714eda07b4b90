"""HTTP publish into a channel with 10 Socket.IO subscribers: messages/s.

    .venv/bin/python benchmarks/http_publish.py            # full run, ~1 min
    .venv/bin/python benchmarks/http_publish.py --quick    # smaller, for a smoke test

Writes the ``http_publish`` section of benchmarks/RESULTS.md
(``results.write_section``).

One ``rtkit hub`` process (memory store, an API key, the publish rate and
byte quota off so the numbers are the path's, not the default budgets':
with them a caller gets 1,000 requests/s and 2 MiB/s) on loopback. This
process runs the 10 subscribers (python-socketio clients on websockets)
and the HTTP publisher (aiohttp, keep-alive, ``concurrency`` requests in
flight, each ``POST /api/channels/{channel}/messages`` with the API key).
Each case publishes ``{"i": n, "px": ...}`` rows to a fresh channel:

1. **single**: one message per request;
2. **batch 100** and **batch 500**: ``{"messages": [...]}`` of that many.

Messages/s is messages over the time from the first request to the moment
every subscriber has the last one; each subscriber's seqs are checked to be
1..N in order.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import socketio

from rtkit.protocol import NAMESPACE
from rtkit.pytest_plugin import HubProcess

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import write_section

API_KEY = "benchmark-api-key-" + uuid.uuid4().hex
SUBSCRIBERS = 10


@dataclass
class Result:
    case: str
    batch: int
    messages: int
    seconds: float
    publish_seconds: float
    in_order: bool

    def cells(self) -> list[str]:
        return [
            self.case,
            f"{self.batch}",
            f"{self.messages:,}",
            f"{self.messages / self.publish_seconds:,.0f}",
            f"{self.messages / self.seconds:,.0f}",
            "yes" if self.in_order else "NO",
        ]


class Subscriber:
    def __init__(self, url: str, channel: str, want: int) -> None:
        self.url = url
        self.channel = channel
        self.want = want
        self.seqs: list[int] = []
        self.done = asyncio.Event()
        self.sio = socketio.AsyncClient(reconnection=False)
        self.sio.on("messages", self._on_messages, namespace=NAMESPACE)

    def _on_messages(self, envelopes: list[dict[str, Any]]) -> None:
        self.seqs.extend(env["seq"] for env in envelopes)
        if self.seqs and self.seqs[-1] >= self.want:
            self.done.set()

    async def start(self) -> None:
        await self.sio.connect(
            self.url,
            auth={"user": "watcher"},
            namespaces=[NAMESPACE],
            transports=["websocket"],
            wait_timeout=10,
        )
        ack = await self.sio.call(
            "subscribe", {"channel": self.channel}, namespace=NAMESPACE, timeout=10
        )
        assert ack["ok"], ack

    async def close(self) -> None:
        await self.sio.disconnect()
        await self.sio.shutdown()


async def run_case(url: str, case: str, batch: int, messages: int, concurrency: int) -> Result:
    channel = f"http.{case.replace(' ', '')}.{uuid.uuid4().hex[:6]}"
    subscribers = [Subscriber(url, channel, messages) for _ in range(SUBSCRIBERS)]
    await asyncio.gather(*(s.start() for s in subscribers))
    target = f"{url}/api/channels/{channel}/messages"
    headers = {"X-API-Key": API_KEY, "Content-Type": "application/json"}
    bodies: list[bytes] = []
    for first in range(0, messages, batch):
        rows = [{"data": {"i": i, "px": 100.0 + i % 7}} for i in range(first, first + batch)]
        bodies.append(orjson.dumps(rows[0] if batch == 1 else {"messages": rows}))
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    failures: list[str] = []

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def worker() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                async with session.post(target, data=body, headers=headers) as answer:
                    if answer.status != 200:
                        failures.append(f"{answer.status} {await answer.text()}")

        start = time.perf_counter()
        # One worker per request in flight; a batch's order within the
        # channel is the store's, so subscribers check seqs only.
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        published = time.perf_counter() - start
        await asyncio.wait_for(asyncio.gather(*(s.done.wait() for s in subscribers)), 120)
        seconds = time.perf_counter() - start
    in_order = not failures and all(s.seqs == list(range(1, messages + 1)) for s in subscribers)
    if failures:
        print(f"  {case}: {len(failures)} failed requests, e.g. {failures[0]}", file=sys.stderr)
    await asyncio.gather(*(s.close() for s in subscribers))
    return Result(case, batch, messages, seconds, published, in_order)


async def main(quick: bool) -> str:
    hub = HubProcess(
        anonymous=True,
        extra_args=[
            "--api-key",
            API_KEY,
            "--publish-rate",
            "0",
            "--publish-bytes-rate",
            "0",
        ],
    ).start()
    scale = 5 if quick else 1
    cases = [
        ("single", 1, 5_000 // scale, 8),
        ("batch 100", 100, 100_000 // scale, 4),
        ("batch 500", 500, 200_000 // scale, 4),
    ]
    results = []
    try:
        for case, batch, messages, concurrency in cases:
            result = await run_case(hub.url, case, batch, messages, concurrency)
            print(" | ".join(result.cells()))
            results.append(result)
    finally:
        hub.terminate()
    rows = "\n".join("| " + " | ".join(r.cells()) + " |" for r in results)
    python = f"{platform.python_implementation()} {platform.python_version()}"
    return f"""## HTTP publish into a channel with 10 subscribers (benchmarks/http_publish.py)

{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {python},
{"quick run" if quick else "full run"}. One `rtkit hub` process (memory store,
publish rate and byte quota off), 10 python-socketio subscribers and the HTTP
publisher (aiohttp, keep-alive) in the benchmark process, all on one 2-core
machine. "published" counts messages over the time to the last HTTP answer,
"delivered" over the time until all 10 subscribers had the last message
(each checked to get seqs 1..N in order). A batch costs the hub what the
same batch costs over Socket.IO (the same checks and appends, one per
message): compare the Python client's batched publishes in the
publish_rows section. Without subscribers a quick run published about
35,000 msg/s in batches of 500; here the hub's fan-out to 10 subscribers
and the subscribers themselves share the 2 cores.

| case | messages per request | messages | published msg/s | delivered msg/s | in order |
| --- | --- | --- | --- | --- | --- |
{rows}
"""


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (smoke test)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    report = asyncio.run(main(args.quick))
    print(report)
    if not args.no_write:
        write_section("http_publish", report)
