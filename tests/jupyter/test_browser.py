"""JupyterLab in headless Chromium runs the quick-start notebook, cell by cell.
The screenshot lands in test-artifacts/."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

from .lab import ARTIFACTS, REPO, chromium, open_notebook, running_lab
from .server import JupyterServer

pytestmark = [pytest.mark.jupyter, pytest.mark.browser, pytest.mark.slow]

NOTEBOOK = REPO / "notebooks" / "01-quickstart.ipynb"
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
    # The notebook without its stored outputs: what the browser shows must
    # come from this run.
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    with running_lab(tmp_path / "lab", {NOTEBOOK.name: nb}) as server:
        yield server


def test_jupyterlab_runs_the_quickstart(lab: JupyterServer) -> None:
    from playwright.sync_api import expect

    code_cells = [
        i
        for i, c in enumerate(nbformat.read(NOTEBOOK, as_version=4).cells)
        if c.cell_type == "code"
    ]
    assert len(code_cells) == len(EXPECTED)
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 1600})
        cells = open_notebook(page, lab, NOTEBOOK.name)
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
    status = lab.get_json("rtkit/api/status")
    assert any(name.startswith("quickstart.") for name in status["channels"]), json.dumps(status)
