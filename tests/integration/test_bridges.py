"""Bridges against real brokers: Mosquitto, NATS with JetStream, Redis.

Each test starts its own broker on a free port (tests/integration/brokers.py),
so a broker can be restarted mid-stream and nothing depends on the machine's
services (Redis aside: the suite's own, as for the Redis store tests).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

import rtkit.aio
from rtkit._process import kill_group, stop_group
from rtkit.bridges import Bridge, Position, SourceMessage, TopicMap
from rtkit.client._backoff import Backoff
from rtkit.pytest_plugin import REDIS_URL, InProcessHub

from .brokers import mosquitto, nats_server
from .helpers import bridge_process, history, wait_count

aiomqtt = pytest.importorskip("aiomqtt")
nats = pytest.importorskip("nats")


async def wait_for(condition: Callable[[], Any], within: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {within} s: {what or condition}")
        await asyncio.sleep(0.02)


async def fill_stream(nc: Any, stream: str, count: int, subject: Callable[[int], str]) -> Any:
    """A JetStream stream ``stream`` over ``<stream in lower case>.>`` holding
    the messages 0 to count - 1 (message i on ``subject(i)``); its context."""
    js = nc.jetstream()
    await js.add_stream(name=stream, subjects=[f"{stream.lower()}.>"])
    for i in range(count):
        await nc.publish(subject(i), orjson.dumps(i))
    await nc.flush()
    return js


async def keep_even(channel: str, data: Any, msg: SourceMessage) -> Any:
    """A transform: odd readings are dropped, even ones tagged."""
    return {**data, "topic": msg.topic} if data["i"] % 2 == 0 else None


async def test_mqtt_in_order_through_a_transform_and_across_a_broker_restart(
    rt_hub_inprocess: InProcessHub,
) -> None:
    from rtkit.bridges.mqtt import MqttSource

    broker = mosquitto().start()
    try:
        async with rtkit.aio.Client(rt_hub_inprocess.url) as hub:
            topics = TopicMap([("sensors/+/temp", "sensors.{1}.temp")], flavor="mqtt")
            source = MqttSource("127.0.0.1", broker.port, topics=topics, qos=1)
            bridge = Bridge(source, client=hub, transform=keep_even)
            task = asyncio.create_task(bridge.run())

            async def publish(numbers: range) -> None:
                async with aiomqtt.Client("127.0.0.1", broker.port) as pub:
                    await pub.publish("other/thing", b"ignored", qos=1)
                    for i in numbers:
                        await pub.publish("sensors/kitchen/temp", orjson.dumps({"i": i}), qos=1)

            await wait_for(lambda: bridge.state.connected, what="bridge subscribed")
            await publish(range(200))
            await wait_count(hub, "sensors.kitchen.temp", 100)
            broker.restart()
            await wait_for(
                lambda: bridge.state.connected and bridge.state.reconnects >= 1,
                what="bridge back on the restarted broker",
            )
            await publish(range(200, 400))
            await wait_count(hub, "sensors.kitchen.temp", 200)
            bridge.stop()
            await asyncio.wait_for(task, 10)
            assert await history(hub, "sensors.kitchen.temp") == [
                {"i": i, "topic": "sensors/kitchen/temp"} for i in range(0, 400, 2)
            ]
            state = bridge.state
            assert state.published == 200
            assert state.received == 400  # not other/thing: only mapped topics are subscribed
            assert state.dropped == 200  # the odd readings
            assert state.gaps == 1  # the restart: a window nobody can account for
            assert state.errors >= 1 and state.last_error
            assert state.last_position is None  # MQTT has no positions
    finally:
        broker.stop()


async def test_jetstream_bridge_stopped_acks_everything_the_hub_has(
    rt_hub_inprocess: InProcessHub, tmp_path: Path
) -> None:
    """Stopping commits on the source's own connection before closing it:
    the consumer's ack floor reaches the last message the hub acked."""
    from rtkit.bridges.nats import JetStreamSource

    broker = nats_server(tmp_path).start()
    url = f"nats://127.0.0.1:{broker.port}"
    nc = await nats.connect(url)
    try:
        js = await fill_stream(nc, "STOPS", 3000, lambda i: "stops.x")
        async with rtkit.aio.Client(rt_hub_inprocess.url) as hub:
            topics = TopicMap([("stops.>", "stops")], flavor="nats")
            source = JetStreamSource(url, stream="STOPS", durable="d", topics=topics)
            bridge = Bridge(source, client=hub)
            task = asyncio.create_task(bridge.run())
            await wait_for(lambda: bridge.state.published == 3000, what="the hub acked all")
            bridge.stop()
            await asyncio.wait_for(task, 10)
        info = await js.consumer_info("STOPS", "d")
        assert info.ack_floor.stream_seq == 3000
        assert bridge.state.errors == 0, bridge.state.last_error
    finally:
        await nc.close()
        broker.stop()


