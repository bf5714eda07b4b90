"""A stock socket.io-client with Yjs uses presence and shared documents
(what a browser front-end does) alongside the Python client.

Runs tests/js/docs_presence_client.mjs with node; it joins a room, syncs a
document with the Yjs sync steps and writes to it, while a Python client in
the same room and document writes back.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pycrdt
import pytest

import rtkit.aio
from rtkit.pytest_plugin import InProcessHub

from .conftest import SECRET, token

JS_DIR = Path(__file__).resolve().parent.parent / "js"
NODE = shutil.which("node")

pytestmark = [
    pytest.mark.node,
    pytest.mark.skipif(NODE is None, reason="node is not installed (Node.js 18+ is needed)"),
    pytest.mark.skipif(
        not (JS_DIR / "node_modules" / "yjs").is_dir(),
        reason="tests/js/node_modules is missing: run `npm ci --prefix tests/js` (make setup)",
    ),
]


async def test_a_js_client_with_yjs_shares_presence_and_a_document(
    rt_hub_inprocess_factory: Any,
) -> None:
    hub: InProcessHub = rt_hub_inprocess_factory(secret=SECRET)
    py = await rtkit.aio.connect(hub.url, token("pyuser"))
    try:
        room = await py.presence("js.room", state={"from": "python"})
        shared = await py.shared("js.doc")
        shared["before"] = 1  # there before the JavaScript client syncs
        await shared.flush()
        js_arrived = asyncio.Event()
        shared.observe(lambda change: js_arrived.set() if "js" in change.keys else None)
        seen: list[tuple[str, str]] = []
        js_joined, js_left = asyncio.Event(), asyncio.Event()
        room.on("join", lambda m: (seen.append(("join", m.user)), js_joined.set()))
        room.on("leave", lambda m: (seen.append(("leave", m.user)), js_left.set()))

        assert NODE is not None
        proc = await asyncio.create_subprocess_exec(
            NODE,
            str(JS_DIR / "docs_presence_client.mjs"),
            hub.url,
            token("jsuser", publish=["js.*"], subscribe=["js.*"]),
            "js.room",
            "js.doc",
            cwd=JS_DIR,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            await asyncio.wait_for(js_arrived.wait(), 30)
            assert shared["js"] == "hello"
            assert str(shared.doc.get("text", type=pycrdt.Text)) == "from js;"
            # The hub announces members in batches, and one that joins and
            # leaves within a batch is never announced: let the join be seen
            # before the JavaScript client may leave.
            await asyncio.wait_for(js_joined.wait(), 10)
            shared["py"] = "hi"  # the JavaScript client waits for this, then leaves
            out, err = await asyncio.wait_for(proc.communicate(), 30)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.returncode == 0, err.decode()[-2000:]
        summary = json.loads(out.decode().strip().splitlines()[-1])

        assert summary["state"] == {"before": 1, "js": "hello", "py": "hi"}
        assert summary["text"] == "from js;"
        assert summary["me"]["user"] == "jsuser" and summary["me"]["connections"] == 1
        assert {m["user"]: m["state"] for m in summary["members"]} == {
            "pyuser": {"from": "python"},
            "jsuser": {"from": "js"},
        }
        # Python saw the JavaScript member come, and go when its process exited.
        await asyncio.wait_for(js_left.wait(), 10)
        assert seen == [("join", "jsuser"), ("leave", "jsuser")]
        assert [m.user for m in room.members] == ["pyuser"]
    finally:
        await py.close()
