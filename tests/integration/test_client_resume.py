"""The Python client across hub crashes: every message exactly once, in order."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import rtkit
import rtkit.aio
from rtkit.pytest_plugin import HubProcess

FAST_RECONNECT: dict[str, Any] = {"reconnect_delay": 0.05, "reconnect_delay_max": 0.3}


@pytest.mark.slow
async def test_subscriber_gets_everything_once_across_kill_and_restart(
    rt_hub_factory: Any, tmp_path: Any
) -> None:
    hub: HubProcess = rt_hub_factory(store=f"sqlite:///{tmp_path}/hub.db")
    total = 600
    got: list[rtkit.Message] = []
    all_in = threading.Event()

    def on_message(msg: rtkit.Message) -> None:
        got.append(msg)
        if len(got) >= total:
            all_in.set()

    # The subscriber is the blocking client a notebook would use; the
    # publisher is async so it can keep publishing while the hub is down.
    subscriber = rtkit.connect(hub.url, **FAST_RECONNECT)
    publisher = await rtkit.aio.connect(hub.url, **FAST_RECONNECT)
    try:
        subscriber.channel("feed").subscribe(on_message)
        channel = publisher.channel("feed")
        publishes = []
        for i in range(total):
            publishes.append(asyncio.ensure_future(channel.publish({"i": i})))
            if i == total // 3:
                await asyncio.to_thread(hub.kill)  # kill -9 with publishes in flight
            elif i == total // 2:
                await asyncio.to_thread(hub.start)  # same port, same file
            await asyncio.sleep(0.002)  # a steady feed, not a wait for a condition
        seqs = await asyncio.wait_for(asyncio.gather(*publishes), 60)
        assert await asyncio.to_thread(all_in.wait, 60), f"only {len(got)} of {total} arrived"
    finally:
        await publisher.close()
        subscriber.close()

    # Each publish was stored once, in call order, offline ones included.
    assert seqs == list(range(1, total + 1))
    # The subscriber saw each message exactly once, in order.
    assert [m.seq for m in got] == list(range(1, total + 1))
    assert [m.data["i"] for m in got] == list(range(total))


@pytest.mark.slow
async def test_a_lost_history_is_reported_as_a_gap(rt_hub_factory: Any) -> None:
    hub: HubProcess = rt_hub_factory()  # memory store: a restart loses history
    gaps: list[Any] = []
    seqs: list[int] = []
    gap_seen = asyncio.Event()
    after_gap = asyncio.Event()
    client = await rtkit.aio.connect(hub.url, **FAST_RECONNECT)
    try:
        channel = client.channel("feed")

        def on_message(msg: rtkit.Message) -> None:
            seqs.append(msg.seq)
            if gaps and msg.data == "after":
                after_gap.set()

        def on_gap(name: str, info: Any) -> None:
            gaps.append(info)
            gap_seen.set()

        client.on("gap", on_gap)
        await channel.subscribe(on_message)
        for _ in range(3):
            await channel.publish("before")
        await asyncio.to_thread(hub.kill)
        await asyncio.to_thread(hub.start)
        await asyncio.wait_for(gap_seen.wait(), 30)
        await channel.publish("after")
        await asyncio.wait_for(after_gap.wait(), 30)
    finally:
        await client.close()
    (gap,) = gaps
    assert gap.last_seq == 3
    assert gap.epoch != gap.last_epoch
    assert seqs == [1, 2, 3, 1]  # the new epoch numbers from 1 again
