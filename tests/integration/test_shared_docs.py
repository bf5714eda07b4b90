"""Shared documents against real hubs (in-process, or a process where one
restarts): sync, updates, limits,
compaction, and convergence of concurrent and offline edits."""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
import threading
from typing import Any

import pycrdt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rtkit
import rtkit.aio
from rtkit.pytest_plugin import HubProcess, InProcessHub

from .conftest import SECRET, Connect, token
from .helpers import NS, WAIT_TIMEOUT, assert_error, assert_ok, wait_until
from .proxy import Proxy

FAST: dict[str, Any] = {"reconnect_delay": 0.05, "reconnect_delay_max": 0.3}


def contents(doc: pycrdt.Doc[Any]) -> tuple[Any, Any, str]:
    return (
        doc.get("state", type=pycrdt.Map).to_py(),
        doc.get("items", type=pycrdt.Array).to_py(),
        str(doc.get("text", type=pycrdt.Text)),
    )


async def test_two_clients_share_a_map_an_array_and_text(rt_hub_inprocess: InProcessHub) -> None:
    a = await rtkit.aio.connect(rt_hub_inprocess.url, **FAST)
    b = await rtkit.aio.connect(rt_hub_inprocess.url, **FAST)
    try:
        pa = await a.shared("params")
        pa["alpha"] = 0.5
        pa.doc.get("items", type=pycrdt.Array).append("task 1")
        pa.doc.get("text", type=pycrdt.Text).insert(0, "hello")
        await pa.flush()

        pb = await b.shared("params")  # the first sync brings what is there
        assert pb.synced and pb.to_dict() == {"alpha": 0.5}
        assert contents(pb.doc) == contents(pa.doc)

        changes: list[rtkit.SharedChange] = []
        got = asyncio.Event()
        pb.observe(lambda change: (changes.append(change), got.set()))
        with pa.transaction():
            pa["beta"] = {"nested": [1, 2]}
            del pa["alpha"]
        await asyncio.wait_for(got.wait(), WAIT_TIMEOUT)
        assert pb.to_dict() == {"beta": {"nested": [1.0, 2.0]}}
        assert changes == [rtkit.SharedChange("params", frozenset({"alpha", "beta"}))]
        pb["gamma"] = True  # local edits never reach the local observer
        await pb.flush()
        await wait_until(lambda: "gamma" in pa, "gamma at a")
        assert len(changes) == 1
        assert await a.shared("params") is pa
    finally:
        await a.close()
        await b.close()


async def test_the_wire_protocol_with_a_stock_client(
    rt_hub_inprocess: InProcessHub, connect: Connect
) -> None:
    first, second = await connect(rt_hub_inprocess.url), await connect(rt_hub_inprocess.url)
    heard: dict[str, list[Any]] = {"first": [], "second": []}
    for name, client in (("first", first), ("second", second)):
        client.sio.on("doc.update", heard[name].append, namespace=NS)

    ack = assert_ok(await first.call("doc.sync", {"doc": "wire", "state_vector": b"\x00"}))
    assert isinstance(ack["update"], bytes) and isinstance(ack["state_vector"], bytes)
    assert_ok(await second.call("doc.sync", {"doc": "wire", "state_vector": b"\x00"}))

    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    doc.get("state", type=pycrdt.Map)["k"] = "v"
    assert_ok(await first.call("doc.update", {"doc": "wire", "update": updates[0]}))
    await wait_until(lambda: bool(heard["second"]), "the broadcast")
    assert heard["second"] == [{"doc": "wire", "update": updates[0]}]
    assert heard["first"] == []  # the sender is not echoed

    # A third client that syncs from its own state vector gets only what it lacks.
    third = await connect(rt_hub_inprocess.url)
    replica: pycrdt.Doc[Any] = pycrdt.Doc()
    ack = assert_ok(
        await third.call("doc.sync", {"doc": "wire", "state_vector": replica.get_state()})
    )
    replica.apply_update(ack["update"])
    assert replica.get("state", type=pycrdt.Map).to_py() == {"k": "v"}
    assert ack["state_vector"] == replica.get_state()
    ack = assert_ok(
        await third.call("doc.sync", {"doc": "wire", "state_vector": replica.get_state()})
    )
    assert ack["update"] == b"\x00\x00"


