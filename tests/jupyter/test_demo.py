"""``rtkit demo``: JupyterLab with the extension, the notebooks and a live feed,
run as the README's ``make demo`` runs it: from the repository root, with
default options, stopped with Ctrl-C and started again at once."""

from __future__ import annotations

import json
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
def demo(env: dict[str, str], *args: str) -> Iterator[str]:
    """``rtkit demo`` from the repository root; yields the URL it prints, and
    stops it with SIGINT (Ctrl-C) on exit, which must end it cleanly."""
    proc = subprocess.Popen(
        [str(RTKIT), "demo", *args], cwd=REPO, env=env, text=True,
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
            # A test that failed inside: Ctrl-C still, so that the demo stops
            # the JupyterLab it started (a killed demo would leave it running).
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
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
        assert saved_outputs(DEMO_DIR / "02-live-data.ipynb") == []
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


def saved_outputs(path: Path) -> list[str]:
    """The ids of the code cells of a notebook file that hold saved outputs."""
    notebook = json.loads(path.read_text())
    return [
        cell.get("id", "?")
        for cell in notebook["cells"]
        if cell["cell_type"] == "code" and (cell["outputs"] or cell["execution_count"])
    ]


def _rate(info: str) -> int:
    """The messages per second a chart's info line shows (digits grouped as
    the browser's locale does)."""
    match = re.search(r"(\d[\d,.\s\u202f]*) msg/s", info)
    return int(re.sub(r"\D", "", match.group(1))) if match else 0


@pytest.mark.browser
def test_demo_notebook_opens_clean_shows_the_feed_and_keeps_moving_after_run_all(
    tmp_path: Path,
) -> None:
    """What a new user does: ``rtkit demo --dir``, open the printed URL, Run All."""
    from playwright.sync_api import expect

    from .lab import ARTIFACTS, KERNEL_IDLE, chromium

    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "RTKIT_"))}
    for name in ("DATA", "RUNTIME", "CONFIG"):
        env[f"JUPYTER_{name}_DIR"] = str(tmp_path / f"jupyter-{name.lower()}")
    env["JUPYTERLAB_SETTINGS_DIR"] = str(tmp_path / "lab-settings")
    env["JUPYTERLAB_WORKSPACES_DIR"] = str(tmp_path / "lab-workspaces")
    env["IPYTHONDIR"] = str(tmp_path / "ipython")
    # A copy left by an earlier demo, with the outputs (dead widgets) it saved.
    demo_dir = tmp_path / "my-demo"
    demo_dir.mkdir()
    earlier = json.loads((REPO / "notebooks" / "02-live-data.ipynb").read_text())
    earlier["cells"][1]["source"] += "\n# my own edit"
    earlier["cells"][1]["outputs"] = [
        {"output_type": "stream", "name": "stdout", "text": "feed: demo.prices\n"}
    ]
    earlier["cells"][1]["execution_count"] = 1
    (demo_dir / "02-live-data.ipynb").write_text(json.dumps(earlier))

    with demo(env, "--dir", str(demo_dir), "--rate", "100") as url, chromium() as browser:
        # Every tutorial is there without saved outputs; the user's edit stays.
        copies = sorted(demo_dir.glob("*.ipynb"))
        assert [c.name for c in copies] == sorted(
            p.name for p in (REPO / "notebooks").glob("*.ipynb")
        )
        for copy in copies:
            assert saved_outputs(copy) == [], copy.name
        opened = json.loads((demo_dir / "02-live-data.ipynb").read_text())
        assert "".join(opened["cells"][1]["source"]).endswith("# my own edit")

        page = browser.new_page(viewport={"width": 1280, "height": 1400})
        try:
            assert "02-live-data.ipynb" in url
            page.goto(url)
            cells = page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell")
            expect(cells.first).to_be_visible(timeout=60_000)
            expect(page.get_by_text(KERNEL_IDLE)).to_be_visible(timeout=60_000)
            # Nothing stale on screen before anything ran.
            expect(page.locator(".jp-NotebookPanel .jp-OutputArea-output")).to_have_count(0)

            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.locator('[data-command="runmenu:run-all"]').click()
            # The first cells draw the demo's own feed, from the browser.
            # (one chart per series: aapl and msft)
            expect(page.locator(".rtkit-chart")).to_have_count(2, timeout=60_000)
            chart = page.locator(".rtkit-chart").first
            info = chart.locator(".rtkit-info")
            expect(chart).to_have_attribute("data-source", "direct", timeout=60_000)
            expect(info).to_contain_text("demo.prices", timeout=30_000)
            expect(page.locator(".rtkit-table tr:has(td)")).to_have_count(5, timeout=30_000)
            expect(cells.nth(1)).to_contain_text("series: ['aapl', 'msft']")
            # Run All ends (the last cell shows the rolling view's newest rows)
            # without an error...
            last_code = page.locator(".jp-NotebookPanel .jp-CodeCell").last
            expect(last_code.locator(".jp-OutputArea-output")).to_contain_text(
                "aapl", timeout=60_000
            )
            expect(page.get_by_text(KERNEL_IDLE)).to_be_visible(timeout=30_000)
            errors = page.locator('[data-mime-type="application/vnd.jupyter.stderr"]')
            assert errors.count() == 0, errors.all_inner_texts()
            # ...and nothing stopped the feed: after it the chart keeps taking
            # in the feed's messages and redrawing.
            shown = info.inner_text()
            canvas = chart.locator("canvas").first
            before = canvas.screenshot()
            deadline = time.monotonic() + 15
            while not ((text := info.inner_text()) != shown and _rate(text) >= 50):
                assert time.monotonic() < deadline, f"the chart stopped: {text!r}"
                time.sleep(0.1)
            while canvas.screenshot() == before:
                assert time.monotonic() < deadline, "the chart stopped redrawing"
                time.sleep(0.1)
            page.screenshot(path=str(ARTIFACTS / "demo-after-run-all.png"))
        finally:
            if not page.is_closed():
                page.screenshot(path=str(ARTIFACTS / "demo-final.png"))
