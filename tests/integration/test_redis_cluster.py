"""Several hub processes on one real Redis: one order, presence and documents
across hubs, failover through nginx, and a Redis outage.

Each test uses its own key prefix on the Redis at 127.0.0.1:6379 (or
``$RTKIT_TEST_REDIS``) and deletes its keys afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pycrdt
import pytest

import rtkit
import rtkit.aio
from rtkit.deploy import nginx_config
from rtkit.errors import Unavailable
from rtkit.pytest_plugin import REDIS_URL, HubProcess, free_port

from .conftest import SECRET, Connect, token
from .helpers import WAIT_TIMEOUT, assert_gap_free, assert_ok, wait_until
from .proxy import Proxy

REDIS = REDIS_URL
FAST: dict[str, Any] = {"reconnect_delay": 0.05, "reconnect_delay_max": 0.3}

pytestmark = pytest.mark.redis


class Cluster:
    """Hub processes sharing one Redis prefix (``via`` redirects the hubs'
    Redis connections, e.g. through a Proxy)."""

    def __init__(self, prefix: str, redis_url: str = REDIS) -> None:
        self.store = f"{redis_url}?prefix={prefix}"
        self.hubs: list[HubProcess] = []

    def start(self, n: int, **kwargs: Any) -> list[HubProcess]:
        new = [HubProcess(store=self.store, secret=SECRET, **kwargs) for _ in range(n)]
        self.hubs += new
        for hub in new:
            hub.start()
        return new

    def stop(self) -> None:
        for hub in self.hubs:
            hub.terminate(timeout=5)


@pytest.fixture
def cluster(rt_redis_prefix: str) -> Iterator[Callable[..., Cluster]]:
    made: list[Cluster] = []

    def make(redis_url: str = REDIS) -> Cluster:
        c = Cluster(rt_redis_prefix, redis_url)
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop()


def readyz(hub: HubProcess) -> int:
    try:
        with urllib.request.urlopen(f"{hub.url}/readyz", timeout=2) as resp:
            status: int = resp.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


async def test_one_gap_free_order_for_publishers_on_three_hubs(
    cluster: Callable[..., Cluster], connect: Connect
) -> None:
    a, b, c = cluster().start(3)
    subs = [await connect(hub.url, token=token("sub")) for hub in (a, c)]
    for sub in subs:
        assert_ok(await sub.subscribe("feed", since=0))
    per_publisher = 150

    async def publish_all(hub: HubProcess, name: str) -> list[tuple[int, int]]:
        pub = await connect(hub.url, token=token(name))
        acks = []
        for i in range(per_publisher):
            ack = assert_ok(await pub.publish("feed", {"from": name, "i": i}, id=f"{name}-{i}"))
            acks.append((ack["seq"], i))
        return acks

    results = await asyncio.gather(publish_all(a, "pa"), publish_all(b, "pb"), publish_all(c, "pc"))
    total = 3 * per_publisher
    acked = sorted(seq for acks in results for seq, _ in acks)
    assert acked == list(range(1, total + 1)), "every publish got its own seq"
    for sub in subs:
        await sub.wait_for_seq("feed", total)
        seqs = sub.seqs("feed")
        assert seqs == list(range(1, total + 1)), "each message once, in seq order"
        envelopes = sub.received["feed"]
        for name in ("pa", "pb", "pc"):
            order = [e["data"]["i"] for e in envelopes if e["data"]["from"] == name]
            assert order == list(range(per_publisher)), f"{name}'s messages kept their order"
    # A retry of an acked publish on another hub is a duplicate, not a new message.
    again = await connect(a.url, token=token("pc"))
    dup = assert_ok(await again.publish("feed", {"from": "pc", "i": 0}, id="pc-0"))
    assert dup.get("duplicate") is True and dup["seq"] == dict((i, s) for s, i in results[2])[0]


async def test_publishers_at_full_speed_on_three_hubs_one_order_everywhere(
    cluster: Callable[..., Cluster], connect: Connect
) -> None:
    """Every message reaches subscribers through the store's feed, whichever
    hub took it: with three hubs publishing as fast as they can at once, a
    subscriber on each hub sees every seq once, in order."""
    hubs = cluster().start(3, extra_args=["--publish-rate", "0"])
    subs = [await connect(hub.url, token=token(f"sub{n}")) for n, hub in enumerate(hubs)]
    for sub in subs:
        assert_ok(await sub.subscribe("burst", since=0))
    per_publisher = 500

    async def publish_all(hub: HubProcess, name: str) -> list[int]:
        pub = await connect(hub.url, token=token(name))
        # All at once, without waiting for each ack: the hubs append as fast
        # as Redis takes the messages.
        acks = await asyncio.gather(
            *(pub.publish("burst", {"from": name, "i": i}) for i in range(per_publisher))
        )
        return [assert_ok(ack)["seq"] for ack in acks]

    results = await asyncio.gather(*(publish_all(hub, f"p{n}") for n, hub in enumerate(hubs)))
    total = 3 * per_publisher
    assert sorted(seq for seqs in results for seq in seqs) == list(range(1, total + 1))
    for sub in subs:
        await sub.wait_for_seq("burst", total)
        assert sub.seqs("burst") == list(range(1, total + 1)), "each message once, in seq order"


async def test_presence_and_documents_across_hubs(cluster: Callable[..., Cluster]) -> None:
    a, b = cluster().start(2, extra_args=["--presence-timeout", "3"])
    ada = await rtkit.aio.connect(a.url, token("ada"), **FAST)
    bob = await rtkit.aio.connect(b.url, token("bob"), **FAST)
    try:
        room_a = await ada.presence("lab", state={"cell": 1})
        room_b = await bob.presence("lab", state={"cell": 2})
        assert [m.user for m in room_b.members] == ["ada", "bob"]
        await wait_until(lambda: [m.user for m in room_a.members] == ["ada", "bob"], "bob at a")
        await room_b.update({"cell": 5})
        await wait_until(
            lambda: any(m.user == "bob" and m.state.get("cell") == 5 for m in room_a.members),
            "bob's update at a",
        )

        doc_a = await ada.shared("notes")
        doc_b = await bob.shared("notes")
        doc_a["x"] = 1
        await doc_a.flush()
        await wait_until(lambda: doc_b.to_dict() == {"x": 1}, "a's edit at b")
        doc_b.doc.get("text", type=pycrdt.Text).insert(0, "hi")
        await doc_b.flush()
        await wait_until(lambda: str(doc_a.doc.get("text", type=pycrdt.Text)) == "hi", "b at a")

        # Hub b dies without a word: its member leaves once its entry lapses.
        b.kill()
        await wait_until(lambda: [m.user for m in room_a.members] == ["ada"], "bob's expiry", 15)
    finally:
        await ada.close()
        await bob.close()
    # A hub started later sees the documents as stored by both.
    (c,) = cluster().start(1)
    late = await rtkit.aio.connect(c.url, token("cy"), **FAST)
    try:
        doc = await late.shared("notes")
        assert doc.to_dict() == {"x": 1}
        assert str(doc.doc.get("text", type=pycrdt.Text)) == "hi"
    finally:
        await late.close()


class Nginx:
    """nginx in front of ``primary``, falling back to ``backups`` when it is
    gone (so a test knows which hub serves a new connection)."""

    def __init__(self, primary: HubProcess, backups: list[HubProcess], workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        servers = [f"127.0.0.1:{primary.port}"] + [f"127.0.0.1:{h.port} backup" for h in backups]
        conf = nginx_config(f"127.0.0.1:{self.port}", servers, str(workdir))
        (workdir / "nginx.conf").write_text(conf)
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.proc = subprocess.Popen(
            [nginx, "-c", str(workdir / "nginx.conf"), "-p", str(workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def ready(self) -> Nginx:
        async def up() -> None:
            while True:
                with contextlib.suppress(OSError):
                    _, w = await asyncio.open_connection("127.0.0.1", self.port)
                    w.close()
                    return
                await asyncio.sleep(0.02)

        await asyncio.wait_for(up(), 10)
        return self

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
async def nginx_for(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    if not (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()):  # noqa: ASYNC240
        pytest.skip("nginx is not installed (.ci/run installs it)")
    started: list[Nginx] = []

    async def start(primary: HubProcess, backups: list[HubProcess]) -> Nginx:
        n = Nginx(primary, backups, tmp_path)
        started.append(n)
        return await n.ready()

    yield start
    for n in started:
        n.stop()


async def _publish_steadily(
    client: rtkit.aio.Client, channel: str, stop: asyncio.Event, acked: list[int]
) -> None:
    """Publish until ``stop``; a publish refused as unavailable is retried
    with the same id (the hub dedups it), the way an application would."""
    ch = client.channel(channel)
    i = 0
    while not stop.is_set():
        while True:
            try:
                acked.append(await ch.publish({"i": i}, id=f"m{i}"))
                break
            except Unavailable:
                await asyncio.sleep(0.05)  # retry backoff
        i += 1
        await asyncio.sleep(0.005)  # a steady load, not a wait for a condition


@pytest.mark.slow
@pytest.mark.parametrize("how", ["kill", "sigterm"])
async def test_failover_through_nginx(
    cluster: Callable[..., Cluster], nginx_for: Any, how: str
) -> None:
    hubs = cluster().start(3)
    # The publisher stays on hubs[0]; the subscriber comes in through nginx
    # on hubs[1], which fails, and lands on hubs[2].
    victim = hubs[1]
    lb = await nginx_for(victim, [hubs[2]])
    got: list[rtkit.Message] = []
    reconnected = asyncio.Event()
    subscriber = await rtkit.aio.connect(lb.url, token("sub"), **FAST)
    subscriber.on("reconnect", lambda *_: reconnected.set())
    publisher = await rtkit.aio.connect(hubs[0].url, token("pub"), **FAST)
    await subscriber.channel("load").subscribe(got.append)
    acked: list[int] = []
    stop = asyncio.Event()
    load = asyncio.ensure_future(_publish_steadily(publisher, "load", stop, acked))
    try:
        await wait_until(lambda: len(got) >= 100, "the first 100 messages")
        t0 = time.monotonic()
        if how == "kill":
            await asyncio.to_thread(victim.kill)
        else:
            code = await asyncio.to_thread(victim.terminate, 10)
            assert code == 0, "a drained hub exits cleanly:\n" + "\n".join(victim.log[-20:])
            assert time.monotonic() - t0 < 10, "a drained hub exits within its drain bound"
        await asyncio.wait_for(reconnected.wait(), 5)
        took = time.monotonic() - t0
        assert took < 5, f"reconnected after {took:.2f} s"
        count = len(got)
        await wait_until(lambda: len(got) >= count + 100, "100 more messages after failover")
    finally:
        stop.set()
        await asyncio.wait_for(load, 30)
    try:
        await wait_until(lambda: bool(got) and got[-1].seq >= acked[-1], "every acked message")
    finally:
        await subscriber.close()
        await publisher.close()
    seqs = [m.seq for m in got]
    assert seqs == sorted(set(seqs)), "each message once, in order"
    assert_gap_free(seqs, start=1, end=acked[-1])
    assert set(acked) <= set(seqs)


@pytest.mark.slow
async def test_redis_outage_hubs_unready_nothing_acked_is_lost(
    cluster: Callable[..., Cluster], connect: Connect
) -> None:
    proxy = await Proxy(6379).start()
    try:
        redis_via_proxy = REDIS.replace(":6379", f":{proxy.port}")
        # The proxy lives in this event loop: start the hubs from a thread.
        a, b = await asyncio.to_thread(cluster(redis_via_proxy).start, 2)
        sub = await connect(a.url, token=token("sub"))
        assert_ok(await sub.subscribe("load", since=0))
        publisher = await rtkit.aio.connect(b.url, token("pub"), **FAST)
        acked: list[int] = []
        stop = asyncio.Event()
        load = asyncio.ensure_future(_publish_steadily(publisher, "load", stop, acked))
        try:
            await wait_until(lambda: len(acked) >= 100, "100 acked publishes")
            proxy.cut()
            await wait_until_async(lambda: both(a, b, 503), "both hubs unready")
            during = len(acked)
            refused = assert_unavailable(await sub.publish("load", {"x": 1}))
            assert refused
            cut_at = time.monotonic()
            await wait_until(lambda: time.monotonic() - cut_at >= 5, "a 5 s outage", 10)
            assert len(acked) <= during + 1, "nothing is acked while Redis is away"
            proxy.restore()
            await wait_until_async(lambda: both(a, b, 200), "both hubs ready")
            await wait_until(lambda: len(acked) >= during + 100, "100 more acks after recovery")
        finally:
            stop.set()
            await asyncio.wait_for(load, 30)
            await publisher.close()
        await sub.wait_for_seq("load", acked[-1])
        seqs = sub.seqs("load")
        assert seqs == sorted(set(seqs)), "each message once, in order"
        assert_gap_free(seqs, start=1, end=acked[-1])
        assert acked == sorted(set(acked)), "retries were deduplicated"
    finally:
        await proxy.close()


async def both(a: HubProcess, b: HubProcess, status: int) -> bool:
    codes = await asyncio.gather(asyncio.to_thread(readyz, a), asyncio.to_thread(readyz, b))
    return all(code == status for code in codes)


async def wait_until_async(
    predicate: Callable[[], Awaitable[bool]], what: str, within: float = WAIT_TIMEOUT
) -> None:
    deadline = time.monotonic() + within
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {within}s for {what}")
        await asyncio.sleep(0.05)


def assert_unavailable(ack: Any) -> bool:
    return isinstance(ack, dict) and ack.get("error", {}).get("code") == "unavailable"
