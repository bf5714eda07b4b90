"""The websocket and SSE bridges against real aiohttp servers on loopback.

Each test serves its own event stream or websocket from the test's event
loop (:class:`EventServer`, :class:`SocketServer`): the server can drop a
connection mid-event, ask for a ``retry:`` delay, resume after
``Last-Event-ID`` as the SSE specification asks, and records what each
connection sent, so the tests see both sides.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import WSMsgType, web

import rtkit.aio
from rtkit._process import kill_group, stop_group
from rtkit.bridges import Bridge
from rtkit.bridges.web import SseSource, WebSocketSource
from rtkit.pytest_plugin import InProcessHub

from .helpers import bridge_process, history, wait_count, wait_until

# -- the servers ----------------------------------------------------------------


@dataclass
class Event:
    id: str | None
    data: str
    event: str | None = None


@dataclass
class Connection:
    """What one request to the event stream carried, and when it came."""

    at: float
    last_event_id: str | None
    authorization: str | None


@dataclass
class EventServer:
    """A ``text/event-stream`` of ``events`` that resumes after Last-Event-ID.

    ``drop_after``: event numbers (1-based) after which the server sends half
    of the next event and closes the connection (once each); ``refuse``: how
    many requests get HTTP 503 first; ``stall``: how many requests get no
    answer at all until ``released`` is set; ``retry_ms``: sent as ``retry:`` at the
    start of each stream; ``eol``: the line ending; ``keepalive``: send a
    comment every half second while quiet. Events appended later are sent
    to the open stream (``changed`` wakes it)."""

    events: list[Event]
    drop_after: set[int] = field(default_factory=set)
    refuse: int = 0
    stall: int = 0
    released: asyncio.Event = field(default_factory=asyncio.Event)
    retry_ms: int | None = None
    eol: str = "\n"
    authorization: str | None = None
    keepalive: bool = True
    connections: list[Connection] = field(default_factory=list)
    drops: list[float] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, events: list[Event]) -> None:
        self.events += events
        self.changed.set()

    def encode(self, event: Event) -> bytes:
        lines = []
        if event.id is not None:
            lines.append(f"id: {event.id}")
        if event.event is not None:
            lines.append(f"event: {event.event}")
        lines += [f"data: {line}" for line in event.data.split("\n")]
        return (self.eol.join(lines) + self.eol + self.eol).encode()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        last = request.headers.get("Last-Event-ID")
        auth = request.headers.get("Authorization")
        self.connections.append(Connection(time.monotonic(), last, auth))
        if self.stall > 0:
            self.stall -= 1
            await self.released.wait()
            raise web.HTTPServiceUnavailable()
        if self.refuse > 0:
            self.refuse -= 1
            raise web.HTTPServiceUnavailable()
        if self.authorization is not None and auth != self.authorization:
            raise web.HTTPUnauthorized()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        if self.retry_ms is not None:
            await resp.write(
                f": hello{self.eol}retry: {self.retry_ms}{self.eol}{self.eol}".encode()
            )
        ids = [e.id for e in self.events]
        cursor = ids.index(last) + 1 if last is not None and last in ids else 0
        while True:
            while cursor < len(self.events):
                number = cursor + 1
                await resp.write(self.encode(self.events[cursor]))
                cursor += 1
                if number in self.drop_after and cursor < len(self.events):
                    self.drop_after.discard(number)
                    half = self.encode(self.events[cursor])
                    await resp.write(half[: len(half) // 2])
                    self.drops.append(time.monotonic())
                    assert request.transport is not None
                    request.transport.close()
                    return resp
            self.changed.clear()
            if not self.keepalive:
                await self.changed.wait()
                continue
            try:
                await asyncio.wait_for(self.changed.wait(), 0.5)
            except TimeoutError:
                # Quiet: a comment keeps the stream alive and finds a gone client.
                try:
                    await resp.write(f": keep-alive{self.eol}".encode())
                except ConnectionError:
                    return resp


@dataclass
class SocketServer:
    """A websocket that sends ``batches[n]`` to the n-th connection; after
    its batch a connection closes normally, or (``oversize``) sends a message
    of that many bytes, or (the last batch) stays open."""

    batches: list[list[str | bytes]]
    oversize: dict[int, int] = field(default_factory=dict)
    connections: int = 0
    authorization: str | None = None

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        auth = request.headers.get("Authorization")
        if self.authorization is not None and auth != self.authorization:
            raise web.HTTPUnauthorized()
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        number = self.connections
        self.connections += 1
        for frame in self.batches[number]:
            if isinstance(frame, bytes):
                await ws.send_bytes(frame)
            else:
                await ws.send_str(frame)
        if number in self.oversize:
            await ws.send_str("x" * self.oversize[number])
        if number < len(self.batches) - 1 and number not in self.oversize:
            await ws.close()
            return ws
        async for msg in ws:  # until the client goes
            if msg.type == WSMsgType.ERROR:
                break
        return ws


@pytest.fixture
async def serve() -> AsyncIterator[Any]:
    """``await serve(handler)``: the handler's URL on a free loopback port."""
    runners: list[web.AppRunner] = []

    async def start(handler: Any) -> str:
        app = web.Application()
        app.router.add_get("/stream", handler)
        runner = web.AppRunner(app, shutdown_timeout=1)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}/stream"

    yield start
    for runner in runners:
        await runner.cleanup()


