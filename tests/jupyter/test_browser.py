"""JupyterLab in headless Chromium runs the quick-start notebook, cell by cell.

Chromium is Debian's package (/usr/bin/chromium); Playwright only drives it
and never downloads a browser. The screenshot lands in test-artifacts/.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

from .server import JupyterServer

pytestmark = [pytest.mark.jupyter, pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "notebooks" / "01-quickstart.ipynb"
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# What each code cell of the notebook must show, in order.
EXPECTED = [
    "connected",
    "channel: quickstart.",
    "published seq 3",
    "3 {'px': 102.0}",
    "sent by ",
    "3 {'px': 102.0}",
    "closed",
]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[JupyterServer]:
    server = JupyterServer(tmp_path / "lab")
    # The notebook without its stored outputs: what the browser shows must
    # come from this run.
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.write(nb, server.root / NOTEBOOK.name)
    # No kernel dialog (start the notebook's kernel), no news pop-up, no
    # requests beyond this server.
    server.lab_settings("@jupyterlab/notebook-extension:tracker", {"autoStartDefaultKernel": True})
    server.lab_settings(
        "@jupyterlab/apputils-extension:notification",
        {"fetchNews": "false", "checkForUpdates": False},
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_jupyterlab_runs_the_quickstart(lab: JupyterServer) -> None:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    from playwright.sync_api import expect, sync_playwright

    code_cells = [
        i
        for i, c in enumerate(nbformat.read(NOTEBOOK, as_version=4).cells)
        if c.cell_type == "code"
    ]
    assert len(code_cells) == len(EXPECTED)
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1600})
            page.goto(f"{lab.url}lab/tree/{NOTEBOOK.name}?token={lab.token}")
            cells = page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell")
            expect(cells.first).to_be_visible(timeout=60_000)
            # Run nothing before the kernel is up: a cell run without a
            # kernel is not queued, just skipped.
            expect(page.get_by_text("Python 3 (ipykernel) | Idle")).to_be_visible(timeout=60_000)
            cells.first.click()
            page.keyboard.press("Escape")  # command mode: Shift+Enter runs and advances
            try:
                for index in range(max(code_cells) + 1):
                    page.keyboard.press("Shift+Enter")
                    if index in code_cells:
                        want = EXPECTED[code_cells.index(index)]
                        output = cells.nth(index).locator(".jp-OutputArea-output")
                        expect(output.first).to_contain_text(want, timeout=60_000)
                me = page.evaluate(
                    "async (url) => (await (await fetch(url)).json()).identity",
                    f"{lab.url}api/me",
                )
                sender_cell = cells.nth(code_cells[EXPECTED.index("sent by ")])
                expect(sender_cell.locator(".jp-OutputArea-output").first).to_contain_text(
                    f"sent by {me['username']}"
                )
            finally:
                page.screenshot(path=str(ARTIFACTS / "jupyterlab-quickstart.png"), full_page=True)
        finally:
            browser.close()
    status = lab.get_json("rtkit/api/status")
    assert any(name.startswith("quickstart.") for name in status["channels"]), json.dumps(status)
