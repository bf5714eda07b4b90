"""The hub's side of the one delivery path: a hub attaches its
HubDelivery to the store's feed, and a stored message reaches the fan-out
through it only."""

from __future__ import annotations

import time
from pathlib import Path

from rtkit.config import HubConfig
from rtkit.hub import Hub
from rtkit.hub.delivery import HubDelivery
from rtkit.storage import MemoryStore, SQLiteStore, Store


def test_stored_is_the_fan_outs_one_entry() -> None:
    hub = Hub(HubConfig(allow_anonymous=True), async_mode="aiohttp")
    assert isinstance(hub.delivery, HubDelivery)
    assert hub.delivery.stored == hub.fanout.push
    assert hub.feed is hub.store.feed
    assert hub.delivery.subscribers("nobody-here") == 0


async def _started(store: Store) -> Hub:
    hub = Hub(HubConfig(allow_anonymous=True), store=store, async_mode="aiohttp")
    await hub.start()
    return hub


async def test_embedded_stores_reach_the_fan_out_through_the_feed(tmp_path: Path) -> None:
    for store in (MemoryStore(), SQLiteStore(tmp_path / "hub.db")):
        hub = await _started(store)
        try:
            assert hub.ready
            status = await hub.status()
            assert "cluster" not in status  # only a shared store has a link to report
            # Appended straight to the store, not published through the hub:
            # the feed alone carries it to the fan-out (nobody subscribes, so
            # the fan-out only notes its seq).
            appended = await store.channels.append(
                "news", 1, sender="ann", msg_id=None, ts=time.time(), dedup_window=300
            )
            assert hub.fanout.channel_stats()["news"] == (0, appended.message.seq)
        finally:
            await hub.stop()
