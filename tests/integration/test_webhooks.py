"""Lifecycle webhooks against a real HTTP receiver on a loopback port.

The receiver (aiohttp.web, in the test) checks every POST's signature with
its own HMAC code, records the events and can be stopped and started again
on the same port, answer 503, or never answer. The hubs are real: the
aiohttp host on a loopback socket, driven by stock Socket.IO clients, with
``rtkit hub`` itself for the command line's options.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web

from rtkit.config import HubConfig, Webhooks
from rtkit.errors import Forbidden
from rtkit.hosts import aiohttp as aiohttp_host
from rtkit.hub import Hub
from rtkit.hub.webhooks import verify
from rtkit.pytest_plugin import REDIS_URL, HubProcess, free_port

from .conftest import SECRET, Connect, token
from .helpers import RawClient
from .test_http_api import Checked

WEBHOOK_SECRET = "webhook-secret-0123456789"
WAIT = 15.0


class Receiver:
    """An HTTP endpoint that takes webhook batches on a fixed loopback port.

    ``mode``: ``ok`` answers 204, ``unavailable`` 503, ``hang`` never answers.
    """

    def __init__(self, port: int | None = None, *, mode: str = "ok") -> None:
        self.port = port or free_port()
        self.mode = mode
        self.events: list[dict[str, Any]] = []
        self.bodies: list[dict[str, Any]] = []
        self.bad_signatures = 0
        self.requests = 0
        self._changed = asyncio.Event()
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/rtkit"

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hooks/rtkit", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()
        return self

    async def stop(self) -> None:
        self._release.set()  # a hanging handler returns, so shutdown need not wait
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._release = asyncio.Event()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        if self.mode == "hang":
            await self._release.wait()
            return web.Response(status=503)
        if self.mode == "unavailable":
            return web.Response(status=503)
        body = await request.read()
        timestamp = request.headers["X-Rtkit-Timestamp"]
        # The receiver's own check, as docs/operations.md shows it.
        expected = hmac.new(
            WEBHOOK_SECRET.encode(), timestamp.encode() + b"." + body, hashlib.sha256
        ).hexdigest()
        signature = request.headers.get("X-Rtkit-Signature", "")
        if not hmac.compare_digest(f"sha256={expected}", signature):
            self.bad_signatures += 1
            return web.Response(status=401)
        assert abs(time.time() - int(timestamp)) < 60
        assert verify(WEBHOOK_SECRET, timestamp, body, signature)
        assert not verify(WEBHOOK_SECRET, timestamp, body + b" ", signature)
        batch = orjson.loads(body)
        self.bodies.append(batch)
        self.events.extend(batch["events"])
        self._changed.set()
        return web.Response(status=204)

    async def wait_for(self, count: int, within: float = WAIT) -> list[dict[str, Any]]:
        """The events received once there are at least ``count``."""
        deadline = time.monotonic() + within
        while len(self.events) < count:
            self._changed.clear()
            left = deadline - time.monotonic()
            try:
                await asyncio.wait_for(self._changed.wait(), max(left, 0.0))
            except TimeoutError:
                raise AssertionError(
                    f"{len(self.events)} of {count} webhook events arrived within {within}s: "
                    f"{[e['type'] for e in self.events]}"
                ) from None
        return self.events


def webhooks(url: str, **options: Any) -> Webhooks:
    options.setdefault("batch_delay", 0.02)
    options.setdefault("retry_initial", 0.05)
    options.setdefault("retry_max", 0.2)
    options.setdefault("timeout", 5.0)
    return Webhooks(url, secret=WEBHOOK_SECRET, **options)


@asynccontextmanager
async def hub_with(
    hooks: Webhooks | None, store: str = "memory://", secret: str | None = None
) -> AsyncIterator[tuple[Hub, str]]:
    """A hub on the aiohttp host, on a loopback port, in this event loop
    (anonymous, unless given a token secret)."""
    config = HubConfig(allow_anonymous=secret is None, secret=secret, webhooks=hooks, store=store)
    hub = Hub(config, async_mode="aiohttp")
    runner = web.AppRunner(aiohttp_host.create_app(hub), handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield hub, f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def until(check: Callable[[], Awaitable[bool]], what: str, within: float = WAIT) -> None:
    """Wait for a condition on the hub's status (it has no event to await)."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within}s: {what}")
        await asyncio.sleep(0.02)


