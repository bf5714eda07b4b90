"""The live chart, status badge and live table in JupyterLab (headless Chromium).

A publisher outside the kernel (benchmarks/loadgen.js, or an rtkit client in
the test process, both authenticated with the Jupyter token) feeds a channel;
the widgets' browser side subscribes to the hub directly, so they keep
updating while a cell sleeps. Screenshots land in test-artifacts/.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import rtkit

from .lab import ARTIFACTS, KERNEL_BUSY, REPO, chromium, open_notebook, running_lab, wait_for
from .server import JupyterServer

pytestmark = [pytest.mark.jupyter, pytest.mark.browser, pytest.mark.slow]

CHANNEL = "widgets.feed"
RATE = 1_000
CELLS = [
    "from rtkit.widgets import LiveChart, StatusBadge\n"
    f"chart = LiveChart({CHANNEL!r}, series=['t'], window=3000)\n"
    "chart",
    f"StatusBadge({CHANNEL!r})",
    "import time\ntime.sleep(10)\nprint('slept')",
]

TABLE_CHANNEL = "widgets.table"
TABLE_ROWS = 5
TABLE_COLUMNS = ["i", "px", "side"]
TABLE_SLEEP = 15
TABLE_CELLS = [
    "from rtkit.widgets import LiveTable\n"
    f"LiveTable({TABLE_CHANNEL!r}, rows={TABLE_ROWS}, columns={TABLE_COLUMNS!r})",
    f"import time\ntime.sleep({TABLE_SLEEP})\nprint('slept')",
]


class Feed:
    """benchmarks/loadgen.js publishing ``rate`` messages/s to the Jupyter-hosted
    hub from outside the kernel (paced by a timer, not by acks), until stopped."""

    def __init__(self, lab: JupyterServer, rate: int) -> None:
        self.cfg = {
            "scenario": "latency",
            "port": lab.port,
            "path": f"{lab.base_url}rtkit/socket.io/",
            "headers": {"Authorization": f"token {lab.token}"},
            "channel": CHANNEL,
            "subscribers": 0,
            "rate": rate,
            "warmup": 0,
            "duration": 90,
        }
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> Feed:
        # loadgen.js needs `ws`; tests/js (make setup) has it.
        env = dict(os.environ, NODE_PATH=str(REPO / "tests" / "js" / "node_modules"))
        self.proc = subprocess.Popen(
            ["node", str(REPO / "benchmarks" / "loadgen.js"), json.dumps(self.cfg)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[JupyterServer]:
    notebooks = {"widgets.ipynb": CELLS, "table.ipynb": TABLE_CELLS}
    with running_lab(tmp_path / "lab", notebooks) as server:
        yield server


def _rate(info: str) -> int:
    """The messages per second a chart's info line shows (digits grouped as
    the browser's locale does)."""
    match = re.search(r"(\d[\d,.\s\u202f]*) msg/s", info)
    return int(re.sub(r"\D", "", match.group(1))) if match else 0


def test_live_chart_keeps_moving_while_the_kernel_sleeps(lab: JupyterServer) -> None:
    from playwright.sync_api import expect

    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        cells = open_notebook(page, lab, "widgets.ipynb")
        page.keyboard.press("Shift+Enter")
        page.keyboard.press("Shift+Enter")
        chart = page.locator(".rtkit-chart")
        canvas = chart.locator("canvas").first
        # "<channel> · <source> · <rate> msg/s · <points> points", rewritten
        # (at most every 250 ms) when the chart draws.
        info = chart.locator(".rtkit-info")
        badge = page.locator(".rtkit-status")
        expect(chart).to_have_attribute("data-source", "direct", timeout=60_000)
        expect(badge).to_have_attribute("data-state", "connected", timeout=60_000)
        try:
            with Feed(lab, RATE):
                # The chart draws what the hub sends, over time.
                expect(info).to_contain_text(" points", timeout=30_000)
                first = canvas.screenshot()
                wait_for(lambda: canvas.screenshot() != first, "the chart to change")
                # The badge reports the connection and a rate near the feed's.
                wait_for(
                    lambda: int(badge.get_attribute("data-rate") or 0) >= RATE // 2,
                    "the badge to show the message rate",
                )
                expect(badge).to_contain_text("msg/s")
                # Both widgets take the channel in, over the page's one
                # connection to the hub: one subscriber, not one per widget.
                assert _subscribers(lab, CHANNEL) == 1
                page.screenshot(path=str(ARTIFACTS / "widgets-live-chart.png"))

                # A busy kernel: the chart keeps moving all the same.
                page.keyboard.press("Shift+Enter")
                expect(page.get_by_text(KERNEL_BUSY)).to_be_visible(timeout=10_000)
                before = canvas.screenshot()
                shown = info.inner_text()
                wait_for(lambda: canvas.screenshot() != before, "a redraw while busy", 8)
                # The chart takes the feed in while busy: a line rewritten since
                # shows messages arriving at a fair share of the feed's rate
                # (a busy kernel on the data path would show none).
                wait_for(
                    lambda: (text := info.inner_text()) != shown and _rate(text) >= RATE // 4,
                    "the chart to take in messages while busy",
                    8,
                )
                # Still inside the sleep: the kernel has not answered yet.
                expect(page.get_by_text(KERNEL_BUSY)).to_be_visible()
                page.screenshot(path=str(ARTIFACTS / "widgets-kernel-busy.png"))
                expect(cells.nth(2).locator(".jp-OutputArea-output").first).to_contain_text(
                    "slept", timeout=30_000
                )
        finally:
            page.screenshot(path=str(ARTIFACTS / "widgets-final.png"))


