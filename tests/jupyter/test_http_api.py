"""The hub's HTTP API inside a real jupyter server: {base_url}rtkit/api/...
behind Jupyter's login, with a Socket.IO subscriber receiving what HTTP
publishes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate as validate_openapi

import rtkit.aio

from .server import JupyterServer, Kernel

pytestmark = pytest.mark.jupyter

API_KEY = "jupyter-api-key-0123456789abcdef"
WAIT = 20.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    home: Path = tmp_path_factory.mktemp("jupyter-http")
    jupyter = JupyterServer(home, extra_args=[f"--RtkitExtension.api_key={API_KEY}"]).start()
    try:
        yield jupyter
    finally:
        jupyter.stop()


async def test_http_publish_inside_jupyter_reaches_a_subscriber(server: JupyterServer) -> None:
    login = {"Authorization": f"token {server.token}"}
    api = f"{server.url}rtkit/api"
    async with (
        await rtkit.aio.connect(server.hub_url, token=server.token) as hub,
        httpx.AsyncClient(timeout=10) as http,
    ):
        got: asyncio.Queue[Any] = asyncio.Queue()
        await hub.channel("jhttp.feed").subscribe(got.put_nowait)
        batch = {"messages": [{"data": n, "id": f"m{n}"} for n in range(50)]}
        answer = await http.post(f"{api}/channels/jhttp.feed/messages", headers=login, json=batch)
        assert answer.status_code == 200, answer.text
        assert answer.json()["seqs"] == list(range(1, 51))
        # Resent: the same seqs, nothing stored twice.
        again = await http.post(f"{api}/channels/jhttp.feed/messages", headers=login, json=batch)
        assert again.json()["seqs"] == list(range(1, 51))
        seen = [await asyncio.wait_for(got.get(), WAIT) for _ in range(50)]
        assert [m.seq for m in seen] == list(range(1, 51))
        assert [m.data for m in seen] == list(range(50))
        history = await http.get(f"{api}/channels/jhttp.feed/messages?limit=5", headers=login)
        assert [m["seq"] for m in history.json()["messages"]] == [46, 47, 48, 49, 50]
        channels = (await http.get(f"{api}/channels", headers=login)).json()["channels"]
        feed = channels["jhttp.feed"]
        # 50 stored; "published" counts the publishes taken in, the resend too.
        assert (feed["subscribers"], feed["seq"], feed["published"]) == (1, 50, 100)


async def test_jupyter_login_is_required(server: JupyterServer) -> None:
    api = f"{server.url}rtkit/api"
    async with httpx.AsyncClient(timeout=10) as http:
        for headers in ({}, {"Authorization": "token wrong"}, {"X-API-Key": API_KEY}):
            answer = await http.post(
                f"{api}/channels/jhttp.x/messages", headers=headers, json={"data": 1}
            )
            assert answer.status_code in {401, 403}, answer.text
        keyed = await http.post(
            f"{api}/users/nobody/disconnect",
            headers={"Authorization": f"token {server.token}", "X-API-Key": API_KEY},
        )
        assert keyed.json() == {"ok": True, "disconnected": 0}
        big = await http.post(
            f"{api}/publish",
            headers={"Authorization": f"token {server.token}"},
            content=b'{"channel": "a", "data": "' + b"x" * 1_100_000 + b'"}',
        )
        assert big.status_code == 413 and big.json()["error"]["code"] == "too_large"
        status = await http.get(
            f"{server.url}rtkit/api/status", headers={"Authorization": f"token {server.token}"}
        )
        assert status.json()["state"] == "running"  # the status API is still its own
        document = await http.get(
            f"{api}/openapi.json", headers={"Authorization": f"token {server.token}"}
        )
        validate_openapi(document.json())
        assert document.json()["servers"] == [{"url": f"{server.base_url}rtkit/api"}]


async def test_a_kernel_token_calls_the_api_for_its_user(server: JupyterServer) -> None:
    """A kernel's RTKIT_TOKEN, as Authorization: Bearer, publishes over HTTP
    (what a notebook's own HTTP call would send)."""
    kernel = Kernel.start(server)
    api = f"{server.url}rtkit/api"
    try:
        code = "import os; print(os.environ['RTKIT_TOKEN'])"
        kernel_token = (await kernel.execute(code)).strip()
        async with httpx.AsyncClient(timeout=10) as http:
            headers = {"Authorization": f"Bearer {kernel_token}"}
            answer = await http.post(
                f"{api}/channels/jhttp.kernel/messages", headers=headers, json={"data": 1}
            )
            assert answer.status_code == 200, answer.text
            history = await http.get(f"{api}/channels/jhttp.kernel/messages", headers=headers)
            assert [m["data"] for m in history.json()["messages"]] == [1]
            forged = await http.post(
                f"{api}/channels/jhttp.kernel/messages",
                headers={"Authorization": f"Bearer {kernel_token[:-4]}AAAA"},
                json={"data": 2},
            )
            assert forged.status_code in {401, 403}
    finally:
        kernel.shutdown()