async def test_nats_core_across_a_broker_restart(
    rt_hub_inprocess: InProcessHub, tmp_path: Path
) -> None:
    from rtkit.bridges.nats import NatsSource

    broker = nats_server(tmp_path).start()
    url = f"nats://127.0.0.1:{broker.port}"
    try:
        async with rtkit.aio.Client(rt_hub_inprocess.url) as hub:
            topics = TopicMap([("plant.*.power", "power.{1}")], flavor="nats")
            bridge = Bridge(NatsSource(url, topics=topics), client=hub)
            task = asyncio.create_task(bridge.run())
            await wait_for(lambda: bridge.state.connected, what="bridge subscribed")

            async def publish(numbers: range) -> None:
                nc = await nats.connect(url)
                for i in numbers:
                    await nc.publish("plant.a.power", orjson.dumps(i))
                await nc.flush()
                await nc.close()

            await publish(range(300))
            await wait_count(hub, "power.a", 300)
            broker.restart()
            await wait_for(
                lambda: bridge.state.connected and bridge.state.reconnects >= 1,
                what="bridge back on the restarted server",
            )
            await publish(range(300, 600))
            await wait_count(hub, "power.a", 600)
            bridge.stop()
            await asyncio.wait_for(task, 10)
            assert await history(hub, "power.a") == list(range(600))
            assert bridge.state.gaps >= 1
    finally:
        broker.stop()


@pytest.mark.slow
async def test_jetstream_bridge_killed_mid_stream_and_broker_restarted_delivers_each_once(
    rt_hub_inprocess: InProcessHub, tmp_path: Path
) -> None:
    broker = nats_server(tmp_path / "js").start()
    url = f"nats://127.0.0.1:{broker.port}"
    nc = await nats.connect(url)
    proc = None
    try:
        js = nc.jetstream()
        await js.add_stream(name="READINGS", subjects=["readings.>"])

        async def publish(numbers: range) -> None:
            for i in numbers:
                await nc.publish(f"readings.m{i % 3}", orjson.dumps({"i": i}))
            await nc.flush()

        await publish(range(3000))
        args = ["nats", "--server", url, "--stream", "READINGS", "--durable", "to-hub"]
        args += ["--map", "readings.*=readings"]
        log = tmp_path / "bridge.log"
        async with rtkit.aio.Client(rt_hub_inprocess.url) as hub:
            proc = bridge_process(args, rt_hub_inprocess.url, log)
            await wait_count(hub, "readings", 500)
            kill_group(proc)  # kill -9 mid-stream: acks and publishes in flight are lost
            await publish(range(3000, 5000))
            proc = bridge_process(args, rt_hub_inprocess.url, log)
            await wait_count(hub, "readings", 5000)
            # The server restarts (its store on disk) under the running bridge.
            await asyncio.to_thread(broker.restart)
            await publish(range(5000, 6000))  # nats-py reconnects and sends
            await wait_count(hub, "readings", 6000)

            async def all_acked() -> bool:
                info = await js.consumer_info("READINGS", "to-hub")
                return bool(info.ack_floor.stream_seq == 6000)

            deadline = time.monotonic() + 20
            while not await all_acked():
                assert time.monotonic() < deadline, log.read_text()
                await asyncio.sleep(0.1)
            assert await history(hub, "readings") == [{"i": i} for i in range(6000)]
    finally:
        if proc is not None:
            stop_group(proc, timeout=5)
        await nc.close()
        broker.stop()


