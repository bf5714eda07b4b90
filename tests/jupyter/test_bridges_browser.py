"""StatusBadge(bridges=True) in JupyterLab (headless Chromium): the bridge
the server runs shows connected, then disconnected when its broker dies,
and a bridge that falls silent turns stale. Screenshots land in
test-artifacts/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import rtkit
from tests.integration.brokers import Broker

from .lab import ARTIFACTS, chromium, open_notebook, running_lab
from .server import JupyterServer

pytestmark = [pytest.mark.jupyter, pytest.mark.browser, pytest.mark.slow]

pytest.importorskip("aiomqtt")

CELLS = [
    "from rtkit.widgets import StatusBadge\nStatusBadge(bridges=True)",
    # The same lines through the kernel, as where the browser cannot reach the hub.
    "StatusBadge(bridges=True, mode='relay')",
]


@pytest.fixture
def lab(tmp_path: Path, mqtt_broker: Broker) -> Iterator[JupyterServer]:
    port = mqtt_broker.port
    bridge = f"mqtt --port {port} --map 'plant/#={{topic}}' --name plant --status-every 1"
    config = {"RtkitExtension": {"bridges": [bridge]}}
    with running_lab(tmp_path / "lab", {"badge.ipynb": CELLS}, config=config) as server:
        yield server


def test_the_badge_lists_bridges_and_follows_their_state(
    lab: JupyterServer, mqtt_broker: Broker
) -> None:
    from playwright.sync_api import expect

    # A second bridge that reports once and falls silent (as if killed).
    with rtkit.connect(lab.hub_url, token=lab.token) as hub:
        hub.channel("bridges").publish({"bridge": "ghost", "source": "mqtt"})
        hub.channel("bridges.ghost").publish(
            {"bridge": "ghost", "status": "connected", "every": 1.0, "lag": 7, "errors": 2}
        )

    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1000, "height": 700})
        open_notebook(page, lab, "badge.ipynb")
        page.keyboard.press("Shift+Enter")
        page.keyboard.press("Shift+Enter")
        badges = page.locator(".rtkit-bridges")
        direct, relayed = badges.nth(0), badges.nth(1)
        for lines in (direct, relayed):
            plant = lines.locator('.rtkit-bridge[data-bridge="plant"]')
            expect(plant).to_have_attribute("data-status", "connected", timeout=30_000)
            expect(plant).to_contain_text("plant: connected")
            expect(plant).to_contain_text("errors 0")
            ghost = lines.locator('.rtkit-bridge[data-bridge="ghost"]')
            expect(ghost).to_have_attribute("data-status", "stale", timeout=15_000)
            expect(ghost).to_contain_text("lag 7")
            expect(ghost).to_contain_text("errors 2")

        mqtt_broker.kill()
        for lines in (direct, relayed):
            plant = lines.locator('.rtkit-bridge[data-bridge="plant"]')
            expect(plant).to_have_attribute("data-status", "disconnected", timeout=30_000)
            expect(plant).not_to_contain_text("errors 0")
        direct.screenshot(path=str(ARTIFACTS / "badge-bridges.png"))
