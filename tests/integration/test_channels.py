"""Channels over the wire: order, gap-free seqs, replay, history, idempotency.

Every test drives a real hub (in-process, on a loopback port) through a stock Socket.IO
client (see ``helpers.RawClient``) and checks DESIGN.md's guarantees on what
reaches the socket.
"""

from __future__ import annotations

import asyncio
import os
import random
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rtkit.pytest_plugin import InProcessHub

from .conftest import Connect
from .helpers import NS, RawClient, assert_error, assert_gap_free, assert_ok


@pytest.fixture(params=["memory", "sqlite"])
def hub(
    request: pytest.FixtureRequest,
    rt_hub_inprocess_factory: Callable[..., InProcessHub],
    tmp_path: Path,
) -> InProcessHub:
    """An anonymous hub on each store backend: the guarantees hold for both.
    No publish-rate cap: these tests publish as fast as the hub acks, and
    the cap has tests of its own (test_errors)."""
    uncapped = ["--publish-rate", "0"]
    if request.param == "sqlite":
        return rt_hub_inprocess_factory(
            store=f"sqlite:///{tmp_path / 'channels.db'}", extra_args=uncapped
        )
    return rt_hub_inprocess_factory(extra_args=uncapped)


def _channel(prefix: str = "ch") -> str:
    return f"{prefix}.{uuid.uuid4().hex[:8]}"


async def _publish_many(
    client: RawClient,
    channel: str,
    count: int,
    *,
    window: int = 1,
    tag: Any = None,
    stop: asyncio.Event | None = None,
    rate: float | None = None,
) -> list[dict[str, Any]]:
    """Publish ``{"tag", "i"}`` for i in 0..count-1 with up to ``window`` acks
    outstanding, at most ``rate`` a second if given; returns the acks in
    publish order (stops early on ``stop``)."""
    acks: list[dict[str, Any] | None] = []
    slots = asyncio.Semaphore(window)
    done: list[asyncio.Future[Any]] = []
    loop = asyncio.get_running_loop()
    started = loop.time()
    for i in range(count):
        if stop is not None and stop.is_set():
            break
        if rate is not None and (ahead := started + i / rate - loop.time()) > 0:
            await asyncio.sleep(ahead)  # pacing the load, not waiting for a condition
        await slots.acquire()
        fut: asyncio.Future[Any] = loop.create_future()
        done.append(fut)
        acks.append(None)

        def on_ack(*ack: Any, i: int = i, fut: asyncio.Future[Any] = fut) -> None:
            acks[i] = ack[0] if ack else None
            slots.release()
            fut.set_result(None)

        payload = {"channel": channel, "data": {"tag": tag, "i": i}}
        await client.sio.emit("publish", payload, namespace=NS, callback=on_ack)
    await asyncio.wait_for(asyncio.gather(*done), 30)
    for i, ack in enumerate(acks):
        assert_ok(ack, f"publish #{i} of {tag}")
    return [a for a in acks if a is not None]


async def test_concurrent_publishers_gap_free_order(hub: InProcessHub, connect: Connect) -> None:
    """Three publishers at once, two subscribers: each subscriber gets seq
    1..900 exactly once and in order, and each publisher's messages keep its
    own publish order."""
    channel = _channel("order")
    per_publisher, publishers = 300, 3
    total = per_publisher * publishers
    subscribers = [await connect(hub.url) for _ in range(2)]
    for sub in subscribers:
        ack = assert_ok(await sub.subscribe(channel))
        assert ack["seq"] == 0 and ack["messages"] == [] and ack["recovered"] is True
        assert isinstance(ack["epoch"], str) and ack["epoch"]
    pubs = [await connect(hub.url, auth={"user": f"pub{k}"}) for k in range(publishers)]

    results = await asyncio.gather(
        *(_publish_many(p, channel, per_publisher, tag=k) for k, p in enumerate(pubs))
    )
    acked_seqs = sorted(a["seq"] for acks in results for a in acks)
    assert acked_seqs == list(range(1, total + 1)), "acks did not hand out 1..900 once each"
    for acks in results:
        seqs = [a["seq"] for a in acks]
        assert seqs == sorted(seqs), "a publisher's sequential publishes got decreasing seqs"
        assert all(isinstance(a["ts"], float) for a in acks)

    origin = {a["seq"]: (k, i) for k, acks in enumerate(results) for i, a in enumerate(acks)}
    for sub in subscribers:
        await sub.wait_for_seq(channel, total)
        received = sub.received[channel]
        assert sub.seqs(channel) == list(range(1, total + 1))
        ids = set()
        per_tag: dict[int, list[int]] = {k: [] for k in range(publishers)}
        for env in received:
            k, i = origin[env["seq"]]
            assert env["data"] == {"tag": k, "i": i}, f"seq {env['seq']} carries the wrong data"
            assert env["sender"] == f"pub{k}"
            ids.add(env["id"])
            per_tag[k].append(i)
        assert len(ids) == total, "hub-made message ids are not unique"
        for k, order in per_tag.items():
            assert order == list(range(per_publisher)), f"publisher {k}'s order was not kept"
    # Both subscribers saw the very same envelopes.
    assert subscribers[0].received[channel] == subscribers[1].received[channel]