async def run_bridge(bridge: Bridge) -> asyncio.Task[None]:
    return asyncio.create_task(bridge.run())


async def stop_bridge(bridge: Bridge, task: asyncio.Task[None]) -> None:
    bridge.stop()
    await asyncio.wait_for(task, 10)


def readings(numbers: range, event: str | None = None) -> list[Event]:
    return [Event(str(i), orjson.dumps({"i": i}).decode(), event) for i in numbers]


# -- SSE ---------------------------------------------------------------------------


async def test_sse_events_in_order_by_event_name_with_headers_and_http_errors(
    rt_hub_inprocess: InProcessHub, serve: Any
) -> None:
    events = [
        Event(str(i), orjson.dumps({"i": i}).decode(), "reading" if i % 3 else "status")
        for i in range(1, 301)
    ]
    events.insert(100, Event(None, "plain text, not JSON", "note"))
    events.insert(150, Event("m", '{"multi":\n"line"}', "reading"))
    server = EventServer(events, refuse=2, eol="\r\n", authorization="Bearer s3cret")
    url = await serve(server.handle)
    async with rtkit.aio.Client(rt_hub_inprocess.url) as hub:
        source = SseSource(url, topics="feed.{topic}", headers={"Authorization": "Bearer s3cret"})
        bridge = Bridge(source, client=hub)
        task = await run_bridge(bridge)
        try:
            await wait_count(hub, "feed.reading", 201)
            await wait_count(hub, "feed.status", 100)
            await wait_count(hub, "feed.note", 1)
            await wait_until(lambda: bridge.state.pending == 0, "every publish acked")
        finally:
            await stop_bridge(bridge, task)
        expected: list[Any] = [{"i": i} for i in range(1, 301) if i % 3]
        expected.insert(expected.index({"i": 149}) + 1, {"multi": "line"})
        assert await history(hub, "feed.reading") == expected
        assert await history(hub, "feed.status") == [{"i": i} for i in range(3, 301, 3)]
        assert await history(hub, "feed.note") == ["plain text, not JSON"]
    state = bridge.state
    assert [c.authorization for c in server.connections] == ["Bearer s3cret"] * 3
    assert state.errors == 2 and "HTTP 503" in (state.last_error or "")
    assert state.reconnects == 2 and state.gaps == 0  # refused before anything was read
    assert state.received == state.published == 302
    assert state.last_position == f"{source.name}:300"


async def test_sse_dropped_mid_event_resumes_with_last_event_id_exactly_once(
    rt_hub_inprocess: InProcessHub, serve: Any
) -> None:
    server = EventServer(readings(range(1, 1001)), drop_after={250, 500, 750}, retry_ms=400)
    url = await serve(server.handle)
    async with rtkit.aio.Client(rt_hub_inprocess.url) as hub:
        bridge = Bridge(SseSource(url, topics="meter"), client=hub)
        task = await run_bridge(bridge)
        try:
            await wait_count(hub, "meter", 1000)
            await wait_until(lambda: bridge.state.pending == 0, "every publish acked")
        finally:
            await stop_bridge(bridge, task)
        assert await history(hub, "meter") == [{"i": i} for i in range(1, 1001)]
    # Each reconnect asked for what followed the last whole event (the half
    # one was never dispatched), and waited the retry: the server asked for.
    assert [c.last_event_id for c in server.connections] == [None, "250", "500", "750"]
    for dropped, back in zip(server.drops, server.connections[1:], strict=True):
        assert back.at - dropped >= 0.4
    state = bridge.state
    assert state.reconnects == 3 and state.gaps == 0
    assert state.received == state.published == 1000 and state.dropped == 0