def _tick(i: int) -> dict[str, Any]:
    # "note" is not one of the table's columns: it must not show.
    return {"i": i, "px": 100 + i + 0.25, "side": "buy" if i % 2 else "sell", "note": "x"}


def _cells(i: int) -> list[str]:
    """The table's cells for ``_tick(i)``, as pandas shows the values."""
    tick = _tick(i)
    return [str(tick["i"]), repr(tick["px"]), tick["side"]]


def _subscribers(lab: JupyterServer, channel: str) -> int:
    stats = lab.get_json("rtkit/api/status")["channels"].get(channel, {})
    return int(stats.get("subscribers", 0))


def test_live_table_shows_the_newest_rows_while_the_kernel_sleeps(lab: JupyterServer) -> None:
    from playwright.sync_api import expect

    with rtkit.connect(lab.hub_url, token=lab.token) as hub, chromium() as browser:
        publisher = hub.channel(TABLE_CHANNEL)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        cells = open_notebook(page, lab, "table.ipynb")
        page.keyboard.press("Shift+Enter")
        table = page.locator(".rtkit-table")
        rows = table.locator("tr:has(td)")
        expect(table).to_have_attribute("data-source", "direct", timeout=60_000)
        # The table starts with the next message published: wait until the
        # hub counts its subscription, so that none of ours goes unseen.
        wait_for(lambda: _subscribers(lab, TABLE_CHANNEL) == 1, "the table to subscribe")
        try:
            # Fewer messages than rows: all of them, newest first.
            last = 0
            for _ in range(3):
                last += 1
                assert publisher.publish(_tick(last)) == last
            expect(table.locator("th")).to_have_text(["time", *TABLE_COLUMNS])
            expect(rows.locator("td:nth-child(2)")).to_have_text(["3", "2", "1"])

            # More than rows: only the newest TABLE_ROWS, newest on top.
            for _ in range(2 * TABLE_ROWS):
                last += 1
                publisher.publish(_tick(last))
            newest = [str(i) for i in range(last, last - TABLE_ROWS, -1)]
            expect(rows.locator("td:nth-child(2)")).to_have_text(newest)
            expect(rows).to_have_count(TABLE_ROWS)
            expect(rows.first.locator("td")).to_have_text(
                [re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{6})?\+00:00"), *_cells(last)]
            )
            # The time column is the hub time (UTC) of each message, as a
            # frame view's index shows it.
            (stored,) = publisher.history(limit=1)
            assert stored.seq == last
            hub_time = datetime.fromtimestamp(stored.ts, UTC)
            text = rows.first.locator("td").first.inner_text()
            shown = datetime.fromisoformat(text)
            assert abs(shown - hub_time) <= timedelta(microseconds=1), (text, hub_time)
            page.screenshot(path=str(ARTIFACTS / "widgets-live-table.png"))

            # Markup in a value is shown as text, never run in the page.
            markup = "<img src=x onerror=window.__rtkitPwned=1><b>sell</b>"
            last += 1
            publisher.publish({**_tick(last), "side": markup})
            expect(rows.first.locator("td").last).to_have_text(markup)
            assert rows.first.locator("td img, td b").count() == 0
            assert page.evaluate("window.__rtkitPwned") is None

            # A busy kernel: the table still follows the channel.
            page.keyboard.press("Shift+Enter")
            busy = page.get_by_text(KERNEL_BUSY)
            expect(busy).to_be_visible(timeout=10_000)
            for burst in (1, 50, 300):
                for _ in range(burst):
                    last += 1
                    publisher.publish(_tick(last))
                expect(rows.first.locator("td:not(:first-child)")).to_have_text(
                    _cells(last), timeout=5_000
                )
                expect(rows).to_have_count(TABLE_ROWS)
            # Still inside the sleep: the kernel has not answered yet.
            expect(busy).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "widgets-table-kernel-busy.png"))
            expect(cells.nth(1).locator(".jp-OutputArea-output").first).to_contain_text(
                "slept", timeout=TABLE_SLEEP * 1_000 + 30_000
            )
        finally:
            page.screenshot(path=str(ARTIFACTS / "widgets-table-final.png"))
