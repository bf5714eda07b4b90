"""HubMonitor in JupyterLab (headless Chromium): the browser reads the
hub's status itself, so the view keeps moving while the kernel sleeps;
and the kernel-read mode against a standalone hub."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import rtkit

from .lab import ARTIFACTS, KERNEL_BUSY, chromium, open_notebook, running_lab, wait_for
from .server import JupyterServer

pytestmark = [pytest.mark.jupyter]

HOT, QUIET = "monitor.hot", "monitor.quiet"
CELLS = [
    "from rtkit.widgets import HubMonitor\nHubMonitor(interval=0.5)",
    "import time\ntime.sleep(12)\nprint('slept')",
]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[JupyterServer]:
    with running_lab(tmp_path / "lab", {"monitor.ipynb": CELLS}) as server:
        yield server


class Feed(threading.Thread):
    """A publisher outside the kernel: about 200 msg/s to HOT, one to QUIET."""

    def __init__(self, lab: JupyterServer) -> None:
        super().__init__(daemon=True)
        self.lab = lab
        self.done = threading.Event()

    def run(self) -> None:
        with rtkit.connect(self.lab.hub_url, token=self.lab.token) as hub:
            hub.channel(QUIET).publish({"once": True})
            hot = hub.channel(HOT)
            i = 0
            while not self.done.wait(0.01):
                for _ in range(2):
                    hot.publish({"i": i}, wait=False)
                    i += 1
            hub.flush()


@pytest.mark.browser
@pytest.mark.slow
def test_monitor_keeps_moving_while_the_kernel_sleeps(lab: JupyterServer) -> None:
    from playwright.sync_api import expect

    feed = Feed(lab)
    feed.start()
    try:
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            open_notebook(page, lab, "monitor.ipynb")
            page.keyboard.press("Shift+Enter")
            monitor = page.locator(".rtkit-monitor")
            expect(monitor).to_have_attribute("data-source", "browser", timeout=60_000)
            expect(monitor).to_have_attribute("data-state", "running", timeout=30_000)
            hot = monitor.locator(f'tr[data-channel="{HOT}"]')
            expect(hot).to_be_visible(timeout=30_000)
            # Channels ranked by rate: the hot one first, the quiet one after it.
            wait_for(
                lambda: (
                    json.loads(monitor.get_attribute("data-channels") or "[]")[:1] == [HOT]
                    and QUIET in json.loads(monitor.get_attribute("data-channels") or "[]")
                ),
                "the hot channel ranked first",
            )
            # A busy kernel: the figures go on changing all the same.
            page.keyboard.press("Shift+Enter")
            expect(page.get_by_text(KERNEL_BUSY)).to_be_visible(timeout=10_000)
            seq_cell = hot.locator("td").nth(5)
            first = seq_cell.inner_text()
            wait_for(lambda: seq_cell.inner_text() != first, "the seq to move while busy", 8)
            assert float(hot.locator("td").nth(1).inner_text().replace(",", "")) > 0
            expect(page.get_by_text(KERNEL_BUSY)).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "hub-monitor.png"))
    finally:
        feed.done.set()
        feed.join(10)


def test_monitor_reads_a_standalone_hub_from_the_kernel(rt_hub_factory: Any) -> None:
    """Outside Jupyter the kernel reads the status with the API key and sets
    the widget's ``status``; a wrong key shows as an error in the widget."""
    from rtkit.widgets import HubMonitor

    key = "monitor-api-key-0123456789abcdef"
    hub = rt_hub_factory(extra_args=["--api-key", key])
    with rtkit.connect(hub.url) as client:
        client.channel("standalone.feed").publish({"x": 1})
        monitor = HubMonitor(hub.url, api_key=key, interval=0.2)
        wrong = HubMonitor(hub.url, api_key="not-the-key-0123456789", interval=0.2)
        try:
            assert monitor.mode == "kernel"
            monitor._on_front_end_msg(monitor, {"type": "poll"}, [])
            wrong._on_front_end_msg(wrong, {"type": "poll"}, [])
            wait_for(lambda: "standalone.feed" in monitor.status.get("channels", {}), "a read")
            assert monitor.status["channels"]["standalone.feed"]["published"] == 1
            wait_for(lambda: "error" in wrong.status, "the error")
            assert "401" in wrong.status["error"]
        finally:
            monitor.close()
            wrong.close()
    with pytest.raises(ValueError, match="interval"):
        HubMonitor(hub.url, interval=0)
