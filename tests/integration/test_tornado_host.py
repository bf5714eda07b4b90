"""The standalone hub on tornado (the host the Jupyter extension builds on):
fan-out writes its prebuilt frames straight to each websocket's IOStream."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

import rtkit.aio
from rtkit.hub.transport import fast_paths_enabled
from rtkit.pytest_plugin import HubProcess

pytestmark = pytest.mark.slow

SUBSCRIBERS = 5
MESSAGES = 200


async def test_fanout_writes_frames_directly_and_in_order(rt_hub_factory: Any) -> None:
    hub: HubProcess = rt_hub_factory(extra_args=["--server", "tornado"])
    clients = [await rtkit.aio.connect(hub.url) for _ in range(SUBSCRIBERS)]
    try:
        inboxes: list[list[int]] = [[] for _ in clients]
        done = [asyncio.Event() for _ in clients]

        def collect(i: int) -> Any:
            def on_message(msg: Any) -> None:
                inboxes[i].append(msg.seq)
                if len(inboxes[i]) == MESSAGES:
                    done[i].set()

            return on_message

        for i, client in enumerate(clients):
            await client.channel("tornado.fanout").subscribe(collect(i))
        publisher = clients[0].channel("tornado.fanout")
        seqs = await asyncio.gather(*(publisher.publish({"n": n}) for n in range(MESSAGES)))
        assert sorted(seqs) == list(range(1, MESSAGES + 1))
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in done)), 20)
        for inbox in inboxes:
            assert inbox == list(range(1, MESSAGES + 1))
    finally:
        for client in clients:
            await client.close()
    assert hub.terminate() == 0
    stopped = next(line for line in hub.log if "rtkit hub stopped" in line)
    match = re.search(r"\((\d+) written directly\)", stopped)
    # Direct writes are a fast path: with RTKIT_FAST_PATHS=0 there must be none.
    assert match is not None, stopped
    assert (int(match.group(1)) > 0) == fast_paths_enabled(), stopped
