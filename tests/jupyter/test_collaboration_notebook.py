"""notebooks/03-collaboration.ipynb as its text says to use it: two people
on one JupyterLab (two browser contexts, so two Jupyter logins), each running
their own copy of the notebook with Run All, see each other in its presence
bar, and each one's slider moves the other's.

The notebook is the shipped one, outputs cleared (as ``rtkit demo`` serves
it), so that each cell's output on screen is this run's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

from .lab import ARTIFACTS, KERNEL_IDLE, REPO, chromium, open_notebook, running_lab
from .server import JupyterServer

pytestmark = [pytest.mark.jupyter, pytest.mark.browser, pytest.mark.slow]

NOTEBOOK = REPO / "notebooks" / "03-collaboration.ipynb"
PEOPLE = ("alice", "bob")


def copy_for(name: str) -> tuple[str, Any]:
    """A person's own copy of the notebook, without outputs."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    return f"03-collaboration-{name}.ipynb", nb


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[JupyterServer]:
    with running_lab(tmp_path / "lab", dict(copy_for(name) for name in PEOPLE)) as server:
        yield server


def run_all(page: Any, lab: JupyterServer, name: str) -> dict[str, Any]:
    """Open the person's copy in their own workspace, Run All, and wait for
    the last cell; returns the browser's Jupyter identity."""
    from playwright.sync_api import expect

    file, _ = copy_for(name)
    open_notebook(page, lab, file, workspace=name)
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.locator('[data-command="runmenu:run-all"]').click()
    last_code = page.locator(".jp-NotebookPanel .jp-CodeCell").last
    expect(last_code.locator(".jp-OutputArea-output")).to_contain_text(
        "theirs moved to 0.25", timeout=90_000
    )
    expect(page.get_by_text(KERNEL_IDLE)).to_be_visible(timeout=30_000)
    errors = page.locator('[data-mime-type="application/vnd.jupyter.stderr"]')
    assert errors.count() == 0, errors.all_inner_texts()
    # Every cell ran: the shared room and document are the notebook's named ones.
    first = page.locator(".jp-NotebookPanel .jp-CodeCell").first
    expect(first).to_contain_text("room: collab.team · document: collab.team.params")
    me = page.evaluate(
        "async (url) => (await (await fetch(url, {credentials: 'same-origin'})).json()).identity",
        f"{lab.url}api/me",
    )
    assert isinstance(me, dict) and me.get("username"), me
    return me


def test_two_people_run_the_notebook_and_meet(lab: JupyterServer) -> None:
    from playwright.sync_api import expect

    with chromium() as browser:
        pages: dict[str, Any] = {}
        try:
            for name in PEOPLE:
                context = browser.new_context(viewport={"width": 1100, "height": 900})
                pages[name] = context.new_page()
            alice, bob = pages["alice"], pages["bob"]
            # One after the other, as two people would: bob's run finds the
            # document alice's run left and starts its list and note afresh.
            people = {name: run_all(page, lab, name) for name, page in pages.items()}
            assert people["alice"]["username"] != people["bob"]["username"]

            # Each presence bar shows both people, as their Jupyter logins;
            # a person's browser and the two connections of their kernel are
            # one member.
            for name, page in pages.items():
                bar = page.locator(".rtkit-presence")
                expect(bar).to_have_attribute("data-members", "2", timeout=30_000)
                for person in people.values():
                    avatar = bar.locator(f'.rtkit-avatar[data-user="{person["username"]}"]')
                    expect(avatar).to_have_attribute("data-name", person["name"])
                    expect(avatar).to_have_attribute("data-connections", "3")
                mine = bar.locator(".rtkit-avatar[data-me]")
                expect(mine).to_have_attribute("data-user", people[name]["username"])

            # The linked sliders: bob's run moved alice's to 0.25; now each
            # moves theirs and the other's follows.
            readout = {name: page.locator(".widget-readout") for name, page in pages.items()}
            expect(readout["alice"]).to_have_text("0.25")
            expect(readout["bob"]).to_have_text("0.25")
            alice.locator(".widget-slider .noUi-handle").focus()
            alice.keyboard.press("ArrowRight")
            expect(readout["alice"]).to_have_text("0.30")
            expect(readout["bob"]).to_have_text("0.30", timeout=10_000)
            bob.locator(".widget-slider .noUi-handle").focus()
            bob.keyboard.press("ArrowLeft")
            bob.keyboard.press("ArrowLeft")
            expect(readout["bob"]).to_have_text("0.20")
            expect(readout["alice"]).to_have_text("0.20", timeout=10_000)
            for name, page in pages.items():
                page.screenshot(path=str(ARTIFACTS / f"collaboration-notebook-{name}.png"))
        finally:
            for name, page in pages.items():
                if not page.is_closed():
                    page.screenshot(
                        path=str(ARTIFACTS / f"collaboration-notebook-{name}-final.png")
                    )
