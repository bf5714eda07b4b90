"""``rtkit demo``: JupyterLab with rtkit's extension, the tutorial notebooks
and a synthetic live feed, in one command.

The kernels of the demo's JupyterLab find the feed's channel in
``RTKIT_DEMO_CHANNEL``; ``notebooks/02-live-data.ipynb``, the notebook the
demo opens, draws it in its first cells.

The feed (:func:`feed`) publishes prices or sensor readings at a fixed rate,
paced by the clock (a late tick catches up; it never waits for acks one by
one); scripts can use it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._process import free_port, start_group, stop_group
from .client import aio
from .errors import ConfigurationError

log = logging.getLogger(__name__)

# Publishes kept unacked at once: enough to pipeline tens of thousands a second.
_WINDOW = 2_000
_TICK = 0.01


def _prices(seed: int = 1) -> Callable[[int], dict[str, Any]]:
    rnd = random.Random(seed)
    px = {"AAPL": 190.0, "MSFT": 410.0}

    def make(n: int) -> dict[str, Any]:
        for name in px:
            px[name] *= math.exp(rnd.gauss(0.0, 0.0004))
        return {"n": n, "aapl": round(px["AAPL"], 3), "msft": round(px["MSFT"], 3)}

    return make


def _sensors(seed: int = 1) -> Callable[[int], dict[str, Any]]:
    rnd = random.Random(seed)

    def make(n: int) -> dict[str, Any]:
        t = n / 1000.0
        return {
            "n": n,
            "temp": round(21.0 + 2.0 * math.sin(t) + rnd.gauss(0.0, 0.2), 3),
            "humidity": round(45.0 + 5.0 * math.cos(t / 3) + rnd.gauss(0.0, 0.5), 3),
        }

    return make


KINDS: dict[str, Callable[..., Callable[[int], dict[str, Any]]]] = {
    "prices": _prices,
    "sensors": _sensors,
}


async def feed(
    client: aio.Client,
    channel: str,
    rate: float,
    kind: str = "prices",
    stop: asyncio.Event | None = None,
    duration: float | None = None,
) -> int:
    """Publish ``rate`` messages a second to ``channel`` until ``stop`` is set
    (or ``duration`` seconds passed); returns how many were acked."""
    make = KINDS[kind]()
    ch = client.channel(channel)
    stop = stop or asyncio.Event()
    slots = asyncio.Semaphore(_WINDOW)
    acked = 0
    failed: list[BaseException] = []

    async def one(n: int) -> None:
        nonlocal acked
        try:
            await ch.publish(make(n))
            acked += 1
        except Exception as exc:  # reported once the feed ends
            failed.append(exc)
        finally:
            slots.release()

    started = time.monotonic()
    sent = 0
    async with asyncio.TaskGroup() as tg:
        while not stop.is_set():
            elapsed = time.monotonic() - started
            if duration is not None and elapsed >= duration:
                break
            due = int(elapsed * rate) + 1
            while sent < due and not failed:
                await slots.acquire()
                tg.create_task(one(sent))
                sent += 1
            if failed:
                raise failed[0]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), _TICK)
    return acked


# -- the demo command ---------------------------------------------------------

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
_READY_TIMEOUT = 120.0


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait until rtkit's status API says the hub runs (it starts after the
    server listens)."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if json.loads(resp.read()).get("state") == "running":
                    return
        except (OSError, ValueError):
            pass  # not listening yet (URLError is an OSError), or not JSON yet
        if time.monotonic() > deadline:
            raise TimeoutError(f"JupyterLab did not answer {url} within {timeout:.0f}s")
        time.sleep(0.2)


def _without_outputs(notebook: dict[str, Any]) -> bool:
    """Clear a notebook's outputs in place (and the widget state saved with
    them); returns whether there was anything to clear. The code is kept."""
    changed = bool(notebook.get("metadata", {}).pop("widgets", None))
    for cell in notebook.get("cells", ()):
        if cell.get("cell_type") != "code":
            continue
        changed |= bool(cell.get("outputs")) or cell.get("execution_count") is not None
        cell["outputs"] = []
        cell["execution_count"] = None
    return changed


def _copy_tutorials(directory: Path) -> None:
    """The tutorial notebooks in ``directory``, without saved outputs.

    A missing one is copied; one already there keeps its code (the user's
    edits) but loses its outputs, since the widgets of an earlier run are
    dead and their saved output is stale: the notebook opens clean and shows
    the feed once its cells run."""
    for source in sorted(NOTEBOOKS.glob("*.ipynb")) if NOTEBOOKS.is_dir() else ():
        target = directory / source.name
        try:
            notebook = json.loads((target if target.exists() else source).read_text("utf-8"))
        except (OSError, ValueError) as exc:  # not a notebook we can read: leave it alone
            log.warning("rtkit demo: left %s as it is: %s", target, exc)
            if not target.exists():
                shutil.copy(source, target)
            continue
        if _without_outputs(notebook) or not target.exists():
            target.write_text(
                json.dumps(notebook, indent=1, sort_keys=True, ensure_ascii=False) + "\n", "utf-8"
            )


DEFAULT_PORT = 8888
DEFAULT_DIR = "rtkit-demo"


def _port_free(port: int) -> bool:
    """Whether a server could listen on ``port`` now. SO_REUSEADDR, as
    JupyterLab's own listener sets it: connections of a server that just
    stopped linger in TIME-WAIT and must not count as "in use"."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _pick_port(port: int | None) -> int:
    """``port`` if given (it must be free), else 8888 or the next free one
    after it, as Jupyter itself does."""
    if port is not None:
        if not _port_free(port):
            raise ConfigurationError(f"port {port} is in use: pass --port with a free one")
        return port
    for candidate in range(DEFAULT_PORT, DEFAULT_PORT + 50):
        if _port_free(candidate):
            return candidate
    return free_port()


