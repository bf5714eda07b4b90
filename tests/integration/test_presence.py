"""Presence against real hub processes: rooms, members, events, expiry."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import rtkit
import rtkit.aio
from rtkit.protocol import member_id_for
from rtkit.pytest_plugin import HubProcess, InProcessHub

from .conftest import SECRET, Connect, token
from .helpers import WAIT_TIMEOUT, assert_error, assert_ok

# A fast heartbeat, so that a silent client is dropped within two seconds.
HEARTBEAT = ["--ping-interval", "1", "--ping-timeout", "1"]
FAST: dict[str, Any] = {"reconnect_delay": 0.05, "reconnect_delay_max": 0.3}


@pytest.fixture(scope="module")
def hub() -> Iterator[InProcessHub]:
    running = InProcessHub(secret=SECRET, extra_args=HEARTBEAT).start()
    try:
        yield running
    finally:
        running.terminate(timeout=5)


class Events:
    """What one Presence object's callbacks saw, in order."""

    def __init__(self, room: rtkit.aio.Presence) -> None:
        self.seen: list[tuple[str, str, int, dict[str, Any]]] = []
        self._changed = asyncio.Event()
        for event in ("join", "leave", "update"):
            room.on(event, self._recorder(event))  # type: ignore[arg-type]

    def _recorder(self, event: str) -> Callable[[rtkit.Member], None]:
        def record(member: rtkit.Member) -> None:
            self.seen.append((event, member.user, member.connections, member.state))
            self._changed.set()

        return record

    async def wait_for(self, predicate: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + WAIT_TIMEOUT
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"waited {WAIT_TIMEOUT}s for {what}; saw {self.seen}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    def of(self, user: str) -> list[tuple[str, int, dict[str, Any]]]:
        return [(e, n, s) for e, u, n, s in self.seen if u == user]


async def connect_as(hub: HubProcess | InProcessHub, user: str, **grants: Any) -> rtkit.aio.Client:
    return await rtkit.aio.connect(hub.url, token(user, **grants), **FAST)


async def test_join_update_leave_reach_every_member_in_order(hub: InProcessHub) -> None:
    ada, bob, cy = [await connect_as(hub, u) for u in ("ada", "bob", "cy")]
    try:
        room_a = await ada.presence("order", state={"status": "here"})
        events_a = Events(room_a)
        room_b = await bob.presence("order")
        events_b = Events(room_b)
        await events_a.wait_for(lambda: bool(events_a.of("bob")), "bob's join")
        assert [m.user for m in room_b.members] == ["ada", "bob"]  # the ack's member list
        assert room_b.me is not None and room_b.me.user == "bob"

        room_c = await cy.presence("order", state={"cell": 1})
        for events in (events_a, events_b):
            await events.wait_for(lambda ev=events: bool(ev.of("cy")), "cy's join")  # type: ignore[misc]
        for step in range(1, 4):
            await room_c.update({"cell": step + 1})
            for events in (events_a, events_b):
                await events.wait_for(
                    lambda ev=events, s=step: (  # type: ignore[misc]
                        any(st.get("cell") == s + 1 for _, _, st in ev.of("cy"))
                    ),
                    f"cy's update {step}",
                )
        await room_c.leave()
        for events in (events_a, events_b):
            await events.wait_for(lambda ev=events: ev.of("cy")[-1][0] == "leave", "cy's leave")  # type: ignore[misc]
            # Each step was awaited, so none was coalesced away: all of them,
            # in the order they were made.
            assert events.of("cy") == [
                ("join", 1, {"cell": 1}),
                ("update", 1, {"cell": 2}),
                ("update", 1, {"cell": 3}),
                ("update", 1, {"cell": 4}),
                ("leave", 0, {"cell": 4}),
            ]
        assert [m.user for m in room_a.members] == ["ada", "bob"]
        assert room_a.members[0].state == {"status": "here"}
    finally:
        for client in (ada, bob, cy):
            await client.close()


async def test_a_user_with_two_connections_is_one_member(hub: InProcessHub) -> None:
    watcher = await connect_as(hub, "watcher")
    tab1, tab2 = await connect_as(hub, "dora"), await connect_as(hub, "dora")
    try:
        room = await watcher.presence("tabs")
        events = Events(room)
        await tab1.presence("tabs", state={"tab": 1})
        await tab2.presence("tabs", state={"cell": 7})

        def dora() -> list[rtkit.Member]:
            return [m for m in room.members if m.user == "dora"]

        await events.wait_for(lambda: [m.connections for m in dora()] == [2], "two connections")
        (member,) = dora()
        assert member.id == member_id_for("dora")
        assert member.state == {"tab": 1, "cell": 7}  # one state, merged from both
        assert len(room.members) == 2

        await tab2.close()
        await events.wait_for(lambda: [m.connections for m in dora()] == [1], "one connection")
        await tab1.close()
        await events.wait_for(lambda: not dora(), "dora's leave")
        assert events.of("dora")[-1][0] == "leave"
    finally:
        for client in (watcher, tab1, tab2):
            await client.close()


_MEMBER_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    import rtkit

    hub = rtkit.connect(sys.argv[1], token=sys.argv[2])
    room = hub.presence(sys.argv[3], state={"pid": os.getpid()})
    print("joined", flush=True)
    time.sleep(600)
    """
)


def _member_process(hub: InProcessHub, user: str, room: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _MEMBER_SCRIPT, hub.url, token(user), room],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "joined", f"the member process said {line!r}"
    return proc


@pytest.mark.slow
@pytest.mark.parametrize("how", ["kill -9", "frozen"])
async def test_a_member_whose_process_dies_disappears_within_the_timeout(
    hub: InProcessHub, how: str
) -> None:
    """kill -9 closes the process's sockets (the hub sees it at once); a frozen
    process (SIGSTOP) keeps them open and stops answering pings, which only
    the heartbeat detects: within ping_interval + ping_timeout (2 s here)."""
    room_name = f"mortal.{how.replace(' ', '')}"
    watcher = await connect_as(hub, "watcher")
    proc = await asyncio.to_thread(_member_process, hub, "eve", room_name)
    try:
        room = await watcher.presence(room_name)
        events = Events(room)
        assert [m.user for m in room.members] == ["eve", "watcher"]
        start = time.monotonic()
        if how == "kill -9":
            proc.kill()
        else:
            proc.send_signal(signal.SIGSTOP)
        await events.wait_for(lambda: [m.user for m in room.members] == ["watcher"], "eve to go")
        took = time.monotonic() - start
        assert events.of("eve") == [("leave", 0, {"pid": proc.pid})]
        assert took < 2.0 + 1.5, f"eve left after {took:.1f}s"
    finally:
        proc.kill()
        proc.wait(10)
        assert proc.stdout is not None
        proc.stdout.close()
        await watcher.close()


async def test_a_storm_of_joins_and_leaves_is_coalesced(
    rt_hub_inprocess_factory: Any, connect: Connect
) -> None:
    # Default heartbeat: a hundred handshakes at once on a busy machine can
    # delay a pong by more than a second.
    hub: InProcessHub = rt_hub_inprocess_factory(secret=SECRET)
    watcher = await connect_as(hub, "watcher")
    try:
        room = await watcher.presence("storm")
        events = Events(room)
        clients = await asyncio.gather(
            *(connect(hub.url, token=token(f"u{i}")) for i in range(120))
        )
        # Everyone joins at once; a third leave again right away, without
        # waiting for their join's ack: the watcher need not hear of them.
        flashes = clients[:40]

        async def join(c: Any, flash: bool) -> None:
            await c.sio.emit("presence.join", {"room": "storm"}, namespace="/rtkit")
            if flash:
                await c.sio.emit("presence.leave", {"room": "storm"}, namespace="/rtkit")

        await asyncio.gather(*(join(c, c in flashes) for c in clients))
        stayers = {f"u{i}" for i in range(40, 120)}
        await events.wait_for(
            lambda: {m.user for m in room.members} == stayers | {"watcher"}, "the storm to settle"
        )
        listed = assert_ok(await clients[-1].call("presence.list", {"room": "storm"}))
        assert {m["user"] for m in listed["members"]} == stayers | {"watcher"}
        # At most one event per member that changed, not one per request: a
        # stayer's join and its connection's state arrive as one join; a
        # flash member is never announced, or joins and leaves.
        for user in stayers:
            assert [e for e, _, _ in events.of(user)] == ["join"], events.of(user)
        for i in range(40):
            assert [e for e, _, _ in events.of(f"u{i}")] in ([], ["join", "leave"])
    finally:
        await watcher.close()


async def test_presence_requests_are_checked(hub: InProcessHub, connect: Connect) -> None:
    limited = await connect(hub.url, token=token("lim", publish=["lab.*"], subscribe=["*"]))
    ack = await limited.call("presence.join", {"room": "secret.room"})
    assert "may not join" in assert_error(ack, "forbidden")
    assert_ok(await limited.call("presence.list", {"room": "secret.room"}))
    assert_ok(await limited.call("presence.join", {"room": "lab.room", "state": {"a": 1}}))
    assert_error(await limited.call("presence.join", {"room": "lab room"}), "bad_request")
    assert_error(await limited.call("presence.update", {"room": "lab.room"}), "bad_request")
    too_big = {"room": "lab.room", "state": {"blob": "x" * 5000}}
    assert "over the 4096-byte limit" in assert_error(
        await limited.call("presence.update", too_big), "too_large"
    )
    assert_error(await limited.call("presence.update", {"room": "lab.x", "state": {}}), "not_found")
    assert_ok(await limited.call("presence.leave", {"room": "lab.room"}))
    assert_error(await limited.call("presence.leave", {"room": "lab.room"}), "not_found")
    assert limited.connected


async def test_a_full_room_refuses_new_members(
    rt_hub_inprocess_factory: Any, connect: Connect
) -> None:
    small: InProcessHub = rt_hub_inprocess_factory(
        secret=SECRET, extra_args=["--max-room-members", "2"]
    )
    for user in ("a", "b"):
        client = await connect(small.url, token=token(user))
        assert_ok(await client.call("presence.join", {"room": "tiny"}))
    third = await connect(small.url, token=token("c"))
    assert "full" in assert_error(await third.call("presence.join", {"room": "tiny"}), "forbidden")
    again = await connect(small.url, token=token("a"))  # a second connection of a member fits
    ack = assert_ok(await again.call("presence.join", {"room": "tiny"}))
    assert [m["connections"] for m in ack["members"]] == [2, 1]
    assert set(ack["member"]) == {"id", "user", "name", "color", "state", "connections"}


@pytest.mark.slow
async def test_members_rejoin_after_a_hub_restart(rt_hub_factory: Any) -> None:
    restartable: HubProcess = rt_hub_factory(secret=SECRET)
    ada = await connect_as(restartable, "ada")
    bob = await connect_as(restartable, "bob")
    try:
        room = await ada.presence("phoenix", state={"v": 1})
        events = Events(room)
        await bob.presence("phoenix", state={"v": 2})
        await events.wait_for(lambda: len(room.members) == 2, "bob")
        await asyncio.to_thread(restartable.restart)  # memory store: presence is gone
        await bob.wait_connected()
        await ada.wait_connected()
        await room.update({"v": 3})
        await events.wait_for(
            lambda: {(m.user, m.state.get("v")) for m in room.members} == {("ada", 3), ("bob", 2)},
            "both members back after the restart",
        )
    finally:
        await ada.close()
        await bob.close()


def test_blocking_presence_from_a_script(hub: InProcessHub) -> None:
    with rtkit.connect(hub.url, token("sync-user")) as client:
        room = client.presence("blocking", state={"status": "idle"})
        assert [m.user for m in room.members] == ["sync-user"]
        room.update({"status": "busy"})
        assert client.presence("blocking") is room
        assert room.state == {"status": "busy"}
        room.leave()
        assert room.members == []
