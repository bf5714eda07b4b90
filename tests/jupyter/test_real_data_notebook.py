"""notebooks/05-real-data.ipynb as a user runs it: Run All in JupyterLab.

The sensors' readings, published to MQTT by the notebook itself and bridged
into a channel, reach the browser's chart directly from the hub, one series
per sensor over the sensors' own clock; the replayed channel's chart shows
the same readings; and the bridge stops cleanly. The broker is a private
mosquitto, named to the kernel by RTKIT_MQTT.

The notebook is the shipped one, outputs cleared (as ``rtkit demo`` serves
it), so that each cell's output on screen is this run's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

from tests.integration.brokers import Broker

from .lab import ARTIFACTS, KERNEL_IDLE, REPO, chromium, open_notebook, running_lab
from .server import JupyterServer

pytestmark = [pytest.mark.jupyter, pytest.mark.browser, pytest.mark.slow]

NOTEBOOK = REPO / "notebooks" / "05-real-data.ipynb"
SENSORS = ["attic", "cellar", "kitchen"]
MINUTES = 4


def without_outputs() -> Any:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    return nb


@pytest.fixture
def lab(tmp_path: Path, mqtt_broker: Broker) -> Iterator[JupyterServer]:
    notebooks = {NOTEBOOK.name: without_outputs()}
    env = {"RTKIT_MQTT": f"127.0.0.1:{mqtt_broker.port}"}
    with running_lab(tmp_path / "lab", notebooks, env=env) as server:
        yield server


def test_run_all_charts_each_sensor_and_the_replay(lab: JupyterServer) -> None:
    from playwright.sync_api import expect

    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1200, "height": 1000})
        try:
            open_notebook(page, lab, NOTEBOOK.name, workspace="real-data")
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.locator('[data-command="runmenu:run-all"]').click()
            last_code = page.locator(".jp-NotebookPanel .jp-CodeCell").last
            expect(last_code.locator(".jp-OutputArea-output")).to_contain_text(
                "errors 0 gaps 0 pending 0", timeout=90_000
            )
            expect(page.get_by_text(KERNEL_IDLE)).to_be_visible(timeout=30_000)
            errors = page.locator('[data-mime-type="application/vnd.jupyter.stderr"]')
            assert errors.count() == 0, errors.all_inner_texts()
            expect(page.locator(".jp-NotebookPanel")).to_contain_text(
                "received 12 published 12 dropped 0"
            )

            charts = page.locator(".rtkit-chart")
            expect(charts).to_have_count(2, timeout=30_000)
            for name, chart in (("live", charts.first), ("replayed", charts.last)):
                # Straight from the hub inside Jupyter, not through the kernel.
                expect(chart).to_have_attribute("data-source", "direct", timeout=30_000)
                page.wait_for_function(
                    "el => el.rtkitChart && el.rtkitChart.rows === 12",
                    arg=chart.element_handle(),
                    timeout=30_000,
                )
                drawn = chart.evaluate("el => el.rtkitChart")
                series = drawn["series"]
                assert sorted(s["key"] for s in series) == SENSORS
                for s in series:
                    assert s["x"] == list(range(MINUTES)), s["key"]  # the sensors' "t"
                kitchen = next(s for s in series if s["key"] == "kitchen")
                assert kitchen["y"] == [21.0, 21.4, 21.9, 22.3]
                chart.screenshot(path=str(ARTIFACTS / f"real-data-{name}-chart.png"))
        finally:
            page.screenshot(path=str(ARTIFACTS / "real-data-notebook.png"), full_page=True)
