"""Engine.IO sessions kept within bounds before and after they join the hub.

python-socketio hands every Engine.IO message to its ``message`` handler and
trusts what comes: a packet that announces binary attachments has the
following binary frames buffered until that many arrived, however many it
announced, and a frame it cannot decode raises out of the handler, which
python-engineio logs with a full traceback and then carries on reading. An
Engine.IO session that never sends the namespace CONNECT is kept until the
client goes. :class:`SessionGuard` wraps the three handlers python-socketio
registers on its Engine.IO server (``connect``, ``message``, ``disconnect``,
through Engine.IO's public ``on``) and

- closes a socket whose message python-socketio cannot take (a protocol
  violation: an undecodable packet, binary frames nobody announced, or an
  attachment count or size over :class:`BoundedPacket`'s caps), with one
  log line, rate-limited hub-wide (:class:`RateLimitedLog`);
- closes a session that has not joined the hub's namespace within
  ``connect_timeout`` seconds, and refuses, at the handshake, a session from
  an address that already has ``max_pending_per_address`` such sessions.

tests/contract pins each python-socketio and python-engineio fact used here.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import socketio
from engineio import packet as eio_packet

from ...errors import BadRequest, HubError

log = logging.getLogger(__name__)


class ProtocolViolation(BadRequest):
    """A client broke the Socket.IO protocol; its socket is closed."""


class BoundedPacket(socketio.packet.Packet):  # type: ignore[misc]
    """python-socketio's packet with caps on binary attachments.

    A BINARY_EVENT or BINARY_ACK header says how many binary frames follow,
    and python-socketio keeps them in the packet until all have arrived.
    ``max_attachments`` bounds the number a header may announce and
    ``max_attachment_bytes`` the bytes they may add up to; over either, the
    packet raises :class:`ProtocolViolation` and nothing more is buffered.
    Subclassed per server (see :func:`bounded_packet_class`) with its caps.
    """

    max_attachments = 4
    max_attachment_bytes = 1_000_000

    def decode(self, encoded_packet: Any) -> int:
        count = int(super().decode(encoded_packet) or 0)
        if count > self.max_attachments:
            raise ProtocolViolation(
                f"a packet announced {count} binary attachments (at most {self.max_attachments})"
            )
        return count

    def add_attachment(self, attachment: Any) -> bool:
        size = getattr(self, "_attachment_bytes", 0) + len(attachment)
        if size > self.max_attachment_bytes:
            raise ProtocolViolation(
                f"a packet's binary attachments exceed {self.max_attachment_bytes} bytes"
            )
        self._attachment_bytes = size
        return bool(super().add_attachment(attachment))


def bounded_packet_class(
    base: type[BoundedPacket], *, max_attachments: int, max_attachment_bytes: int
) -> type[BoundedPacket]:
    """``base`` with these caps, as a class of its own (one per server)."""
    return type(
        base.__name__,
        (base,),
        {
            "max_attachments": max_attachments,
            "max_attachment_bytes": max_attachment_bytes,
            "__doc__": base.__doc__,
            "__module__": base.__module__,
        },
    )


class RateLimitedLog:
    """At most ``burst`` lines per ``window`` seconds, hub-wide; the next
    line written after a quiet spell says how many were left out. What a
    client can make the hub log must not grow with what the client sends."""

    def __init__(self, logger: logging.Logger, *, burst: int = 10, window: float = 10.0) -> None:
        self._log = logger
        self._burst = burst
        self._window = window
        self._started = -window
        self._written = 0
        self.suppressed = 0

    def info(self, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._started >= self._window:
            self._started = now
            self._written = 0
        if self._written >= self._burst:
            self.suppressed += 1
            return
        self._written += 1
        if self.suppressed:
            msg += " (%d similar lines left out)"
            args = (*args, self.suppressed)
            self.suppressed = 0
        self._log.info(msg, *args)


#: One log for every guard in the process: the hub-wide rate limit.
violations = RateLimitedLog(log)


def client_address(environ: Mapping[str, Any], trusted_proxies: frozenset[str]) -> str:
    """The address a connection came from, for the per-address cap.

    python-engineio's drivers put a fixed ``REMOTE_ADDR`` of 127.0.0.1 in
    the environ, so the peer comes from the host's own request object. When
    that peer is a trusted proxy (nginx in ``rtkit cluster``), the last
    address of ``X-Forwarded-For`` (the one that proxy added) counts instead.
    """
    peer: str | None = None
    request = environ.get("aiohttp.request")
    if request is not None:
        peer = request.remote
    elif (handler := environ.get("tornado.handler")) is not None:
        peer = handler.request.remote_ip
    elif (scope := environ.get("asgi.scope")) is not None and scope.get("client"):
        peer = scope["client"][0]
    peer = peer or "unknown"
    if peer in trusted_proxies:
        forwarded = str(environ.get("HTTP_X_FORWARDED_FOR", "")).split(",")[-1].strip()
        if forwarded:
            try:
                return str(ipaddress.ip_address(forwarded))
            except ValueError:
                pass
    return peer


def decode_engineio(data: str | bytes) -> eio_packet.Packet | None:
    """The Engine.IO packet in a websocket frame; None if it is not one."""
    try:
        pkt = eio_packet.Packet(encoded_packet=data)
        if not 0 <= pkt.packet_type < len(eio_packet.packet_names):
            raise ValueError(f"unknown packet type {pkt.packet_type}")
    except (ValueError, IndexError, TypeError):
        return None
    return pkt


Handler = Callable[..., Awaitable[Any]]


class SessionGuard:
    """Wraps python-socketio's Engine.IO handlers (see the module docstring).

    ``joined(eio_sid)`` is called when the hub accepts the session's
    namespace CONNECT, ``left(eio_sid)`` when that connection ends while the
    Engine.IO session may live on (then the deadline runs again).
    """

    def __init__(
        self,
        eio: Any,
        *,
        connect_timeout: float,
        max_pending_per_address: int,
        trusted_proxies: frozenset[str] = frozenset(),
    ) -> None:
        self._eio = eio
        self._sockets: dict[str, Any] = eio.sockets
        self.connect_timeout = connect_timeout
        self.max_pending_per_address = max_pending_per_address
        self.trusted_proxies = trusted_proxies
        self._address: dict[str, str] = {}  # every live session's address
        self._pending: dict[str, asyncio.TimerHandle] = {}  # not joined yet
        self._pending_by_address: Counter[str] = Counter()
        self._closing: set[asyncio.Task[None]] = set()
        handlers = eio.handlers
        self._on_connect: Handler = handlers["connect"]
        self._on_message: Handler = handlers["message"]
        self._on_disconnect: Handler = handlers["disconnect"]
        eio.on("connect", self._connect)
        eio.on("message", self._message)
        eio.on("disconnect", self._disconnect)

    @property
    def pending(self) -> int:
        """Engine.IO sessions that have not joined the namespace."""
        return len(self._pending)

    # -- Engine.IO handlers -------------------------------------------------

    def refusal(self, environ: Mapping[str, Any]) -> dict[str, str] | None:
        """Why a new session from this request's address is refused (its
        address is at ``max_pending_per_address``), or None."""
        address = client_address(environ, self.trusted_proxies)
        cap = self.max_pending_per_address
        if not cap or self._pending_by_address[address] < cap:
            return None
        violations.info(
            "refused a session from %s: %d of its sessions have not joined yet", address, cap
        )
        return {
            "code": "rate_limited",
            "message": f"{cap} connections from {address} have not finished connecting; "
            "wait for them to connect (or close them) and retry",
        }

    async def _connect(self, eio_sid: str, environ: Mapping[str, Any]) -> Any:
        refused = self.refusal(environ)
        if refused is not None:
            if (handler := environ.get("tornado.handler")) is not None:
                # tornado has answered the upgrade already (the host checks
                # before upgrading; this is a race with another handshake).
                handler.close(1008, refused["message"][:120])
            # python-engineio answers the handshake with HTTP 401 and this
            # as its JSON body (a connect handler's refusal).
            return refused
        address = client_address(environ, self.trusted_proxies)
        result = await self._on_connect(eio_sid, environ)
        self._address[eio_sid] = address
        self._arm(eio_sid)
        return result

    async def _message(self, eio_sid: str, data: Any) -> None:
        socket = self._sockets.get(eio_sid)
        if socket is None or socket.closed or socket.closing:
            return  # closed for a violation: frames already on their way are dropped
        try:
            await self._on_message(eio_sid, data)
        except Exception as exc:
            # Event handlers run in tasks of their own (or answer errors in
            # acks), so what gets here is a packet python-socketio could not
            # take, with no ack id to answer. From a connection the hub has
            # accepted it is ignored, as stock python-socketio does, only
            # without the traceback (a bad request never disconnects a
            # client); buffering past the caps, or anything before the
            # namespace CONNECT, closes the socket.
            if eio_sid not in self._pending and not isinstance(exc, ProtocolViolation):
                log.debug("%s: ignored a packet Socket.IO cannot read (%r)", eio_sid, exc)
                return
            reason = exc.message if isinstance(exc, HubError) else f"{type(exc).__name__}: {exc}"
            violations.info(
                "closing %s (%s): protocol violation: %s",
                eio_sid,
                self._address.get(eio_sid, "?"),
                reason[:200],
            )
            await self.close(eio_sid)

    async def _disconnect(self, eio_sid: str, reason: Any = None) -> None:
        self._disarm(eio_sid)
        self._address.pop(eio_sid, None)
        await self._on_disconnect(eio_sid, reason)

    # -- the hub's side -----------------------------------------------------

    def joined(self, eio_sid: str) -> None:
        self._disarm(eio_sid)

    def left(self, eio_sid: str) -> None:
        socket = self._sockets.get(eio_sid)
        if socket is not None and not (socket.closed or socket.closing):
            self._arm(eio_sid)

    async def close(self, eio_sid: str) -> None:
        """Close a session now, without waiting for its queue to drain.

        ``AsyncSocket.close`` runs the disconnect handlers and queues a
        CLOSE packet; the ``None`` after it ends the writer task, which then
        closes the websocket (or ends a long-poll), so the reader ends too.
        """
        socket = self._sockets.get(eio_sid)
        if socket is None or socket.closed or socket.closing:
            return
        await socket.close(wait=False, reason=self._eio.reason.SERVER_DISCONNECT)
        socket.queue.put_nowait(None)

    # -- the namespace CONNECT deadline -------------------------------------

    def _arm(self, eio_sid: str) -> None:
        if eio_sid in self._pending or eio_sid not in self._address:
            return
        loop = asyncio.get_running_loop()
        self._pending[eio_sid] = loop.call_later(self.connect_timeout, self._expire, eio_sid)
        self._pending_by_address[self._address[eio_sid]] += 1

    def _disarm(self, eio_sid: str) -> None:
        timer = self._pending.pop(eio_sid, None)
        if timer is None:
            return
        timer.cancel()
        address = self._address.get(eio_sid, "")
        self._pending_by_address[address] -= 1
        if self._pending_by_address[address] <= 0:
            del self._pending_by_address[address]

    def _expire(self, eio_sid: str) -> None:
        address = self._address.get(eio_sid, "?")
        self._disarm(eio_sid)
        violations.info(
            "closing %s (%s): no namespace CONNECT within %gs",
            eio_sid,
            address,
            self.connect_timeout,
        )
        task = asyncio.ensure_future(self.close(eio_sid))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
