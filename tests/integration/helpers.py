"""A stock python-socketio client speaking wire protocol v1, and checks.

The integration tests talk to real hub processes through ``RawClient``: a thin
wrapper around ``socketio.AsyncClient`` (not rtkit's own client) that records
every envelope in the order it reached the socket, including the backlog of a
``subscribe`` ack, so that ordering guarantees can be checked on the wire.

Handlers here are plain functions on purpose: python-socketio runs each
incoming packet in its own task, in arrival order, and a synchronous handler
finishes before the next packet's task starts, so the recorded order is the
wire order. The ack of a ``subscribe`` is recorded by a synchronous callback
for the same reason (an ``await``-ed ``call`` would resume only after later
packets were handled).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import socketio

from rtkit._process import start_group
from rtkit.aio import Client

NS = "/rtkit"
ENVELOPE_KEYS = frozenset({"channel", "seq", "ts", "id", "sender", "data"})
ACK_TIMEOUT = 10.0
WAIT_TIMEOUT = 15.0

_names = itertools.count(1)


class RawClient:
    """One Socket.IO connection to a hub, recording what it receives.

    >>> client = RawClient(hub.url, token=token)
    >>> await client.connect()
    >>> ack = await client.subscribe("prices", since=0)
    >>> await client.wait_for_seq("prices", 10)
    >>> client.seqs("prices")
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        auth: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
        self.url = url
        self.auth: dict[str, Any] = dict(auth or {})
        if token is not None:
            self.auth["token"] = token
        self.name = name or f"client{next(_names)}"
        self.sio = socketio.AsyncClient(reconnection=False)
        # Envelopes per channel in wire order: subscribe backlogs and live ones.
        self.received: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
        # Index into received[channel] where the latest subscribe's backlog starts.
        self.ack_at: dict[str, int] = {}
        self.packets = 0  # `messages` events received
        self.problems: list[str] = []
        self.connect_errors: list[Any] = []
        self.disconnect_reasons: list[Any] = []
        self.subscribed: set[str] = set()
        self._unsubscribing: set[str] = set()
        self._waiters: list[tuple[str, int, asyncio.Future[None]]] = []
        self._disconnected: asyncio.Event | None = None
        self.sio.on("messages", self._on_messages, namespace=NS)
        self.sio.on("connect_error", self._on_connect_error, namespace=NS)
        self.sio.on("disconnect", self._on_disconnect, namespace=NS)

    def __repr__(self) -> str:
        return f"<RawClient {self.name} {self.url}>"

    # -- connection ---------------------------------------------------------

    async def connect(self, within: float = ACK_TIMEOUT) -> RawClient:
        self._disconnected = asyncio.Event()
        await self.sio.connect(
            self.url,
            auth=self.auth,
            namespaces=[NS],
            transports=["websocket"],
            wait_timeout=within,
        )
        return self

    @property
    def connected(self) -> bool:
        return bool(self.sio.connected) and NS in self.sio.namespaces

    async def close(self) -> None:
        if self.sio.connected or self.sio.eio.state != "disconnected":
            await self.sio.disconnect()
        await self.sio.shutdown()

    async def wait_disconnected(self, within: float = WAIT_TIMEOUT) -> None:
        assert self._disconnected is not None, "never connected"
        try:
            await asyncio.wait_for(self._disconnected.wait(), within)
        except TimeoutError:
            raise AssertionError(f"{self.name} was not disconnected within {within}s") from None

    def _on_connect_error(self, *data: Any) -> None:
        self.connect_errors.append(data[0] if len(data) == 1 else data)

    def _on_disconnect(self, reason: Any = None) -> None:
        self.disconnect_reasons.append(reason)
        self.subscribed.clear()
        if self._disconnected is not None:
            self._disconnected.set()

    # -- requests -----------------------------------------------------------

    async def call(self, event: str, *args: Any, within: float = ACK_TIMEOUT) -> Any:
        """Emit ``event`` with exactly ``args`` (zero, one or several) and
        return the hub's ack (its first argument)."""
        fut: asyncio.Future[tuple[Any, ...]] = asyncio.get_running_loop().create_future()

        def on_ack(*ack: Any) -> None:
            if not fut.done():
                fut.set_result(ack)

        await self.sio.emit(event, _emit_data(args), namespace=NS, callback=on_ack)
        ack = await self._wait(fut, within, f"ack of {event!r}")
        if len(ack) != 1:
            self.problems.append(f"ack of {event!r} carries {len(ack)} arguments, not 1")
        return ack[0] if ack else None

    async def publish(self, channel: str, data: Any, **extra: Any) -> dict[str, Any]:
        ack: dict[str, Any] = await self.call(
            "publish", {"channel": channel, "data": data, **extra}
        )
        return ack

    async def history(self, channel: str, **opts: Any) -> dict[str, Any]:
        ack: dict[str, Any] = await self.call("history", {"channel": channel, **opts})
        return ack

    async def subscribe(
        self, channel: str, *, within: float = ACK_TIMEOUT, **opts: Any
    ) -> dict[str, Any]:
        """Subscribe; on success the ack's backlog is recorded in
        ``received[channel]`` at the moment the ack arrived (wire order)."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def on_ack(*ack: Any) -> None:
            body = ack[0] if ack else None
            if isinstance(body, dict) and body.get("ok") is True:
                self.ack_at[channel] = len(self.received[channel])
                self.subscribed.add(channel)
                backlog = body.get("messages")
                if not isinstance(backlog, list):
                    self.problems.append(f"subscribe ack without a messages list: {body!r}")
                else:
                    self._record(backlog, channel, "subscribe ack")
            if not fut.done():
                fut.set_result(body)

        await self.sio.emit(
            "subscribe", {"channel": channel, **opts}, namespace=NS, callback=on_ack
        )
        ack: dict[str, Any] = await self._wait(fut, within, f"subscribe ack for {channel!r}")
        return ack

    async def unsubscribe(self, channel: str, *, within: float = ACK_TIMEOUT) -> dict[str, Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._unsubscribing.add(channel)

        def on_ack(*ack: Any) -> None:
            body = ack[0] if ack else None
            self._unsubscribing.discard(channel)
            if isinstance(body, dict) and body.get("ok") is True:
                self.subscribed.discard(channel)
            if not fut.done():
                fut.set_result(body)

        await self.sio.emit("unsubscribe", {"channel": channel}, namespace=NS, callback=on_ack)
        ack: dict[str, Any] = await self._wait(fut, within, f"unsubscribe ack for {channel!r}")
        return ack

    async def _wait(self, fut: asyncio.Future[Any], within: float, what: str) -> Any:
        try:
            return await asyncio.wait_for(fut, within)
        except TimeoutError:
            state = "connected" if self.connected else "disconnected"
            raise AssertionError(f"{self.name} ({state}) got no {what} within {within}s") from None

    # -- delivery -----------------------------------------------------------

    def _on_messages(self, *args: Any) -> None:
        self.packets += 1
        if len(args) != 1 or not isinstance(args[0], list) or not args[0]:
            self.problems.append(f"`messages` must carry one non-empty list, got {args!r:.200}")
            return
        by_channel: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
        for env in args[0]:
            if isinstance(env, dict) and isinstance(env.get("channel"), str):
                by_channel[env["channel"]].append(env)
            else:
                self.problems.append(f"not an envelope: {env!r:.200}")
        for channel, envelopes in by_channel.items():
            if channel not in self.subscribed and channel not in self._unsubscribing:
                self.problems.append(
                    f"live message on {channel!r} before its subscribe ack or after unsubscribing"
                )
            self._record(envelopes, channel, "`messages`")

    def _record(self, envelopes: Iterable[Any], channel: str, where: str) -> None:
        log = self.received[channel]
        for env in envelopes:
            problem = envelope_problem(env, channel)
            if problem:
                self.problems.append(f"{where}: {problem}")
                continue
            log.append(env)
        if self._waiters:
            top = self.last_seq(channel)
            for waiter in [w for w in self._waiters if w[0] == channel and w[1] <= top]:
                self._waiters.remove(waiter)
                if not waiter[2].done():
                    waiter[2].set_result(None)

    def seqs(self, channel: str) -> list[int]:
        return [env["seq"] for env in self.received[channel]]

    def last_seq(self, channel: str) -> int:
        log = self.received.get(channel)
        return max((env["seq"] for env in log), default=0) if log else 0

    def since_ack(self, channel: str) -> list[dict[str, Any]]:
        """Envelopes from the latest subscribe ack's backlog on."""
        return self.received[channel][self.ack_at.get(channel, 0) :]

    async def wait_for_seq(self, channel: str, seq: int, within: float = WAIT_TIMEOUT) -> None:
        """Wait until a message with seq >= ``seq`` arrived on ``channel``."""
        if self.last_seq(channel) >= seq:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter = (channel, seq, fut)
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(fut, within)
        except TimeoutError:
            seqs = self.seqs(channel)
            raise AssertionError(
                f"{self.name} waited {within}s for seq {seq} on {channel!r}; it has "
                f"{len(seqs)} messages, last seq {self.last_seq(channel)}, "
                f"connected={self.connected}, problems={self.problems[:3]}"
            ) from None
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)