def numbers(events: list[dict[str, Any]]) -> list[int]:
    """The counters of the event ids (``<hub id>-<n>``)."""
    return [int(e["id"].rsplit("-", 1)[1]) for e in events]


async def cycle(client: RawClient, channel: str) -> None:
    """One channel.occupied and one channel.vacated."""
    assert (await client.subscribe(channel))["ok"]
    assert (await client.unsubscribe(channel))["ok"]


async def test_events_arrive_signed_in_order_each_once(connect: Connect) -> None:
    receiver = await Receiver().start()
    try:
        async with hub_with(webhooks(receiver.url)) as (hub, url):
            ann = await connect(url, auth={"user": "ann"})
            bob = await connect(url, auth={"user": "bob"})
            assert (await ann.subscribe("wh.prices"))["ok"]
            assert (await bob.subscribe("wh.prices"))["ok"]  # occupied already: no event
            assert (await ann.subscribe("wh.prices"))["ok"]  # a resubscribe: no event
            assert (await ann.unsubscribe("wh.prices"))["ok"]  # bob is still there
            assert (await bob.unsubscribe("wh.prices"))["ok"]
            joined = await ann.call("presence.join", {"room": "wh.room", "state": {}})
            assert joined["ok"], joined
            assert (await bob.call("presence.join", {"room": "wh.room"}))["ok"]
            assert (await ann.call("presence.leave", {"room": "wh.room"}))["ok"]
            for _ in range(3):
                await cycle(ann, "wh.news")
            assert (await bob.subscribe("wh.quiet"))["ok"]
            await bob.close()  # leaves wh.quiet and the room, then closes
            events = await receiver.wait_for(15)
            summary = [
                (e["type"], e.get("channel") or e.get("room") or e.get("reason")) for e in events
            ]
            assert summary == [
                ("channel.occupied", "wh.prices"),
                ("channel.vacated", "wh.prices"),
                ("presence.join", "wh.room"),
                ("presence.join", "wh.room"),
                ("presence.leave", "wh.room"),
                *[("channel.occupied", "wh.news"), ("channel.vacated", "wh.news")] * 3,
                ("channel.occupied", "wh.quiet"),
                ("channel.vacated", "wh.quiet"),
                ("presence.leave", "wh.room"),
                ("connection.closed", events[-1]["reason"]),
            ]
            # The client said goodbye, or its socket closed first.
            assert events[-1]["reason"] in {"client_disconnect", "transport_close"}
            assert len(events) == 15  # nothing after the expected ones arrived either
            assert numbers(events) == list(range(1, 16))
            times = [e["time"] for e in events]
            assert times == sorted(times) and abs(times[-1] - time.time()) < 30
            assert events[2]["member"]["user"] == joined["member"]["user"] == "ann"
            assert events[3]["member"]["user"] == events[13]["member"]["user"] == "bob"
            closed = events[-1]
            assert closed["sid"] and closed["duration"] > 0 and closed["user"]
            assert receiver.bad_signatures == 0
            assert {b["hub"] for b in receiver.bodies} == {hub.webhooks.hub_id}  # type: ignore[union-attr]
            status = (await hub.status())["webhooks"]
            assert status["sent"] == 15 and status["batches"] == len(receiver.bodies)
            assert status["dropped"] == status["failed_attempts"] == status["queued"] == 0
            assert WEBHOOK_SECRET not in orjson.dumps(status).decode()
            await ann.close()
            await receiver.wait_for(16)
        # Stopping the hub sent the last event before it returned.
        assert receiver.events[-1]["type"] == "connection.closed"
    finally:
        await receiver.stop()


