"""Who may connect, with what rights, and for how long (issue #15 items 3, 5, 6).

Each test runs the attack against a real ``rtkit hub`` process as a client
would, with a bystander that must stay served meanwhile, and checks the
hub's resident memory against a stated bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.server
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import socketio

from rtkit.hub.auth import TOKEN_LEEWAY, mint_token
from tests.integration.helpers import RawClient, assert_error, assert_ok
from tests.security.attack import Bystander, rss_mb

SECRET = "security-auth-secret-0123456789abcdef"


def every_channel(user: str, **kwargs: Any) -> str:
    return mint_token(SECRET, user, publish=["*"], subscribe=["*"], **kwargs)


async def keep_serving(bystander: Bystander, *, at_least: int = 5, within: float = 10) -> None:
    """Wait until the bystander has had ``at_least`` publishes served during
    the attack (check() asks for that many)."""
    deadline = time.monotonic() + within
    while len(bystander.acked) < at_least and not bystander.errors:
        assert time.monotonic() < deadline, "the bystander is not being served"
        await asyncio.sleep(0.05)


def cli_token(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "rtkit", "token", "--secret", SECRET, *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


# -- item 5: a token grants only what it names --------------------------------


async def test_subscribe_only_token_cannot_publish(rt_hub_factory: Any) -> None:
    """``rtkit token --subscribe 'test.*'`` (and mint_token with only
    subscribe=) used to mint publish ["*"]: a read-only token could publish
    everywhere. Now every publish it tries is refused with forbidden, while
    it still reads what it was given."""
    hub = rt_hub_factory(secret=SECRET)
    before = rss_mb(hub)
    async with Bystander(hub.url, token=every_channel("bystander")) as bystander:
        writer = await RawClient(hub.url, token=every_channel("ann")).connect()
        readers = [
            await RawClient(
                hub.url, token=cli_token("--user", "bob", "--subscribe", "test.*")
            ).connect(),
            await RawClient(
                hub.url, token=mint_token(SECRET, "bob", subscribe=["test.*"])
            ).connect(),
        ]
        channel = f"test.{uuid.uuid4().hex[:8]}"
        try:
            for reader in readers:
                assert_ok(await reader.subscribe(channel))
                for target in (channel, "elsewhere", "test.other"):
                    assert_error(await reader.publish(target, {"x": 1}), "forbidden")
            # The write-only case: no --subscribe, no reading.
            publisher = await RawClient(
                hub.url, token=cli_token("--user", "cy", "--publish", "test.*")
            ).connect()
            try:
                assert_ok(await publisher.publish(channel, {"x": 2}))
                assert_error(await publisher.history(channel), "forbidden")
                assert_error(await publisher.subscribe(channel), "forbidden")
            finally:
                await publisher.close()
            seq = assert_ok(await writer.publish(channel, {"x": 3}))["seq"]
            for reader in readers:
                await reader.wait_for_seq(channel, seq)
                assert [m["data"] for m in reader.received[channel]] == [{"x": 2}, {"x": 3}]
            await keep_serving(bystander)
        finally:
            for client in (writer, *readers):
                await client.close()
    bystander.check()
    # A handful of refused requests: anything past noise would be a leak.
    grown = rss_mb(hub) - before
    print(f"RSS {before:.1f} MiB before, grown by {grown:.1f} MiB")
    assert grown < 20


# -- item 6: an expired token ends its connection ------------------------------


def expiring_token(user: str, *, in_seconds: float = 2.0) -> str:
    """A token every channel that the hub accepts now and that runs out about
    ``in_seconds`` from now (its exp is already past, inside the hub's leeway)."""
    issued = time.time() - TOKEN_LEEWAY - 10 + in_seconds
    return every_channel(user, now=issued, ttl=10)


async def test_expired_token_ends_its_connection(rt_hub_factory: Any) -> None:
    """Connections whose token expires used to keep receiving messages,
    presence and document updates and stay room members; only new requests
    were refused. Now the hub ends each one at its token's expiry, saying
    why (a ``closing`` event, unauthorized), and the room forgets them."""
    hub = rt_hub_factory(secret=SECRET)
    room, doc, channel = (f"{kind}.{uuid.uuid4().hex[:8]}" for kind in ("room", "doc", "ch"))
    async with Bystander(hub.url, token=every_channel("bystander")) as bystander:
        observer = await RawClient(hub.url, token=every_channel("observer")).connect()
        assert_ok(await observer.call("presence.join", {"room": room}))
        before = rss_mb(hub)
        expiring: list[RawClient] = []
        closing: list[Any] = []
        try:
            # Long enough for all 40 to connect and join on a loaded machine
            # before the first expires (the member count below needs them all).
            for i in range(40):
                client = RawClient(hub.url, token=expiring_token(f"temp{i}", in_seconds=8))
                client.sio.on("closing", closing.append, namespace="/rtkit")
                expiring.append(await client.connect())
                assert_ok(await client.subscribe(channel))
                assert_ok(await client.call("presence.join", {"room": room}))
                assert_ok(await client.call("doc.sync", {"doc": doc}))
            members = assert_ok(await observer.call("presence.list", {"room": room}))["members"]
            assert len(members) == 41
            for client in expiring:
                await client.wait_disconnected(within=15)
            assert len(closing) == 40
            assert all(c["code"] == "unauthorized" and "expired" in c["message"] for c in closing)
            # The room keeps only the live member, at once (no presence timeout).
            members = assert_ok(await observer.call("presence.list", {"room": room}))["members"]
            assert [m["user"] for m in members] == ["observer"]
            # Nothing more reaches them: they are gone, and a reconnect with the
            # same token is refused.
            seq = assert_ok(await observer.publish(channel, {"after": True}))["seq"]
            assert all(c.last_seq(channel) < seq for c in expiring)
            with pytest.raises(socketio.exceptions.ConnectionError):
                await expiring[0].connect()
            assert "expired" in str(expiring[0].connect_errors[-1])
            await keep_serving(bystander)
        finally:
            for client in (observer, *expiring):
                await client.close()
    bystander.check()
    # 40 connections that came and went: their state is gone with them
    # (measured: about +3 MiB on a fixed hub, from allocator noise).
    grown = rss_mb(hub) - before
    print(f"RSS {before:.1f} MiB before, grown by {grown:.1f} MiB")
    assert grown < 25


async def test_client_reports_an_expired_token_instead_of_reconnecting(
    rt_hub_factory: Any,
) -> None:
    """rtkit's own client, told its token expired, stops with Unauthorized
    and does not retry the same token in a loop."""
    import rtkit.aio
    from rtkit.errors import Unauthorized

    hub = rt_hub_factory(secret=SECRET)
    async with Bystander(hub.url, token=every_channel("bystander")) as bystander:
        client = await rtkit.aio.connect(hub.url, expiring_token("kate", in_seconds=2))
        try:
            disconnected = asyncio.Event()
            client.on("disconnect", lambda *_: disconnected.set())
            await asyncio.wait_for(disconnected.wait(), 10)
            # It stops: waiting for a connection raises the hub's reason.
            with pytest.raises(Unauthorized, match="expired"):
                await asyncio.wait_for(client.wait_connected(), 10)
            assert client.metrics.reconnects == 0
            await keep_serving(bystander)
        finally:
            await client.close()
    bystander.check()
    refused = [line for line in hub.log if "refused connection" in line]
    assert not refused, refused  # it did not try again with the same token


# -- item 12: a kernel token ends with its kernel ------------------------------


class JupyterClient(RawClient):
    """A RawClient for the hub inside a jupyter server: the server token on
    the handshake's HTTP request, the hub under the server's base_url."""

    def __init__(self, server: Any, **kwargs: Any) -> None:
        super().__init__(server.url, **kwargs)
        self.server = server

    async def connect(self, within: float = 10.0) -> JupyterClient:
        self._disconnected = asyncio.Event()
        await self.sio.connect(
            f"http://127.0.0.1:{self.server.port}",
            headers={"Authorization": f"token {self.server.token}"},
            namespaces=["/rtkit"],
            transports=["websocket"],
            socketio_path=f"{self.server.base_url}rtkit/socket.io",
            wait_timeout=within,
        )
        return self


class JupyterBystander(Bystander):
    """The bystander, logged in to a jupyter server with its token."""

    def __init__(self, server: Any) -> None:
        super().__init__(server.url)
        self.server = server

    async def __aenter__(self) -> JupyterBystander:
        self.publisher = await JupyterClient(self.server, name="bystander-pub").connect()
        self.subscriber = await JupyterClient(self.server, name="bystander-sub").connect()
        assert_ok(await self.subscriber.subscribe(self.channel))
        self._task = asyncio.create_task(self._run())
        return self


@pytest.mark.jupyter
@pytest.mark.parametrize("ending", ["shutdown", "restart", "cull"])
async def test_kernel_token_ends_with_its_kernel(ending: str, tmp_path: Any) -> None:
    """A kernel's RTKIT_TOKEN used to stay good for 30 days after the kernel
    was gone. Now shutting the kernel down, the culler, or a restart revokes
    it: connections made with it end (closing: unauthorized), it connects no
    more, and a restarted kernel gets a new token that works."""
    import rtkit.aio
    from rtkit.errors import NotConnected, Unauthorized
    from tests.jupyter.server import JupyterServer, Kernel

    extra = (
        # Cull a kernel idle for 2 s, checking every second.
        ["--MappingKernelManager.cull_idle_timeout=2", "--MappingKernelManager.cull_interval=1"]
        if ending == "cull"
        else []
    )
    server = JupyterServer(tmp_path / "jupyter", extra_args=extra).start()
    try:
        async with JupyterBystander(server) as bystander:
            kernel = Kernel.start(server)
            read_token = "import os; print(os.environ['RTKIT_TOKEN'])"
            token = (await kernel.execute(read_token)).strip()
            before = rss_mb(server)
            # What a script (or anyone holding the token) does with it.
            script = await rtkit.aio.connect(server.hub_url, token=token)
            try:
                dropped = asyncio.Event()
                script.on("disconnect", lambda *_: dropped.set())
                assert await script.channel("k.before").publish(1) >= 1
                # (The REST calls block: in a thread, so the bystander runs on.)
                if ending == "shutdown":
                    await asyncio.to_thread(kernel.shutdown)
                elif ending == "restart":
                    status, _ = await asyncio.to_thread(
                        server.request, f"api/kernels/{kernel.id}/restart", method="POST"
                    )
                    assert status == 200
                # (cull: the culler does it on its own within a few seconds)
                await asyncio.wait_for(dropped.wait(), 15)
                with pytest.raises(Unauthorized, match="revoked"):
                    await asyncio.wait_for(script.wait_connected(), 15)
                assert script.metrics.reconnects == 0
            finally:
                await script.close()
            # Refused at the handshake's HTTP request, before Socket.IO.
            status, _ = await asyncio.to_thread(
                server.request,
                "rtkit/socket.io/?EIO=4&transport=polling",
                token=None,
                headers={"Authorization": f"Bearer {token}"},
                cookies=False,
            )
            assert status == 403
            with pytest.raises((Unauthorized, NotConnected)):
                await rtkit.aio.connect(server.hub_url, token=token)
            if ending == "restart":
                new_token = (await kernel.execute(read_token)).strip()
                assert new_token != token
                out = await kernel.execute(
                    "import rtkit\n"
                    "hub = rtkit.connect()\n"
                    "print(hub.channel('k.after').publish('again'))\n"
                    "hub.close()\n"
                )
                assert out.strip() == "1"
                await asyncio.to_thread(kernel.shutdown)
            await keep_serving(bystander)
        bystander.check()
        # One kernel token revoked: a few bytes in the revocation list (the
        # kernel's own start and stop move the server's RSS by a few MiB).
        grown = rss_mb(server) - before
        print(f"RSS {before:.1f} MiB before, grown by {grown:.1f} MiB")
        assert grown < 30
    finally:
        server.stop()


# -- item 3: same origin by default --------------------------------------------

SOCKET_IO_JS = Path(__file__).parents[1] / "js/node_modules/socket.io-client/dist/socket.io.min.js"

# What a page from another site runs: connect to the hub, read a channel's
# history and publish to it; the outcome, per transport, as a string.
ATTACK_PAGE = """<!doctype html><script src="socket.io.min.js"></script>
<script>
function attempt(hub, transport) {
  return new Promise((resolve) => {
    const options = {transports: [transport], reconnection: false, timeout: 5000};
    const socket = io(hub + "/rtkit", options);
    const done = (outcome) => { socket.close(); resolve(outcome); };
    socket.on("connect_error", (err) => done("refused: " + err.message));
    socket.on("connect", () => {
      socket.emit("history", {channel: "secrets"}, (ack) => {
        socket.emit("publish", {channel: "secrets", data: "from " + location.origin},
          (pub) => done("connected: history " + ack.ok + ", publish " + pub.ok));
      });
    });
    setTimeout(() => done("timeout"), 8000);
  });
}
</script>"""


@contextlib.contextmanager
def page_server(root: Path) -> Iterator[str]:
    """A static web server for ``root`` on another loopback port: another origin."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))

    class Quiet(http.server.ThreadingHTTPServer):
        def handle_error(self, request: Any, client_address: Any) -> None:
            pass

    with Quiet(("127.0.0.1", 0), handler) as server:
        server.RequestHandlerClass.log_message = lambda *args: None  # type: ignore[method-assign]
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            thread.join(5)


def browser_attempts(page_url: str, hub_url: str) -> dict[str, str]:
    """Open the page in headless Chromium; what each transport's attempt got."""
    from tests.jupyter.lab import chromium

    with chromium() as browser:
        page = browser.new_page()
        page.goto(f"{page_url}/attack.html")
        return {
            transport: page.evaluate("([hub, t]) => attempt(hub, t)", [hub_url, transport])
            for transport in ("websocket", "polling")
        }


@pytest.mark.browser
@pytest.mark.parametrize("allowed", [False, True], ids=["default", "cors-origin"])
async def test_pages_from_other_origins_are_refused(
    allowed: bool, rt_hub_factory: Any, tmp_path: Path
) -> None:
    """With no --cors-origin the hub passed [] to python-engineio (Origin
    checks off): a page from another origin opened a websocket to an
    anonymous hub on 127.0.0.1, read history and published. Now only the
    hub's own origin is allowed unless --cors-origin names the page's, and the
    hub logs which option would allow a refused one."""
    (tmp_path / "attack.html").write_text(ATTACK_PAGE)
    (tmp_path / "socket.io.min.js").write_bytes(SOCKET_IO_JS.read_bytes())
    with page_server(tmp_path) as page_url:
        extra = ["--cors-origin", page_url] if allowed else []
        hub = rt_hub_factory(extra_args=extra)  # anonymous, on loopback
        before = rss_mb(hub)
        async with Bystander(hub.url) as bystander:
            outcome = await asyncio.to_thread(browser_attempts, page_url, hub.url)
            await keep_serving(bystander)
        bystander.check()
    if allowed:
        assert outcome == dict.fromkeys(outcome, "connected: history true, publish true")
    else:
        assert all(o.startswith("refused") for o in outcome.values()), outcome
        line = f"refused a browser connection from origin {page_url}"
        deadline = time.monotonic() + 5
        while not any(line in entry for entry in hub.log):
            assert time.monotonic() < deadline, "\n".join(hub.log[-20:])
            await asyncio.sleep(0.05)
        hint = next(entry for entry in hub.log if line in entry)
        assert f"--cors-origin {page_url}" in hint
        # One line per origin, not one per attempt.
        assert sum(line in entry for entry in hub.log) == 1
    # Two handshakes from a page: nothing to keep (Chromium runs in its own
    # process; the hub's RSS moves by allocator noise only).
    grown = rss_mb(hub) - before
    print(f"RSS {before:.1f} MiB before, grown by {grown:.1f} MiB")
    assert grown < 20
