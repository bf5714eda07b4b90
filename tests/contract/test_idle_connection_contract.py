"""What the hub's lean idle connections rely on upstream.

rtkit.hub.transport keeps an idle websocket small by writing Engine.IO's
queue without a writer task (``sockets.QueueDrain``), pinging from a shared
timer wheel (``sockets.TimerPingSocket``), holding no deque in an empty
send queue (``sockets.ByteQueue``), building websocket environs without
what nobody reads (``aiohttp_websocket._lean_translate``) and letting go of
an upgraded connection's HTTP parser and request deque
(``aiohttp_websocket._lighten_protocol``); and python-socketio's client
manager disconnects without scanning every room (``server.HubManager``).
Each upstream fact those rely on is checked here against the installed
python-engineio, python-socketio, asyncio and aiohttp.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import inspect
import re
from typing import Any

import aiohttp
import engineio
import socketio
from aiohttp import web, web_protocol
from engineio.async_drivers import aiohttp as eio_aiohttp
from engineio.async_socket import AsyncSocket

from rtkit.hub.transport.aiohttp_websocket import _lighten_protocol, _Messages
from rtkit.hub.transport.server import HubManager
from rtkit.hub.transport.sockets import ByteQueue, TimerPingSocket, ping_from_timer

from .servers import websocket_server

SOCKETS = "rtkit.hub.transport.sockets"
AIOHTTP = "rtkit.hub.transport.aiohttp_websocket"

# sha256 of the stock ping steps TimerPingSocket repeats (schedule_ping and
# _send_ping) in the python-engineio releases pyproject.toml admits.
STOCK_PING_SHA256 = "9ff6b2eb9eb0bbee8874e88d9b375c7309db92b7c9bb2fe83e2a06fac099201d"


def _ping_source() -> str:
    return inspect.getsource(AsyncSocket.schedule_ping) + inspect.getsource(AsyncSocket._send_ping)


def test_the_stock_ping_steps_are_unchanged() -> None:
    digest = hashlib.sha256(_ping_source().encode()).hexdigest()
    assert digest == STOCK_PING_SHA256, (
        "python-engineio's AsyncSocket.schedule_ping/_send_ping changed. "
        f"{SOCKETS}.TimerPingSocket repeats them on a timer (ping only after "
        "the last was answered, queue a PING unless closing, set last_ping): port "
        f"whatever changed, then record the new hash here ({digest})"
    )


def test_the_connect_handler_runs_before_the_first_ping_is_scheduled() -> None:
    # FastHubServer._handle_eio_connect gives the socket its timer pings;
    # that must happen before python-engineio first calls schedule_ping.
    source = inspect.getsource(engineio.AsyncServer._handle_connect)
    connect = source.find("self._trigger_event('connect'")
    ping = source.find("s.schedule_ping()")
    assert 0 <= connect < ping, (
        f"engineio's _handle_connect no longer runs 'connect' before schedule_ping ({SOCKETS})"
    )
    assert "self.schedule_ping()" in inspect.getsource(AsyncSocket.receive), (
        f"a PONG no longer schedules the next ping through schedule_ping ({SOCKETS})"
    )


async def test_a_stock_socket_can_take_the_timer_ping_class() -> None:
    server = engineio.AsyncServer(async_mode="aiohttp")
    socket = AsyncSocket(server, "sid")
    ping_from_timer(socket)
    assert type(socket) is TimerPingSocket, f"__class__ assignment refused ({SOCKETS})"
    server.ping_interval = 0.01
    socket.schedule_ping()
    assert socket.last_ping is None
    # The wheel fires within a second: wait for the PING it queues.
    packet = await asyncio.wait_for(socket.queue.get(), 3)
    assert packet.packet_type == engineio.packet.PING
    assert socket.last_ping is not None


async def test_an_idle_byte_queue_holds_no_deque_and_still_works() -> None:
    init = inspect.getsource(asyncio.Queue.__init__)
    assert init.rfind("self._init(") > max(init.find("self._getters"), init.find("_finished")), (
        f"asyncio.Queue.__init__ no longer calls _init last ({SOCKETS}.ByteQueue)"
    )
    queue = ByteQueue()
    idle = (queue._queue, queue._getters, queue._putters, queue._finished._waiters)  # type: ignore[attr-defined]
    assert not any(isinstance(part, collections.deque) for part in idle)
    # get() parks a getter, put_nowait wakes it, join() waits for task_done.
    getter = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    queue.put_nowait("a")
    assert await asyncio.wait_for(getter, 3) == "a"
    joined = asyncio.ensure_future(queue.join())
    await asyncio.sleep(0)
    assert not joined.done()
    queue.task_done()
    await asyncio.wait_for(joined, 3)
    await queue.put("b")  # unbounded: never waits, never needs the putters
    assert queue.get_nowait() == "b"
    assert not isinstance(queue._queue, collections.deque), "emptied: deque let go"  # type: ignore[attr-defined]


def test_aiohttp_uses_only_deque_methods_a_list_has_on_its_requests() -> None:
    source = inspect.getsource(web_protocol.RequestHandler)
    used = set(re.findall(r"self\._messages\.(\w+)", source))
    assert used <= {"append", "popleft", "clear"}, (
        f"RequestHandler._messages is used with {sorted(used)} ({AIOHTTP}._Messages)"
    )


def test_aiohttp_checks_its_http_parser_before_each_use() -> None:
    # _lighten_protocol drops an upgraded connection's _parser, as
    # connection_lost does: every use must first check it is not None.
    lines = inspect.getsource(web_protocol.RequestHandler).splitlines()
    for i, line in enumerate(lines):
        if "self._parser." in line:
            before = "\n".join(lines[max(0, i - 12) : i + 1])
            assert "self._parser is not None" in before, (
                f"aiohttp uses RequestHandler._parser unchecked ({AIOHTTP}): {line.strip()}"
            )


async def test_an_upgraded_connection_works_without_its_parser() -> None:
    served: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()

    async def handle(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        _lighten_protocol(request.protocol)
        assert request.protocol._parser is None  # type: ignore[attr-defined]
        assert isinstance(request.protocol._messages, _Messages)  # type: ignore[attr-defined]
        got = []
        async for msg in ws:
            got.append(msg.data)
            await ws.send_str(msg.data.upper())
        served.set_result(got)
        return ws

    errors: list[Any] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    async with websocket_server(handle) as port, aiohttp.ClientSession() as session:
        for _ in range(2):  # a second connection after the first one ended
            async with session.ws_connect(f"ws://127.0.0.1:{port}/ws") as client:
                await client.send_str("ping")
                reply = await asyncio.wait_for(client.receive(), 5)
                assert reply.data == "PING"
            assert await asyncio.wait_for(served, 5) == ["ping"]
            served = asyncio.get_running_loop().create_future()
    assert not errors, errors


def test_the_aiohttp_driver_translates_requests_through_its_table() -> None:
    assert "translate_request = self._async['translate_request']" in inspect.getsource(
        engineio.AsyncServer.handle_request
    ).replace('"', "'"), f"environs are no longer made by _async['translate_request'] ({AIOHTTP})"
    assert callable(eio_aiohttp._async["translate_request"])


# sha256 of socketio.base_manager.BaseManager.basic_disconnect, whose steps
# HubManager.basic_disconnect repeats without scanning every room.
STOCK_DISCONNECT_SHA256 = "2933b50bc4b2ea7b4367a84e05c2e22c52fed98b00afc3b88d06d61ab9fb9aa1"
SERVER = "rtkit.hub.transport.server"


def test_the_stock_disconnect_steps_are_unchanged() -> None:
    source = inspect.getsource(socketio.base_manager.BaseManager.basic_disconnect)
    digest = hashlib.sha256(source.encode()).hexdigest()
    assert digest == STOCK_DISCONNECT_SHA256, (
        "python-socketio's BaseManager.basic_disconnect changed. "
        f"{SERVER}.HubManager.basic_disconnect repeats its steps (leave every room, "
        "forget callbacks and pending connects/disconnects): port whatever changed, "
        f"then record the new hash here ({digest})"
    )
    for name in ("enter_room", "leave_room", "disconnect"):
        assert "self.basic_" in inspect.getsource(getattr(socketio.AsyncManager, name)), (
            f"AsyncManager.{name} no longer goes through basic_{name} ({SERVER}.HubManager)"
        )
    # A client's own room is not stored: every way to reach it by name
    # must go through get_participants (or get_rooms, is_sid_room).
    assert "self.get_participants(" in inspect.getsource(socketio.AsyncManager.emit), (
        f"AsyncManager.emit no longer finds recipients with get_participants ({SERVER})"
    )
    pre_connect = inspect.getsource(socketio.base_manager.BaseManager.pre_connect)
    assert "self.basic_enter_room(sid, namespace, sid" in pre_connect, (
        f"clients no longer get their own room through basic_enter_room ({SERVER})"
    )


async def test_a_disconnect_leaves_every_room_and_only_the_clients() -> None:
    manager = HubManager()
    manager.set_server(socketio.AsyncServer())
    sids = [await manager.connect(f"eio{i}", "/ns") for i in range(3)]
    await manager.enter_room(sids[0], "/ns", "extra")
    await manager.enter_room(sids[1], "/ns", "extra")
    await manager.disconnect(sids[0], "/ns")
    assert not manager.is_connected(sids[0], "/ns")
    assert manager.is_connected(sids[1], "/ns") and manager.is_connected(sids[2], "/ns")
    # A client's own room is implied, not stored, yet found as before.
    assert set(manager.rooms["/ns"]) == {None, "extra"}
    assert dict(manager.rooms["/ns"]["extra"]) == {sids[1]: "eio1"}
    assert list(manager.get_participants("/ns", sids[2])) == [(sids[2], "eio2")]
    assert dict(manager.get_participants("/ns", [sids[2], "extra"])) == {
        sids[2]: "eio2",
        sids[1]: "eio1",
    }
    assert list(manager.get_participants("/ns", sids[0])) == []  # gone
    assert sorted(manager.get_rooms(sids[1], "/ns")) == sorted(["extra", sids[1]])
    assert manager.is_sid_room("/ns", sids[2])
    for sid in sids[1:]:
        await manager.disconnect(sid, "/ns")
    assert "/ns" not in manager.rooms and not manager.pending_connect