def _emit_data(args: tuple[Any, ...]) -> Any:
    # python-socketio sends a tuple as that many arguments and None as none.
    if not args:
        return None
    return args


def envelope_problem(env: Any, channel: str) -> str | None:
    """Why ``env`` is not a valid message envelope of ``channel`` (None if it is)."""
    if not isinstance(env, dict):
        return f"envelope is not an object: {env!r:.200}"
    if set(env) != ENVELOPE_KEYS:
        return f"envelope keys {sorted(env)} are not {sorted(ENVELOPE_KEYS)}"
    if env["channel"] != channel:
        return f"envelope of {env['channel']!r} delivered as {channel!r}"
    seq = env["seq"]
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        return f"bad seq {seq!r}"
    ts = env["ts"]
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
        return f"bad ts {ts!r}"
    if abs(ts - time.time()) > 3600:
        return f"ts {ts} is not the hub clock"
    if not isinstance(env["id"], str) or not env["id"]:
        return f"bad id {env['id']!r}"
    if not isinstance(env["sender"], str) or not env["sender"]:
        return f"bad sender {env['sender']!r}"
    return None


def assert_gap_free(seqs: list[int], *, start: int | None = None, end: int | None = None) -> None:
    """After dropping ``seq <= last seen`` (what DESIGN asks clients to do),
    the seqs are consecutive, from ``start`` and up to ``end`` when given."""
    kept: list[int] = []
    for seq in seqs:
        if not kept or seq > kept[-1]:
            kept.append(seq)
    if not kept:
        assert start is None or (end is not None and end < start), "no messages at all"
        return
    if start is not None:
        assert kept[0] == start, f"first seq is {kept[0]}, expected {start}"
    holes = [(a, b) for a, b in itertools.pairwise(kept) if b != a + 1]
    assert not holes, f"holes in the sequence after {holes[0][0]}: next was {holes[0][1]} ..."
    if end is not None:
        assert kept[-1] == end, f"last seq is {kept[-1]}, expected {end}"


