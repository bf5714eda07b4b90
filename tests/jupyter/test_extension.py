"""rtkit's hub inside a real jupyter server with a non-root base_url."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import socketio

import rtkit
import rtkit.aio
from rtkit.errors import RtkitError
from rtkit.protocol import NAMESPACE

from .server import JupyterServer, Kernel

pytestmark = pytest.mark.jupyter

WAIT = 20.0


def test_status_answers_with_the_token_only(jupyter: JupyterServer) -> None:
    status, body = jupyter.request("rtkit/api/status", token=None, cookies=False)
    assert status == 403
    status, body = jupyter.request("rtkit/api/status", token="not-the-token", cookies=False)
    assert status == 403
    body = jupyter.get_json("rtkit/api/status")
    assert body["version"] == rtkit.__version__
    assert body["state"] == "running"
    assert body["store"].startswith("sqlite:///") and body["store"].endswith("rtkit/hub.db")
    assert body["uptime"] >= 0
    assert body["socketio_path"] == "/user/ada/rtkit/socket.io/"
    for key in ("connections", "channels", "presence"):
        assert key in body


async def test_client_connects_with_the_jupyter_token(jupyter: JupyterServer) -> None:
    async with await rtkit.aio.connect(jupyter.hub_url, token=jupyter.token) as hub:
        channel = hub.channel("ext.token")
        got: asyncio.Queue[Any] = asyncio.Queue()
        await channel.subscribe(got.put_nowait)
        assert await channel.publish({"n": 1}) == 1
        msg = await asyncio.wait_for(got.get(), WAIT)
        assert msg.data == {"n": 1}
        status = jupyter.get_json("rtkit/api/status")
        assert status["connections"] >= 1
        figures = status["channels"]["ext.token"]
        assert (figures["subscribers"], figures["seq"], figures["published"]) == (1, 1, 1)
        assert figures["bytes"] == len(b'{"n":1}')


async def test_metrics_answer_with_the_jupyter_token_only(jupyter: JupyterServer) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    for token in (None, "not-the-token"):
        status, _ = jupyter.request("rtkit/metrics", token=token, cookies=False)
        assert status == 403
    async with await rtkit.aio.connect(jupyter.hub_url, token=jupyter.token) as hub:
        await hub.channel("ext.metrics").publish({"n": 1})
        status, text = jupyter.request("rtkit/metrics", cookies=False)
        assert status == 200, text
        samples = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }
        assert samples[("rtkit_connections", ())] >= 1
        assert (
            samples[("rtkit_channel_published_messages_total", (("channel", "ext.metrics"),))] == 1
        )
        # The hub's own registry, not jupyter-server's (at {base_url}metrics).
        assert not any(name.startswith("http_request_duration") for name, _ in samples)


async def _raw_connect(jupyter: JupyterServer, headers: dict[str, str], auth: Any = None) -> None:
    sio = socketio.AsyncClient(reconnection=False)
    try:
        await sio.connect(
            f"http://127.0.0.1:{jupyter.port}",
            socketio_path=f"{jupyter.base_url.strip('/')}/rtkit/socket.io",
            namespaces=[NAMESPACE],
            transports=["websocket"],
            headers=headers,
            auth=auth,
            wait_timeout=10,
        )
    finally:
        await sio.disconnect()


async def test_socketio_refuses_without_credentials(jupyter: JupyterServer) -> None:
    with pytest.raises(socketio.exceptions.ConnectionError):
        await _raw_connect(jupyter, {})
    with pytest.raises(socketio.exceptions.ConnectionError):
        await _raw_connect(jupyter, {"Authorization": "token wrong"})
    # The token only in the Socket.IO auth payload: the HTTP request that
    # opens the websocket is not authenticated, so it never opens.
    with pytest.raises(socketio.exceptions.ConnectionError):
        await _raw_connect(jupyter, {}, auth={"token": jupyter.token})
    with pytest.raises((RtkitError, OSError)):
        await rtkit.aio.connect(jupyter.hub_url, connect_timeout=5)
    await jupyter.wait_for_log("403 GET /user/ada/rtkit/socket.io/")


async def test_socketio_refuses_a_cross_origin_page(jupyter: JupyterServer) -> None:
    token = {"Authorization": f"token {jupyter.token}"}
    await _raw_connect(jupyter, {**token, "Origin": f"http://127.0.0.1:{jupyter.port}"})
    with pytest.raises(socketio.exceptions.ConnectionError):
        await _raw_connect(jupyter, {**token, "Origin": "http://evil.example"})
    await jupyter.wait_for_log("blocking cross-origin connection")


def test_polling_transport_is_authenticated_too(jupyter: JupyterServer) -> None:
    status, _ = jupyter.request(
        "rtkit/socket.io/?EIO=4&transport=polling", token=None, cookies=False
    )
    assert status == 403
    status, body = jupyter.request("rtkit/socket.io/?EIO=4&transport=polling")
    assert status == 200 and '"sid"' in body


async def test_kernel_publishes_as_the_jupyter_user(jupyter: JupyterServer) -> None:
    me = jupyter.get_json("api/me")["identity"]
    kernel = Kernel.start(jupyter)  # started by the same Jupyter user (login cookie)
    try:
        async with await rtkit.aio.connect(jupyter.hub_url, token=jupyter.token) as hub:
            got: asyncio.Queue[Any] = asyncio.Queue()
            await hub.channel("ext.kernel").subscribe(got.put_nowait)
            out = await kernel.execute(
                "import os, rtkit\n"
                "hub = rtkit.connect()\n"
                "print(hub.channel('ext.kernel').publish({'from': 'kernel'}))\n"
                "hub.close()\n"
                "print(os.environ['RTKIT_URL'])\n"
                "print(os.environ['RTKIT_TOKEN'])\n"
            )
            seq, url, kernel_token = out.split()
            assert seq == "1"
            assert url == jupyter.hub_url
            msg = await asyncio.wait_for(got.get(), WAIT)
            assert msg.data == {"from": "kernel"}
            assert msg.sender == me["username"]
    finally:
        kernel.shutdown()
    # The kernel token is no Jupyter credential.
    assert kernel_token != jupyter.token
    headers = {"Authorization": f"Bearer {kernel_token}"}
    for path in ("api/contents", "api/kernels"):
        status, _ = jupyter.request(path, token=None, headers=headers, cookies=False)
        assert status == 403, path


async def test_kernel_token_connects_a_script(jupyter: JupyterServer) -> None:
    """While its kernel runs (the token is revoked when the kernel ends)."""
    kernel = Kernel.start(jupyter)
    try:
        kernel_token = (await kernel.execute("import os; print(os.environ['RTKIT_TOKEN'])")).strip()
        async with await rtkit.aio.connect(jupyter.hub_url, token=kernel_token) as hub:
            assert await hub.channel("ext.script").publish("hi") == 1
    finally:
        kernel.shutdown()
    body = json.dumps(jupyter.get_json("rtkit/api/status"))
    assert "ext.script" in body


READ_ONLY_AUTHORIZER = '''
from jupyter_server.auth import Authorizer


class ReadOnlyRtkit(Authorizer):
    """Everything allowed but writing to rtkit."""

    def is_authorized(self, handler, user, action, resource):
        return not (resource == "rtkit" and action == "write")
'''


async def test_the_authorizer_keeps_a_read_only_user_read_only_in_kernels_too(
    jupyter_factory: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    modules = tmp_path / "authorizer"
    modules.mkdir()
    (modules / "read_only_rtkit.py").write_text(READ_ONLY_AUTHORIZER)
    monkeypatch.setenv("PYTHONPATH", str(modules))
    server = jupyter_factory(
        extra_args=["--ServerApp.authorizer_class=read_only_rtkit.ReadOnlyRtkit"]
    ).start()
    # In the browser (the Jupyter login): reading works, publishing does not.
    async with await rtkit.aio.connect(server.hub_url, token=server.token) as hub:
        with pytest.raises(rtkit.Forbidden):
            await hub.channel("ro.browser").publish("no")
        assert await hub.channel("ro.browser").history() == []
    # The same user's kernel gets a token with the same rights, no more.
    kernel = Kernel.start(server)
    try:
        out = await kernel.execute(
            "import rtkit\n"
            "hub = rtkit.connect()\n"
            "try:\n"
            "    hub.channel('ro.kernel').publish('no')\n"
            "except rtkit.Forbidden:\n"
            "    print('forbidden')\n"
            "print(len(hub.channel('ro.kernel').history()))\n"
            "hub.close()\n"
        )
    finally:
        kernel.shutdown()
    assert out.split() == ["forbidden", "0"]
