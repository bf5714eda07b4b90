"""Fixtures for protocol-level tests against real hubs.

``shared_hub`` and ``secret_hub`` are in-process hubs (rtkit.pytest_plugin's
InProcessHub), one per module; tests that kill, restart or read the output
of a hub start a ``rtkit hub`` process with ``rt_hub_factory`` instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from rtkit.hub.auth import mint_token
from rtkit.pytest_plugin import InProcessHub

from .helpers import RawClient

SECRET = "integration-secret-0123456789abcdef"  # HS256 wants >= 32 bytes

Connect = Callable[..., Awaitable[RawClient]]


def token(user: str = "alice", **kwargs: Any) -> str:
    """A token for the ``secret_hub`` (every channel unless told otherwise:
    a token grants only what it names, so "every channel" is an explicit '*')."""
    kwargs.setdefault("publish", ["*"])
    kwargs.setdefault("subscribe", ["*"])
    return mint_token(SECRET, user, **kwargs)


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """``await connect(url, token=..., auth=...)``: a connected RawClient.

    Every client is closed after the test, and the test fails if any of them
    saw a malformed envelope or a live message before its subscribe ack.
    """
    clients: list[RawClient] = []

    async def make(url: str, **kwargs: Any) -> RawClient:
        client = RawClient(url, **kwargs)
        clients.append(client)
        return await client.connect()

    yield make
    for client in clients:
        await client.close()
    problems = [f"{c.name}: {p}" for c in clients for p in c.problems]
    assert not problems, "\n".join(problems[:20])


@pytest.fixture(scope="module")
def shared_hub() -> Iterator[InProcessHub]:
    """One anonymous memory hub for a whole module, for tests that each use
    their own channels."""
    hub = InProcessHub().start()
    try:
        yield hub
    finally:
        hub.terminate(timeout=5)


@pytest.fixture(scope="module")
def secret_hub() -> Iterator[InProcessHub]:
    """One hub that requires tokens signed with ``SECRET``."""
    hub = InProcessHub(secret=SECRET).start()
    try:
        yield hub
    finally:
        hub.terminate(timeout=5)
