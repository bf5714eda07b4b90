"""The subscribers of benchmarks/bridges.py, in a process of their own.

Run by bridges.py as ``python -c "import bridge_subscribers; ..."`` from
this directory, so that ``PYTHONPATH`` decides which rtkit it imports (this
tree's, or an export of another revision for ``--before``): this module
changes no ``sys.path`` and imports rtkit only when it runs.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import orjson

IDLE = 3.0  # seconds without a new message: what was lost stays lost


class Counter:
    def __init__(self, on_first: Any = None) -> None:
        self.count = 0
        self.last = 0.0
        self.last_wall = 0.0
        self.first_ts = 0.0  # the hub's timestamp of the first message
        self.on_first = on_first

    def __call__(self, msg: Any) -> None:
        self.count += 1
        self.last = time.perf_counter()
        self.last_wall = time.time()
        if self.count == 1:
            self.first_ts = getattr(msg, "ts", 0.0)  # plain consumers count no envelopes
            if self.on_first is not None:
                self.on_first()


async def wait_idle(counters: list[Counter], target: int) -> None:
    while True:
        low = min(c.count for c in counters)
        if low >= target:
            return
        before = [c.count for c in counters]
        await asyncio.sleep(IDLE)
        if [c.count for c in counters] == before:
            return


def run(url: str, channel: str, count: int, subscribers: int) -> None:
    """``subscribers`` rtkit.aio clients on ``channel``, in this process.

    Prints one JSON line when all are subscribed, one at the first message
    (so the parent can start counting the other processes' CPU), and one
    with the result when each has ``count`` messages or none came for
    ``IDLE`` seconds."""
    import rtkit.aio as aio

    def say(**fields: Any) -> None:
        sys.stdout.write(orjson.dumps(fields).decode() + "\n")
        sys.stdout.flush()

    async def subscribe_and_count() -> None:
        clients = [await aio.connect(url) for _ in range(subscribers)]
        counters = [Counter(None) for _ in range(subscribers)]
        cpu0 = [0.0]
        started = asyncio.Event()

        def first() -> None:
            cpu0[0] = time.process_time()
            say(phase="first", at=time.time())
            started.set()

        counters[0].on_first = first
        for client, counter in zip(clients, counters, strict=True):
            await client.channel(channel).subscribe(counter)
        say(phase="ready")
        await asyncio.wait_for(started.wait(), 120)
        await wait_idle(counters, count)
        say(
            phase="done",
            delivered=min(c.count for c in counters),
            last=max(c.last_wall for c in counters),
            first_ts=counters[0].first_ts,
            cpu=time.process_time() - cpu0[0],
        )
        for client in clients:
            await client.close()

    asyncio.run(subscribe_and_count())
