"""The publish pump over a scripted hub (:mod:`fake_hub`): batches, the
first batch of a connection going alone, a hub without batches, pacing,
the bound on pending publishes, and withdrawing a publish not sent yet."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import AsyncIterator

import pytest
from fake_hub import WAIT, FakeHub

from rtkit.client import aio
from rtkit.client.channel import Prepared, prepare, prepare_many
from rtkit.errors import (
    BadRequest,
    ClientClosed,
    OfflineQueueFull,
    RateLimited,
    TooLarge,
    UnsupportedData,
)


@pytest.fixture
def hub() -> FakeHub:
    return FakeHub()


@pytest.fixture
async def client(hub: FakeHub) -> AsyncIterator[aio.Client]:
    client = aio.Client(
        "http://hub.test:8765",
        None,
        _transport=hub.transport,
        reconnect_delay=0.001,
        reconnect_delay_max=0.005,
        max_offline_queue=50,
        max_publish_rate=0,
    )
    await client.open()
    yield client
    await client.close()


async def test_what_queues_meanwhile_goes_as_one_batch_after_the_first_batch_is_acked(
    hub: FakeHub, client: aio.Client
) -> None:
    ch = client.channel("c")
    first = await ch.publish(0, wait=False)
    single = await hub.request("publish")  # a lone publish goes as a plain one
    assert single.payload == {"channel": "c", "data": 0, "id": single.payload["id"]}
    rest = [await ch.publish(i, wait=False) for i in range(1, 6)]
    await asyncio.sleep(0.01)
    # The first batch of a connection asks whether the hub takes batches:
    # it waits for what is in flight, and goes alone.
    hub.assert_quiet()
    single.ack(seq=1, ts=1.0)
    batch = await hub.request("publish")
    assert [m["data"] for m in batch.payload["messages"]] == [1, 2, 3, 4, 5]
    more = [await ch.publish(i, wait=False) for i in range(6, 9)]
    await asyncio.sleep(0.01)
    hub.assert_quiet()
    batch.ack(seqs=[2, 3, 4, 5, 6], ts=[1.0] * 5)
    second = await hub.request("publish")
    assert [m["data"] for m in second.payload["messages"]] == [6, 7, 8]
    error = {"code": "too_large", "message": "publish: payload is 300000 bytes"}
    second.ack(seqs=[7, None, 9], ts=[1.0, None, 1.0], errors=[None, error, None])
    async with asyncio.timeout(WAIT):
        assert await first == 1
        assert await asyncio.gather(*rest) == [2, 3, 4, 5, 6]
        assert await more[0] == 7 and await more[2] == 9
        with pytest.raises(TooLarge, match="300000 bytes"):
            await more[1]
    assert client.metrics.publish_requests == 3


async def test_a_hub_without_batches_gets_one_message_per_request_in_order(
    hub: FakeHub, client: aio.Client
) -> None:
    ch = client.channel("c")
    futures = [await ch.publish(i, wait=False) for i in range(4)]
    batch = await hub.request("publish")
    assert [m["data"] for m in batch.payload["messages"]] == [0, 1, 2, 3]
    batch.refuse("bad_request", "publish: unknown field(s) 'messages'")
    singles = [await hub.request("publish") for _ in range(4)]
    assert [r.payload["data"] for r in singles] == [0, 1, 2, 3]
    assert [r.payload["id"] for r in singles] == [m["id"] for m in batch.payload["messages"]]
    for seq, request in enumerate(singles, start=1):
        request.ack(seq=seq, ts=1.0)
    async with asyncio.timeout(WAIT):
        assert await asyncio.gather(*futures) == [1, 2, 3, 4]


async def test_a_refused_batch_fails_its_rows_and_says_how_to_avoid_it(
    hub: FakeHub, client: aio.Client
) -> None:
    ch = client.channel("c")
    futures = [await ch.publish(i, wait=False) for i in range(3)]
    batch = await hub.request("publish")
    batch.refuse("rate_limited", "over 1000 publishes/s")
    for future in futures:
        with pytest.raises(RateLimited, match="max_publish_rate"):
            await future
    with pytest.raises(RateLimited, match="3 publish"):
        await client.flush()
    await client.flush()  # reported once


async def test_publishing_waits_for_room_online_and_refuses_offline(hub: FakeHub) -> None:
    client = aio.Client(
        "http://hub.test:8765",
        None,
        _transport=hub.transport,
        reconnect_delay=0.001,
        reconnect_delay_max=0.005,
        max_offline_queue=2,
        max_publish_rate=0,
    )
    await client.open()
    try:
        ch = client.channel("c")
        one = await ch.publish(1, wait=False)
        two = await ch.publish(2, wait=False)
        third = asyncio.ensure_future(ch.publish(3, wait=False))
        first = await hub.request("publish")
        await asyncio.sleep(0.01)
        assert not third.done()  # two pending: the third waits for room
        first.ack(seqs=[1, 2], ts=[1.0, 1.0])
        async with asyncio.timeout(WAIT):
            assert [await one, await two] == [1, 2]
            three = await third
        hub.drop(reachable=False)
        await hub.until(lambda: not client.connected)
        four = await ch.publish(4, wait=False)  # offline: queued while there is room
        with pytest.raises(OfflineQueueFull):
            await ch.publish(5, wait=False)
        assert not three.done() and not four.done()
    finally:
        await client.close()


async def test_a_concurrent_future_cancelled_before_it_is_sent_is_withdrawn(
    hub: FakeHub, client: aio.Client
) -> None:
    ch = client.channel("c")
    publisher = client.publisher
    hub.drop(reachable=False)
    await hub.until(lambda: not client.connected)
    prepared = [_prepare("c", i) for i in range(3)]
    futures = await asyncio.to_thread(lambda: [publisher.submit(p) for p in prepared])
    assert all(isinstance(f, concurrent.futures.Future) for f in futures)
    assert futures[1].cancel()
    hub.reachable = True
    await hub.reconnected(2)
    batch = await hub.request("publish")
    assert [m["data"] for m in batch.payload["messages"]] == [0, 2]
    assert not futures[0].cancel()  # sent: no longer withdrawn
    batch.ack(seqs=[1, 2], ts=[1.0, 1.0])
    assert await asyncio.wrap_future(futures[2]) == 2
    assert ch.name == "c"


def _prepare(channel: str, data: object) -> Prepared:
    return prepare(channel, data, None)


async def test_a_bad_batch_item_error_is_not_taken_for_a_hub_without_batches(
    hub: FakeHub, client: aio.Client
) -> None:
    ch = client.channel("c")
    futures = [await ch.publish(i, wait=False) for i in range(2)]
    batch = await hub.request("publish")
    batch.refuse("bad_request", "publish: 'data' must be a JSON value")
    for future in futures:
        with pytest.raises(BadRequest):
            await future


async def test_publish_many_sends_its_messages_in_order_with_one_future_for_all(
    hub: FakeHub, client: aio.Client
) -> None:
    publisher = client.publisher
    prepared = prepare_many([("c", i, None) for i in range(4)] + [("c", 4, "my-id")])
    assert all(isinstance(p, Prepared) for p in prepared)
    first = await publisher.publish_many([p for p in prepared if isinstance(p, Prepared)])
    request = await hub.request("publish")  # the first batch of the connection: alone
    messages = request.payload["messages"]
    assert [m["data"] for m in messages] == [0, 1, 2, 3, 4]
    assert messages[4]["id"] == "my-id"
    assert len({m["id"] for m in messages}) == 5  # ids made for the others, all different
    error = {"code": "too_large", "message": "publish: payload is 300000 bytes"}
    request.ack(seqs=[1, 2, None, 3, 4], ts=[1.0, 1.0, None, 1.0, 1.0], errors=[None, None, error])
    async with asyncio.timeout(WAIT):
        results = await first
    assert results[:2] == [1, 2] and results[3:] == [3, 4]
    assert isinstance(results[2], TooLarge)
    assert client.metrics.published == 4 and client.metrics.publish_failures == 1


async def test_publish_many_refuses_bad_items_one_by_one_and_more_than_the_queue_holds(
    client: aio.Client,
) -> None:
    results = prepare_many([("c", 1, None), ("bad name", 2, None), ("c", object(), None)])
    assert isinstance(results[0], Prepared)
    assert isinstance(results[1], BadRequest) and "channel" in str(results[1])
    assert isinstance(results[2], UnsupportedData)
    with pytest.raises(ValueError, match="1 to 50"):
        await client.publisher.publish_many([_prepare("c", i) for i in range(51)])


async def test_publish_many_offline_queues_all_or_none_and_fails_all_when_closed(
    hub: FakeHub, client: aio.Client
) -> None:
    publisher = client.publisher
    hub.drop(reachable=False)
    await hub.until(lambda: not client.connected)
    queued = await publisher.publish_many([_prepare("c", i) for i in range(30)])
    with pytest.raises(OfflineQueueFull):  # 30 + 30 > 50: none of these is queued
        await publisher.publish_many([_prepare("c", i) for i in range(30)])
    assert len(publisher) == 30
    await client.close()
    async with asyncio.timeout(WAIT):
        results = await queued
    assert len(results) == 30 and all(isinstance(r, ClientClosed) for r in results)
