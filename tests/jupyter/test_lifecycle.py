"""Installing, restarting and stopping the extension."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest

import rtkit.aio

from .server import JupyterServer

pytestmark = [pytest.mark.jupyter, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


async def test_history_survives_a_server_restart(jupyter_factory: Any) -> None:
    server: JupyterServer = jupyter_factory().start()
    async with await rtkit.aio.connect(server.hub_url, token=server.token) as hub:
        for n in range(3):
            await hub.channel("restart.history").publish({"n": n})
    assert server.stop() == 0, server.output()
    await server.wait_for_log("sqlite store", "closed")
    server.start()
    async with await rtkit.aio.connect(server.hub_url, token=server.token) as hub:
        channel = hub.channel("restart.history")
        history = await channel.history()
        assert [m.data for m in history] == [{"n": 0}, {"n": 1}, {"n": 2}]
        assert [m.seq for m in history] == [1, 2, 3]
        assert await channel.publish({"n": 3}) == 4


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """rtkit's wheel installed into a fresh environment; its python."""
    tmp_path = tmp_path_factory.mktemp("wheel")
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(dist), str(REPO)],
        check=True,
        timeout=300,
    )  # fmt: skip
    (wheel,) = dist.glob("rtkit-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # jupyter_server and the other dependencies come from this environment
    # (a path line, so that its editable rtkit stays out of sight).
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
         "--no-index", "-q", str(wheel)],
        check=True,
        timeout=300,
    )  # fmt: skip
    return python


def test_pip_install_enables_the_extension(installed_wheel: Path, tmp_path: Path) -> None:
    """A wheel installed into a fresh environment: nothing else to do."""
    python, venv = installed_wheel, installed_wheel.parents[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER")}
    env["JUPYTER_CONFIG_DIR"] = str(tmp_path / "config")
    result = subprocess.run(
        [str(python), "-m", "jupyter_server", "extension", "list"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    text = result.stdout + result.stderr
    where = subprocess.run(
        [str(python), "-c", "import rtkit_jupyter; print(rtkit_jupyter.__file__)"],
        capture_output=True, text=True, env=env, check=True,
    ).stdout  # fmt: skip
    assert str(venv) in where, where
    assert "rtkit_jupyter \x1b[32menabled" in text or "rtkit_jupyter enabled" in text, text
    assert f"rtkit_jupyter {rtkit.__version__} \x1b[32mOK" in text or (
        f"rtkit_jupyter {rtkit.__version__} OK" in text
    ), text


def test_pip_install_leaves_other_test_runs_alone(installed_wheel: Path, tmp_path: Path) -> None:
    """Installing rtkit adds no pytest plugin to another project's run; the
    project turns it on with ``-p rtkit.pytest_plugin``."""
    (tmp_path / "test_other.py").write_text("def test_nothing():\n    pass\n")

    def fixtures(*args: str) -> str:
        return subprocess.run(
            [str(installed_wheel), "-m", "pytest", "--fixtures", "-p", "no:cacheprovider", *args],
            cwd=tmp_path, capture_output=True, text=True, timeout=120, check=True,
        ).stdout  # fmt: skip

    assert "rt_hub" not in fixtures()
    assert "rt_hub_factory" in fixtures("-p", "rtkit.pytest_plugin")