@pytest.mark.slow
async def test_redis_stream_bridge_killed_mid_stream_delivers_each_entry_once(
    rt_hub_inprocess: InProcessHub, rt_redis_prefix: str, tmp_path: Path
) -> None:
    import redis.asyncio as aioredis

    stream = f"{rt_redis_prefix}meter"
    r = aioredis.Redis.from_url(REDIS_URL)
    proc = None

    async def add(numbers: range) -> None:
        async with r.pipeline(transaction=False) as pipe:
            for i in numbers:
                pipe.xadd(stream, {"data": orjson.dumps({"i": i})})
            await pipe.execute()

    try:
        await add(range(3000))
        state = tmp_path / "bridge-state.json"
        args = ["redis-stream", "--redis", REDIS_URL, "--state", str(state), "--start", "0"]
        args += ["--map", f"{stream}=meter"]
        log = tmp_path / "bridge.log"
        async with rtkit.aio.Client(rt_hub_inprocess.url) as hub:
            proc = bridge_process(args, rt_hub_inprocess.url, log)
            await wait_count(hub, "meter", 500)
            kill_group(proc)
            await add(range(3000, 5000))
            proc = bridge_process(args, rt_hub_inprocess.url, log)
            await wait_count(hub, "meter", 5000)
            last_id = (await r.xinfo_stream(stream))["last-generated-id"].decode()
            await wait_for(
                lambda: (
                    state.exists()
                    and orjson.loads(state.read_bytes())["positions"].get(stream) == last_id
                ),
                what="the state file records the last entry",
            )
            assert await history(hub, "meter") == [{"i": i} for i in range(5000)]
    finally:
        if proc is not None:
            stop_group(proc, timeout=5)
        await r.aclose()


@pytest.mark.slow
async def test_hub_killed_and_restarted_the_bridge_queues_and_resumes(
    rt_hub_factory: Any, tmp_path: Path
) -> None:
    from rtkit.bridges.nats import NatsSource

    hub_proc = rt_hub_factory(store=f"sqlite:///{tmp_path}/hub.db")
    broker = nats_server(tmp_path / "nats").start()
    url = f"nats://127.0.0.1:{broker.port}"
    nc = await nats.connect(url)
    # A small offline queue: while the hub is away the bridge stops reading
    # (NATS buffers for it) instead of failing or growing without bound.
    hub = await rtkit.aio.connect(
        hub_proc.url, reconnect_delay=0.05, reconnect_delay_max=0.3, max_offline_queue=100
    )
    topics = TopicMap([("feed", "feed")], flavor="nats")
    bridge = Bridge(NatsSource(url, topics=topics), client=hub)
    task = asyncio.create_task(bridge.run())
    try:
        await wait_for(lambda: bridge.state.connected, what="bridge subscribed")

        async def publish(numbers: range) -> None:
            for i in numbers:
                await nc.publish("feed", orjson.dumps(i))
            await nc.flush()

        await publish(range(300))
        await wait_count(hub, "feed", 100)
        await asyncio.to_thread(hub_proc.kill)  # kill -9, publishes in flight
        await wait_for(lambda: not bridge.state.hub_connected, what="hub seen gone")
        await publish(range(300, 800))
        await wait_for(lambda: bridge.state.pending >= 100, what="the bridge queueing")
        await asyncio.to_thread(hub_proc.start)
        await wait_count(hub, "feed", 800)
        assert await history(hub, "feed") == list(range(800))
        assert bridge.state.hub_connected
    finally:
        bridge.stop()
        await asyncio.wait_for(task, 10)
        await hub.close()
        await nc.close()
        broker.stop()


