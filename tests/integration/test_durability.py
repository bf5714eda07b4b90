"""Durability with the SQLite store: kill -9 mid-stream loses nothing acked.

DESIGN.md: "a publish is acked only after the backend stored it". These tests
publish continuously with several acks outstanding, SIGKILL the hub process,
restart it on the same database file and check every acked message is there
with its seq and data, that seqs are never reused, and that replay and
idempotent publish work across the restart.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rtkit.pytest_plugin import HubProcess

from .conftest import Connect
from .helpers import NS, RawClient, assert_gap_free, assert_ok

pytestmark = pytest.mark.slow

CHANNEL = "durable"


def _data(i: int, rng: random.Random) -> Any:
    if i % 10 == 3:
        return rng.randbytes(rng.randint(1, 64))
    return {"i": i, "x": rng.random(), "tags": ["a", str(i)], "nested": {"ok": i % 2 == 0}}


class _Stream:
    """A publisher with ``window`` publishes in flight, recording each ack."""

    def __init__(self, client: RawClient, window: int = 32) -> None:
        self.client = client
        self.window = window
        self.sent: dict[str, Any] = {}  # id -> data, everything emitted
        self.acked: dict[int, tuple[str, Any]] = {}  # seq -> (id, data)
        self.refused: list[Any] = []
        self._progress = asyncio.Event()

    async def run(self, rng: random.Random) -> None:
        slots = asyncio.Semaphore(self.window)
        i = 0
        while True:
            await slots.acquire()
            msg_id, data = f"m{i}", _data(i, rng)
            self.sent[msg_id] = data

            def on_ack(*ack: Any, msg_id: str = msg_id, data: Any = data) -> None:
                body = ack[0] if ack else None
                if isinstance(body, dict) and body.get("ok"):
                    self.acked[body["seq"]] = (msg_id, data)
                else:
                    self.refused.append(body)
                slots.release()
                self._progress.set()

            await self.client.sio.emit(
                "publish",
                {"channel": CHANNEL, "data": data, "id": msg_id},
                namespace=NS,
                callback=on_ack,
            )
            i += 1

    async def wait_acked(self, count: int, within: float = 30) -> None:
        async def reached() -> None:
            while len(self.acked) < count and not self.refused:
                self._progress.clear()
                await self._progress.wait()

        await asyncio.wait_for(reached(), within)
        assert not self.refused, self.refused[:3]


async def _all_history(client: RawClient) -> dict[str, Any]:
    ack = assert_ok(await client.history(CHANNEL, since=0, limit=10_000))
    assert ack["complete"] is not False
    return ack


async def test_kill_9_loses_no_acked_message(
    rt_hub_factory: Callable[..., HubProcess], connect: Connect, tmp_path: Path
) -> None:
    store = f"sqlite:///{tmp_path / 'hub.db'}"
    hub = rt_hub_factory(store=store)
    rng = random.Random(7)

    watcher = await connect(hub.url)
    first_ack = assert_ok(await watcher.subscribe(CHANNEL))
    epoch = first_ack["epoch"]
    publisher = await connect(hub.url, auth={"user": "writer"})
    stream = _Stream(publisher)
    task = asyncio.create_task(stream.run(rng))
    try:
        await stream.wait_acked(400)
        await asyncio.to_thread(hub.kill)  # SIGKILL with publishes in flight
        await publisher.wait_disconnected()
        await watcher.wait_disconnected()
    finally:
        task.cancel()
    acked = dict(stream.acked)
    in_flight = set(stream.sent) - {msg_id for msg_id, _ in acked.values()}
    assert acked, "nothing was acked before the kill"
    assert sorted(acked) == list(range(1, len(acked) + 1)), "acks skipped a seq"
    seen_live = watcher.last_seq(CHANNEL)
    assert_gap_free(watcher.seqs(CHANNEL), start=1, end=seen_live)

    await asyncio.to_thread(hub.restart)
    reader = await connect(hub.url)
    history = await _all_history(reader)
    stored = {m["seq"]: m for m in history["messages"]}
    head = history["seq"]
    assert history["epoch"] == epoch, "a durable store must keep the channel's epoch"
    assert sorted(stored) == list(range(1, head + 1)), "history after the restart has holes"
    assert head >= max(acked)
    for seq, (msg_id, data) in acked.items():
        assert seq in stored, f"acked seq {seq} was lost by kill -9"
        assert stored[seq]["id"] == msg_id and stored[seq]["data"] == data, f"seq {seq} changed"
        assert stored[seq]["sender"] == "writer"
    # Messages stored but not acked before the kill are ones that were in flight.
    for seq in set(stored) - set(acked):
        assert stored[seq]["id"] in in_flight
        assert stored[seq]["data"] == stream.sent[stored[seq]["id"]]
    assert len({m["id"] for m in stored.values()}) == len(stored)

    # A subscriber resumes from what it saw, in the same epoch: nothing missing.
    resumed = await connect(hub.url)
    ack = assert_ok(await resumed.subscribe(CHANNEL, since=seen_live, epoch=epoch))
    assert ack["recovered"] is True
    assert [m["seq"] for m in ack["messages"]] == list(range(seen_live + 1, head + 1))

    # The offline queue's flush: publishing the in-flight ids again stores
    # each at most once; acked ids keep their seqs; new seqs follow the head.
    writer = await connect(hub.url, auth={"user": "writer"})
    by_id = {m["id"]: m["seq"] for m in stored.values()}
    for msg_id in sorted(in_flight, key=lambda m: int(m[1:])):
        ack = assert_ok(await writer.publish(CHANNEL, stream.sent[msg_id], id=msg_id))
        if msg_id in by_id:
            assert ack["seq"] == by_id[msg_id], f"{msg_id} was stored twice"
        else:
            assert ack["seq"] > head, f"seq {ack['seq']} reused after the restart"
            by_id[msg_id] = ack["seq"]
    last_acked_seq, (last_id, last_data) = max(acked.items())
    again = assert_ok(await writer.publish(CHANNEL, last_data, id=last_id))
    assert again["seq"] == last_acked_seq
    fresh = assert_ok(await writer.publish(CHANNEL, {"after": "restart"}))
    assert fresh["seq"] == max(by_id.values(), default=head) + 1
    await resumed.wait_for_seq(CHANNEL, fresh["seq"])
    assert_gap_free(resumed.seqs(CHANNEL), start=seen_live + 1, end=fresh["seq"])

    final = await _all_history(reader)
    assert [m["seq"] for m in final["messages"]] == list(range(1, fresh["seq"] + 1))
    assert len({m["id"] for m in final["messages"]}) == fresh["seq"], "an id was stored twice"


async def test_graceful_restart_keeps_everything(
    rt_hub_factory: Callable[..., HubProcess], connect: Connect, tmp_path: Path
) -> None:
    hub = rt_hub_factory(store=f"sqlite:///{tmp_path / 'graceful.db'}")
    client = await connect(hub.url)
    rng = random.Random(3)
    sent = [_data(i, rng) for i in range(50)]
    for i, data in enumerate(sent):
        assert assert_ok(await client.publish(CHANNEL, data, id=f"g{i}"))["seq"] == i + 1
    before = await _all_history(client)

    await client.close()
    assert await asyncio.to_thread(hub.terminate) == 0, "\n".join(hub.log[-20:])
    await asyncio.to_thread(hub.start)

    again = await connect(hub.url)
    after = await _all_history(again)
    assert after == before
    assert [m["data"] for m in after["messages"]] == sent
    assert assert_ok(await again.publish(CHANNEL, "next"))["seq"] == 51
    assert assert_ok(await again.publish(CHANNEL, sent[0], id="g0"))["seq"] == 1


async def test_sigterm_disconnects_clients_and_exits(
    rt_hub_factory: Callable[..., HubProcess], connect: Connect, tmp_path: Path
) -> None:
    """SIGTERM stops the hub cleanly while clients are connected: they are
    told to go at once (so they reconnect elsewhere), the store is flushed and
    the process exits 0."""
    hub = rt_hub_factory(store=f"sqlite:///{tmp_path / 'term.db'}")
    clients = [await connect(hub.url) for _ in range(3)]
    assert_ok(await clients[0].subscribe(CHANNEL))
    assert assert_ok(await clients[1].publish(CHANNEL, "before"))["seq"] == 1
    await clients[0].wait_for_seq(CHANNEL, 1)

    assert hub.proc is not None
    started = time.monotonic()
    hub.proc.send_signal(signal.SIGTERM)
    try:
        for client in clients:
            await client.wait_disconnected(within=5)
        exit_code = await asyncio.to_thread(hub.proc.wait, 10)
    finally:
        await asyncio.to_thread(hub.kill)  # fail fast if it hangs
    took = time.monotonic() - started
    assert exit_code == 0, "\n".join(hub.log[-20:])
    # Closing handshakes with clients may take a few seconds; aiohttp's own
    # default grace period (60 s) would mean the hub waited for its clients.
    assert took < 15, f"the hub took {took:.1f}s to stop with clients connected"
    assert any("rtkit hub stopped" in line for line in hub.log)

    await asyncio.to_thread(hub.start)
    reader = await connect(hub.url)
    assert [m["data"] for m in (await _all_history(reader))["messages"]] == ["before"]
