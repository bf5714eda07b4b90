"""Stopping a hub ends within its budget, whatever one of its parts does."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from rtkit.config import HubConfig
from rtkit.hub import Hub
from rtkit.storage import MemoryStore


async def test_a_part_that_does_not_stop_is_left_behind_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryStore()
    hub = Hub(HubConfig(allow_anonymous=True), store=store, async_mode="aiohttp")
    await hub.start()
    released = asyncio.Event()
    close = store.close

    async def stuck_close() -> None:
        # A close that ignores cancellation until the test releases it.
        while not released.is_set():
            try:
                await released.wait()
            except asyncio.CancelledError:
                continue
        await close()

    store.close = stuck_close  # type: ignore[method-assign]
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="rtkit.hub.core"):
        await asyncio.wait_for(hub.stop(drain_timeout=0.2), 5)
    assert time.monotonic() - t0 < 2
    assert not hub.running
    assert "stopping: the store did not stop within 0 s; going on without it" in caplog.text
    released.set()
    await asyncio.sleep(0)  # the abandoned close ends
