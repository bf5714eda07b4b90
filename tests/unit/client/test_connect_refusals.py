"""HTTP refusals of the handshake, over a scripted hub (:mod:`fake_hub`):
what connect() raises, and which refusals the reconnect loop retries."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest
from fake_hub import WAIT, FakeHub, FakeTransport

from rtkit.client import aio
from rtkit.client._session import HandshakeRefused
from rtkit.errors import ConfigurationError, NotConnected, Unauthorized

URL = "http://127.0.0.1:9/user/ada/rtkit?token=url-secret-123"


@dataclass
class RefusingTransport(FakeTransport):
    """Answers the handshake with ``hub.http_status`` while it is set."""

    async def connect(
        self, origin: str, *, auth: dict[str, str], headers: dict[str, str], path: str
    ) -> None:
        status = getattr(self.hub, "http_status", None)
        if status is not None:
            self.hub.attempts += 1
            self.hub.changed.set()
            raise HandshakeRefused(status)
        await super().connect(origin, auth=auth, headers=headers, path=path)


def _factory(hub: FakeHub) -> Any:
    return lambda timeout: RefusingTransport(hub, timeout)


async def _connect(hub: FakeHub, **options: Any) -> aio.Client:
    client = aio.Client(
        URL,
        "arg-secret-456",
        _transport=_factory(hub),
        reconnect_delay=0.001,
        reconnect_delay_max=0.005,
        connect_timeout=2,
        **options,
    )
    return await client.open()


@pytest.mark.parametrize(
    ("status", "error", "says"),
    [
        (403, Unauthorized, "RTKIT_TOKEN"),
        (401, Unauthorized, "--max-pending-per-address"),
        (404, ConfigurationError, "no rtkit hub at that path"),
        (502, NotConnected, "is this an rtkit hub"),
    ],
)
async def test_an_http_refusal_names_its_cause(
    status: int, error: type[Exception], says: str
) -> None:
    hub = FakeHub()
    hub.http_status = status  # type: ignore[attr-defined]
    with pytest.raises(error) as caught:
        await _connect(hub)
    message = str(caught.value)
    assert f"HTTP {status}" in message and says in message
    assert "Is it running" not in message
    assert "url-secret-123" not in message and "arg-secret-456" not in message
    assert "token=***" in message


async def test_a_401_on_reconnect_is_retried_a_403_is_final() -> None:
    hub = FakeHub()
    client = await _connect(hub)
    try:
        hub.http_status = 401  # type: ignore[attr-defined]
        hub.drop()
        await hub.until(lambda: hub.attempts >= 4)  # refused, and tried again
        hub.http_status = None  # type: ignore[attr-defined]
        await hub.reconnected(2)
        async with asyncio.timeout(WAIT):
            await client.wait_connected()

        hub.http_status = 403  # type: ignore[attr-defined]
        hub.drop()  # not connected from here on: the wait below waits
        with pytest.raises(Unauthorized, match="HTTP 403"):
            async with asyncio.timeout(WAIT):
                await client.wait_connected()
    finally:
        await client.close()
