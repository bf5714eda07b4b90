"""scripts/setup-test-machine: what ``make test`` needs from the machine."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "setup-test-machine"


def as_non_root(cmd: list[str]) -> list[str]:
    """``cmd`` as the unprivileged user nobody when the tests run as root."""
    if os.geteuid() != 0:
        return cmd
    if shutil.which("setpriv") is None:
        pytest.skip("running as root and setpriv (util-linux) is missing")
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]


def test_a_non_root_user_missing_chromium_is_told_the_command_before_any_test() -> None:
    env = {**os.environ, "CHROMIUM": "/nonexistent/chromium"}
    # The script comes on stdin: a clone under a private directory is not
    # readable by nobody.
    done = subprocess.run(
        as_non_root(["bash", "-s"]), input=SCRIPT.read_text(), env=env, cwd="/",
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "lacks: chromium" in done.stderr
    assert "sudo apt-get update && sudo apt-get install -y chromium" in done.stderr