async def test_replay_since_then_live(hub: InProcessHub, connect: Connect) -> None:
    channel = _channel("replay")
    pub = await connect(hub.url)
    acks = await _publish_many(pub, channel, 50, window=10, tag="p")
    assert [a["seq"] for a in acks] == list(range(1, 51))

    late = await connect(hub.url)
    ack = assert_ok(await late.subscribe(channel, since=20))
    assert ack["recovered"] is True
    assert ack["seq"] == 50
    assert [m["seq"] for m in ack["messages"]] == list(range(21, 51))
    assert [m["data"]["i"] for m in ack["messages"]] == list(range(20, 50))

    more = await _publish_many(pub, channel, 10, tag="q")
    assert [a["seq"] for a in more] == list(range(51, 61))
    await late.wait_for_seq(channel, 60)
    assert late.seqs(channel) == list(range(21, 61)), "live messages did not continue the backlog"

    recent = await connect(hub.url)
    ack = assert_ok(await recent.subscribe(channel, history=5))
    assert [m["seq"] for m in ack["messages"]] == list(range(56, 61))
    assert ack["seq"] == 60 and ack["recovered"] is True
    # `history` beyond what exists gives everything.
    ack = assert_ok(await recent.subscribe(channel, history=1000))
    assert [m["seq"] for m in ack["messages"]] == list(range(1, 61))


async def test_replay_edges(hub: InProcessHub, connect: Connect) -> None:
    """since=0 replays all; since=head replays nothing; a since from the
    future or another epoch is reported as not recovered."""
    channel = _channel("edges")
    client = await connect(hub.url)
    await _publish_many(client, channel, 12)

    ack = assert_ok(await client.subscribe(channel, since=0))
    assert [m["seq"] for m in ack["messages"]] == list(range(1, 13)) and ack["recovered"]
    epoch = ack["epoch"]

    ack = assert_ok(await client.subscribe(channel, since=12))
    assert ack["messages"] == [] and ack["recovered"] is True and ack["seq"] == 12

    ack = assert_ok(await client.subscribe(channel, since=500))
    assert ack["recovered"] is False, "a since beyond the head cannot have been recovered"
    assert ack["epoch"] == epoch and ack["seq"] == 12

    ack = assert_ok(await client.subscribe(channel, since=3, epoch="not-" + epoch))
    assert ack["recovered"] is False, "a since from another epoch cannot have been recovered"

    ack = assert_ok(await client.subscribe(channel, since=3, epoch=epoch))
    assert ack["recovered"] is True
    assert [m["seq"] for m in ack["messages"]] == list(range(4, 13))

    # The last subscribe is what counts: live messages continue from 12.
    assert_ok(await client.publish(channel, "next"))
    await client.wait_for_seq(channel, 13)
    assert [e["seq"] for e in client.since_ack(channel)] == [*range(4, 13), 13]


async def test_history_paging(hub: InProcessHub, connect: Connect) -> None:
    channel = _channel("hist")
    client = await connect(hub.url)
    await _publish_many(client, channel, 60, window=20, tag="h")

    def seqs(ack: dict[str, Any]) -> list[int]:
        return [m["seq"] for m in ack["messages"]]

    everything = assert_ok(await client.history(channel))
    assert seqs(everything) == list(range(1, 61))
    assert everything["seq"] == 60
    assert isinstance(everything["epoch"], str)
    assert [m["data"]["i"] for m in everything["messages"]] == list(range(60))

    assert seqs(await client.history(channel, limit=5)) == list(range(56, 61))
    assert seqs(await client.history(channel, since=10, limit=5)) == list(range(11, 16))
    assert seqs(await client.history(channel, before=10, limit=3)) == [7, 8, 9]
    assert seqs(await client.history(channel, before=10)) == list(range(1, 10))
    assert seqs(await client.history(channel, since=10, before=15)) == [11, 12, 13, 14]
    assert seqs(await client.history(channel, since=60)) == []
    assert seqs(await client.history(channel, before=1)) == []

    # Forward paging with since/limit visits every message once.
    forward: list[int] = []
    cursor = 0
    while True:
        page = assert_ok(await client.history(channel, since=cursor, limit=7))
        if not page["messages"]:
            break
        forward += seqs(page)
        cursor = page["messages"][-1]["seq"]
    assert forward == list(range(1, 61))

    # Backward paging with before/limit too.
    backward: list[int] = []
    before = 61
    while before > 1:
        page = assert_ok(await client.history(channel, before=before, limit=9))
        assert page["messages"], f"empty page before {before}"
        backward = seqs(page) + backward
        before = page["messages"][0]["seq"]
    assert backward == list(range(1, 61))

    # Same envelopes as a subscriber's replay, and an unknown channel is empty.
    sub = assert_ok(await client.subscribe(channel, since=0))
    assert sub["messages"] == everything["messages"]
    assert sub["epoch"] == everything["epoch"]
    empty = assert_ok(await client.history(_channel("never")))
    assert empty["messages"] == [] and empty["seq"] == 0


