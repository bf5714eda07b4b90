"""LiveChart on a recorded multi-sensor feed, and its errors, in JupyterLab
(headless Chromium).

The test process replays a sensor recording (8 sensors, a timestamp column)
into a channel with ``publish_frame``: part of it before the chart opens
(the chart backfills it from history), the rest while it is open. What the
chart drew is read from the chart itself (its root element's
``rtkitChart``: the downsampled points of each series and the pixel width).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import rtkit

from .lab import ARTIFACTS, chromium, open_notebook, running_lab, wait_for
from .server import JupyterServer

pytestmark = [pytest.mark.jupyter, pytest.mark.browser, pytest.mark.slow]

SENSORS = 8
TICKS = 2_500  # rows per sensor: more than the chart's pixel columns
BATCH = 2_000
BEFORE = 4  # batches stored before the chart opens (backfilled)
CHANNEL = "sensors.replay"
CHART_CELLS = [
    "from rtkit.widgets import LiveChart\n"
    f"chart = LiveChart({CHANNEL!r}, series=['value'], x='timestamp', by='sensor_id',"
    f" window={SENSORS * TICKS})\n"
    "chart",
]
OK_CHANNEL = "widgets.errors"
LIVE_CHANNEL = "widgets.live"
LIVE_CELLS = [
    f"from rtkit.widgets import LiveChart\nLiveChart({LIVE_CHANNEL!r}, window='2s', backfill=0)",
]
RELAY_CHANNEL = "widgets.relayed"
RELAY_CELLS = [
    f"from rtkit.widgets import LiveChart\nLiveChart({RELAY_CHANNEL!r}, window=100, mode='relay')",
]
ERROR_CELLS = [
    "from rtkit.widgets import LiveChart\nLiveChart('my channel')",
    f"chart = LiveChart({OK_CHANNEL!r}, series=['vlaue'])\nchart",
    "chart.channel = 'my channel'",
]


def recording() -> pd.DataFrame:
    """8 sensors reporting every 10 ms, rows in time order (a sensor CSV)."""
    ticks = pd.date_range("2025-05-31 23:20:00", periods=TICKS, freq="10ms", tz="UTC")
    rng = np.random.default_rng(11)
    walk = np.cumsum(rng.normal(0, 0.2, (TICKS, SENSORS)), axis=0) + np.arange(SENSORS) * 5
    return pd.DataFrame(
        {
            "timestamp": np.repeat(ticks, SENSORS),
            "sensor_id": np.tile([f"sensor-{i}" for i in range(SENSORS)], TICKS),
            "value": walk.reshape(-1),
        }
    )


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    notebooks = {
        "chart.ipynb": CHART_CELLS,
        "errors.ipynb": ERROR_CELLS,
        "live.ipynb": LIVE_CELLS,
        "relay.ipynb": RELAY_CELLS,
    }
    with running_lab(tmp_path_factory.mktemp("lab"), notebooks) as server:
        yield server


def test_a_sensor_replay_draws_one_downsampled_series_per_sensor(
    lab: JupyterServer, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    df = recording()
    batches = [df.iloc[i : i + BATCH] for i in range(0, len(df), BATCH)]
    with rtkit.connect(lab.hub_url, token=lab.token) as hub, chromium() as browser:
        ch = hub.channel(CHANNEL)
        for part in batches[:BEFORE]:
            ch.publish_frame(part)
        page = browser.new_page(viewport={"width": 1280, "height": 1000}, accept_downloads=True)
        open_notebook(page, lab, "chart.ipynb", workspace="chart")
        page.keyboard.press("Shift+Enter")
        chart = page.locator(".rtkit-chart")
        expect(chart).to_have_attribute("data-source", "direct", timeout=60_000)
        # What was stored before the chart opened comes from history.
        expect(chart).to_have_attribute("data-backfilled", str(BEFORE), timeout=30_000)
        try:
            for part in batches[BEFORE:]:
                ch.publish_frame(part)
                time.sleep(0.3)  # paced like a replay: the chart draws between batches
            drawn = wait_for(
                lambda: (d := chart.evaluate("el => el.rtkitChart")) and d["rows"] == len(df) and d,
                "every row in the chart",
            )
            page.screenshot(path=str(ARTIFACTS / "chart-sensors.png"))
            series = drawn["series"]
            points = sum(len(s["x"]) for s in series)
            print(f"{drawn['rows']} rows drawn as {points} points in {drawn['drawMs']:.1f} ms")
            assert points <= drawn["width"] * SENSORS
            # One series per sensor, labelled by its key.
            assert sorted(s["key"] for s in series) == sorted(df["sensor_id"].unique())
            assert len({s["label"] for s in series}) == SENSORS
            # x is the timestamp column (seconds), not the hub time of a batch:
            # every row of a batch has its own x, increasing within a series.
            first = df["timestamp"].iloc[0].timestamp()
            last = df["timestamp"].iloc[-1].timestamp()
            assert drawn["xRange"] == pytest.approx([first, last])
            width = drawn["width"]
            x0, x1 = drawn["xRange"]
            for s in series:
                xs = np.array(s["x"])
                assert np.all(np.diff(xs) >= 0), s["label"]
                assert len(xs) > 0.9 * width  # the sensor's points span the plot...
                cols = np.minimum(width - 1, ((xs - x0) / (x1 - x0) * width).astype(int))
                assert np.bincount(cols).max() == 1, s["label"]  # ...one point per pixel column
                values = df.loc[df["sensor_id"] == s["key"], "value"]
                assert min(s["y"]) == values.min() and max(s["y"]) == values.max()
            # Once the replay stops, the rate readout falls to 0.
            wait_for(lambda: chart.get_attribute("data-rate") == "0", "the rate to decay", 10)
            # The window downloads as CSV: every row, with its sensor.
            with page.expect_download() as download:
                chart.locator("button.rtkit-csv").click()
            saved = tmp_path / "chart.csv"
            download.value.save_as(saved)
            csv = pd.read_csv(saved)
            assert list(csv.columns) == ["timestamp", "sensor_id", "value"]
            assert len(csv) == len(df)
            assert sorted(csv["sensor_id"].unique()) == sorted(df["sensor_id"].unique())
            with page.expect_download() as png:
                chart.locator("button.rtkit-png").click()
            assert png.value.suggested_filename == f"{CHANNEL}.png"
        finally:
            page.screenshot(path=str(ARTIFACTS / "chart-sensors-final.png"))


def test_errors_show_inside_the_chart(lab: JupyterServer) -> None:
    from playwright.sync_api import expect

    with rtkit.connect(lab.hub_url, token=lab.token) as hub, chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        cells = open_notebook(page, lab, "errors.ipynb", workspace="errors")
        # A bad name is refused in Python, with the rule, before any widget.
        page.keyboard.press("Shift+Enter")
        expect(cells.nth(0).locator(".jp-OutputArea-output").first).to_contain_text(
            "invalid channel name 'my channel'", timeout=30_000
        )
        # A series never seen in the channel's messages: said in the chart.
        page.keyboard.press("Shift+Enter")
        chart = page.locator(".rtkit-chart")
        error = chart.locator(".rtkit-error")
        expect(chart).to_have_attribute("data-source", "direct", timeout=60_000)
        ch = hub.channel(OK_CHANNEL)
        try:
            for i in range(60):
                ch.publish({"value": float(i)})
            expect(error).to_contain_text('no field "vlaue"', timeout=15_000)
            expect(error).to_contain_text("fields seen: value")
            # A name the hub refuses (set after the chart was made): the
            # hub's reason, inside the chart.
            page.keyboard.press("Shift+Enter")
            expect(error).to_contain_text("invalid channel name", timeout=15_000)
            expect(error).to_contain_text("bad_request")
            page.screenshot(path=str(ARTIFACTS / "chart-errors.png"))
        finally:
            page.screenshot(path=str(ARTIFACTS / "chart-errors-final.png"))


def test_a_time_window_empties_by_the_hub_clock_when_the_stream_stops(lab: JupyterServer) -> None:
    """A counter and a price on one chart get y axes of their own; once the
    stream stops, the rows leave a 2 s window and the rate falls to 0."""
    from playwright.sync_api import expect

    with rtkit.connect(lab.hub_url, token=lab.token) as hub, chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        open_notebook(page, lab, "live.ipynb", workspace="live")
        page.keyboard.press("Shift+Enter")
        chart = page.locator(".rtkit-chart")
        expect(chart).to_have_attribute("data-source", "direct", timeout=60_000)
        wait_for(lambda: _subscribers(lab, LIVE_CHANNEL) == 1, "the chart to subscribe")
        ch = hub.channel(LIVE_CHANNEL)
        for i in range(50):
            ch.publish({"n": 217_000 + i, "px": 101.25 + i / 100})
        drawn = wait_for(
            lambda: (d := chart.evaluate("el => el.rtkitChart")) and d["rows"] == 50 and d,
            "the messages in the chart",
        )
        scales = {s["label"]: s["scale"] for s in drawn["series"]}
        assert scales["n"] != scales["px"]
        page.screenshot(path=str(ARTIFACTS / "chart-live.png"))
        # No message for a while: the window (hub time) empties on its own.
        wait_for(
            lambda: chart.evaluate("el => el.rtkitChart.rows") == 0,
            "the rows to leave the window",
            10,
        )
        expect(chart).to_have_attribute("data-rate", "0")


def _subscribers(lab: JupyterServer, channel: str) -> int:
    stats = lab.get_json("rtkit/api/status")["channels"].get(channel, {})
    return int(stats.get("subscribers", 0))


def test_through_the_kernel_relay_a_chart_backfills_then_follows(lab: JupyterServer) -> None:
    from playwright.sync_api import expect

    with rtkit.connect(lab.hub_url, token=lab.token) as hub, chromium() as browser:
        ch = hub.channel(RELAY_CHANNEL)
        for i in range(20):
            ch.publish({"v": float(i)})
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        open_notebook(page, lab, "relay.ipynb", workspace="relay")
        page.keyboard.press("Shift+Enter")
        chart = page.locator(".rtkit-chart")
        expect(chart).to_have_attribute("data-source", "relay", timeout=60_000)
        # The kernel fetched what was stored before (20 messages)...
        expect(chart).to_have_attribute("data-backfilled", "20", timeout=30_000)
        wait_for(lambda: _subscribers(lab, RELAY_CHANNEL) == 1, "the kernel to subscribe")
        for i in range(20, 50):
            ch.publish({"v": float(i)})
        # ...and relays what comes next: every message once, in order.
        drawn = wait_for(
            lambda: (d := chart.evaluate("el => el.rtkitChart")) and d["rows"] == 50 and d,
            "every message in the chart",
        )
        (series,) = drawn["series"]
        assert series["label"] == "v"
        # Published within milliseconds: downsampled, but the extremes stay.
        assert (min(series["y"]), max(series["y"])) == (0.0, 49.0)
