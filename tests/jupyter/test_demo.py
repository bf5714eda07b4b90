"""``rtkit demo``: JupyterLab with the extension, the notebooks and a live feed."""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

import rtkit
from rtkit.pytest_plugin import free_port

pytestmark = [pytest.mark.jupyter, pytest.mark.slow]


def test_demo_serves_lab_and_feeds_a_channel(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("JUPYTER")}
    for sub in ("data", "runtime", "config"):
        env[f"JUPYTER_{sub.upper()}_DIR"] = str(tmp_path / sub)
    env["JUPYTERLAB_SETTINGS_DIR"] = str(tmp_path / "settings")
    env["JUPYTERLAB_WORKSPACES_DIR"] = str(tmp_path / "workspaces")
    proc = subprocess.Popen(
        [sys.executable, "-m", "rtkit", "demo", "--port", str(port), "--rate", "300",
         "--dir", str(tmp_path / "demo")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    lines: queue.Queue[str | None] = queue.Queue()
    output: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
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
            assert line is not None, "".join(output)
            found = re.search(r"open (http://\S+)", line)
            url = found.group(1) if found else None
        token = url.split("token=")[1]
        assert (tmp_path / "demo" / "02-live-data.ipynb").is_file()
        with urllib.request.urlopen(url, timeout=30) as resp:
            assert resp.status == 200
        got = threading.Event()
        seen: list[rtkit.Message] = []

        def on_tick(msg: rtkit.Message) -> None:
            seen.append(msg)
            if len(seen) >= 300:
                got.set()

        with rtkit.connect(f"http://127.0.0.1:{port}/rtkit", token=token) as hub:
            hub.channel("demo.prices").subscribe(on_tick)
            assert got.wait(20), f"{len(seen)} demo messages in 20 s"
        assert {"aapl", "msft"} <= set(seen[0].data)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        pumper.join(10)
        assert proc.stdout is not None
        proc.stdout.close()