async def test_mqtt_messages_lost_to_a_slow_bridge_are_counted(
    rt_hub_inprocess: InProcessHub,
) -> None:
    from rtkit.bridges.mqtt import MqttSource

    broker = mosquitto().start()
    release = asyncio.Event()

    async def slow(channel: str, data: Any, msg: SourceMessage) -> Any:
        await release.wait()  # the bridge stalls; aiomqtt's bounded queue fills
        return data

    try:
        async with rtkit.aio.Client(rt_hub_inprocess.url) as hub:
            topics = TopicMap([("slow/x", "slow")], flavor="mqtt")
            source = MqttSource("127.0.0.1", broker.port, topics=topics, max_queued=10)
            bridge = Bridge(source, client=hub, transform=slow)
            task = asyncio.create_task(bridge.run())
            try:
                await wait_for(lambda: bridge.state.connected, what="bridge subscribed")
                async with aiomqtt.Client("127.0.0.1", broker.port) as pub:
                    for i in range(100):
                        await pub.publish("slow/x", orjson.dumps(i), qos=1)
                await wait_for(lambda: bridge.state.gaps > 0, what="drops counted")
                release.set()
                await wait_for(lambda: bridge.state.received + bridge.state.gaps == 100)
                await wait_count(hub, "slow", bridge.state.received)
                got = await history(hub, "slow")
                assert got == sorted(got) and len(got) == bridge.state.received < 100
            finally:
                bridge.stop()
                await asyncio.wait_for(task, 10)
    finally:
        broker.stop()


async def test_jetstream_messages_go_to_the_hub_in_batches(
    rt_hub_inprocess: InProcessHub, tmp_path: Path
) -> None:
    from rtkit.bridges.nats import JetStreamSource

    broker = nats_server(tmp_path).start()
    url = f"nats://127.0.0.1:{broker.port}"
    nc = await nats.connect(url)
    try:
        await fill_stream(nc, "BATCHED", 5000, lambda i: f"batched.s{i % 2}")
        async with rtkit.aio.Client(rt_hub_inprocess.url) as hub:
            topics = TopicMap([("batched.*", "batched.{1}")], flavor="nats")
            source = JetStreamSource(url, stream="BATCHED", durable="b", topics=topics)
            bridge = Bridge(source, client=hub)
            task = asyncio.create_task(bridge.run())
            try:
                await wait_count(hub, "batched.s0", 2500)
                await wait_count(hub, "batched.s1", 2500)
                await wait_for(lambda: bridge.state.last_position == "BATCHED:5000")
            finally:
                bridge.stop()
                await asyncio.wait_for(task, 10)
            assert await history(hub, "batched.s0") == list(range(0, 5000, 2))
            assert await history(hub, "batched.s1") == list(range(1, 5000, 2))
            assert bridge.state.published == 5000 and bridge.state.pending == 0
            # Two channels, one request per fetch of up to 500: not one per message.
            assert hub.metrics.publish_requests <= 5000 // 100
    finally:
        await nc.close()
        broker.stop()


async def test_batches_the_hub_refuses_for_now_are_read_again_not_lost(
    rt_hub_inprocess_factory: Any, tmp_path: Path
) -> None:
    """A batch the hub refuses for now (here rate_limited: a hub allowing four
    publish requests a second) is neither committed nor lost: the bridge
    reads the source again from its last committed position, and what the
    hub already stored comes back as duplicates. Before, its positions were
    committed all the same and its messages never arrived (and a consumer
    remade before its first ack started again at the stream's beginning)."""
    from rtkit.bridges.nats import JetStreamSource

    hub_process = rt_hub_inprocess_factory(
        extra_args=["--publish-rate", "4", "--publish-burst", "4"]
    )
    broker = nats_server(tmp_path).start()
    url = f"nats://127.0.0.1:{broker.port}"
    nc = await nats.connect(url)
    try:
        await fill_stream(nc, "REFUSED", 1000, lambda i: "refused.all")
        async with rtkit.aio.Client(hub_process.url) as hub:
            topics = TopicMap([("refused.*", "refused.{1}")], flavor="nats")
            source = JetStreamSource(url, stream="REFUSED", durable="r", topics=topics)
            bridge = Bridge(source, client=hub, batch=200, backoff=Backoff(0.2, 2.0))
            task = asyncio.create_task(bridge.run())
            try:
                await wait_for(
                    lambda: bridge.state.last_position == "REFUSED:1000", 60, "every position"
                )
            finally:
                bridge.stop()
                await asyncio.wait_for(task, 10)
            # Each once. (Batches behind a refused one may be stored before
            # it is again: that stretch can come out of order.)
            stored = await history(hub, "refused.all")
            assert sorted(stored) == list(range(1000)), "lost or doubled"
            # It was refused, and read again.
            assert bridge.state.errors > 0 and bridge.state.reconnects > 0
    finally:
        await nc.close()
        broker.stop()