async def test_doc_requests_are_checked(rt_hub_inprocess_factory: Any, connect: Connect) -> None:
    hub: InProcessHub = rt_hub_inprocess_factory(
        secret=SECRET, extra_args=["--max-payload", "1000"]
    )
    reader = await connect(hub.url, token=token("reader", publish=[], subscribe=["*"]))
    assert_ok(await reader.call("doc.sync", {"doc": "team", "state_vector": b"\x00"}))
    update = b"\x01\x01\xd2\x85\xd8\xb0\x01\x00\x28\x01\x05state\x01k\x01\x77\x01v\x00"
    assert "may not write" in assert_error(
        await reader.call("doc.update", {"doc": "team", "update": update}), "forbidden"
    )
    outsider = await connect(hub.url, token=token("outsider", subscribe=["lab.*"]))
    assert "may not read" in assert_error(
        await outsider.call("doc.sync", {"doc": "team", "state_vector": b"\x00"}), "forbidden"
    )

    writer = await connect(hub.url, token=token("writer"))
    for bad in (b"", b"\xff\xff\xff\xff", b"\x01\x01\x01", b"\x02garbage"):
        ack = await writer.call("doc.update", {"doc": "team", "update": bad})
        assert "update" in assert_error(ack, "bad_request")
    assert_error(await writer.call("doc.update", {"doc": "team", "update": "text"}), "bad_request")
    assert_error(
        await writer.call("doc.sync", {"doc": "team", "state_vector": b"\xff\xff"}), "bad_request"
    )
    assert "over 1000" in assert_error(
        await writer.call("doc.update", {"doc": "team", "update": b"\x00" * 1001}), "too_large"
    )
    assert writer.connected and reader.connected


@pytest.mark.slow
async def test_compaction_keeps_load_bounded_and_state_durable(
    rt_hub_factory: Any, tmp_path: Any
) -> None:
    db = tmp_path / "hub.db"
    hub: HubProcess = rt_hub_factory(
        store=f"sqlite:///{db}", extra_args=["--doc-compact-every", "20"]
    )
    client = await rtkit.aio.connect(hub.url, **FAST)
    try:
        shared = await client.shared("log")
        text = shared.doc.get("text", type=pycrdt.Text)
        for i in range(300):
            text.insert(len(text), f"{i},")
            shared[f"k{i % 7}"] = i
            if i % 5 == 0:
                await shared.flush()  # many small stored updates, not one big one
        await shared.flush()
        expected = contents(shared.doc)
    finally:
        await client.close()

    def rows() -> tuple[int, int]:
        with sqlite3.connect(db) as conn:
            updates = conn.execute("SELECT count(*) FROM doc_updates").fetchone()[0]
            snapshots = conn.execute("SELECT count(*) FROM doc_snapshots").fetchone()[0]
        return updates, snapshots

    await wait_until(lambda: rows()[0] < 20, "compaction to catch up")
    assert rows()[1] == 1
    await asyncio.to_thread(hub.restart)
    with rtkit.connect(hub.url) as blocking:
        assert contents(blocking.shared("log").doc) == expected


def test_the_blocking_client_edits_from_its_own_thread(rt_hub_inprocess: InProcessHub) -> None:
    with rtkit.connect(rt_hub_inprocess.url) as a, rtkit.connect(rt_hub_inprocess.url) as b:
        pa, pb = a.shared("notes"), b.shared("notes")
        arrived = threading.Event()
        pb.observe(lambda change: arrived.set() if "owner" in change.keys else None)
        pa["owner"] = "ada"
        pa.doc.get("items", type=pycrdt.Array).extend(["x", "y"])
        pa.flush(timeout=10)
        assert arrived.wait(10)
        assert pb["owner"] == "ada" and dict(pb) == {"owner": "ada"}
        assert a.shared("notes") is pa and len(pa) == 1 and "owner" in pa


# -- convergence -----------------------------------------------------------

CLIENTS = 3
KEYS = st.sampled_from(["a", "b", "c", "d"])
VALUES = st.one_of(st.integers(-9, 9), st.text(alphabet="pqr", max_size=3), st.booleans())
FRACTION = st.integers(0, 100)
OPS = st.one_of(
    st.tuples(st.just("set"), KEYS, VALUES),
    st.tuples(st.just("del"), KEYS),
    st.tuples(st.just("insert"), FRACTION, VALUES),
    st.tuples(st.just("remove"), FRACTION),
    st.tuples(st.just("type"), FRACTION, st.text(alphabet="xyz", min_size=1, max_size=4)),
    st.tuples(st.just("erase"), FRACTION, st.integers(1, 3)),
)
CLIENT = st.integers(0, CLIENTS - 1)
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("edit"), CLIENT, st.lists(OPS, min_size=1, max_size=4)),
        st.tuples(st.just("edit"), CLIENT, st.lists(OPS, min_size=1, max_size=4)),
        st.tuples(st.just("offline"), CLIENT),
        st.tuples(st.just("online"), CLIENT),
        st.tuples(st.just("restart")),
        st.tuples(st.just("settle")),
    ),
    min_size=4,
    max_size=24,
)


