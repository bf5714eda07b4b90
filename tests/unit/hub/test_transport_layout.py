"""The transport seam's layout: the hub core imports no host-specific part
of rtkit.hub.transport (nor jupyter_server); each host imports its own."""

from __future__ import annotations

import subprocess
import sys

HOST_SPECIFIC = (
    "rtkit.hub.transport.aiohttp_websocket",
    "rtkit.hub.transport.tornado_stream",
    "rtkit.hub.transport.jupyter_handler",
)
WATCHED = (*HOST_SPECIFIC, "jupyter_server")


def _imported_after(statement: str) -> set[str]:
    probe = f"import sys; {statement}; print(' '.join(m for m in {WATCHED!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    return set(out.stdout.split())


def test_the_hub_imports_no_host_specific_transport() -> None:
    assert _imported_after("import rtkit.hub, rtkit.hub.transport") == set()


def test_each_host_imports_only_its_own() -> None:
    assert _imported_after("import rtkit.hosts.aiohttp") == {
        "rtkit.hub.transport.aiohttp_websocket"
    }
    assert _imported_after("import rtkit.hosts.tornado") == {"rtkit.hub.transport.tornado_stream"}
