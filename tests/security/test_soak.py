"""Attackers and well-behaved clients on one hub at once, for a bounded time.

Every attack of the hardening tests runs side by side with normal traffic,
plus a fuzzer that mutates valid Socket.IO packets. What a user of the hub
would check afterwards:

- the hub is still up and answering;
- no message a well-behaved publisher got an ack for is missing, for its
  live subscribers or in the channel's history;
- once the attackers are gone, the hub's resident memory is back within 10%
  of what it was before they came. "Before" is after a short first round of
  the same attacks, once memory has settled: what a hub allocates once and
  keeps (caches, the allocator's pools) is its working state, not a leak.

``RTKIT_SOAK_SECONDS`` sets the attack's length (default 30; the test takes
about twice that). ``RTKIT_SOAK_SEED`` replays a fuzzer run; the seed used is
printed when the test fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pycrdt
import pytest
from integration.helpers import RawClient, assert_gap_free, assert_ok, wait_until

from rtkit.hub.auth import mint_token

from .attack import RawSocket, rss_mb

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SECRET = "soak-secret-0123456789abcdef0123456789"
SECONDS = float(os.environ.get("RTKIT_SOAK_SECONDS", "30"))
SEED = int(os.environ.get("RTKIT_SOAK_SEED", str(random.randrange(2**32))))
BIG = 100 * 1024  # bytes of each message on the channel the ack flooders read
# What "back to normal" means once the attackers are gone (the bound).
RSS_TOLERANCE = 0.10
WARM_UP_SECONDS = SECONDS / 2

Attack = Callable[[str, float, random.Random], Awaitable[None]]


def _token(user: str, **grants: Any) -> str:
    return mint_token(SECRET, user, **grants)


GOOD = {"publish": ["soak.*"], "subscribe": ["soak.*"]}
MALLORY = {"publish": ["mal.*"], "subscribe": ["*"]}


async def _raw(url: str, token: str | None) -> RawSocket:
    sock = await RawSocket.open(url)
    answer = await sock.connect_namespace({"token": token} if token else {})
    if not answer.startswith("40"):
        await sock.close()
        raise ConnectionRefusedError(answer)
    return sock


def _event(n: int, name: str, payload: Any) -> str:
    return f"42/rtkit,{n}" + json.dumps([name, payload])


async def _until(deadline: float, attempt: Callable[[], Awaitable[None]]) -> None:
    """Run ``attempt`` again and again until ``deadline``: the hub may close
    an attacker's socket at any point, and the attacker comes straight back."""
    while time.monotonic() < deadline:
        with contextlib.suppress(
            ConnectionError, OSError, TimeoutError, asyncio.IncompleteReadError
        ):
            await attempt()
        await asyncio.sleep(0)  # a hub that refuses at once must not make this a busy loop


# -- the attacks --------------------------------------------------------------


def ack_flood(channel: str) -> Attack:
    """Ask for the history of a channel of 100 KB messages, many times over,
    and never read an answer (item 1)."""

    async def run(url: str, deadline: float, rnd: random.Random) -> None:
        async def attempt() -> None:
            sock = await _raw(url, _token("mallory", **MALLORY))
            try:
                for n in range(100):
                    if time.monotonic() > deadline:
                        break
                    request = rnd.choice(
                        [
                            ("history", {"channel": channel, "limit": 10000}),
                            ("subscribe", {"channel": channel, "since": 0}),
                        ]
                    )
                    await asyncio.wait_for(sock.send_text(_event(n, *request)), 2)
                # Hold the unread answers a while (the hub may drop the socket
                # meanwhile), then come back with a new one.
                await asyncio.sleep(min(rnd.uniform(2, 5), max(0.0, deadline - time.monotonic())))
            finally:
                await sock.close()

        await _until(deadline, attempt)

    return run


async def attachment_bomb(url: str, deadline: float, rnd: random.Random) -> None:
    """Announce billions of binary attachments and send big frames (item 2),
    with a token that grants nothing."""

    async def attempt() -> None:
        sock = await _raw(url, _token("nobody", publish=[], subscribe=[]))
        try:
            await sock.send_text('451-/rtkit,9999999999["publish",{"channel":"mal.x","data":')
            frame = rnd.randbytes(512 * 1024)
            for _ in range(200):
                if time.monotonic() > deadline:
                    break
                await asyncio.wait_for(sock.send_binary(frame), 2)
        finally:
            await sock.close()

    await _until(deadline, attempt)


