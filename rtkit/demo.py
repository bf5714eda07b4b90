"""``rtkit demo``: JupyterLab with rtkit's extension, the tutorial notebooks
and a synthetic live feed, in one command.

The feed (:func:`feed`) is also what the widget tests and benchmarks publish
with: prices or sensor readings at a fixed rate, paced by the clock (a late
tick catches up; it never waits for acks one by one).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import Callable
from typing import Any

from .client import aio

# Publishes kept unacked at once: enough to pipeline tens of thousands a second.
_WINDOW = 2_000
_TICK = 0.01


def _prices(seed: int = 1) -> Callable[[int], dict[str, Any]]:
    rnd = random.Random(seed)
    px = {"AAPL": 190.0, "MSFT": 410.0}

    def make(n: int) -> dict[str, Any]:
        for name in px:
            px[name] *= math.exp(rnd.gauss(0.0, 0.0004))
        return {"n": n, "aapl": round(px["AAPL"], 3), "msft": round(px["MSFT"], 3)}

    return make


def _sensors(seed: int = 1) -> Callable[[int], dict[str, Any]]:
    rnd = random.Random(seed)

    def make(n: int) -> dict[str, Any]:
        t = n / 1000.0
        return {
            "n": n,
            "temp": round(21.0 + 2.0 * math.sin(t) + rnd.gauss(0.0, 0.2), 3),
            "humidity": round(45.0 + 5.0 * math.cos(t / 3) + rnd.gauss(0.0, 0.5), 3),
        }

    return make


KINDS: dict[str, Callable[..., Callable[[int], dict[str, Any]]]] = {
    "prices": _prices,
    "sensors": _sensors,
}


async def feed(
    client: aio.Client,
    channel: str,
    rate: float,
    kind: str = "prices",
    stop: asyncio.Event | None = None,
    duration: float | None = None,
) -> int:
    """Publish ``rate`` messages a second to ``channel`` until ``stop`` is set
    (or ``duration`` seconds passed); returns how many were acked."""
    make = KINDS[kind]()
    ch = client.channel(channel)
    stop = stop or asyncio.Event()
    slots = asyncio.Semaphore(_WINDOW)
    acked = 0
    failed: list[BaseException] = []

    async def one(n: int) -> None:
        nonlocal acked
        try:
            await ch.publish(make(n))
            acked += 1
        except Exception as exc:  # reported once the feed ends
            failed.append(exc)
        finally:
            slots.release()

    started = time.monotonic()
    sent = 0
    async with asyncio.TaskGroup() as tg:
        while not stop.is_set():
            elapsed = time.monotonic() - started
            if duration is not None and elapsed >= duration:
                break
            due = int(elapsed * rate) + 1
            while sent < due and not failed:
                await slots.acquire()
                tg.create_task(one(sent))
                sent += 1
            if failed:
                raise failed[0]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), _TICK)
    return acked
