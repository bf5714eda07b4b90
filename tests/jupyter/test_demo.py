"""``rtkit demo``: JupyterLab with the extension, the notebooks and a live feed,
run as the README's ``make demo`` runs it: from the repository root, with
default options, stopped with Ctrl-C and started again at once."""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest

import rtkit

pytestmark = [pytest.mark.jupyter, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
DEMO_DIR = REPO / "rtkit-demo"  # the default --dir, relative to where make runs
# What `make demo` runs: the environment's rtkit command, no options.
RTKIT = Path(sys.executable).parent / "rtkit"


@contextmanager
def demo(env: dict[str, str]) -> Iterator[str]:
    """``rtkit demo`` from the repository root; yields the URL it prints, and
    stops it with SIGINT (Ctrl-C) on exit, which must end it cleanly."""
    proc = subprocess.Popen(
        [str(RTKIT), "demo"], cwd=REPO, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    lines: queue.Queue[str | None] = queue.Queue()
    output: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        with proc.stdout:
            for line in proc.stdout:
                output.append(line)
                lines.put(line)
        lines.put(None)

    pumper = threading.Thread(target=pump, daemon=True)
    pumper.start()
    try:
        deadline = time.monotonic() + 120
        url = None
        while url is None:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line is not None, "rtkit demo exited:\n" + "".join(output)
            found = re.search(r"open (http://\S+)", line)
            url = found.group(1) if found else None
        yield url
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0, "".join(output)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        pumper.join(10)


def receive(url: str, count: int) -> list[rtkit.Message]:
    """``count`` messages of the demo's feed, through the demo's own server."""
    parts = urlsplit(url)
    token = parts.query.split("token=")[1]
    got = threading.Event()
    seen: list[rtkit.Message] = []

    def on_tick(msg: rtkit.Message) -> None:
        seen.append(msg)
        if len(seen) >= count:
            got.set()

    with rtkit.connect(f"http://{parts.netloc}/rtkit", token=token) as hub:
        hub.channel("demo.prices").subscribe(on_tick)
        assert got.wait(20), f"{len(seen)} demo messages in 20 s"
    return seen


@pytest.fixture
def clean_demo_dir() -> Iterator[None]:
    """The test's rtkit-demo/ is removed afterwards, unless it was there
    before (a developer's own demo)."""
    existed = DEMO_DIR.exists()
    yield
    if not existed:
        shutil.rmtree(DEMO_DIR, ignore_errors=True)


def test_make_demo_serves_lab_feeds_a_channel_and_restarts_at_once(
    tmp_path: Path, clean_demo_dir: None
) -> None:
    # Jupyter's own data and runtime directories, watched: the demo must
    # keep its hub's data in its own directory.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "RTKIT_"))}
    env["JUPYTER_DATA_DIR"] = str(tmp_path / "jupyter-data")
    env["JUPYTER_RUNTIME_DIR"] = str(tmp_path / "jupyter-runtime")

    with demo(env) as url:
        first_port = urlsplit(url).port
        assert (DEMO_DIR / "02-live-data.ipynb").is_file()
        with urllib.request.urlopen(url, timeout=30) as resp:
            assert resp.status == 200
        seen = receive(url, 300)
        assert {"aapl", "msft"} <= set(seen[0].data)
        assert (DEMO_DIR / ".rtkit" / "hub.db").is_file()
        assert not (tmp_path / "jupyter-data" / "rtkit").exists()

    # Ctrl-C, and at once again: the port the first one used (its closed
    # connections still in TIME-WAIT) serves the second.
    with demo(env) as url:
        assert urlsplit(url).port == first_port
        again = receive(url, 10)
        # The feed's history was kept in rtkit-demo/.rtkit/hub.db.
        assert again[0].seq > seen[-1].seq