async def test_sse_oversize_lines_and_bad_json_are_errors_and_the_stream_goes_on(
    rt_hub_inprocess: InProcessHub, serve: Any
) -> None:
    events = readings(range(1, 61))
    events[19] = Event("20", orjson.dumps({"i": 20, "pad": "x" * 5000}).decode())
    events[29] = Event("30", "\n".join(["y" * 100] * 20))  # lines fit, their sum does not
    events[39] = Event("40", "not JSON")
    server = EventServer(events)
    url = await serve(server.handle)
    async with rtkit.aio.Client(rt_hub_inprocess.url) as hub:
        source = SseSource(url, topics="bounded", max_size=1024, payload="json")
        # Events the source could not read never reach the transform.
        bridge = Bridge(source, client=hub, transform=lambda channel, data, msg: {**data})
        task = await run_bridge(bridge)
        try:
            await wait_count(hub, "bounded", 57)
            await wait_until(
                lambda: bridge.state.last_position == f"{source.name}:60", "all committed"
            )
        finally:
            await stop_bridge(bridge, task)
        assert await history(hub, "bounded") == [
            {"i": i} for i in range(1, 61) if i not in (20, 30, 40)
        ]
    state = bridge.state
    assert state.errors == 3 and state.dropped == 3
    assert state.last_error == "SSE event 'message' id '40': payload is not JSON"
    assert state.reconnects == 0 and len(server.connections) == 1  # never disconnected


async def test_sse_server_that_never_answers_is_an_error_and_the_bridge_tries_again(
    rt_hub_inprocess: InProcessHub, serve: Any
) -> None:
    server = EventServer(readings(range(1, 11)), stall=1)
    url = await serve(server.handle)
    async with rtkit.aio.Client(rt_hub_inprocess.url) as hub:
        bridge = Bridge(SseSource(url, topics="late", connect_timeout=0.5), client=hub)
        task = await run_bridge(bridge)
        try:
            await wait_count(hub, "late", 10)
        finally:
            server.released.set()
            await stop_bridge(bridge, task)
        assert await history(hub, "late") == [{"i": i} for i in range(1, 11)]
    assert bridge.state.errors == 1
    assert bridge.state.last_error == f"ConnectionError: SSE {url}: no response within 0.5 s"
    assert len(server.connections) == 2


async def test_sse_fields_pick_channels_and_bad_channel_names_are_dropped(
    rt_hub_inprocess: InProcessHub, serve: Any
) -> None:
    events = [
        Event(str(i), orjson.dumps({"sensor": f"s{i % 2}", "i": i}).decode()) for i in range(1, 21)
    ]
    events.append(Event("21", orjson.dumps({"i": 21}).decode()))  # no sensor field
    events.append(Event("22", orjson.dumps({"sensor": "bad name!", "i": 22}).decode()))
    events.append(Event("23", orjson.dumps({"sensor": "s1", "i": 23}).decode()))
    server = EventServer(events)
    url = await serve(server.handle)
    async with rtkit.aio.Client(rt_hub_inprocess.url) as hub:
        source = SseSource(url, topics="sensors.{topic}", topic_field="sensor")
        bridge = Bridge(source, client=hub)
        task = await run_bridge(bridge)
        try:
            await wait_count(hub, "sensors.s1", 11)
            await wait_until(
                lambda: bridge.state.last_position == f"{source.name}:23", "all committed"
            )
        finally:
            await stop_bridge(bridge, task)
        got = await history(hub, "sensors.s1")
        assert [d["i"] for d in got] == [*range(1, 21, 2), 23]
        assert [d["i"] for d in await history(hub, "sensors.s0")] == list(range(2, 21, 2))
    assert bridge.state.dropped == 2
    assert "not a valid channel name" in (bridge.state.last_error or "")


