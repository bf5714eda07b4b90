"""Lifecycle webhooks from the hub inside a real jupyter server, configured
with the extension's own options (c.RtkitExtension.webhook_url, ...)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import rtkit.aio
from tests.integration.test_webhooks import WEBHOOK_SECRET, Receiver

from .server import JupyterServer

pytestmark = pytest.mark.jupyter


async def test_the_extension_sends_signed_webhooks(jupyter_factory: Any) -> None:
    receiver = await Receiver().start()
    try:
        server: JupyterServer = jupyter_factory(
            extra_args=[
                f"--RtkitExtension.webhook_url={receiver.url}",
                f"--RtkitExtension.webhook_secret={WEBHOOK_SECRET}",
                "--RtkitExtension.webhook_batch_delay=0.01",
            ]
        )
        await asyncio.to_thread(server.start)
        async with await rtkit.aio.connect(server.hub_url, token=server.token) as hub:
            channel = hub.channel("jwebhook.feed")
            await channel.subscribe(lambda msg: None)
            events = await receiver.wait_for(1)
            assert events[0]["type"] == "channel.occupied"
            assert events[0]["channel"] == "jwebhook.feed"
            assert receiver.bad_signatures == 0
            status = server.get_json("rtkit/api/status")
            assert status["webhooks"]["url"] == receiver.url
            assert WEBHOOK_SECRET not in str(status)
        # Closing the client vacated the channel and closed the connection.
        events = await receiver.wait_for(3)
        assert [e["type"] for e in events[1:3]] == ["channel.vacated", "connection.closed"]
    finally:
        await receiver.stop()
    assert WEBHOOK_SECRET not in server.output()
