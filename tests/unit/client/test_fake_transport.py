"""The asyncio client over a scripted hub (:mod:`fake_hub`): resume, dedup,
the offline queue, gaps, presence rejoin and document resync, without sockets."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import pycrdt
import pytest
from fake_hub import WAIT, FakeHub, envelope, member

from rtkit.client import aio
from rtkit.errors import AckTimeout, OfflineQueueFull, Unauthorized
from rtkit.protocol import SHARED_MAP


class Inbox:
    """A callback that collects what it is called with."""

    def __init__(self) -> None:
        self.calls: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()

    def __call__(self, *args: Any) -> None:
        self.calls.put_nowait(args)

    async def next(self) -> tuple[Any, ...]:
        async with asyncio.timeout(WAIT):
            return await self.calls.get()

    async def seqs(self, count: int) -> list[int]:
        return [(await self.next())[0].seq for _ in range(count)]

    def empty(self) -> bool:
        return self.calls.empty()


@pytest.fixture
def hub() -> FakeHub:
    return FakeHub()


@pytest.fixture
async def client(hub: FakeHub) -> AsyncIterator[aio.Client]:
    client = aio.Client(
        "http://hub.test:8765",
        "tok",
        _transport=hub.transport,
        reconnect_delay=0.001,
        reconnect_delay_max=0.005,
        max_offline_queue=3,
    )
    await client.open()
    yield client
    await client.close()


async def subscribe(
    hub: FakeHub, ch: aio.Channel, callback: aio.MessageCallback, **ack: Any
) -> dict[str, Any]:
    """Subscribe, answer the subscribe request with ``ack``; returns the request."""
    task = asyncio.ensure_future(ch.subscribe(callback, since=ack.pop("since", None)))
    req = await hub.request("subscribe")
    req.ack(**ack)
    async with asyncio.timeout(WAIT):
        await task
    payload: dict[str, Any] = req.payload
    return payload


async def test_the_handshake_carries_the_token(hub: FakeHub, client: aio.Client) -> None:
    assert client.connected
    assert hub.current.handshake == {
        "origin": "http://hub.test:8765",
        "auth": {"token": "tok"},
        "headers": {"Authorization": "Bearer tok"},
        "path": "socket.io",
    }


async def test_a_channel_resumes_from_its_last_seq_and_epoch(
    hub: FakeHub, client: aio.Client
) -> None:
    events = Inbox()
    client.on("disconnect", lambda reason: events("disconnect", reason))
    client.on("reconnect", lambda attempts: events("reconnect"))
    inbox = Inbox()
    ch = client.channel("prices")
    assert await subscribe(hub, ch, inbox, seq=3, epoch="e1", recovered=True) == {
        "channel": "prices"
    }
    hub.push("messages", [envelope("prices", 4), envelope("prices", 5)])
    assert await inbox.seqs(2) == [4, 5]

    first = hub.current
    hub.drop("transport close")
    assert await events.next() == ("disconnect", "transport close")
    await hub.reconnected(2)
    resub = await hub.request("subscribe")
    assert resub.payload == {"channel": "prices", "since": 5, "epoch": "e1"}
    resub.ack(seq=7, epoch="e1", recovered=True, messages=[envelope("prices", 6)])
    assert await events.next() == ("reconnect",)
    assert await inbox.seqs(1) == [6]

    # A late packet of the dead connection is ignored; the live one is not.
    first.handlers["messages"]([envelope("prices", 7, data="stale")])
    hub.push("messages", [envelope("prices", 7, data="live")])
    assert (await inbox.next())[0].data == "live"
    assert client.metrics.reconnects == 1 and client.metrics.gaps == 0


async def test_seqs_already_seen_are_dropped(hub: FakeHub, client: aio.Client) -> None:
    inbox = Inbox()
    ch = client.channel("c")
    sent = await subscribe(
        hub,
        ch,
        inbox,
        since=1,
        seq=3,
        epoch="e1",
        messages=[envelope("c", 3), envelope("c", 2)],
    )
    assert sent == {"channel": "c", "since": 1}
    hub.push("messages", [envelope("c", 3), envelope("c", 4), envelope("c", 2)])
    hub.push("messages", [envelope("c", 4), envelope("c", 5)])
    assert await inbox.seqs(4) == [2, 3, 4, 5]
    assert ch.last_seq == 5
    metrics = client.metrics
    assert (metrics.messages_received, metrics.duplicates_dropped) == (4, 3)


async def test_the_offline_queue_flushes_in_order_with_its_ids(
    hub: FakeHub, client: aio.Client
) -> None:
    ch = client.channel("c")
    first = asyncio.ensure_future(ch.publish({"n": 1}, id="first"))
    unacked = await hub.request("publish")
    assert unacked.payload == {"channel": "c", "data": {"n": 1}, "id": "first"}

    hub.drop(reachable=False)
    second = asyncio.ensure_future(ch.publish({"n": 2}))
    third = asyncio.ensure_future(ch.publish(b"\x00", id="third"))
    # Tasks start in creation order: the fourth finds the queue (max 3) full.
    fourth = asyncio.ensure_future(ch.publish({"n": 4}))
    with pytest.raises(OfflineQueueFull):
        await fourth
    assert client.metrics.pending_publishes == 3
    await hub.until(lambda: hub.attempts >= 3)  # reconnects are being tried
    hub.assert_quiet()

    hub.reachable = True
    await hub.reconnected(2)
    # What queued goes out in one batch, in order, each with its id.
    batch = await hub.request("publish")
    resent = batch.payload["messages"]
    assert [r["data"] for r in resent] == [{"n": 1}, {"n": 2}, b"\x00"]
    assert resent[0]["id"] == "first" and resent[2]["id"] == "third"
    assert re.fullmatch(r"[0-9a-f]{32}", resent[1]["id"])
    unacked.ack(seq=99)  # on the dead connection: never arrives
    batch.ack(seqs=[1, 2, 3], ts=[1.0, 1.0, 1.0])
    async with asyncio.timeout(WAIT):
        assert await asyncio.gather(first, second, third) == [1, 2, 3]
    assert client.metrics.published == 3 and client.metrics.pending_publishes == 0


async def test_a_resume_the_hub_cannot_recover_is_a_gap(hub: FakeHub, client: aio.Client) -> None:
    inbox, gaps, client_gaps = Inbox(), Inbox(), Inbox()
    ch = client.channel("c")
    ch.on_gap(gaps)
    client.on("gap", client_gaps)
    await subscribe(hub, ch, inbox, seq=5, epoch="e1")
    hub.push("messages", [envelope("c", 6)])
    assert await inbox.seqs(1) == [6]

    hub.drop()
    await hub.reconnected(2)
    resub = await hub.request("subscribe")
    assert resub.payload == {"channel": "c", "since": 6, "epoch": "e1"}
    resub.ack(
        seq=10,
        epoch="e2",
        recovered=False,
        messages=[envelope("c", 9), envelope("c", 10)],
    )
    name, info = await gaps.next()
    assert name == "c"
    assert info == aio.GapInfo("c", last_seq=6, last_epoch="e1", seq=10, epoch="e2", first_seq=9)
    assert await client_gaps.next() == ("c", info)
    assert await inbox.seqs(2) == [9, 10]
    assert ch.epoch == "e2" and client.metrics.gaps == 1


async def test_presence_rejoins_with_its_state_and_reports_the_difference(
    hub: FakeHub, client: aio.Client
) -> None:
    me, ada, grace = member("me"), member("ada"), member("grace")
    joining = asyncio.ensure_future(client.presence("lab", state={"status": "reading"}))
    join = await hub.request("presence.join")
    assert join.payload == {"room": "lab", "state": {"status": "reading"}}
    join.ack(members=[ada, me], member=me)
    async with asyncio.timeout(WAIT):
        room = await joining
    assert [m.user for m in room.members] == ["ada", "me"] and room.me is not None

    seen = Inbox()
    for event in ("join", "leave", "update"):
        room.on(event, lambda m, event=event: seen(event, m.user))
    updating = asyncio.ensure_future(room.update({"cell": 4}))
    update = await hub.request("presence.update")
    assert update.payload == {"room": "lab", "state": {"cell": 4}}
    update.ack()
    async with asyncio.timeout(WAIT):
        await updating

    hub.drop()
    await hub.reconnected(2)
    rejoin = await hub.request("presence.join")
    assert rejoin.payload == {"room": "lab", "state": {"status": "reading", "cell": 4}}
    rejoin.ack(members=[me, grace], member=me)
    assert {await seen.next(), await seen.next()} == {("leave", "ada"), ("join", "grace")}
    assert [m.user for m in room.members] == ["me", "grace"]

    hub.push("presence", {"room": "lab", "event": "leave", "member": grace})
    assert await seen.next() == ("leave", "grace")


async def test_a_document_resyncs_and_sends_its_offline_edits(
    hub: FakeHub, client: aio.Client
) -> None:
    remote = pycrdt.Doc()
    remote.get(SHARED_MAP, type=pycrdt.Map)["alpha"] = 0.5
    opening = asyncio.ensure_future(client.shared("params"))
    sync = await hub.request("doc.sync")
    assert sync.payload["doc"] == "params"
    sync.ack(update=remote.get_update(), state_vector=remote.get_state())
    async with asyncio.timeout(WAIT):
        doc = await opening
    assert doc.synced and doc["alpha"] == 0.5
    hub.assert_quiet()  # it had nothing the hub lacks

    hub.drop(reachable=False)
    assert not doc.synced
    doc["beta"] = 2
    assert doc.pending == 1
    hub.reachable = True
    await hub.reconnected(2)
    resync = await hub.request("doc.sync")
    assert resync.payload == {"doc": "params", "state_vector": doc.doc.get_state()}
    resync.ack(update=b"\x00\x00", state_vector=remote.get_state())
    sent = await hub.request("doc.update")
    remote.apply_update(sent.payload["update"])
    assert remote.get(SHARED_MAP, type=pycrdt.Map).to_py() == {"alpha": 0.5, "beta": 2.0}
    sent.ack()
    async with asyncio.timeout(WAIT):
        await doc.flush()
    assert doc.updates_sent == 1


async def test_a_refused_token_stops_reconnecting(hub: FakeHub, client: aio.Client) -> None:
    ch = client.channel("c")
    hub.refusal = {"code": "unauthorized", "message": "token expired"}
    hub.drop()
    pending = asyncio.ensure_future(ch.publish(1))
    with pytest.raises(Unauthorized, match="token expired"):
        async with asyncio.timeout(WAIT):
            await pending
    with pytest.raises(Unauthorized):
        await client.wait_connected()
    assert hub.attempts == 2


async def test_a_request_outlives_a_dropped_connection(hub: FakeHub, client: aio.Client) -> None:
    reading = asyncio.ensure_future(client.channel("c").history(limit=2))
    lost = await hub.request("history")
    hub.drop()
    await hub.reconnected(2)
    again = await hub.request("history")
    assert again.payload == lost.payload == {"channel": "c", "limit": 2}
    again.ack(messages=[envelope("c", 1), envelope("c", 2)], seq=2, epoch="e1", complete=True)
    async with asyncio.timeout(WAIT):
        assert [msg.seq for msg in await reading] == [1, 2]


async def test_unanswered_requests_time_out(hub: FakeHub) -> None:
    async with aio.Client("http://hub.test:8765", _transport=hub.transport, ack_timeout=0.05) as c:
        with pytest.raises(AckTimeout):
            await c.channel("c").history()
        with pytest.raises(AckTimeout, match="publish to 'c'"):
            await c.channel("c").publish(1)
        assert c.metrics.pending_publishes == 0
        assert [(await hub.request()).event for _ in range(2)] == ["history", "publish"]


async def test_a_coalesced_frame_reaches_every_callback_in_seq_order_one_at_a_time(
    hub: FakeHub, client: aio.Client
) -> None:
    # The client hands each channel its run of a frame's messages at once;
    # callbacks still see one message per call, in order, each finished
    # (awaited) before the next, and a failing call does not stop the rest.
    a, b = client.channel("a"), client.channel("b")
    seen: list[tuple[str, int]] = []
    started, release, done = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def slow(msg: aio.Message) -> None:
        seen.append(("slow", msg.seq))
        if msg.seq == 1:
            started.set()
            await release.wait()

    def failing(msg: aio.Message) -> None:
        seen.append(("failing", msg.seq))
        if msg.seq == 3:
            done.set()
        if msg.seq == 2:
            raise RuntimeError("an application bug")

    inbox = Inbox()
    await subscribe(hub, a, slow, seq=0, epoch="e1")
    await a.subscribe(failing)
    await subscribe(hub, b, inbox, seq=0, epoch="e1")
    hub.push("messages", [envelope("a", 1), envelope("a", 2), envelope("b", 1), envelope("a", 3)])
    async with asyncio.timeout(WAIT):
        await started.wait()
    for _ in range(50):  # let whatever else could run while slow(1) waits run
        await asyncio.sleep(0)
    assert seen == [("slow", 1)] and inbox.empty()
    release.set()
    assert await inbox.seqs(1) == [1]
    async with asyncio.timeout(WAIT):
        await done.wait()
    assert [s for s in seen if s[0] == "slow"] == [("slow", 1), ("slow", 2), ("slow", 3)]
    assert [s for s in seen if s[0] == "failing"] == [
        ("failing", 1),
        ("failing", 2),
        ("failing", 3),
    ]
    assert client.metrics.messages_received == 4


async def test_a_callback_removed_during_a_run_gets_none_of_its_rest(
    hub: FakeHub, client: aio.Client
) -> None:
    ch = client.channel("c")
    got: list[int] = []

    async def first_only(msg: aio.Message) -> None:
        got.append(msg.seq)
        await ch.unsubscribe(first_only)

    inbox = Inbox()
    await subscribe(hub, ch, first_only, seq=0, epoch="e1")
    await ch.subscribe(inbox)
    hub.push("messages", [envelope("c", seq) for seq in range(1, 6)])
    assert await inbox.seqs(5) == [1, 2, 3, 4, 5]
    assert got == [1]  # unsubscribed while 2..5 were already queued for it
