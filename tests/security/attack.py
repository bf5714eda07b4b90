"""Tools for the security tests: a raw websocket that speaks only what a test
tells it to (and never reads unless asked), a well-behaved bystander that
checks the hub keeps serving others meanwhile, and the hub's resident memory.

    async with Bystander(hub.url, token=...) as bystander:
        sock = await RawSocket.open(hub.url)
        await sock.send_text('40/rtkit,{"token": "..."}')
        ...                                # the attack
    bystander.check()                      # served all along, nothing lost
    assert rss_mb(hub) - before < 50       # memory within the stated bound
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import struct
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

from integration.helpers import RawClient  # tests/ is on sys.path under pytest

# What a user would call "still served": every publish acked and delivered
# within this many seconds, even while the hub is under attack.
SERVED_WITHIN = 2.0


def rss_mb(hub: Any) -> float:
    """Resident memory of a hub process (a HubProcess) in MiB, from /proc."""
    with open(f"/proc/{hub.proc.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS line")


class RawSocket:
    """An Engine.IO websocket opened by hand: the handshake, masked frames
    out, and reads only when asked. Its receive buffer is small, so a peer
    that does not read backs the hub's writes up as a stuck client would."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        path: str = "/socket.io/",
        headers: dict[str, str] | None = None,
        rcvbuf: int = 4096,
        source: str | None = None,
    ) -> RawSocket:
        """``source``: the local address to connect from (e.g. another
        loopback address, 127.0.0.2, to stand for a second client host)."""
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if source is not None:
            sock.bind((source, 0))
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, (host, port))
            reader, writer = await asyncio.open_connection(sock=sock, limit=2**20)
        except BaseException:
            sock.close()  # else the garbage collector warns in a later test
            raise
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path}?EIO=4&transport=websocket HTTP/1.1",
            f"Host: {host}:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            *(f"{k}: {v}" for k, v in (headers or {}).items()),
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        status = await reader.readuntil(b"\r\n\r\n")
        if b" 101 " not in status.split(b"\r\n", 1)[0]:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)
            raise ConnectionRefusedError(status.decode(errors="replace"))
        self = cls(reader, writer)
        opening = await self.receive()  # Engine.IO "0{...}" open packet
        assert isinstance(opening, str) and opening.startswith("0"), opening
        return self

    async def connect_namespace(self, auth: dict[str, Any] | None = None) -> str:
        """Socket.IO CONNECT to /rtkit; returns the hub's answer packet."""
        import json

        await self.send_text("40/rtkit," + json.dumps(auth or {}))
        while True:
            packet = await self.receive()
            if isinstance(packet, str) and packet.startswith("4") and packet != "2":
                return packet
            if packet == "2":  # Engine.IO ping
                await self.send_text("3")

    def _frame(self, opcode: int, payload: bytes) -> bytes:
        head = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 2**16:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        masked = (
            bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if n < 4096
            else _mask(payload, mask)
        )
        return head + mask + masked

    async def send_text(self, text: str) -> None:
        self.writer.write(self._frame(0x1, text.encode()))
        await self.writer.drain()

    async def send_binary(self, data: bytes) -> None:
        self.writer.write(self._frame(0x2, data))
        await self.writer.drain()

    async def receive(self, within: float = 10.0) -> str | bytes | None:
        """The next data frame (text as str, binary as bytes); None once closed."""

        async def read() -> str | bytes | None:
            while True:
                try:
                    b0, b1 = await self.reader.readexactly(2)
                except asyncio.IncompleteReadError:
                    return None
                n = b1 & 0x7F
                if n == 126:
                    (n,) = struct.unpack("!H", await self.reader.readexactly(2))
                elif n == 127:
                    (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
                payload = await self.reader.readexactly(n)
                opcode = b0 & 0x0F
                if opcode == 0x8:
                    return None
                if opcode == 0x1:
                    return payload.decode()
                if opcode == 0x2:
                    return payload

        return await asyncio.wait_for(read(), within)

    @property
    def closed(self) -> bool:
        return self.reader.at_eof()

    async def wait_closed(self, within: float = 10.0) -> None:
        """Read (and drop) until the hub closes the socket."""
        deadline = time.monotonic() + within
        while not self.reader.at_eof():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"the hub did not close the socket within {within}s")
            try:
                if await self.receive(within=left) is None:
                    return
            except (TimeoutError, ConnectionError):
                if time.monotonic() >= deadline:
                    raise AssertionError(
                        f"the hub did not close the socket within {within}s"
                    ) from None
                return

    async def close(self) -> None:
        """Close, and give up on what the hub has not taken of our writes
        within a second: a hub that closed its side without reading them
        would otherwise leave us flushing into a zero window for minutes."""
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 1.0)
        except (ConnectionError, OSError):
            pass
        except TimeoutError:
            self.writer.transport.abort()
            # The socket is closed by the callback abort schedules: let it
            # run, or a test ending now leaves it for the garbage collector
            # (a ResourceWarning in whichever test it happens to run).
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.writer.wait_closed(), 1.0)


def _mask(payload: bytes, mask: bytes) -> bytes:
    n = len(payload)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big")


class Bystander:
    """A well-behaved publisher and subscriber on a channel of its own.

    While the block runs it publishes a small message every ``interval``
    seconds and waits for each to come back; ``check()`` then asserts that
    every publish was acked and delivered in order, each within
    ``SERVED_WITHIN`` seconds. Unlike the integration tests' Bystander,
    which fails at the first problem, this one publishes and receives on
    two connections and records errors and its slowest round trip, so that
    a test can judge how well others were served while a hub was attacked.
    """

    def __init__(self, url: str, *, token: str | None = None, interval: float = 0.05) -> None:
        self.url = url
        self.token = token
        self.interval = interval
        self.channel = f"bystander.{uuid.uuid4().hex[:8]}"
        self.acked: list[int] = []
        self.slowest = 0.0
        self.errors: list[str] = []
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def __aenter__(self) -> Bystander:
        self.publisher = await RawClient(self.url, token=self.token, name="bystander-pub").connect()
        self.subscriber = await RawClient(
            self.url, token=self.token, name="bystander-sub"
        ).connect()
        ack = await self.subscriber.subscribe(self.channel)
        assert ack["ok"], ack
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            started = time.monotonic()
            try:
                ack = await self.publisher.publish(self.channel, {"n": n})
                if not ack.get("ok"):
                    self.errors.append(f"publish {n} refused: {ack}")
                else:
                    self.acked.append(ack["seq"])
                    await self.subscriber.wait_for_seq(self.channel, ack["seq"], within=10)
            except Exception as exc:  # recorded for check()
                self.errors.append(f"publish {n}: {exc!r}")
            self.slowest = max(self.slowest, time.monotonic() - started)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval)

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
        await self.publisher.close()
        await self.subscriber.close()

    def check(self, *, within: float = SERVED_WITHIN, at_least: int = 5) -> None:
        assert not self.errors, self.errors[:5]
        assert len(self.acked) >= at_least, f"only {len(self.acked)} publishes went through"
        seqs = self.subscriber.seqs(self.channel)
        assert seqs == sorted(seqs) and set(self.acked) <= set(seqs), "bystander lost messages"
        assert self.slowest <= within, (
            f"the bystander waited {self.slowest:.2f}s for a publish to come back (> {within}s)"
        )