class _CountingSource:
    """A source with only ``messages()`` (no batches) and positions."""

    kind = "counting"

    def __init__(self, count: int) -> None:
        self.topics = TopicMap([("counter", "counter")], flavor="plain")
        self.count = count
        self.committed: list[int] = []
        self.checkpointed: int | None = None

    async def messages(self, state: Any) -> Any:
        state.connected = True
        for i in range(self.count):
            yield SourceMessage(
                "counter", i, Position("c", str(i)), lambda i=i: self.committed.append(i)
            )
        await asyncio.Event().wait()  # a live source: nothing more for now

    async def checkpoint(self) -> str | None:
        if self.committed:
            self.checkpointed = self.committed[-1]
        return None if self.checkpointed is None else str(self.checkpointed)


async def test_a_source_without_batches_is_bridged_message_by_message_and_committed_in_order(
    rt_hub_inprocess: InProcessHub,
) -> None:
    source = _CountingSource(300)
    async with rtkit.aio.Client(rt_hub_inprocess.url) as hub:
        bridge = Bridge(source, client=hub)
        task = asyncio.create_task(bridge.run())
        try:
            await wait_for(lambda: bridge.state.last_position == "299", what="all committed")
        finally:
            bridge.stop()
            await asyncio.wait_for(task, 10)
        assert source.committed == list(range(300))
        assert await history(hub, "counter") == list(range(300))
        # Publishing the same positions again stores nothing twice (ids from positions).
        again = Bridge(_CountingSource(300), client=hub)
        task = asyncio.create_task(again.run())
        try:
            await wait_for(lambda: again.state.published == 300, what="republished")
        finally:
            again.stop()
            await asyncio.wait_for(task, 10)
        assert await history(hub, "counter") == list(range(300))


class _FailingSource:
    """Yields 100 messages and fails; the next connection yields 100 more."""

    kind = "failing"

    def __init__(self) -> None:
        self.topics = TopicMap([("feed", "feed")], flavor="plain")
        self.connections = 0

    async def messages(self, state: Any) -> Any:
        first = 100 * self.connections
        self.connections += 1
        state.connected = True
        for i in range(first, first + 100):
            yield SourceMessage("feed", i)
        if self.connections == 1:
            raise ConnectionError("the feed went away")
        await asyncio.Event().wait()

    async def checkpoint(self) -> str | None:
        return None


async def test_what_a_source_read_before_it_failed_is_published_before_it_reconnects(
    rt_hub_inprocess: InProcessHub,
) -> None:
    from rtkit.client._backoff import Backoff

    source = _FailingSource()
    async with rtkit.aio.Client(rt_hub_inprocess.url) as hub:
        bridge = Bridge(source, client=hub, backoff=Backoff(0.01, 0.05))
        task = asyncio.create_task(bridge.run())
        try:
            await wait_count(hub, "feed", 200)
        finally:
            bridge.stop()
            await asyncio.wait_for(task, 10)
        assert await history(hub, "feed") == list(range(200))
        assert bridge.state.reconnects == 1
        assert bridge.state.last_error == "ConnectionError: the feed went away"
