"""JupyterLab in headless Chromium, for the browser tests.

Chromium is Debian's package (/usr/bin/chromium); Playwright only drives it
and never downloads a browser. Screenshots land in test-artifacts/.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nbformat
import pytest

from .server import JupyterServer

REPO = Path(__file__).resolve().parents[2]
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
KERNEL_IDLE = "Python 3 (ipykernel) | Idle"
KERNEL_BUSY = "Python 3 (ipykernel) | Busy"


def write_notebook(server: JupyterServer, name: str, cells: list[str] | Any) -> Path:
    """A notebook in the server's root: a notebook node as it is, or a list
    of code cell sources for the python3 kernel."""
    if isinstance(cells, list):
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)"}
    else:
        nb = cells
    path = server.root / name
    nbformat.write(nb, path)
    return path


@contextmanager
def running_lab(
    home: Path,
    notebooks: dict[str, Any],
    env: dict[str, str] | None = None,
    config: dict[str, Any] | None = None,
) -> Iterator[JupyterServer]:
    """A Jupyter server with ``notebooks`` ({file name: what write_notebook takes}) and a
    quiet JupyterLab: the notebook's kernel starts without a dialog, and
    there is no news pop-up and no request beyond this server. ``env`` is
    added to the server's environment (its kernels inherit it); ``config``
    is its jupyter_server_config.json (``{"RtkitExtension": {...}}``)."""
    server = JupyterServer(home, env=env)
    if config is not None:
        (server.home / "config" / "jupyter_server_config.json").write_text(json.dumps(config))
    for name, cells in notebooks.items():
        write_notebook(server, name, cells)
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


@contextmanager
def chromium() -> Iterator[Any]:
    """Headless Chromium (a Playwright Browser), closed on exit."""
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def open_notebook(page: Any, server: JupyterServer, name: str, workspace: str = "") -> Any:
    """Open notebook ``name`` (logging in with the token), wait for its
    kernel, and leave the first cell selected in command mode, where each
    Shift+Enter runs a cell and moves on. Returns the cells' locator.

    A ``workspace`` of its own keeps other browsers' open tabs out of this
    page's layout."""
    from playwright.sync_api import expect

    prefix = f"workspaces/{workspace}/" if workspace else ""
    page.goto(f"{server.url}lab/{prefix}tree/{name}?token={server.token}")
    cells = page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell")
    expect(cells.first).to_be_visible(timeout=60_000)
    # A cell run before the kernel is up is not queued, just skipped.
    expect(page.get_by_text(KERNEL_IDLE)).to_be_visible(timeout=60_000)
    cells.first.click()
    page.keyboard.press("Escape")
    return cells


def wait_for(check: Any, what: str, timeout: float = 30.0) -> Any:
    """``check()``'s first truthy value, polled every 0.1 s (a browser's
    state, read through Playwright); AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
