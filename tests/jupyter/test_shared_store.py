"""What docs/deployment.md says of JupyterHub: each user's own Jupyter server
runs its own rtkit hub, and servers configured with one Redis store share
channels, presence and documents, so people on different servers meet."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import rtkit
from rtkit.pytest_plugin import REDIS_URL

from .server import JupyterServer

pytestmark = [pytest.mark.jupyter, pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
def two_servers(tmp_path: Path, rt_redis_prefix: str) -> Iterator[list[JupyterServer]]:
    store = f"{REDIS_URL}?prefix={rt_redis_prefix}"
    servers = [
        JupyterServer(tmp_path / name, base_url=f"/user/{name}/",
                      extra_args=[f"--RtkitExtension.store={store}"])
        for name in ("alice", "bob")
    ]  # fmt: skip
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()


def test_servers_on_one_redis_store_share_channels_presence_and_documents(
    two_servers: list[JupyterServer],
) -> None:
    alice_server, bob_server = two_servers
    for server in two_servers:
        assert server.get_json("rtkit/api/status")["store"].startswith("redis://")
    with (
        rtkit.connect(alice_server.hub_url, token=alice_server.token) as alice,
        rtkit.connect(bob_server.hub_url, token=bob_server.token) as bob,
    ):
        # A message published through one server's hub is stored once, for both.
        assert alice.channel("team.prices").publish({"px": 1.5}) == 1
        assert [m.data for m in bob.channel("team.prices").history()] == [{"px": 1.5}]

        # A shared document: an edit on one server reaches the other.
        theirs = bob.shared("team.params")
        alice.shared("team.params")["alpha"] = 0.5
        _wait(lambda: theirs.get("alpha") == 0.5, "the edit to reach bob's server")

        # Presence: each sees the other in one room.
        room_a = alice.presence("team.room", state={"who": "alice"})
        room_b = bob.presence("team.room", state={"who": "bob"})
        for room in (room_a, room_b):
            _wait(lambda r=room: len(r.members) == 2, "both members in each view")
        assert sorted(m.state["who"] for m in room_a.members) == ["alice", "bob"]


def _wait(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
