"""``rtkit hub --log-format json``: one JSON object per line, and no
credential in any line, on every web server the hub runs on.

Each hub runs as a process at DEBUG with a token secret, an API key and a
webhook whose URL carries a token (its receiver is down, so the hub keeps
logging that URL). Clients then put credentials everywhere a log might
pick them up: a token in the connect URL's query (tornado's access log
writes every request's URI), a bearer header, a forged token (refused and
logged), the HTTP API with a wrong key and a token in its query.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import socketio

from rtkit._process import OutputLines, start_group, stop_group
from rtkit.hub.auth import mint_token
from rtkit.pytest_plugin import free_port

SECRET = "log-test-secret-0123456789abcdef01234"
API_KEY = "log-test-api-key-0123456789"
WEBHOOK_SECRET = "log-test-webhook-secret-0123"
WEBHOOK_TOKEN = "hook-query-token-0123456789"
STORE_PASSWORD = "store-password-0123456789"
NS = "/rtkit"


def run_hub(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[str], OutputLines, Path]:
    """``rtkit --log-level DEBUG hub --log-format json ARGS``: stdout read
    line by line (the ready line), stderr (the log) into a file."""
    stderr = tmp_path / "stderr.log"
    with stderr.open("w") as sink:
        proc = start_group(
            [
                sys.executable,
                "-m",
                "rtkit",
                "--log-level",
                "DEBUG",
                "hub",
                "--log-format",
                "json",
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=sink,
            text=True,
        )
    return proc, OutputLines(proc), stderr


def json_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of the log, each of which must be one JSON object."""
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise AssertionError(f"log line {number} is not JSON: {line[:300]!r}") from None
        assert isinstance(entry, dict), line
        assert {"time", "level", "logger", "message"} <= entry.keys(), line
        assert entry["time"].endswith("Z") and entry["level"] in {
            "DEBUG",
            "INFO",
            "WARNING",
            "ERROR",
            "CRITICAL",
        }
        entries.append(entry)
    return entries


async def use_credentials_everywhere(url: str, token: str) -> None:
    # A good client: token in the URL's query, a bearer header and auth,
    # polling first (one logged request per poll) then the websocket.
    client = socketio.AsyncClient(reconnection=False)
    try:
        await client.connect(
            f"{url}/?token={token}",
            headers={"Authorization": f"Bearer {token}"},
            auth={"token": token},
            namespaces=[NS],
            transports=["polling", "websocket"],
            wait_timeout=10,
        )
        ack = await client.call(
            "subscribe", {"channel": "logs.test"}, namespace=NS, timeout=10
        )  # a webhook event: the hub logs the (failing) webhook URL
        assert ack["ok"], ack
    finally:
        await client.disconnect()
        await client.shutdown()
    # A forged token: refused, and the refusal is logged.
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    refused = socketio.AsyncClient(reconnection=False)
    try:
        with pytest.raises(socketio.exceptions.ConnectionError):
            await refused.connect(
                f"{url}/?token={forged}",
                auth={"token": forged},
                headers={"Authorization": f"Bearer {forged}"},
                namespaces=[NS],
                transports=["websocket"],
                wait_timeout=10,
            )
    finally:
        await refused.shutdown()
    # The HTTP API with a wrong key, a forged bearer and a token in the query.
    async with aiohttp.ClientSession() as session:
        for headers in ({"X-API-Key": API_KEY[::-1]}, {"Authorization": f"Bearer {forged}"}):
            async with session.get(
                f"{url}/api/channels", params={"token": token}, headers=headers
            ) as resp:
                assert resp.status == 401


@pytest.mark.parametrize("server", ["aiohttp", "tornado", "uvicorn"])
async def test_json_logs_never_show_a_credential(tmp_path: Path, server: str) -> None:
    port = free_port()
    webhook_url = f"http://127.0.0.1:{free_port()}/hook?token={WEBHOOK_TOKEN}"
    proc, stdout, stderr = run_hub(
        tmp_path,
        "--server",
        server,
        "--port",
        str(port),
        "--secret",
        SECRET,
        "--api-key",
        API_KEY,
        "--webhook",
        webhook_url,
        "--webhook-secret",
        WEBHOOK_SECRET,
        "--webhook-batch-delay",
        "0",
    )
    token = mint_token(SECRET, "ann", publish=["*"], subscribe=["*"])
    try:
        await asyncio.to_thread(stdout.wait_for, "rtkit hub listening on", within=20)
        await use_credentials_everywhere(f"http://127.0.0.1:{port}", token)
        # The webhook's failure is logged once its first POST fails.
        await asyncio.to_thread(
            wait_for_text, stderr, "webhooks: POST to http://127.0.0.1", within=20
        )
    finally:
        code = await asyncio.to_thread(stop_group, proc, 15)
    assert code == 0, stderr.read_text()[-2000:]
    entries = json_lines(stderr)
    everything = stderr.read_text() + "\n".join(stdout.lines)
    forged = token[:-4]
    for secret in (SECRET, API_KEY, WEBHOOK_SECRET, WEBHOOK_TOKEN, token, forged):
        assert secret not in everything, f"{secret[:12]}... is in the {server} hub's output"
    # The lines that would have shown them are there, masked.
    messages = [e["message"] for e in entries]
    assert any("refused connection" in m for m in messages), messages
    assert any("hook?token=***" in m for m in messages if "webhooks" in m), messages
    assert any(e["level"] == "DEBUG" for e in entries)
    if server == "tornado":
        access = [e["message"] for e in entries if e["logger"] == "tornado.access"]
        assert any("/socket.io/?token=***" in m for m in access), access


def wait_for_text(path: Path, text: str, within: float) -> None:
    """Until ``text`` is in the file (the hub writes its log there)."""
    import time

    deadline = time.monotonic() + within
    while text not in path.read_text():
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not logged within {within}s")
        time.sleep(0.05)


async def test_a_crash_is_logged_as_json_without_the_store_password(tmp_path: Path) -> None:
    # A Redis store nobody listens on: the hub stops with an error.
    store = f"redis://:{STORE_PASSWORD}@127.0.0.1:{free_port()}/0"
    proc, stdout, stderr = run_hub(tmp_path, "--allow-anonymous", "--store", store)
    code = await asyncio.to_thread(proc.wait, 30)
    assert code != 0
    entries = json_lines(stderr)
    crash = [e for e in entries if e["level"] == "CRITICAL"]
    assert crash and "ConnectionError" in crash[-1]["exception"], entries[-3:]
    assert STORE_PASSWORD not in stderr.read_text() + "\n".join(stdout.lines)