async def test_subscribe_while_publishing(hub: InProcessHub, connect: Connect) -> None:
    """20 clients subscribe at random moments while two publishers keep the
    channel busy: from each subscribe ack on, backlog plus live messages form
    one gap-free sequence up to the last publish."""
    channel = _channel("hammer")
    # RTKIT_TEST_SEED=<n> replays a run; a failure message names its seed.
    seed = int(os.environ.get("RTKIT_TEST_SEED") or random.randrange(1 << 30))
    rng = random.Random(seed)
    pubs = [await connect(hub.url, auth={"user": f"pub{k}"}) for k in range(2)]
    subs = [await connect(hub.url) for _ in range(20)]
    # Warm the channel up so that since/history have something to replay.
    await _publish_many(pubs[0], channel, 200, window=50)

    stop = asyncio.Event()
    # Paced: the hub would take far more, but 20 subscribers' worth of
    # deliveries must stay within what this test process checks in time.
    publishing = [
        asyncio.create_task(
            _publish_many(p, channel, 100_000, window=16, tag=k, stop=stop, rate=1_500)
        )
        for k, p in enumerate(pubs)
    ]
    acks: dict[int, dict[str, Any]] = {}
    modes: dict[int, str] = {}

    async def join(n: int, client: RawClient) -> None:
        # Spread the subscribes over the publishing run.
        await asyncio.sleep(rng.uniform(0, 1.5))
        mode = rng.choice(["live", "since", "history"])
        modes[n] = mode
        if mode == "live":
            ack = await client.subscribe(channel)
        elif mode == "since":
            head = assert_ok(await client.history(channel, limit=1))["seq"]
            ack = await client.subscribe(channel, since=max(0, head - rng.randint(0, 300)))
        else:
            ack = await client.subscribe(channel, history=rng.randint(1, 300))
        acks[n] = assert_ok(ack, f"subscribe of {client.name}")
        assert ack["recovered"] is True

    try:
        await asyncio.gather(*(join(n, c) for n, c in enumerate(subs)))
        # Keep publishing a little after the last subscribe.
        base = max(a["seq"] for a in acks.values())
        await subs[0].wait_for_seq(channel, base + 100)
    finally:
        stop.set()
    results = await asyncio.gather(*publishing)
    last = 200 + sum(len(r) for r in results)
    assert sorted(a["seq"] for r in results for a in r) == list(range(201, last + 1))

    for n, client in enumerate(subs):
        await client.wait_for_seq(channel, last)
        got = [e["seq"] for e in client.since_ack(channel)]
        ack = acks[n]
        backlog = [m["seq"] for m in ack["messages"]]
        assert got[: len(backlog)] == backlog
        first = backlog[0] if backlog else ack["seq"] + 1
        try:
            assert_gap_free(got, start=first, end=last)
        except AssertionError as exc:
            raise AssertionError(
                f"seed {seed}, subscriber {n} ({modes[n]}, ack seq {ack['seq']}): {exc}"
            ) from None
        if backlog:
            assert ack["seq"] == backlog[-1], "the ack's seq is not its backlog's last seq"