def run_demo(
    port: int | None = None,
    rate: float = 200.0,
    kind: str = "prices",
    channel: str | None = None,
    directory: Path | str = DEFAULT_DIR,
    ready: Callable[[str], None] | None = None,
) -> int:
    """Start JupyterLab (rtkit's extension on) in ``directory`` (relative to
    the current directory) with the tutorial notebooks and feed ``channel`` at
    ``rate`` messages/s until Ctrl-C. Prints the URL to open, which opens
    ``02-live-data.ipynb``: its first cells show this feed (the kernels find
    its channel in ``RTKIT_DEMO_CHANNEL``).

    Everything the demo writes stays in ``directory``: the notebooks (saved
    outputs cleared at each start), and the hub's history in
    ``.rtkit/hub.db`` (not Jupyter's data directory)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}")
    channel = channel or f"demo.{kind}"
    port = _pick_port(port)
    directory = Path(directory).resolve()
    (directory / ".rtkit").mkdir(parents=True, exist_ok=True)
    _copy_tutorials(directory)
    token = secrets.token_hex(16)
    base = f"http://127.0.0.1:{port}/"
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={directory}",
        f"--RtkitExtension.store=sqlite:///{directory / '.rtkit' / 'hub.db'}",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    env = dict(os.environ, RTKIT_DEMO_CHANNEL=channel)
    env.pop("RTKIT_URL", None)  # the kernels get this server's hub
    env.pop("RTKIT_TOKEN", None)
    lab = start_group(cmd, env=env, cwd=directory)
    try:
        _wait_ready(f"{base}rtkit/api/status?token={token}", lab, _READY_TIMEOUT)
        url = f"{base}lab/tree/02-live-data.ipynb?token={token}"
        print(
            f"\nrtkit demo: JupyterLab with rtkit is running; {channel!r} gets "
            f"{rate:g} {kind} messages/s.\n\n    open {url}\n\nCtrl-C stops it.\n",
            flush=True,
        )
        if ready is not None:
            ready(url)
        asyncio.run(_demo_feed(f"{base}rtkit", token, channel, rate, kind, lab))
    except KeyboardInterrupt:
        pass
    finally:
        stop_group(lab, timeout=20)  # SIGTERM: SIGINT would ask for confirmation
    return 0


async def _demo_feed(
    url: str, token: str, channel: str, rate: float, kind: str, lab: subprocess.Popen[bytes]
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async def watch_lab() -> None:
        # Polled: a thread blocked in lab.wait() would outlive the loop.
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
            if lab.poll() is not None:
                stop.set()

    async with await aio.connect(url, token=token) as client, asyncio.TaskGroup() as tg:
        tg.create_task(watch_lab())
        await feed(client, channel, rate, kind, stop=stop)