async def test_a_receiver_that_was_down_gets_every_event_once(connect: Connect) -> None:
    receiver = Receiver()  # not started: nothing listens on its port yet
    async with hub_with(webhooks(receiver.url)) as (hub, url):
        client = await connect(url)
        for n in range(10):
            await cycle(client, f"wh.down.{n % 3}")

        async def failing() -> bool:
            return (await hub.status())["webhooks"]["failed_attempts"] >= 3

        await until(failing, "the sender retried while the receiver was down")
        status = (await hub.status())["webhooks"]
        assert status["sent"] == 0 and status["queued"] + status["in_flight"] == 20
        assert "ClientConnectorError" in status["last_error"]
        await receiver.start()  # the same port, as a restarted receiver would
        try:
            for n in range(5):  # events queued after it came back
                await cycle(client, f"wh.down.{n % 3}")
            events = await receiver.wait_for(30)
            assert numbers(events) == list(range(1, 31)), "each once, in order"
            for channel in {e["channel"] for e in events}:
                kinds = [e["type"] for e in events if e["channel"] == channel]
                assert kinds == ["channel.occupied", "channel.vacated"] * (len(kinds) // 2)
            status = (await hub.status())["webhooks"]
            assert status["sent"] == 30 and status["dropped"] == 0
            assert receiver.bad_signatures == 0
            await client.close()
            assert (await receiver.wait_for(31))[-1]["type"] == "connection.closed"
        finally:
            await client.close()
            await receiver.stop()


@pytest.mark.parametrize(("mode", "error"), [("unavailable", "HTTP 503"), ("hang", "TimeoutError")])
async def test_5xx_answers_and_timeouts_are_retried(
    connect: Connect, mode: str, error: str
) -> None:
    receiver = await Receiver(mode=mode).start()
    try:
        async with hub_with(webhooks(receiver.url, timeout=0.3)) as (hub, url):
            client = await connect(url)
            await cycle(client, "wh.5xx")

            async def retried() -> bool:
                return (await hub.status())["webhooks"]["failed_attempts"] >= 2

            await until(retried, f"{error} was retried")
            assert (await hub.status())["webhooks"]["last_error"] == error
            assert receiver.events == []
            receiver.mode = "ok"
            events = await receiver.wait_for(2)
            assert [e["type"] for e in events] == ["channel.occupied", "channel.vacated"]
            await client.close()
    finally:
        await receiver.stop()


async def test_the_queue_bound_drops_the_oldest_and_counts_them(
    connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    receiver = Receiver()  # down
    hooks = webhooks(receiver.url, max_batch=5, max_queue=10, batch_delay=0.5)
    caplog.set_level(logging.WARNING, logger="rtkit.hub.webhooks")
    async with hub_with(hooks) as (hub, url):
        client = await connect(url)
        for n in range(20):
            await cycle(client, f"wh.full.{n}")
        status = (await hub.status())["webhooks"]
        # The first batch (5 events) was taken before the queue overflowed;
        # of the 35 after it, the newest 10 wait.
        assert status["in_flight"] == 5 and status["queued"] == 10
        assert status["dropped"] == 25
        assert any("webhook queue full" in r.getMessage() for r in caplog.records)
        await receiver.start()
        try:
            events = await receiver.wait_for(15)
            assert numbers(events) == [1, 2, 3, 4, 5, *range(31, 41)]
            assert (await hub.status())["webhooks"]["sent"] == 15
            await client.close()
            await receiver.wait_for(16)
        finally:
            await client.close()
            await receiver.stop()


async def test_the_hub_ending_a_subscription_vacates_the_channel(connect: Connect) -> None:
    receiver = await Receiver().start()
    try:
        async with hub_with(webhooks(receiver.url), secret=SECRET) as (hub, url):
            client = await connect(url, token=token("ann", subscribe=["wh.*"]))
            assert (await client.subscribe("wh.granted"))["ok"]
            # A refreshed token that no longer grants the channel ends it.
            refreshed = await client.call("auth.refresh", {"token": token("ann", subscribe=["x"])})
            assert refreshed["ok"], refreshed
            events = await receiver.wait_for(2)
            assert [(e["type"], e["channel"]) for e in events] == [
                ("channel.occupied", "wh.granted"),
                ("channel.vacated", "wh.granted"),
            ]
            # The API's disconnect ends the connection, with its reason.
            assert hub.disconnect_where(lambda who: who.user == "ann", Forbidden("bye")) == 1
            closed = (await receiver.wait_for(3))[2]
            assert (closed["type"], closed["user"], closed["reason"]) == (
                "connection.closed",
                "ann",
                "revoked",
            )
    finally:
        await receiver.stop()


@pytest.mark.redis
async def test_in_a_cluster_occupancy_is_per_hub_and_presence_once(
    connect: Connect, rt_redis_prefix: str
) -> None:
    receiver = await Receiver().start()
    store = f"{REDIS_URL}?prefix={rt_redis_prefix}"
    try:
        async with (
            hub_with(webhooks(receiver.url), store) as (one, url_one),
            hub_with(webhooks(receiver.url), store) as (two, url_two),
        ):
            hub_of = {one.webhooks.hub_id: "one", two.webhooks.hub_id: "two"}  # type: ignore[union-attr]
            ann_one = await connect(url_one, auth={"user": "ann"})
            ann_two = await connect(url_two, auth={"user": "ann"})
            bob_two = await connect(url_two, auth={"user": "bob"})
            seen: list[tuple[str, str, str]] = []

            async def expect(*events: tuple[str, str, str]) -> None:
                got = await receiver.wait_for(len(seen) + len(events))
                for event in got[len(seen) :]:
                    hub = hub_of[event["id"].rsplit("-", 1)[0]]
                    who = event.get("member", {}).get("user", event.get("channel", ""))
                    seen.append((hub, event["type"], who))
                assert seen[-len(events) :] == list(events)

            assert (await ann_one.subscribe("wh.cluster"))["ok"]
            await expect(("one", "channel.occupied", "wh.cluster"))
            assert (await ann_two.subscribe("wh.cluster"))["ok"]
            await expect(("two", "channel.occupied", "wh.cluster"))
            assert (await bob_two.subscribe("wh.cluster"))["ok"]  # hub two has it already
            assert (await ann_one.unsubscribe("wh.cluster"))["ok"]
            await expect(("one", "channel.vacated", "wh.cluster"))
            # ann is one member of the room, whichever hub her connections use.
            assert (await ann_one.call("presence.join", {"room": "wh.team"}))["ok"]
            await expect(("one", "presence.join", "ann"))
            assert (await ann_two.call("presence.join", {"room": "wh.team"}))["ok"]
            assert (await bob_two.call("presence.join", {"room": "wh.team"}))["ok"]
            await expect(("two", "presence.join", "bob"))
            assert (await ann_one.call("presence.leave", {"room": "wh.team"}))["ok"]
            assert (await ann_two.call("presence.leave", {"room": "wh.team"}))["ok"]
            await expect(("two", "presence.leave", "ann"))
            assert len(receiver.events) == len(seen)
            for client in (ann_one, ann_two, bob_two):
                await client.close()
            await receiver.wait_for(len(seen) + 5)  # bob's leave, a vacate, three closes
    finally:
        await receiver.stop()


PUBLISHES = 300


async def publish_latencies(connect: Connect, url: str, channel: str) -> list[float]:
    """Per-publish round trips (to the ack) with a subscriber taking every
    message, while another client keeps the webhook queue busy."""
    publisher = await connect(url)
    subscriber = await connect(url)
    churner = await connect(url)
    assert (await subscriber.subscribe(channel))["ok"]
    stop = asyncio.Event()

    async def churn() -> None:
        # Webhook events all along: channels occupied and vacated.
        n = 0
        while not stop.is_set():
            await cycle(churner, f"{channel}.churn.{n % 10}")
            n += 1

    churning = asyncio.ensure_future(churn())
    latencies = []
    try:
        for n in range(PUBLISHES):
            start = time.perf_counter()
            ack = await publisher.publish(channel, {"n": n})
            latencies.append(time.perf_counter() - start)
            assert ack["ok"], ack
        await subscriber.wait_for_seq(channel, PUBLISHES)
        assert subscriber.seqs(channel) == list(range(1, PUBLISHES + 1))
    finally:
        stop.set()
        await churning
    return latencies


async def test_a_hanging_receiver_does_not_slow_the_fan_out(connect: Connect) -> None:
    answering = await Receiver().start()
    hanging = await Receiver(mode="hang").start()
    try:
        async with hub_with(webhooks(answering.url)) as (hub, url):
            baseline = await publish_latencies(connect, url, "wh.base")
            assert (await hub.status())["webhooks"]["sent"] > 0
        # The receiver never answers; the POST's timeout is far off.
        async with hub_with(webhooks(hanging.url, timeout=60.0, max_queue=200)) as (hub, url):
            stuck = await publish_latencies(connect, url, "wh.hang")
            status = (await hub.status())["webhooks"]
            assert status["sent"] == 0 and status["in_flight"] > 0 and hanging.requests == 1
            assert status["dropped"] > 0  # the churn overflowed the queue meanwhile
    finally:
        await hanging.stop()
        await answering.stop()
    base_median, stuck_median = statistics.median(baseline), statistics.median(stuck)
    base_p90 = statistics.quantiles(baseline, n=10)[-1]
    stuck_p90 = statistics.quantiles(stuck, n=10)[-1]
    print(
        f"publish latency with an answering receiver: median {base_median * 1e3:.2f} ms, "
        f"p90 {base_p90 * 1e3:.2f} ms; with a hanging one: median "
        f"{stuck_median * 1e3:.2f} ms, p90 {stuck_p90 * 1e3:.2f} ms"
    )
    # Same work either way (the hanging sender only waits): a shared
    # machine's noise aside, no slower.
    assert stuck_median < base_median * 2 + 0.002
    assert stuck_p90 < base_p90 * 2 + 0.005


async def test_rtkit_hub_sends_webhooks_from_its_options() -> None:
    receiver = await Receiver().start()
    api_key = "webhook-test-api-key-0123"
    hub = HubProcess(
        extra_args=[
            "--webhook",
            receiver.url,
            "--webhook-secret",
            WEBHOOK_SECRET,
            "--webhook-batch-delay",
            "0.01",
            "--api-key",
            api_key,
        ]
    )
    await asyncio.to_thread(hub.start)
    client = RawClient(hub.url)
    try:
        await client.connect()
        await cycle(client, "wh.cli")
        events = await receiver.wait_for(2)
        assert [e["type"] for e in events] == ["channel.occupied", "channel.vacated"]
        assert receiver.bad_signatures == 0
        # The operator's view: GET /api/status has the counters, as its
        # OpenAPI document says.
        async with httpx.AsyncClient(
            base_url=hub.url, headers={"X-API-Key": api_key}, timeout=10
        ) as http:
            api = Checked(http, (await http.get("/api/openapi.json")).json())

            async def counted() -> bool:
                counters = (await api.request("GET", "/api/status")).json()["webhooks"]
                return bool(counters["sent"] == 2 and counters["queued"] == 0)

            await until(counted, "GET /api/status counts the two events sent")
    finally:
        await client.close()
        await asyncio.to_thread(hub.terminate)
        await receiver.stop()
    assert not any(WEBHOOK_SECRET in line for line in hub.log)
    assert any("webhooks to http://127.0.0.1" in line for line in hub.log)


def test_webhook_options_are_checked() -> None:
    from rtkit.errors import ConfigurationError

    good = webhooks("http://127.0.0.1:9/x")
    for bad, message in [
        ({"url": "ftp://example.org/x"}, "http:// or https://"),
        ({"url": "http:///nohost"}, "with a host"),
        ({"secret": "short"}, "at least 16"),
        ({"max_batch": 0}, "max_batch"),
        ({"max_queue": 2, "max_batch": 5}, "max_queue"),
        ({"retry_initial": 5.0, "retry_max": 1.0}, "retry_initial"),
    ]:
        with pytest.raises(ConfigurationError, match=message):
            replace(good, **bad)
    assert WEBHOOK_SECRET not in repr(HubConfig(allow_anonymous=True, webhooks=good))