def apply_ops(doc: pycrdt.Doc[Any], ops: list[tuple[Any, ...]]) -> None:
    """One transaction of random edits (positions as fractions of the length)."""
    state = doc.get("state", type=pycrdt.Map)
    items = doc.get("items", type=pycrdt.Array)
    text = doc.get("text", type=pycrdt.Text)
    with doc.transaction():
        for op in ops:
            kind = op[0]
            if kind == "set":
                state[op[1]] = op[2]
            elif kind == "del" and op[1] in state:
                del state[op[1]]
            elif kind == "insert":
                items.insert(len(items) * op[1] // 100, op[2])
            elif kind == "remove" and len(items):
                del items[(len(items) - 1) * op[1] // 100]
            elif kind == "type":
                text.insert(len(text) * op[1] // 100, op[2])
            elif kind == "erase" and len(text):
                start = (len(text) - 1) * op[1] // 100
                del text[start : min(start + op[2], len(text))]


async def run_scenario(steps: list[tuple[Any, ...]], workdir: str) -> None:
    hub = HubProcess(store=f"sqlite:///{workdir}/hub.db").start()
    proxies = [await Proxy(hub.port).start() for _ in range(CLIENTS)]
    clients = [await rtkit.aio.connect(p.url, ack_timeout=5, **FAST) for p in proxies]
    try:
        docs = [await c.shared("converge") for c in clients]
        restarts = 0
        for step in steps:
            if step[0] == "edit":
                apply_ops(docs[step[1]].doc, step[2])
            elif step[0] == "offline":
                proxies[step[1]].cut()
            elif step[0] == "online":
                proxies[step[1]].restore()
            elif step[0] == "restart" and restarts < 2:
                restarts += 1
                await asyncio.to_thread(hub.restart)
            elif step[0] == "settle":
                online = [d for d, p in zip(docs, proxies, strict=True) if p.up]
                async with asyncio.timeout(WAIT_TIMEOUT):
                    await asyncio.gather(*(d.flush() for d in online))

        for proxy in proxies:
            proxy.restore()
        async with asyncio.timeout(30):
            await asyncio.gather(*(d.flush() for d in docs))
        await wait_until(
            lambda: all(contents(d.doc) == contents(docs[0].doc) for d in docs[1:]),
            f"all replicas to converge: {[contents(d.doc) for d in docs]}",
            within=30,
        )
        # Equal to the hub's document, also as it reloads it from the store.
        for reload in (False, True):
            if reload:
                await asyncio.to_thread(hub.restart)
            fresh = await rtkit.aio.connect(hub.url)
            try:
                hubs_copy = await fresh.shared("converge")
                assert contents(hubs_copy.doc) == contents(docs[0].doc)
            finally:
                await fresh.close()
    finally:
        for client in clients:
            await client.close()
        for proxy in proxies:
            await proxy.close()
        hub.terminate(timeout=5)


@pytest.mark.slow
@pytest.mark.timeout(300)
@settings(
    max_examples=8,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(steps=STEPS)
def test_concurrent_and_offline_edits_converge_across_hub_restarts(
    steps: list[tuple[Any, ...]],
) -> None:
    with tempfile.TemporaryDirectory() as workdir:
        asyncio.run(within(SCENARIO_BUDGET, run_scenario(steps, workdir)))


# One example takes a few seconds; past this, it hangs: say where.
SCENARIO_BUDGET = 90.0


async def within(seconds: float, scenario: Any) -> None:
    """Run ``scenario``; past ``seconds``, fail naming what every task of the
    loop was waiting on (pytest-timeout shows only threads)."""
    task = asyncio.ensure_future(scenario)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if done:
        return task.result()
    stacks = []
    for other in asyncio.all_tasks():
        if other is asyncio.current_task():
            continue
        frames = other.get_stack(limit=8)
        where = " <- ".join(
            f"{f.f_code.co_filename.rsplit('/', 1)[-1]}:{f.f_lineno} {f.f_code.co_name}"
            for f in reversed(frames)
        )
        stacks.append(f"{other.get_name()}: {where}")
    task.cancel()
    pytest.fail(f"the scenario hung for {seconds:.0f} s; tasks:\n" + "\n".join(stacks))
