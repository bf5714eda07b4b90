"""Thousands of requests at once on one hub with the Redis store:
subscribes, history reads, presence joins and publishes.

redis-py's asyncio pool raises ``MaxConnectionsError`` past its connection
limit instead of waiting, so a hub whose subscribers arrived together
answered the 101st concurrent request with ``internal``.
"""

from __future__ import annotations

import asyncio
import traceback
from typing import Any

import pytest
import redis.asyncio as aioredis

from rtkit.pytest_plugin import REDIS_URL
from tests.integration.helpers import RawClient, assert_ok

pytestmark = pytest.mark.timeout(120)

CLIENTS = 100
CHANNELS = 20  # per client: 2,000 subscriptions in flight at once
PUBLISHES = 10  # per client, in the same burst


async def test_two_thousand_subscriptions_at_once(
    rt_hub_factory: Any, rt_redis_prefix: str
) -> None:
    hub = rt_hub_factory(store=f"{REDIS_URL}?prefix={rt_redis_prefix}")
    channels = [f"many.{n}" for n in range(CHANNELS)]
    clients = [RawClient(hub.url, name=f"sub{i}") for i in range(CLIENTS)]
    publisher = RawClient(hub.url, name="publisher")
    try:
        await asyncio.gather(publisher.connect(), *(c.connect() for c in clients))
        # The channels have history, so each subscribe reads from Redis.
        for channel in channels:
            assert_ok(await publisher.publish(channel, {"first": channel}))
        acks = await asyncio.gather(
            *(c.subscribe(channel, since=0) for c in clients for channel in channels),
            # and history reads and presence joins in the same burst
            *(c.history(channels[i % CHANNELS]) for i, c in enumerate(clients)),
            *(c.call("presence.join", {"room": "many", "state": {}}) for c in clients),
            # and 1,000 publishes to one channel
            *(c.publish("burst", {"n": n}) for c in clients for n in range(PUBLISHES)),
        )
        refused = [ack for ack in acks if not ack.get("ok")]
        assert not refused, f"{len(refused)} of {len(acks)} requests refused: {refused[:3]}"
        burst = sorted(ack["seq"] for ack in acks[-CLIENTS * PUBLISHES :])
        assert burst == list(range(1, CLIENTS * PUBLISHES + 1)), "each publish numbered once"

        # Every subscription is live: one more message on each channel
        # reaches every client, after the one each got as its backlog.
        for channel in channels:
            seq = assert_ok(await publisher.publish(channel, {"second": channel}))["seq"]
            for client in clients:
                await client.wait_for_seq(channel, seq)
        for client in clients:
            for channel in channels:
                assert client.seqs(channel) == [1, 2], (client.name, channel)
    finally:
        await asyncio.gather(publisher.close(), *(c.close() for c in clients))
    assert not [line for line in hub.log if "Traceback" in line or "Too many" in line]


async def test_a_failed_script_call_answers_each_publish_with_unavailable_and_one_clear_log(
    rt_hub_inprocess_factory: Any, rt_redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A counter Redis cannot increment: the append script fails for every
    # message of a call, and the call's one error reaches each of them.
    admin = aioredis.Redis.from_url(REDIS_URL)
    await admin.set(f"{rt_redis_prefix}{{broken}}:seq", "not a number")
    await admin.aclose()
    hub = rt_hub_inprocess_factory(store=f"{REDIS_URL}?prefix={rt_redis_prefix}")
    publisher = RawClient(hub.url, name="publisher")
    await publisher.connect()
    try:
        acks = await asyncio.gather(*(publisher.publish("broken", {"n": n}) for n in range(50)))
    finally:
        await publisher.close()
    assert {(a["ok"], a["error"]["code"]) for a in acks} == {(False, "unavailable")}
    assert all("not an integer" in a["error"]["message"] for a in acks), acks[0]
    failures = [r for r in caplog.records if r.getMessage() == "store append failed"]
    assert len(failures) == 50
    # One traceback each, as long as the first: re-raising the shared error
    # once per publish made the 50th carry 49 extra frames.
    depths = [len(traceback.extract_tb(r.exc_info[2])) for r in failures if r.exc_info]
    assert len(depths) == 50 and len(set(depths)) == 1, depths