async def junk_before_login(url: str, deadline: float, rnd: random.Random) -> None:
    """Binary and malformed frames on a socket that never joins /rtkit (item 4)."""

    async def attempt() -> None:
        sock = await RawSocket.open(url)
        try:
            for _ in range(500):
                if time.monotonic() > deadline:
                    break
                if rnd.random() < 0.5:
                    sent = sock.send_binary(rnd.randbytes(rnd.randrange(1, 2048)))
                else:
                    sent = sock.send_text(rnd.choice(["4", "42", "45-", "4x", "9", "40/other"]))
                await asyncio.wait_for(sent, 2)
        finally:
            await sock.close()

    await _until(deadline, attempt)


async def pending_sessions(url: str, deadline: float, rnd: random.Random) -> None:
    """Engine.IO sessions that never send the namespace CONNECT (item 14)."""
    held: list[RawSocket] = []
    try:
        while time.monotonic() < deadline:
            try:
                held.append(await asyncio.wait_for(RawSocket.open(url), 5))
            except (ConnectionError, OSError, TimeoutError, asyncio.IncompleteReadError):
                await asyncio.sleep(0.05)  # refused: the cap holds; try again later
            if len(held) > 300:
                await held.pop(0).close()
    finally:
        for sock in held:
            await sock.close()


async def unique_reads(url: str, deadline: float, rnd: random.Random) -> None:
    """History of channels nobody ever published to, and absurd seqs (items 7, 11)."""

    async def attempt() -> None:
        sock = await _raw(url, _token("mallory", **MALLORY))
        try:
            n = 0
            while time.monotonic() < deadline:
                n += 1
                since = rnd.choice([2**64 - 1, 2**63, 2**53 + 1, 0])
                payload = {"channel": f"mal.{uuid.uuid4().hex}", "since": since}
                await asyncio.wait_for(sock.send_text(_event(n, "history", payload)), 2)
                # Read the answers now and then, so this is load rather than a stuck client.
                if n % 50 == 0:
                    await sock.receive(within=2)
        finally:
            await sock.close()

    await _until(deadline, attempt)


async def big_publishes(url: str, deadline: float, rnd: random.Random) -> None:
    """250 KB publishes as fast as the hub takes them (item 8)."""
    client = RawClient(url, token=_token("mallory", **MALLORY), name="big-publisher")
    data = "x" * 250_000
    try:
        await client.connect()
        while time.monotonic() < deadline and client.connected:
            ack = await client.publish(f"mal.big{rnd.randrange(50)}", data)
            if not ack.get("ok"):
                await asyncio.sleep(0.05)  # refused (quota): slow down like a real client would
    except (ConnectionError, OSError, TimeoutError, AssertionError):
        pass
    finally:
        await client.close()


async def big_document(url: str, deadline: float, rnd: random.Random) -> None:
    """Grow one shared document as fast as the hub allows (item 8)."""
    client = RawClient(url, token=_token("mallory", **MALLORY), name="doc-grower")
    doc: pycrdt.Doc = pycrdt.Doc()
    text = doc.get("t", type=pycrdt.Text)
    try:
        await client.connect()
        await client.call("doc.sync", {"doc": "mal.doc", "state_vector": b"\x00"})
        while time.monotonic() < deadline and client.connected:
            before = doc.get_state()
            text += rnd.randbytes(100_000).hex()
            ack = await client.call(
                "doc.update", {"doc": "mal.doc", "update": doc.get_update(before)}
            )
            if not ack.get("ok"):
                break  # too_large: the cap holds
    except (ConnectionError, OSError, TimeoutError, AssertionError):
        pass
    finally:
        await client.close()


# The fuzzer's material: valid requests, mutated.
_VALID = [
    ("publish", {"channel": "mal.f", "data": {"a": 1}}),
    ("publish", {"channel": "mal.f", "data": [1, 2, 3], "id": "x"}),
    ("subscribe", {"channel": "mal.f", "since": 0}),
    ("subscribe", {"channel": "mal.f", "history": 5}),
    ("unsubscribe", {"channel": "mal.f"}),
    ("history", {"channel": "mal.f", "limit": 10}),
    ("presence.join", {"room": "mal.room", "state": {"x": 1}}),
    ("presence.update", {"room": "mal.room", "state": {"x": None}}),
    ("presence.list", {"room": "mal.room"}),
    ("presence.leave", {"room": "mal.room"}),
    ("doc.sync", {"doc": "mal.d"}),
]
_ODD_VALUES: list[Any] = [
    None,
    True,
    -1,
    0,
    2**64 - 1,
    2**200,
    1.5e308,
    "",
    "x" * 10_000,
    "\u0000\ud7ff",
    [],
    {},
    [[[[[[[[[[[]]]]]]]]]]],
    {"$": {"$": {"$": None}}},
    "../../etc/passwd",
    "*",
    "mal.*",
    "a" * 201,
]


