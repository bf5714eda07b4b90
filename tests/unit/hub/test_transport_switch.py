"""The fast-paths switch (``RTKIT_FAST_PATHS``) and both ways of running,
on in-process hubs served by aiohttp and by tornado over loopback: the same
deliveries, in order, with direct frame writes only when the fast paths
are on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import tornado.httpserver
import tornado.netutil
from aiohttp import web

import rtkit.aio
from rtkit.config import HubConfig
from rtkit.hosts import aiohttp as aiohttp_host
from rtkit.hosts import tornado as tornado_host
from rtkit.hub import Hub
from rtkit.hub.transport import FAST_PATHS_ENV, HubServer, fast_paths_enabled
from rtkit.hub.transport.server import FastHubServer

SUBSCRIBERS = 3
MESSAGES = 50


@pytest.mark.parametrize(
    ("value", "enabled"),
    [(None, True), ("1", True), ("yes", True), ("0", False), ("false", False), (" OFF ", False)],
)
def test_the_switch_reads_the_environment(
    monkeypatch: pytest.MonkeyPatch, value: str | None, enabled: bool
) -> None:
    if value is None:
        monkeypatch.delenv(FAST_PATHS_ENV, raising=False)
    else:
        monkeypatch.setenv(FAST_PATHS_ENV, value)
    assert fast_paths_enabled() is enabled


@pytest.fixture(params=[True, False], ids=["fast", "public-api"])
def fast_paths(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    enabled: bool = request.param
    monkeypatch.setenv(FAST_PATHS_ENV, "1" if enabled else "0")
    return enabled


@asynccontextmanager
async def aiohttp_hub() -> AsyncIterator[tuple[Hub, str]]:
    hub = Hub(HubConfig(allow_anonymous=True), async_mode="aiohttp")
    runner = web.AppRunner(aiohttp_host.create_app(hub), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield hub, f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def tornado_hub() -> AsyncIterator[tuple[Hub, str]]:
    hub = Hub(HubConfig(allow_anonymous=True), async_mode="tornado")
    app = tornado_host.create_app(hub)
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server = tornado.httpserver.HTTPServer(app)
    server.add_sockets(sockets)
    await hub.start()
    try:
        yield hub, f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
    finally:
        await hub.stop()
        server.stop()
        await server.close_all_connections()


HOSTS: dict[str, Callable[[], Any]] = {"aiohttp": aiohttp_hub, "tornado": tornado_hub}


@pytest.mark.parametrize("host", sorted(HOSTS))
async def test_deliveries_are_the_same_either_way(fast_paths: bool, host: str) -> None:
    async with HOSTS[host]() as (hub, url):
        assert type(hub.sio) is (FastHubServer if fast_paths else HubServer)
        assert hub.fast_paths is fast_paths
        clients = [await rtkit.aio.connect(url) for _ in range(SUBSCRIBERS)]
        try:
            inboxes: list[list[int]] = [[] for _ in clients]
            done = [asyncio.Event() for _ in clients]

            def collect(i: int) -> Any:
                def on_message(msg: Any) -> None:
                    inboxes[i].append(msg.seq)
                    if len(inboxes[i]) == MESSAGES:
                        done[i].set()

                return on_message

            for i, client in enumerate(clients):
                await client.channel("switch").subscribe(collect(i))
            publisher = clients[0].channel("switch")
            for n in range(MESSAGES):
                assert await publisher.publish({"n": n}) == n + 1
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in done)), 20)
            assert inboxes == [list(range(1, MESSAGES + 1))] * SUBSCRIBERS
            deliveries = (await hub.status())["deliveries"]
        finally:
            for client in clients:
                await client.close()
    if fast_paths:
        assert deliveries["direct_writes"] > 0, deliveries
    else:
        assert deliveries["direct_writes"] == 0, deliveries
    assert len(hub.sio.transports) == 0, "every connection's transport was dropped"
