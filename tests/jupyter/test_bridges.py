"""Bridges run by the Jupyter server (c.RtkitExtension.bridges): a real
server configured with bridges to a private Mosquitto, messages that reach a
channel through it, and the server's status listing every bridge, the
misconfigured ones included."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest

import rtkit.aio
from tests.integration.brokers import mosquitto

from .server import JupyterServer

pytestmark = [pytest.mark.jupyter]

aiomqtt = pytest.importorskip("aiomqtt")


async def wait_bridges(
    server: JupyterServer, check: Callable[[dict[str, Any]], bool], within: float = 30.0
) -> dict[str, Any]:
    """The status's bridges once ``check`` accepts them."""
    deadline = time.monotonic() + within
    while True:
        status = await asyncio.to_thread(server.get_json, "rtkit/api/status")
        bridges: dict[str, Any] = status["bridges"]
        if check(bridges):
            return bridges
        if time.monotonic() > deadline:
            raise AssertionError(f"bridges not as expected in {within} s: {bridges}")
        await asyncio.sleep(0.2)


async def test_the_server_runs_its_bridges_into_its_hub_and_lists_them(
    jupyter_factory: Any,
) -> None:
    broker = mosquitto().start()
    try:
        server: JupyterServer = jupyter_factory()
        bridges: list[Any] = [
            # As `rtkit bridge` arguments, and as a dict of the same options.
            f"mqtt --port {broker.port} --map 'plant/+/power=plant.{{1}}' --name plant "
            "--status-every 1",
            {"kind": "mqtt", "port": broker.port, "map": ["meters/#=meters"], "name": "meters"},
            {"kind": "kafka", "name": "nope"},  # no such source
            "mqtt --name nomap",  # --map missing
        ]
        config = {"RtkitExtension": {"bridges": bridges}}
        (server.home / "config" / "jupyter_server_config.json").write_text(json.dumps(config))
        server.start()

        listed = await wait_bridges(
            server,
            lambda b: all(b.get(n, {}).get("status") == "connected" for n in ("plant", "meters")),
        )
        assert listed["plant"]["server"] is True and listed["plant"]["source"] == "mqtt"
        failed = {n: b for n, b in listed.items() if b["status"] == "failed"}
        assert set(failed) == {"bridges[2]", "bridges[3]"}
        assert "kafka" in failed["bridges[2]"]["last_error"]
        assert "--map" in failed["bridges[3]"]["last_error"]

        async with await rtkit.aio.connect(server.hub_url, token=server.token) as hub:
            async with aiomqtt.Client("127.0.0.1", broker.port) as pub:
                for i in range(20):
                    await pub.publish("plant/a/power", orjson.dumps({"i": i}), qos=1)
            deadline = time.monotonic() + 20
            while len(history := await hub.channel("plant.a").history()) < 20:
                assert time.monotonic() < deadline, history
                await asyncio.sleep(0.1)
            assert [m.data for m in history] == [{"i": i} for i in range(20)]
            assert {m.sender for m in history} == {"bridge.plant"}
        listed = await wait_bridges(server, lambda b: b["plant"].get("published") == 20)
        assert listed["plant"]["received"] == 20 and listed["plant"]["errors"] == 0

        # The broker goes away: the server stays up and the status says so.
        broker.kill()
        listed = await wait_bridges(server, lambda b: b["plant"]["status"] == "disconnected")
        assert listed["plant"]["last_error"]
        assert server.stop() == 0, server.output()
        await server.wait_for_log("rtkit hub stopped")
        assert "Traceback" not in server.output(), server.output()
    finally:
        broker.stop()
