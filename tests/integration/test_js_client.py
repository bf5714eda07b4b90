"""The JavaScript socket.io-client speaks wire protocol v1 (DESIGN.md: any
stock Socket.IO client must be able to use every feature with nothing but the
protocol section in hand).

Runs tests/js/protocol_client.mjs with node against a hub with a secret and
checks the JSON summary it prints; a Python RawClient on the same hub checks
that what JavaScript published reads back the same in Python.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rtkit.hub.auth import mint_token
from rtkit.pytest_plugin import InProcessHub

from .conftest import SECRET, Connect, token
from .helpers import assert_ok

JS_DIR = Path(__file__).resolve().parent.parent / "js"
SCRIPT = JS_DIR / "protocol_client.mjs"
NODE = shutil.which("node")

pytestmark = [
    pytest.mark.node,
    pytest.mark.skipif(NODE is None, reason="node is not installed (Node.js 18+ is needed)"),
    pytest.mark.skipif(
        not (JS_DIR / "node_modules" / "socket.io-client").is_dir(),
        reason="tests/js/node_modules is missing: run `npm ci --prefix tests/js` (make setup)",
    ),
]


async def _run_node(
    *args: str, env: dict[str, str], within: float = 60, script: Path = SCRIPT
) -> dict[str, Any]:
    assert NODE is not None
    proc = await asyncio.create_subprocess_exec(
        NODE,
        str(script),
        *args,
        cwd=JS_DIR,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), within)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    sys.stderr.write(err.decode())
    assert out.strip(), f"node printed nothing (exit {proc.returncode}): {err.decode()[-2000:]}"
    summary: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    assert proc.returncode == 0, f"node failed: {summary.get('fatal')}"
    return summary


async def test_js_client_uses_the_protocol(
    rt_hub_inprocess_factory: Callable[..., InProcessHub], connect: Connect
) -> None:
    hub = rt_hub_inprocess_factory(secret=SECRET)
    channel = "js.protocol"
    count = 40
    watcher = await connect(hub.url, token=token("watcher"))
    assert_ok(await watcher.subscribe(channel))

    summary = await _run_node(
        hub.url,
        channel,
        str(count),
        env={
            "RTKIT_TOKEN": token("jsuser", publish=["js.*"], subscribe=["js.*"]),
            "RTKIT_BAD_TOKEN": mint_token(
                "not-the-hub-secret-0123456789abcdef", "jsuser", publish=["*"], subscribe=["*"]
            ),
        },
    )
    assert summary.get("done") is True, summary.get("fatal")
    assert summary["problems"] == []

    # A refused connect shows the error code to JavaScript as err.data.
    refused = summary["refused"]
    assert refused["connected"] is False
    assert refused["data"]["code"] == "unauthorized", refused
    assert refused["data"]["message"] and refused["message"] == refused["data"]["message"]

    sub = summary["subscribe"]
    assert sub["ok"] is True and sub["seq"] == 0 and sub["messages"] == []
    assert sub["recovered"] is True and sub["epoch"]

    assert summary["publish"]["ok"] is True
    assert sorted(summary["publish"]["seqs"]) == list(range(1, count + 1))
    assert summary["duplicate"]["ok"] is True and summary["duplicate"]["seq"] == 1
    assert summary["binary"]["ack"]["seq"] == count + 1
    assert summary["binary"]["roundTrip"] is True

    live = summary["live"]
    assert live["seqs"] == list(range(1, count + 2))
    assert live["gapFree"] is True and live["dataInOrder"] is True
    assert summary["sender"] == "jsuser"

    assert summary["badRequest"]["ok"] is False
    assert summary["badRequest"]["error"]["code"] == "bad_request"
    assert summary["notFound"]["error"]["code"] == "not_found"
    assert summary["stillConnected"] is True

    replay = summary["replay"]
    half = count // 2
    assert replay["ok"] is True and replay["recovered"] is True and replay["epochKept"] is True
    assert replay["since"] == half
    assert replay["seqs"] == list(range(half + 1, count + 2))
    assert replay["gapFree"] is True
    assert replay["liveAfter"] == [count + 2]

    history = summary["history"]
    assert history["latest"] == [count, count + 1, count + 2]
    assert history["page"] == [1, 2, 3, 4, 5]
    assert history["before"] == [1, 2, 3]
    assert history["seq"] == count + 2 and history["epoch"] == sub["epoch"]

    # What JavaScript published reads back the same in Python.
    await watcher.wait_for_seq(channel, count + 2)
    envelopes = watcher.received[channel]
    assert [e["seq"] for e in envelopes] == list(range(1, count + 3))
    by_id = {e["id"]: e for e in envelopes}
    for i in range(count):
        env = by_id[f"js-{i}"]
        assert env["data"] == {"i": i, "text": f"héllo {i}", "pi": 3.25, "list": [True, None]}
        assert env["sender"] == "jsuser"
    assert envelopes[count]["data"] == bytes([0, 1, 2, 250, 255])
    assert envelopes[count + 1]["data"] == "after-replay"


async def test_js_client_anonymous_hub(rt_hub_inprocess: InProcessHub) -> None:
    """Without a token, against an anonymous hub."""
    summary = await _run_node(rt_hub_inprocess.url, "anon.js", "5", env={"RTKIT_TOKEN": ""})
    assert summary.get("done") is True, summary.get("fatal")
    assert summary["problems"] == []
    assert summary["live"]["gapFree"] is True and summary["replay"]["gapFree"] is True
    assert summary["sender"] == "anonymous"


async def test_js_client_refreshes_its_token_on_the_live_connection(
    rt_hub_inprocess_factory: Callable[..., InProcessHub],
) -> None:
    """auth.refresh, the revoked event and the connection outliving its
    first token, from socket.io-client with only the protocol's text."""
    hub = rt_hub_inprocess_factory(secret=SECRET)
    keep, lose = "js.keep.refresh", "js.lose.refresh"
    grants = {"publish": ["*"]}
    summary = await _run_node(
        hub.url,
        keep,
        lose,
        script=JS_DIR / "refresh_client.mjs",
        env={
            # The hub ends a connection 5 s (its leeway) after its token's exp.
            "RTKIT_TOKEN": mint_token(SECRET, "jo", subscribe=["js.*"], ttl=1, **grants),
            "RTKIT_FRESH_TOKEN": mint_token(SECRET, "jo", subscribe=["js.keep.*"], **grants),
            "RTKIT_OTHER_TOKEN": token("mallory"),
            "RTKIT_OUTLIVE_MS": "7000",
        },
    )
    assert summary["other"]["ok"] is False
    assert summary["other"]["error"]["code"] == "forbidden"
    assert summary["bad"]["error"]["code"] == "unauthorized"
    # The revocation comes before the ack, and nothing closes the connection.
    assert [e["event"] for e in summary["events"]] == ["revoked", "ack"], summary["events"]
    revoked, ack = (e["body"] for e in summary["events"])
    assert (revoked["kind"], revoked["name"], revoked["code"]) == ("channel", lose, "forbidden")
    assert ack["ok"] is True and ack["expires"] > time.time() + 3000
    assert summary["resubscribe"]["error"]["code"] == "forbidden"
    assert summary["connected"] is True
    assert summary["published"]["lost"] is True
    assert summary["received"] == {keep: [summary["published"]["kept"]], lose: []}