async def test_idempotent_publish(hub: InProcessHub, connect: Connect) -> None:
    channel = _channel("idem")
    sub = await connect(hub.url)
    assert_ok(await sub.subscribe(channel))
    pub = await connect(hub.url, auth={"user": "ann"})

    first = assert_ok(await pub.publish(channel, {"v": 1}, id="m-1"))
    again = assert_ok(await pub.publish(channel, {"v": 1}, id="m-1"))
    assert again["seq"] == first["seq"] == 1
    assert again.get("duplicate", True) is True
    assert "duplicate" not in first or first["duplicate"] is False
    # The same id with other data is still the first message.
    assert assert_ok(await pub.publish(channel, {"v": "other"}, id="m-1"))["seq"] == 1

    second = assert_ok(await pub.publish(channel, {"v": 2}, id="m-2"))
    assert second["seq"] == 2, "a duplicate must not use up a seq"
    # The offline queue flushes after a reconnect: same user, new connection.
    reconnected = await connect(hub.url, auth={"user": "ann"})
    assert assert_ok(await reconnected.publish(channel, {"v": 2}, id="m-2"))["seq"] == 2
    # Another sender's id is its own.
    bob = await connect(hub.url, auth={"user": "bob"})
    assert assert_ok(await bob.publish(channel, {"v": 3}, id="m-1"))["seq"] == 3
    # The same id on another channel is a new message there.
    other = _channel("idem-other")
    assert assert_ok(await pub.publish(other, {"v": 4}, id="m-1"))["seq"] == 1

    # Ten copies in flight at once store one message.
    burst = await asyncio.gather(*(pub.publish(channel, {"v": 5}, id="m-5") for _ in range(10)))
    assert {assert_ok(a)["seq"] for a in burst} == {4}
    assert sum(1 for a in burst if not a.get("duplicate")) == 1

    assert_ok(await pub.publish(channel, "end", id="m-end"))
    await sub.wait_for_seq(channel, 5)
    received = sub.received[channel]
    assert [e["seq"] for e in received] == [1, 2, 3, 4, 5], "a duplicate reached subscribers"
    assert [e["id"] for e in received] == ["m-1", "m-2", "m-1", "m-5", "m-end"]
    assert [e["sender"] for e in received] == ["ann", "ann", "bob", "ann", "ann"]
    assert received[0]["data"] == {"v": 1}
    history = assert_ok(await sub.history(channel))
    assert history["messages"] == received


async def test_unsubscribe_stops_delivery(hub: InProcessHub, connect: Connect) -> None:
    channel = _channel("unsub")
    sub = await connect(hub.url)
    pub = await connect(hub.url)
    assert_ok(await sub.subscribe(channel))
    await _publish_many(pub, channel, 5)
    await sub.wait_for_seq(channel, 5)
    assert_ok(await sub.unsubscribe(channel))
    assert_error(await sub.unsubscribe(channel), "not_found")
    # A marker channel subscribed after the unsubscribe: once its message
    # arrives, anything still in flight on the old channel would have too.
    marker = _channel("marker")
    assert_ok(await sub.subscribe(marker))
    await _publish_many(pub, channel, 5)
    assert_ok(await pub.publish(marker, "after"))
    await sub.wait_for_seq(marker, 1)
    assert sub.seqs(channel) == [1, 2, 3, 4, 5]
    # Re-subscribing with since picks up what was missed.
    ack = assert_ok(await sub.subscribe(channel, since=5))
    assert [m["seq"] for m in ack["messages"]] == [6, 7, 8, 9, 10]


async def test_binary_data_round_trip(hub: InProcessHub, connect: Connect) -> None:
    channel = _channel("bin")
    sub = await connect(hub.url)
    assert_ok(await sub.subscribe(channel))
    pub = await connect(hub.url)
    blob = bytes(range(256)) * 4
    assert_ok(await pub.publish(channel, blob))
    assert_ok(await pub.publish(channel, {"nested": [1, 2.5, None, True, "é"]}))
    await sub.wait_for_seq(channel, 2)
    assert sub.received[channel][0]["data"] == blob
    assert sub.received[channel][1]["data"] == {"nested": [1, 2.5, None, True, "é"]}
    history = assert_ok(await sub.history(channel))
    assert history["messages"][0]["data"] == blob


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_replay_beyond_retention_is_not_recovered(
    rt_hub_inprocess_factory: Callable[..., InProcessHub],
    connect: Connect,
    tmp_path: Path,
    backend: str,
) -> None:
    """A since older than what the store retains is answered with
    recovered=false (the client has a gap) and the newest messages."""
    if backend == "sqlite":
        store = f"sqlite:///{tmp_path / 'retained.db'}?max_messages=10"
    else:
        store = "memory://?max_messages=10"
    hub = rt_hub_inprocess_factory(store=store)
    channel = _channel("retained")
    client = await connect(hub.url)
    await _publish_many(client, channel, 30, window=10)

    history = assert_ok(await client.history(channel))
    assert [m["seq"] for m in history["messages"]] == list(range(21, 31))

    ack = assert_ok(await client.subscribe(channel, since=5))
    assert ack["recovered"] is False
    assert [m["seq"] for m in ack["messages"]] == list(range(21, 31))
    assert ack["seq"] == 30
    # Within what is retained, recovery works.
    ack = assert_ok(await client.subscribe(channel, since=20))
    assert ack["recovered"] is True
    assert [m["seq"] for m in ack["messages"]] == list(range(21, 31))
    assert_ok(await client.publish(channel, "live"))
    await client.wait_for_seq(channel, 31)
    assert [e["seq"] for e in client.since_ack(channel)] == list(range(21, 32))
