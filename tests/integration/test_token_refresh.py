"""Token refresh on a live connection (``auth.refresh``) and token providers.

Each test runs a hub in-process on a real socket, with a token leeway of
zero so that a 3-second token ends its connection 3 seconds in, and talks
to it with rtkit's client (a token provider minting short tokens) or with
a stock python-socketio client (RawClient) speaking the wire protocol.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web

import rtkit.aio
from rtkit.config import HubConfig
from rtkit.errors import Forbidden, TokenUnavailable
from rtkit.hosts import aiohttp as aiohttp_host
from rtkit.hub import Hub
from rtkit.hub.auth import TokenAuthenticator, mint_token
from rtkit.pytest_plugin import InProcessHub

from .conftest import SECRET
from .helpers import RawClient, assert_error, assert_gap_free, assert_ok, wait_until

TTL = 3  # seconds: every token of these tests but the publisher's


@asynccontextmanager
async def hub_without_leeway(config: HubConfig | None = None) -> AsyncIterator[tuple[Hub, str]]:
    """A hub on a free loopback port that ends a connection exactly at its
    token's ``exp`` (no leeway), so expiries come every few seconds."""
    hub = Hub(
        config or HubConfig(secret=SECRET),
        authenticator=TokenAuthenticator(SECRET, leeway=0.0),
        async_mode="aiohttp",
    )
    runner = web.AppRunner(aiohttp_host.create_app(hub), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield hub, f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def token_for(user: str, *, ttl: float = TTL, **grants: Any) -> str:
    grants.setdefault("publish", ["*"])
    grants.setdefault("subscribe", ["*"])
    return mint_token(SECRET, user, ttl=ttl, **grants)


class Provider:
    """A token provider that mints short tokens, until told to fail."""

    def __init__(self, user: str) -> None:
        self.user = user
        self.calls = 0
        self.down = False
        self._lock = threading.Lock()  # called on a worker thread

    def __call__(self) -> str:
        with self._lock:
            self.calls += 1
            if self.down:
                raise RuntimeError("the identity provider is down")
        return token_for(self.user)


class Feed:
    """Publishes to channels without pause from a client with a long token,
    keeping every seq the hub acked."""

    def __init__(self, client: rtkit.aio.Client, channels: list[str]) -> None:
        self.client = client
        self.channels = channels
        self.acked: dict[str, list[int]] = {name: [] for name in channels}
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Feed:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        n = 0
        while True:
            n += 1
            for name in self.channels:
                seq = await self.client.channel(name).publish({"n": n})
                self.acked[name].append(seq)
            await asyncio.sleep(0.02)


@asynccontextmanager
async def raw(url: str, token: str) -> AsyncIterator[RawClient]:
    client = RawClient(url, token=token)
    try:
        yield await client.connect()
    finally:
        await client.close()


def names(kind: str, count: int) -> list[str]:
    tag = uuid.uuid4().hex[:8]
    return [f"{kind}.{tag}.{i}" for i in range(count)]


async def test_a_provider_renews_on_the_live_connection_and_nothing_is_missed() -> None:
    async with hub_without_leeway() as (hub, url):
        provider = Provider("ada")
        channels = names("ch", 2)
        room, doc = names("room", 1)[0], names("doc", 1)[0]
        publisher = await rtkit.aio.connect(url, token_for("feed", ttl=3600))
        client = await rtkit.aio.connect(url, provider, reconnect_delay_max=0.5)
        try:
            sid = client.session.sid
            assert sid is not None and sid in hub._connections
            received: dict[str, list[int]] = {name: [] for name in channels}
            for name in channels:
                await client.channel(name).subscribe(
                    lambda msg, name=name: received[name].append(msg.seq)
                )
            presence = await client.presence(room, {"status": "here"})
            shared = await client.shared(doc)
            disconnects: list[str] = []
            client.on("disconnect", disconnects.append)

            async with Feed(publisher, channels) as feed:
                # Four token lifetimes: without a refresh the hub would have
                # closed the connection at the first expiry.
                loop = asyncio.get_running_loop()
                until = loop.time() + 4 * TTL
                while loop.time() < until:
                    assert client.session.sid == sid
                    assert sid in hub._connections
                    await asyncio.sleep(0.1)
            for name in channels:
                last = feed.acked[name][-1]
                await wait_until(lambda name=name, last=last: received[name][-1:] == [last])
                assert_gap_free(received[name], end=last)
                assert received[name] == sorted(set(received[name]))

            assert client.metrics.token_refreshes >= 4
            assert client.metrics.reconnects == 0 and disconnects == []
            assert client.session.sid == sid
            expires = hub._connections[sid].identity.expires_at
            assert expires is not None and expires > time.time()
            # The room and the document are still live on that connection.
            others = await publisher.presence(room)
            assert [m.user for m in others.members if m.user == "ada"] == ["ada"]
            assert presence.members
            mirror = await publisher.shared(doc)
            mirror["x"] = 1
            await wait_until(lambda: shared.get("x") == 1)
        finally:
            await client.close()
            await publisher.close()


async def test_a_token_that_runs_out_closes_the_connection_and_the_next_one_resumes() -> None:
    async with hub_without_leeway() as (hub, url):
        provider = Provider("bea")
        channel = names("ch", 1)[0]
        publisher = await rtkit.aio.connect(url, token_for("feed", ttl=3600))
        client = await rtkit.aio.connect(url, provider, reconnect_delay_max=0.5)
        try:
            received: list[int] = []
            await client.channel(channel).subscribe(lambda msg: received.append(msg.seq))
            auth_errors: list[Exception] = []
            disconnects: list[str] = []
            gaps: list[Any] = []
            client.on("auth_error", auth_errors.append)
            client.on("disconnect", disconnects.append)
            client.on("gap", lambda *args: gaps.append(args))
            first_sid = client.session.sid
            provider.down = True

            async with Feed(publisher, [channel]) as feed:
                await wait_until(lambda: bool(disconnects), "the hub ending the connection")
                assert "expired" in disconnects[0], disconnects
                assert first_sid not in hub._connections
                # The provider's failures are reported, and retried.
                await wait_until(lambda: len(auth_errors) >= 2, "auth_error events")
                assert all(isinstance(e, TokenUnavailable) for e in auth_errors)
                assert "identity provider is down" in str(auth_errors[0])
                assert not client.connected
                provider.down = False
                async with asyncio.timeout(15):
                    await client.wait_connected()
                # Messages keep coming on the new connection.
                seen = len(received)
                await wait_until(lambda: len(received) > seen + 5)
            last = feed.acked[channel][-1]
            await wait_until(lambda: received[-1:] == [last])
            assert_gap_free(received, end=last)
            assert received == feed.acked[channel][-len(received) :]
            assert gaps == []
            assert client.metrics.reconnects == 1
            assert client.session.sid not in (None, first_sid)
        finally:
            await client.close()
            await publisher.close()


async def test_a_provider_that_hands_another_users_token_is_refused_and_reported() -> None:
    async with hub_without_leeway() as (hub, url):
        users = iter(["cai"] + ["mallory"] * 100)
        client = await rtkit.aio.connect(
            url, lambda: token_for(next(users)), reconnect_delay_max=0.5
        )
        try:
            auth_errors: list[Exception] = []
            client.on("auth_error", auth_errors.append)
            await wait_until(lambda: bool(auth_errors), "an auth_error event")
            assert isinstance(auth_errors[0], Forbidden)
            assert "'mallory'" in str(auth_errors[0])
            sid = client.session.sid
            assert sid is not None and hub._connections[sid].identity.user == "cai"
        finally:
            await client.close()


async def test_refresh_with_another_users_token_is_forbidden_and_keeps_the_grants() -> None:
    async with hub_without_leeway() as (hub, url):
        channel = names("ch", 1)[0]
        token = token_for("alice", ttl=60, publish=[], subscribe=[channel])
        async with raw(url, token) as alice, raw(url, token_for("feed", ttl=60)) as feed:
            assert_ok(await alice.subscribe(channel))
            conn = hub._connections[alice.sio.get_sid("/rtkit")]
            before = conn.identity
            message = assert_error(
                await alice.call("auth.refresh", {"token": token_for("bob", ttl=600)}),
                "forbidden",
            )
            assert "'bob'" in message and "'alice'" in message
            assert conn.identity == before
            # Still subscribed, and still without bob's publish right.
            assert_error(await alice.publish(channel, {"x": 1}), "forbidden")
            seq = assert_ok(await feed.publish(channel, {"x": 2}))["seq"]
            await alice.wait_for_seq(channel, seq)


async def test_refresh_with_a_bad_token_is_unauthorized_and_the_old_one_still_ends_it() -> None:
    async with hub_without_leeway() as (hub, url):
        channel = names("ch", 1)[0]
        async with raw(url, token_for("dan")) as dan, raw(url, token_for("feed", ttl=60)) as feed:
            closing: list[Any] = []
            dan.sio.on("closing", closing.append, namespace="/rtkit")
            assert_ok(await dan.subscribe(channel))
            expires = hub._connections[dan.sio.get_sid("/rtkit")].identity.expires_at
            wrong_secret = mint_token("x" * 32, "dan", subscribe=["*"], ttl=600)
            for bad, why in [
                ("not-a-jwt", "invalid token"),
                (wrong_secret, "signature"),
                (_expired("dan"), "expired"),
            ]:
                message = assert_error(
                    await dan.call("auth.refresh", {"token": bad}), "unauthorized"
                )
                assert why in message, message
            for payload in ({}, {"token": 5}, {"token": "a", "user": "x"}):
                assert_error(await dan.call("auth.refresh", payload), "bad_request")
            # Kept, with its old grants, until its old expiry.
            assert dan.connected
            seq = assert_ok(await feed.publish(channel, {"x": 1}))["seq"]
            await dan.wait_for_seq(channel, seq)
            await dan.wait_disconnected(within=TTL + 5)
            assert time.time() >= (expires or 0) - 0.05
            assert [c["code"] for c in closing] == ["unauthorized"]


def _expired(user: str) -> str:
    return mint_token(SECRET, user, subscribe=["*"], ttl=1, now=time.time() - 60)


async def test_a_refresh_with_fewer_grants_ends_what_it_no_longer_allows() -> None:
    async with hub_without_leeway() as (_hub, url):
        tag = uuid.uuid4().hex[:8]
        kept, lost = f"a.{tag}", f"b.{tag}"
        room, doc = f"b.room.{tag}", f"b.doc.{tag}"
        both = token_for("eve", ttl=60, publish=["*"], subscribe=["a.*", "b.*"])
        fewer = token_for("eve", ttl=120, publish=["*"], subscribe=["a.*"])
        async with raw(url, both) as eve, raw(url, token_for("feed", ttl=60)) as feed:
            events: list[tuple[str, Any]] = []
            eve.sio.on("revoked", lambda body: events.append(("revoked", body)), namespace="/rtkit")
            for name in (kept, lost):
                assert_ok(await eve.subscribe(name))
            assert_ok(await eve.call("presence.join", {"room": room}))
            assert_ok(await eve.call("doc.sync", {"doc": doc}))
            assert_ok(await feed.call("presence.join", {"room": room}))

            def on_ack(*ack: Any) -> None:
                events.append(("ack", ack[0]))

            done = asyncio.Event()
            await eve.sio.emit(
                "auth.refresh",
                {"token": fewer},
                namespace="/rtkit",
                callback=lambda *ack: (on_ack(*ack), done.set()),
            )
            await asyncio.wait_for(done.wait(), 10)
            kinds = [kind for kind, _ in events]
            assert kinds == ["revoked", "revoked", "revoked", "ack"], events
            revoked = {(b["kind"], b["name"]): b for kind, b in events if kind == "revoked"}
            assert set(revoked) == {("channel", lost), ("doc", doc), ("room", room)}
            assert all(b["code"] == "forbidden" for b in revoked.values())
            ack = events[-1][1]
            assert ack["ok"] is True and ack["expires"] == pytest.approx(time.time() + 120, abs=5)

            # The lost channel sends nothing more; the kept one carries on.
            assert_ok(await feed.publish(lost, {"x": 1}))
            seq = assert_ok(await feed.publish(kept, {"x": 2}))["seq"]
            await eve.wait_for_seq(kept, seq)
            assert eve.seqs(lost) == []
            members = assert_ok(await feed.call("presence.list", {"room": room}))["members"]
            assert [m["user"] for m in members] == ["feed"]
            # A new subscribe is refused by the new grants.
            assert_error(await eve.subscribe(lost), "forbidden")


async def test_the_client_drops_what_a_refresh_revoked_and_says_so() -> None:
    async with hub_without_leeway() as (_hub, url):
        tag = uuid.uuid4().hex[:8]
        kept, lost = f"a.{tag}", f"b.{tag}"
        grants = iter([["a.*", "b.*"]] + [["a.*"]] * 100)

        def provider() -> str:
            return token_for("fay", publish=["*"], subscribe=next(grants))

        client = await rtkit.aio.connect(url, provider)
        try:
            revoked: list[tuple[str, str, Exception]] = []
            client.on("revoked", lambda *args: revoked.append(args))
            await client.channel(kept).subscribe(lambda msg: None)
            await client.channel(lost).subscribe(lambda msg: None)
            room = await client.presence(f"b.room.{tag}")
            doc = await client.shared(f"b.doc.{tag}")
            doc["x"] = 1
            await doc.flush()
            await wait_until(lambda: len(revoked) == 3, "revoked events", within=TTL + 5)
            assert {(kind, name) for kind, name, _ in revoked} == {
                ("channel", lost),
                ("room", f"b.room.{tag}"),
                ("doc", f"b.doc.{tag}"),
            }
            await wait_until(lambda: not doc.synced, "the document to stop syncing")
            assert doc["x"] == 1  # the local copy stays readable
            assert all(isinstance(err, Forbidden) for _, _, err in revoked)
            assert not client.channel(lost).subscribed
            assert client.channel(kept).subscribed
            with pytest.raises(RuntimeError, match="left room"):
                await room.update({"x": 1})
            assert client.metrics.subscriptions == 1
        finally:
            await client.close()


async def test_a_token_provider_that_fails_at_connect_is_raised() -> None:
    async with hub_without_leeway() as (_, url):

        def broken() -> str:
            raise RuntimeError("no credentials")

        with pytest.raises(TokenUnavailable, match="no credentials"):
            await rtkit.aio.connect(url, broken)

        async def not_a_token() -> Any:
            return 42

        with pytest.raises(TokenUnavailable, match="int, not a token string"):
            await rtkit.aio.connect(url, not_a_token)


async def test_an_async_provider_works_and_the_blocking_client_takes_one_too() -> None:
    async with hub_without_leeway() as (_hub, url):
        calls = 0

        async def provider() -> str:
            nonlocal calls
            calls += 1
            return token_for("gus")

        client = await rtkit.aio.connect(url, provider)
        try:
            await wait_until(lambda: client.metrics.token_refreshes >= 1, within=TTL + 5)
            assert calls >= 2
        finally:
            await client.close()

        provider_calls = Provider("hal")

        def blocking() -> None:
            with rtkit.connect(url, provider_calls) as hub_client:
                deadline = time.monotonic() + TTL + 5
                while hub_client.metrics.token_refreshes < 1:
                    assert time.monotonic() < deadline, "no refresh"
                    time.sleep(0.05)
                assert hub_client.connected

        await asyncio.to_thread(blocking)
        assert provider_calls.calls >= 2


async def test_a_hub_without_tokens_keeps_the_connection_and_the_client_stops_asking(
    shared_hub: InProcessHub,
) -> None:
    """An anonymous hub without a secret answers auth.refresh bad_request;
    its connections have no expiry, so the client keeps the connection and
    raises no auth_error."""
    provider = Provider("ivy")
    client = await rtkit.aio.connect(shared_hub.url, provider)
    try:
        auth_errors: list[Exception] = []
        client.on("auth_error", auth_errors.append)
        sid = client.session.sid
        await wait_until(lambda: provider.calls >= 3, "two renewals", within=3 * TTL)
        assert client.session.sid == sid and client.connected
        assert client.metrics.token_refreshes == 0 and client.metrics.reconnects == 0
        assert auth_errors == []
    finally:
        await client.close()


async def test_a_subscribe_racing_a_refresh_that_revokes_it_never_outlives_it(
    tmp_path: Any,
) -> None:
    """A subscribe whose backlog read is still in the store when a refresh
    takes the channel's right away: it is refused (or revoked), never left
    standing under the new grants. SQLite reads yield to the event loop,
    which is what lets the two interleave."""
    config = HubConfig(secret=SECRET, store=f"sqlite:///{tmp_path / 'hub.db'}")
    async with hub_without_leeway(config) as (hub, url):
        tag = uuid.uuid4().hex[:8]
        both = token_for("kim", ttl=60, subscribe=["a.*", "b.*"])
        fewer = token_for("kim", ttl=60, subscribe=["a.*"])
        async with raw(url, both) as kim:
            revoked: list[str] = []
            kim.sio.on("revoked", lambda body: revoked.append(body["name"]), namespace="/rtkit")
            sid = kim.sio.get_sid("/rtkit")
            # A long backlog keeps the subscribe in the store for a while.
            channel = f"b.{tag}"
            for _ in range(10):
                batch = [{"channel": channel, "data": "x" * 200} for _ in range(500)]
                assert_ok(await kim.call("publish", {"messages": batch}))
            for _ in range(10):
                revoked.clear()
                assert_ok(await kim.call("auth.refresh", {"token": both}))
                subscribing = asyncio.ensure_future(
                    kim.call("subscribe", {"channel": channel, "history": 5000})
                )
                await asyncio.sleep(0)  # the subscribe goes out first
                assert_ok(await kim.call("auth.refresh", {"token": fewer}))
                ack = await subscribing
                assert ack["ok"] is False or channel in revoked, (ack, revoked)
                assert hub._connections[sid].subscriptions == set()
