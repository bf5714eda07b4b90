"""A scripted stand-in for the hub, seen through the client's Transport seam.

:class:`FakeHub` makes the transports a client connects with
(``aio.Client(url, _transport=hub.transport)``). A test reads what the
client sent (:meth:`FakeHub.request`), answers it (:meth:`Request.ack`),
pushes hub events (:meth:`FakeHub.push`), drops the connection
(:meth:`FakeHub.drop`) and refuses or accepts reconnects, all in process
and without sockets. Acks and events are delivered from the event loop
like python-socketio delivers packets: each in a call of its own, in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rtkit.client._session import TransportError

WAIT = 5.0  # seconds any single expectation may take


@dataclass(eq=False)
class Request:
    """One event the client emitted, with the way to answer it."""

    event: str
    payload: Any
    connection: FakeTransport
    callback: Callable[..., None]
    answered: bool = False

    def ack(self, **fields: Any) -> None:
        """Answer ``{"ok": true, **fields}`` on the connection it came on."""
        self.answer({"ok": True, **fields})

    def refuse(self, code: str, message: str = "no") -> None:
        self.answer({"ok": False, "error": {"code": code, "message": message}})

    def answer(self, body: dict[str, Any]) -> None:
        assert not self.answered, f"{self.event} answered twice"
        self.answered = True
        if self.connection.connected:
            loop = asyncio.get_running_loop()
            loop.call_soon(self.callback, body)


@dataclass(eq=False)
class FakeTransport:
    """One connection of :class:`FakeHub`; implements the session's Transport."""

    hub: FakeHub
    connect_timeout: float
    handlers: dict[str, Callable[..., Any]] = field(default_factory=dict)
    connected: bool = False
    handshake: dict[str, Any] = field(default_factory=dict)

    def on(self, event: str, handler: Callable[..., Any]) -> None:
        self.handlers[event] = handler

    async def connect(
        self, origin: str, *, auth: dict[str, str], headers: dict[str, str], path: str
    ) -> None:
        self.handshake = {"origin": origin, "auth": auth, "headers": headers, "path": path}
        self.hub.attempts += 1
        self.hub.changed.set()
        if self.hub.refusal is not None:
            self.handlers["connect_error"](self.hub.refusal)
            raise ConnectionError("refused")
        if not self.hub.reachable:
            raise ConnectionError("Connection error")
        self.connected = True
        self.hub.connections.append(self)

    async def emit(self, event: str, payload: Any, callback: Callable[..., None]) -> None:
        if not self.connected:
            raise TransportError("not connected")
        self.hub.requests.put_nowait(Request(event, payload, self, callback))

    async def disconnect(self) -> None:
        self.connected = False


class FakeHub:
    """The hub end of every :class:`FakeTransport` a client makes."""

    def __init__(self) -> None:
        self.connections: list[FakeTransport] = []
        self.requests: asyncio.Queue[Request] = asyncio.Queue()
        self.changed = asyncio.Event()  # set on every connection attempt
        self.reachable = True
        self.refusal: dict[str, Any] | None = None
        self.attempts = 0

    def transport(self, connect_timeout: float) -> FakeTransport:
        """The client's transport factory."""
        return FakeTransport(self, connect_timeout)

    @property
    def current(self) -> FakeTransport:
        assert self.connections, "the client never connected"
        return self.connections[-1]

    async def request(self, event: str | None = None) -> Request:
        """The next request the client sent (checked to be ``event``)."""
        async with asyncio.timeout(WAIT):
            req = await self.requests.get()
        if event is not None:
            assert req.event == event, f"expected {event}, the client sent {req.event}"
        return req

    def assert_quiet(self) -> None:
        """No request is waiting to be read."""
        assert self.requests.empty(), f"unexpected {self.requests.get_nowait()}"

    def push(self, event: str, payload: Any) -> None:
        """Send a hub event on the current connection."""
        self.current.handlers[event](payload)

    def drop(self, reason: str = "transport close", *, reachable: bool = True) -> None:
        """Lose the current connection; ``reachable=False`` fails reconnects."""
        self.reachable = reachable
        conn = self.current
        conn.connected = False
        conn.handlers["disconnect"](reason)

    async def until(self, condition: Callable[[], bool]) -> None:
        """Wait until ``condition()`` holds, checking after each connection attempt."""
        async with asyncio.timeout(WAIT):
            while not condition():
                self.changed.clear()
                await self.changed.wait()

    async def reconnected(self, count: int) -> FakeTransport:
        """Wait until the client made its ``count``-th connection."""
        await self.until(lambda: len(self.connections) >= count)
        return self.connections[count - 1]


def envelope(channel: str, seq: int, data: Any = None) -> dict[str, Any]:
    """A message envelope as the hub sends it."""
    return {
        "channel": channel,
        "seq": seq,
        "ts": 1.0 + seq,
        "id": f"m{seq}",
        "sender": "u",
        "data": data,
    }


def member(user: str, **state: Any) -> dict[str, Any]:
    """A presence member as the hub sends it."""
    return {
        "id": f"m-{user}",
        "user": user,
        "name": user.title(),
        "color": "#888",
        "state": state,
        "connections": 1,
    }