async def test_sse_silent_stream_is_reconnected_after_the_idle_timeout(
    rt_hub_inprocess: InProcessHub, serve: Any
) -> None:
    server = EventServer(readings(range(1, 6)), keepalive=False)
    url = await serve(server.handle)
    async with rtkit.aio.Client(rt_hub_inprocess.url) as hub:
        bridge = Bridge(SseSource(url, topics="quiet", idle_timeout=0.5), client=hub)
        task = await run_bridge(bridge)
        try:
            await wait_count(hub, "quiet", 5)
            await wait_until(lambda: len(server.connections) == 2, "a reconnect")
            server.add(readings(range(6, 11)))
            await wait_count(hub, "quiet", 10)
        finally:
            await stop_bridge(bridge, task)
        assert await history(hub, "quiet") == [{"i": i} for i in range(1, 11)]
    assert server.connections[1].last_event_id == "5"
    assert bridge.state.errors >= 1 and "Timeout" in (bridge.state.last_error or "")
    assert bridge.state.gaps == 0


@pytest.mark.slow
async def test_sse_bridge_killed_and_restarted_resumes_after_the_last_acked_id(
    rt_hub_inprocess: InProcessHub, serve: Any, tmp_path: Path
) -> None:
    server = EventServer(readings(range(1, 3001)), authorization="Bearer s3cret")
    url = await serve(server.handle)
    state = tmp_path / "sse-state.json"
    args = ["sse", url, "--to", "stream", "--state", str(state), "--name", "feed"]
    args += ["--header", "Authorization: Bearer s3cret"]
    log = tmp_path / "bridge.log"
    proc = None
    try:
        async with rtkit.aio.Client(rt_hub_inprocess.url) as hub:
            proc = bridge_process(args, rt_hub_inprocess.url, log)
            await wait_count(hub, "stream", 500)
            await wait_until(state.exists, "the state file written")
            kill_group(proc)  # kill -9: publishes in flight and unsaved ids are lost
            saved = orjson.loads(state.read_bytes())["positions"]["feed"]
            server.add(readings(range(3001, 5001)))
            proc = bridge_process(args, rt_hub_inprocess.url, log)
            await wait_count(hub, "stream", 5000, within=60)
            await wait_until(
                lambda: orjson.loads(state.read_bytes())["positions"]["feed"] == "5000",
                "the state file records the last event",
                within=20,
            )
            assert await history(hub, "stream") == [{"i": i} for i in range(1, 5001)]
        assert [c.last_event_id for c in server.connections] == [None, saved], log.read_text()
        assert int(saved) >= 1
    finally:
        if proc is not None:
            stop_group(proc, timeout=5)


# -- websocket -------------------------------------------------------------------


async def test_websocket_messages_by_field_with_reconnects_counted_as_gaps(
    rt_hub_inprocess: InProcessHub, serve: Any
) -> None:
    def frames(numbers: range) -> list[str | bytes]:
        out: list[str | bytes] = []
        for i in numbers:
            raw = orjson.dumps({"sensor": "a" if i % 2 else "b", "i": i})
            out.append(raw if i % 5 == 0 else raw.decode())  # some binary frames
        return out

    batches = [frames(range(0, 100)), frames(range(100, 200)), frames(range(200, 300))]
    batches[1].insert(10, "hello")  # text, no field: dropped
    server = SocketServer(batches, oversize={1: 5000}, authorization="Bearer ws")
    url = (await serve(server.handle)).replace("http://", "ws://")
    async with rtkit.aio.Client(rt_hub_inprocess.url) as hub:
        source = WebSocketSource(
            url,
            topics="ws.{topic}",
            topic_field="sensor",
            headers={"Authorization": "Bearer ws"},
            max_size=1024,
        )
        bridge = Bridge(source, client=hub)
        task = await run_bridge(bridge)
        try:
            await wait_count(hub, "ws.a", 150)
            await wait_count(hub, "ws.b", 150)
        finally:
            await stop_bridge(bridge, task)
        assert [d["i"] for d in await history(hub, "ws.a")] == list(range(1, 300, 2))
        assert [d["i"] for d in await history(hub, "ws.b")] == list(range(0, 300, 2))
    state = bridge.state
    # Two reconnects: the server closing after the first batch, and the
    # oversize message after the second (aiohttp closes with 1009).
    assert server.connections == 3
    assert state.reconnects == 2 and state.gaps == 2
    assert state.dropped == 1
    assert state.errors == 1
    assert state.last_error == f"ConnectionError: websocket {url}: a message over 1024 bytes " + (
        "closed the connection"
    )
    assert state.last_position is None  # websockets have no positions
