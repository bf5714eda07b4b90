"""Engine.IO transport behaviour of the hub's websocket reader, on real sockets:
heartbeats, upgrades from long-polling, bad frames, and requests sent
back to back without waiting for their acks."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
import socketio

from rtkit.pytest_plugin import InProcessHub

from .conftest import Connect
from .helpers import ACK_TIMEOUT, NS, WAIT_TIMEOUT, Bystander, assert_ok, wait_until

PING_INTERVAL, PING_TIMEOUT = 1.0, 1.0
HEARTBEAT = ["--ping-interval", str(PING_INTERVAL), "--ping-timeout", str(PING_TIMEOUT)]


def _channel(prefix: str) -> str:
    return f"transport.{prefix}.{uuid.uuid4().hex[:8]}"


class RawWebsocket:
    """Engine.IO v4 spoken by hand over one websocket, so a test controls
    every frame (including the ones a well-behaved client always sends)."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse):
        self.session = session
        self.ws = ws

    @classmethod
    async def open(cls, url: str) -> RawWebsocket:
        session = aiohttp.ClientSession()
        ws_url = url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
        ws = await session.ws_connect(ws_url)
        opened = await ws.receive_str(timeout=ACK_TIMEOUT)
        assert opened.startswith("0"), opened
        await ws.send_str(f"40{NS},{{}}")
        while True:  # the namespace's CONNECT answer
            frame = await ws.receive_str(timeout=ACK_TIMEOUT)
            if frame.startswith(f"40{NS},"):
                break
        return cls(session, ws)

    async def closed_within(self, seconds: float) -> float:
        """Read (and ignore: no pong) until the hub closes; the time it took."""
        started = time.monotonic()
        deadline = started + seconds
        while True:
            msg = await self.ws.receive(timeout=max(0.01, deadline - time.monotonic()))
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                return time.monotonic() - started
            if msg.type is aiohttp.WSMsgType.ERROR:
                return time.monotonic() - started

    async def close(self) -> None:
        await self.ws.close()
        await self.session.close()


async def test_a_client_that_stops_answering_pings_is_dropped(
    rt_hub_inprocess_factory: Callable[..., InProcessHub],
) -> None:
    hub = rt_hub_inprocess_factory(extra_args=HEARTBEAT)
    raw = await RawWebsocket.open(hub.url)
    try:
        took = await raw.closed_within(4 * (PING_INTERVAL + PING_TIMEOUT))
    finally:
        await raw.close()
    # Engine.IO's deadline: a ping every interval, a pong due within the timeout.
    assert took < 2 * (PING_INTERVAL + PING_TIMEOUT) + 1.0, took
    assert hub.running


async def test_an_idle_client_that_answers_pings_stays(
    rt_hub_inprocess_factory: Callable[..., InProcessHub], connect: Connect
) -> None:
    hub = rt_hub_inprocess_factory(extra_args=HEARTBEAT)
    channel = _channel("idle")
    idle = await connect(hub.url)
    assert_ok(await idle.subscribe(channel))
    # Three heartbeat deadlines without a request; python-socketio answers pings.
    await asyncio.sleep(3 * (PING_INTERVAL + PING_TIMEOUT))
    assert idle.connected
    other = await connect(hub.url)
    assert_ok(await other.publish(channel, "still there?"))
    await idle.wait_for_seq(channel, 1)


async def test_upgrade_from_long_polling(shared_hub: InProcessHub) -> None:
    channel = _channel("upgrade")
    sio = socketio.AsyncClient(reconnection=False)
    received: asyncio.Queue[Any] = asyncio.Queue()
    sio.on("messages", lambda envs: received.put_nowait(envs), namespace=NS)
    await sio.connect(
        shared_hub.url, namespaces=[NS], transports=["polling", "websocket"], wait_timeout=10
    )
    try:
        await wait_until(lambda: sio.transport() == "websocket", "the upgrade to websocket")
        ack = await sio.call("subscribe", {"channel": channel}, namespace=NS, timeout=10)
        assert ack["ok"], ack
        ack = await sio.call("publish", {"channel": channel, "data": 1}, namespace=NS, timeout=10)
        assert ack["ok"] and ack["seq"] == 1, ack
        envs = await asyncio.wait_for(received.get(), WAIT_TIMEOUT)
        assert [e["seq"] for e in envs] == [1]
    finally:
        await sio.disconnect()


async def test_a_frame_that_is_not_engine_io_closes_only_that_connection(
    shared_hub: InProcessHub, connect: Connect
) -> None:
    async with Bystander(shared_hub.url) as bystander:
        for garbage in ("", "x", "9{}", "-1", json.dumps({"a": 1})):
            raw = await RawWebsocket.open(shared_hub.url)
            try:
                await raw.ws.send_str(garbage)
                await raw.closed_within(WAIT_TIMEOUT)
            finally:
                await raw.close()
            await bystander.round_trip()
    fresh = await connect(shared_hub.url)
    assert_ok(await fresh.publish(_channel("after"), "fine"))
    assert shared_hub.running


async def test_requests_sent_back_to_back_take_effect_in_order(
    shared_hub: InProcessHub,
) -> None:
    """A subscribe and then a publish sent without waiting for the first
    ack: the subscriber gets its own message (the publish must not overtake
    the subscribe), in every round."""
    for _ in range(20):
        channel = _channel("pipelined")
        sio = socketio.AsyncClient(reconnection=False)
        got: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        acks: list[dict[str, Any]] = []
        sio.on(
            "messages",
            lambda envs, got=got: got.done() or got.set_result(envs),
            namespace=NS,
        )
        await sio.connect(shared_hub.url, namespaces=[NS], transports=["websocket"])
        try:
            await sio.emit("subscribe", {"channel": channel}, namespace=NS, callback=acks.append)
            await sio.emit(
                "publish", {"channel": channel, "data": "mine"}, namespace=NS, callback=acks.append
            )
            envs = await asyncio.wait_for(got, WAIT_TIMEOUT)
            await wait_until(lambda acks=acks: len(acks) == 2, "both acks")
        finally:
            await sio.disconnect()
        assert [(e["seq"], e["data"]) for e in envs] == [(1, "mine")]
        assert [a["ok"] for a in acks] == [True, True] and "seq" in acks[1], acks