def assert_ok(ack: Any, what: str = "request") -> dict[str, Any]:
    assert isinstance(ack, dict) and ack.get("ok") is True, f"{what} failed: {ack!r:.500}"
    return ack


def assert_error(ack: Any, code: str) -> str:
    """``ack`` is ``{"ok": false, "error": {"code": code, "message": <non-empty str>}}``."""
    assert isinstance(ack, dict), f"ack is not an object: {ack!r:.300}"
    assert ack.get("ok") is False, f"expected a {code} error, got {ack!r:.300}"
    assert set(ack) == {"ok", "error"}, f"error ack has extra keys: {sorted(ack)}"
    error = ack["error"]
    assert isinstance(error, dict) and set(error) == {"code", "message"}, error
    assert error["code"] == code, f"expected {code}, got {error!r:.300}"
    assert isinstance(error["message"], str) and error["message"], error
    message: str = error["message"]
    return message


class Bystander:
    """A well-behaved client that keeps publishing to its own channel and
    receiving each message back, while a test misbehaves next to it.

    ``async with Bystander(url) as b:`` returns once it has completed a first
    round trip; on exit it does one more and checks that every acked publish
    arrived exactly once, in order, and that it never lost its connection.
    ``interval`` paces the loop (it is a pace, not a wait for a condition).
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        channel: str | None = None,
        interval: float = 0.005,
    ) -> None:
        self.client = RawClient(url, token=token, name="bystander")
        self.channel = channel or f"bystander.{uuid.uuid4().hex[:8]}"
        self.interval = interval
        self.acked: list[int] = []
        self._stop = False
        self._task: asyncio.Task[None] | None = None
        self._first = asyncio.Event()
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> Bystander:
        await self.client.connect()
        ack = assert_ok(await self.client.subscribe(self.channel), "bystander subscribe")
        self._base = ack["seq"]
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._first.wait(), WAIT_TIMEOUT)
        return self

    async def round_trip(self) -> int:
        """Publish one message and wait until it comes back."""
        async with self._lock:  # the loop and the test both call this
            n = len(self.acked) + 1
            ack = assert_ok(await self.client.publish(self.channel, {"n": n}), "bystander publish")
            self.acked.append(ack["seq"])
            await self.client.wait_for_seq(self.channel, ack["seq"])
            return int(ack["seq"])

    async def _run(self) -> None:
        while not self._stop:
            await self.round_trip()
            self._first.set()
            await asyncio.sleep(self.interval)

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._stop = True
        try:
            if exc[0] is None:
                await asyncio.wait_for(self._task, WAIT_TIMEOUT)
                await self.round_trip()
                self.check()
        finally:
            self._task.cancel()
            await self.client.close()

    def check(self) -> None:
        client = self.client
        assert client.connected, f"the bystander lost its connection: {client.disconnect_reasons}"
        assert not client.problems, client.problems
        expected = list(range(self._base + 1, self._base + len(self.acked) + 1))
        assert self.acked == expected, "the bystander's publishes got non-consecutive seqs"
        live = client.seqs(self.channel)
        assert live == expected, "the bystander did not receive its messages exactly once in order"
        data = [env["data"]["n"] for env in client.received[self.channel]]
        assert data == list(range(1, len(self.acked) + 1))


def poll_until(
    predicate: Callable[[], bool], what: str = "a condition", within: float = WAIT_TIMEOUT
) -> None:
    """:func:`wait_until` for blocking code (rtkit's blocking client, widgets)."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {within}s for {what}")
        time.sleep(0.02)


async def wait_until(
    predicate: Callable[[], bool], what: str = "a condition", within: float = WAIT_TIMEOUT
) -> None:
    """Poll a condition that no event announces (replicas equal, a cap
    freed), failing with ``what`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {within}s for {what}")
        await asyncio.sleep(0.02)


# -- bridges ------------------------------------------------------------------


async def history(hub: Client, channel: str) -> list[Any]:
    """Every stored message's data, in seq order."""
    out: list[Any] = []
    since = 0
    while True:
        page = await hub.channel(channel).history(since=since, limit=1000)
        if not page:
            return out
        out += [m.data for m in page]
        since = page[-1].seq


async def wait_count(hub: Client, channel: str, count: int, within: float = 30) -> None:
    """Wait until ``channel`` holds ``count`` messages (its last seq)."""
    deadline = time.monotonic() + within
    seen = 0
    while True:
        page = await hub.channel(channel).history(limit=1)
        seen = page[-1].seq if page else 0
        if seen >= count:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{channel}: {seen} of {count} messages after {within} s")
        await asyncio.sleep(0.05)


def bridge_process(args: list[str], hub_url: str, log: Path) -> subprocess.Popen[Any]:
    """``rtkit bridge ARGS`` in its own process group, its stderr appended to ``log``."""
    argv = [sys.executable, "-m", "rtkit", "bridge", *args, "--url", hub_url, "--report", "0"]
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        return start_group(argv, stdout=subprocess.DEVNULL, stderr=out)
