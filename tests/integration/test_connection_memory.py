"""Idle connections are cheap: a hub holds thousands at <= 20 KB each.

A real ``rtkit hub`` process (memory store, aiohttp host) takes 2,000
websocket connections from benchmarks/loadgen.js (raw ``ws`` speaking
Engine.IO / Socket.IO by hand), each subscribed to one channel, and keeps
them idle. Its resident memory, read from /proc with one connection open
and again with all of them, may grow by at most 20 KB (20,000 bytes) per
connection; and every one of them still receives a publish afterwards.

With the fast paths off (``RTKIT_FAST_PATHS=0``) the hub runs
python-engineio's own per-connection machinery (a writer task, a ping task,
asyncio queues: about 30 KB per connection), so there only the second
half is checked.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from rtkit.hub.transport import fast_paths_enabled
from tests.security.attack import rss_mb

REPO = Path(__file__).resolve().parents[2]
LOADGEN = REPO / "benchmarks" / "loadgen.js"
JS_MODULES = REPO / "tests" / "js" / "node_modules"
NODE = shutil.which("node")

CONNECTIONS = 2000
MAX_KB_PER_CONNECTION = 20.0

pytestmark = [
    pytest.mark.node,
    pytest.mark.skipif(NODE is None, reason="node is not installed (Node.js 18+ is needed)"),
    pytest.mark.skipif(
        not (JS_MODULES / "ws").is_dir(),
        reason="tests/js/node_modules is missing: run `npm ci --prefix tests/js` (make setup)",
    ),
]


def enough_descriptors(n: int) -> bool:
    """Raise this process's open-file soft limit (node inherits it) to the
    hard limit; False if even that is too low for ``n`` connections."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < n + 200:
        return False
    if soft != resource.RLIM_INFINITY and soft < n + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return True


async def settled_rss_mb(hub: Any, within: float = 5.0) -> float:
    """The hub's RSS once two readings 0.25 s apart are within 64 KiB:
    the last connections may still be finishing their setup."""
    deadline = time.monotonic() + within
    last = rss_mb(hub)
    while time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        now = rss_mb(hub)
        if abs(now - last) < 1 / 16:
            return now
        last = now
    return last


async def test_idle_subscribed_connections_cost_at_most_20_kb_each(rt_hub_factory: Any) -> None:
    if not enough_descriptors(CONNECTIONS):
        pytest.skip(f"the open-file hard limit is below {CONNECTIONS} connections")
    hub = rt_hub_factory(extra_args=["--max-connections-per-user", str(CONNECTIONS + 10)])
    config = {
        "host": hub.host,
        "port": hub.port,
        "serverPid": hub.proc.pid,
        "scenario": "connections",
        "subscribers": CONNECTIONS,
        "channel": "idle",
        "connectConcurrency": 50,
        "connectTimeout": 60,
        "drainTimeout": 10,
        "holdTimeout": 30,
    }
    proc = await asyncio.create_subprocess_exec(
        str(NODE),
        str(LOADGEN),
        json.dumps(config),
        cwd=LOADGEN.parent,
        env={**os.environ, "NODE_PATH": str(JS_MODULES)},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None

    async def message() -> dict[str, Any]:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert line.startswith(b"{"), f"load generator said {line!r}"
        parsed: dict[str, Any] = json.loads(line)
        return parsed

    async def go() -> None:
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()

    try:
        assert (await message()).get("phase") == "idle"
        before = await settled_rss_mb(hub)
        await go()
        holding = await message()
        assert holding.get("phase") == "holding", holding
        after = await settled_rss_mb(hub)
        await go()
        result = await message()
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()

    per_connection_kb = (after - before) * 1024 * 1024 / CONNECTIONS / 1000
    assert result["served"] == CONNECTIONS, result
    assert result["connectionErrorCount"] == 0, result["connectionErrors"]
    if not fast_paths_enabled():
        return
    assert per_connection_kb <= MAX_KB_PER_CONNECTION, (
        f"{per_connection_kb:.1f} KB per idle connection "
        f"(RSS {before:.1f} -> {after:.1f} MiB for {CONNECTIONS})"
    )