def _mutate(rnd: random.Random) -> str:
    event, payload = rnd.choice(_VALID)
    payload = dict(payload)
    choice = rnd.randrange(6)
    if choice == 0 and payload:  # a field gets an odd value
        payload[rnd.choice(list(payload))] = rnd.choice(_ODD_VALUES)
    elif choice == 1:  # an unknown field
        payload[rnd.choice(["since", "before", "limit", "state", "zz", ""])] = rnd.choice(
            _ODD_VALUES
        )
    elif choice == 2:  # an unknown or odd event name
        event = rnd.choice(["", "connect", "disconnect", "messages", "x" * 300, "publish "])
    elif choice == 3:  # the wrong number of arguments
        return f"42/rtkit,{rnd.randrange(10**6)}" + json.dumps([event, payload, payload])
    text = _event(rnd.randrange(10**6), event, payload)
    if choice == 4:  # cut short
        return text[: rnd.randrange(1, len(text))]
    if choice == 5:  # a byte flipped
        i = rnd.randrange(len(text))
        return text[:i] + chr(rnd.randrange(32, 127)) + text[i + 1 :]
    return text


async def fuzzer(url: str, deadline: float, rnd: random.Random) -> None:
    """Mutated Socket.IO packets on a connected socket; it reads its answers."""

    async def attempt() -> None:
        sock = await _raw(url, _token("mallory", **MALLORY))
        try:
            n = 0
            while time.monotonic() < deadline:
                n += 1
                await asyncio.wait_for(sock.send_text(_mutate(rnd)), 2)
                if n % 20 == 0:
                    with contextlib.suppress(TimeoutError):
                        await sock.receive(within=0.5)
        finally:
            await sock.close()

    await _until(deadline, attempt)


# -- the well-behaved side ----------------------------------------------------


