"""Two people on one JupyterLab (two browser contexts, so two Jupyter logins):
each sees the other in the presence bar, and a slider linked to a shared
document moves in the other's notebook within 500 ms.

Each person has their own notebook and kernel; the slider's path is
browser A -> kernel A -> hub -> kernel B -> browser B. The latency is taken
in the browsers (one Chromium, one clock): from the key press on A's slider
to B's readout showing the value. Screenshots land in test-artifacts/.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .lab import ARTIFACTS, KERNEL_BUSY, chromium, open_notebook, running_lab
from .server import JupyterServer

pytestmark = [pytest.mark.jupyter, pytest.mark.browser, pytest.mark.slow]

PEOPLE = ("alice", "bob")
ROOM = "collab.team"
LATENCY_BUDGET_MS = 500
CELLS = [
    "import ipywidgets as w\n"
    "import rtkit\n"
    "from rtkit.widgets import PresenceBar, link\n"
    "hub = rtkit.connect()\n"
    "params = hub.shared('collab.params')\n"
    f"PresenceBar({ROOM!r})",
    "alpha = w.IntSlider(description='alpha', min=0, max=100)\nlink(alpha, params, 'alpha')\nalpha",
    "import time\ntime.sleep(10)\nprint('slept')",
]

# In a page: record when the slider's readout first shows each value.
WATCH_READOUT = """
(el) => {
  window.__shown = {};
  const note = () => {
    const v = el.textContent.trim();
    if (!(v in window.__shown)) window.__shown[v] = Date.now();
  };
  note();
  new MutationObserver(note).observe(el, { childList: true, characterData: true, subtree: true });
}
"""
# In a page: record when each key went down (the user's action).
WATCH_KEYS = """
() => {
  window.__keys = [];
  if (window.__keysWatched) return;
  window.__keysWatched = true;
  document.addEventListener("keydown", () => window.__keys.push(Date.now()), true);
}
"""


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[JupyterServer]:
    with running_lab(tmp_path / "lab", {f"{name}.ipynb": CELLS for name in PEOPLE}) as server:
        yield server


def join_as(page: Any, lab: JupyterServer, name: str) -> dict[str, Any]:
    """Log in with the token (a new Jupyter user per browser context), open
    the person's notebook in their own workspace and run both cells; returns
    the Jupyter identity of this browser."""
    from playwright.sync_api import expect

    open_notebook(page, lab, f"{name}.ipynb", workspace=name)
    page.keyboard.press("Shift+Enter")
    page.keyboard.press("Shift+Enter")
    expect(page.locator(".widget-readout")).to_have_text("0", timeout=60_000)
    me = page.evaluate(
        "async (url) => (await (await fetch(url, {credentials: 'same-origin'})).json()).identity",
        f"{lab.url}api/me",
    )
    assert isinstance(me, dict) and me.get("username"), me
    return me


def move_and_time(source: Any, target: Any, key: str, presses: int) -> list[float]:
    """Press ``key`` on the source's slider ``presses`` times; for each new
    value, the ms from the key press to the target's readout showing it."""
    from playwright.sync_api import expect

    readout = target.locator(".widget-readout")
    readout.evaluate(WATCH_READOUT)
    source.evaluate(WATCH_KEYS)
    handle = source.locator(".widget-slider .noUi-handle")
    handle.focus()
    values = []
    for _ in range(presses):
        source.keyboard.press(key)
        value = source.locator(".widget-readout").inner_text().strip()
        values.append(value)
        # The other person's slider follows before the next press.
        expect(readout).to_have_text(value, timeout=10_000)
    keys = source.evaluate("window.__keys")
    shown = target.evaluate("window.__shown")
    assert len(keys) == presses and len(set(values)) == presses, (keys, values)
    return [shown[v] - t for v, t in zip(values, keys, strict=True)]


def test_two_people_see_each_other_and_move_one_slider(lab: JupyterServer) -> None:
    from playwright.sync_api import expect

    with chromium() as browser:
        pages: dict[str, Any] = {}
        try:
            for name in PEOPLE:
                context = browser.new_context(viewport={"width": 1100, "height": 700})
                pages[name] = context.new_page()
            alice, bob = pages["alice"], pages["bob"]
            people = {name: join_as(page, lab, name) for name, page in pages.items()}
            assert people["alice"]["username"] != people["bob"]["username"]

            # Presence: each bar shows both people, each as their Jupyter login.
            for name, page in pages.items():
                bar = page.locator(".rtkit-presence")
                expect(bar).to_have_attribute("data-source", "direct", timeout=30_000)
                expect(bar).to_have_attribute("data-members", "2", timeout=30_000)
                for person in people.values():
                    avatar = bar.locator(f'.rtkit-avatar[data-user="{person["username"]}"]')
                    expect(avatar).to_have_attribute("data-name", person["name"])
                mine = bar.locator(".rtkit-avatar[data-me]")
                expect(mine).to_have_attribute("data-user", people[name]["username"])
                expect(mine).to_have_attribute(
                    "title", f"{people[name]['name']} (you) · 1 connection"
                )

            # The linked slider: alice moves, bob's follows; then the other way.
            there = move_and_time(alice, bob, "ArrowRight", 5)
            back = move_and_time(bob, alice, "ArrowLeft", 3)
            timings = {"alice -> bob ms": there, "bob -> alice ms": back}
            (ARTIFACTS / "collaboration-latency.json").write_text(json.dumps(timings))
            assert max(there + back) < LATENCY_BUDGET_MS, timings
            expect(alice.locator(".widget-readout")).to_have_text("2")
            expect(bob.locator(".widget-readout")).to_have_text("2")
            for name, page in pages.items():
                page.screenshot(path=str(ARTIFACTS / f"collaboration-{name}.png"))

            # Bob's kernel is busy: alice's moves still reach his slider, as
            # his kernel's rtkit client applies them on its own thread.
            bob.locator(".jp-Notebook .jp-Cell").nth(2).locator(".jp-InputPrompt").click()
            bob.keyboard.press("Shift+Enter")
            expect(bob.get_by_text(KERNEL_BUSY)).to_be_visible(timeout=10_000)
            while_busy = move_and_time(alice, bob, "ArrowRight", 3)
            expect(bob.get_by_text(KERNEL_BUSY)).to_be_visible()  # still inside the sleep
            timings["alice -> bob ms, bob's kernel busy"] = while_busy
            (ARTIFACTS / "collaboration-latency.json").write_text(json.dumps(timings))
            assert max(while_busy) < LATENCY_BUDGET_MS, timings
            bob.screenshot(path=str(ARTIFACTS / "collaboration-bob-busy.png"))

            # Bob closes his browser: its socket closes, and alice's bar
            # shows her alone at once, not after a heartbeat timeout.
            bob.context.close()
            expect(alice.locator(".rtkit-presence")).to_have_attribute(
                "data-members", "1", timeout=5_000
            )
            alice.screenshot(path=str(ARTIFACTS / "collaboration-alone.png"))
        finally:
            for name, page in pages.items():
                if not page.is_closed():
                    page.screenshot(path=str(ARTIFACTS / f"collaboration-{name}-final.png"))