class GoodTraffic:
    """Two publishers (each with idempotency ids) and two live subscribers
    on one channel, at a modest steady rate, recording every ack."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.channel = f"soak.{uuid.uuid4().hex[:8]}"
        self.acked: set[int] = set()
        self.errors: list[str] = []
        self.publishers = [
            RawClient(url, token=_token(f"good{i}", **GOOD), name=f"good-pub{i}") for i in range(2)
        ]
        self.subscribers = [
            RawClient(url, token=_token(f"reader{i}", **GOOD), name=f"good-sub{i}")
            for i in range(2)
        ]
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for client in [*self.publishers, *self.subscribers]:
            await client.connect()
        for client in self.subscribers:
            assert_ok(await client.subscribe(self.channel, since=0))
        self._tasks = [asyncio.create_task(self._publish(p)) for p in self.publishers]

    async def _publish(self, client: RawClient) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            try:
                ack = await client.publish(self.channel, {"n": n}, id=f"{client.name}-{n}")
            except AssertionError as exc:  # no ack within the timeout
                self.errors.append(f"{client.name} #{n}: {exc}")
                continue
            if ack.get("ok"):
                self.acked.add(ack["seq"])
            else:
                self.errors.append(f"{client.name} #{n} refused: {ack}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 0.02)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def check(self) -> None:
        assert not self.errors, self.errors[:5]
        top = max(self.acked)
        for client in self.subscribers:
            assert client.connected, f"{client.name} lost its connection"
            await client.wait_for_seq(self.channel, top)
            seqs = client.seqs(self.channel)
            assert_gap_free(seqs, start=1, end=top)
            assert not self.acked - set(seqs), f"{client.name} missed acked messages"
            assert not client.problems, client.problems[:5]
        # And the store kept them all: page through the history.
        reader = self.subscribers[0]
        stored: list[int] = []
        since = 0
        while True:
            page = assert_ok(await reader.history(self.channel, since=since, limit=10000))
            seqs = [env["seq"] for env in page["messages"]]
            stored += seqs
            if not seqs or seqs[-1] >= top:
                break
            since = seqs[-1]
        assert not self.acked - set(stored), "acked messages are missing from the history"

    async def close(self) -> None:
        for client in [*self.publishers, *self.subscribers]:
            await client.close()


# -- the test -----------------------------------------------------------------


async def steady_rss(hub: Any, *, within: float = 60.0) -> float:
    """The hub's RSS once it has stopped falling (no drop of more than 1 MiB
    over 8 s, longer than the hub waits before collecting what failed
    connections left): what it holds when the work of the moment is done."""
    deadline = time.monotonic() + within
    samples = [rss_mb(hub)]
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        samples.append(rss_mb(hub))
        if len(samples) >= 17 and samples[-17] - samples[-1] < 1.0:
            return samples[-1]
    raise AssertionError(f"the hub's memory did not settle within {within}s: {samples[-10:]}")


async def test_attackers_beside_normal_traffic_leave_the_hub_as_it_was(
    rt_hub_factory: Any, tmp_path: Any
) -> None:
    hub = rt_hub_factory(store=f"sqlite:///{tmp_path / 'soak.db'}", secret=SECRET)
    rnd = random.Random(SEED)
    print(f"soak seed {SEED} (RTKIT_SOAK_SEED={SEED} replays it), {SECONDS}s of attacks")

    # A channel of big messages for the ack flooders to read.
    feeder = await RawClient(hub.url, token=_token("feeder", **MALLORY), name="feeder").connect()
    flooded = f"mal.flood{uuid.uuid4().hex[:6]}"
    for i in range(100):
        while not (ack := await feeder.publish(flooded, f"{i:06d}" + "x" * BIG))["ok"]:
            assert ack["error"]["code"] == "rate_limited", ack  # the byte quota: slow down
            await asyncio.sleep(0.1)
    await feeder.close()

    good = GoodTraffic(hub.url)
    await good.start()
    await wait_until(lambda: len(good.acked) >= 100, "normal traffic to flow")

    attacks: list[Attack] = [
        ack_flood(flooded),
        ack_flood(flooded),
        attachment_bomb,
        junk_before_login,
        pending_sessions,
        unique_reads,
        big_publishes,
        big_document,
        fuzzer,
        fuzzer,
    ]
    peak = 0.0

    async def attack_for(seconds: float) -> None:
        nonlocal peak
        deadline = time.monotonic() + seconds

        async def watch_memory() -> None:
            nonlocal peak
            while time.monotonic() < deadline:
                peak = max(peak, rss_mb(hub))
                await asyncio.sleep(0.2)

        await asyncio.gather(
            watch_memory(),
            *(attack(hub.url, deadline, random.Random(rnd.random())) for attack in attacks),
        )

    try:
        # A short first round: what a hub allocates once and keeps (caches,
        # tables sized for the load it has seen, the allocator's own pools)
        # is part of its working state, not something attackers left behind.
        # The baseline is that state, once memory has stopped falling.
        fresh = rss_mb(hub)
        await attack_for(WARM_UP_SECONDS)
        baseline = await steady_rss(hub)

        await attack_for(SECONDS)
        assert hub.running, "the hub died under attack:\n" + "\n".join(hub.log[-40:])
        # The attackers are gone; normal traffic goes on for a moment.
        sent = len(good.acked)
        await wait_until(lambda: len(good.acked) >= sent + 50, "normal traffic after the attack")
        await good.stop()
        await good.check()

        # Memory comes back (the hub frees what attackers made it hold).
        def settled() -> bool:
            return rss_mb(hub) <= baseline * (1 + RSS_TOLERANCE)

        try:
            await wait_until(settled, "the hub's memory to settle", within=30)
        except AssertionError:
            raise AssertionError(
                f"hub RSS {rss_mb(hub):.0f} MiB after the attack, baseline {baseline:.0f} MiB, "
                f"peak {peak:.0f} MiB (seed {SEED})"
            ) from None
        print(
            f"RSS fresh {fresh:.0f} MiB, after a {WARM_UP_SECONDS:g} s first round {baseline:.0f}, "
            f"peak {peak:.0f}, after the {SECONDS:g} s attack {rss_mb(hub):.0f} MiB"
        )
        tracebacks = sum("Traceback" in line for line in hub.log)
        assert tracebacks == 0, "\n".join(hub.log[-60:])
    finally:
        await good.close()
