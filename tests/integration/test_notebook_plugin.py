"""rtkit's pytest plugin under nbval: the services notebooks expect are there.

A notebook run with ``pytest -p rtkit.pytest_plugin --nbval`` finds an MQTT
broker at RTKIT_MQTT: when nothing answers there, the plugin starts a private
mosquitto for the session and stops it when the session ends.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

from rtkit._process import find_program, free_port, port_open
from rtkit.bridges.mqtt import broker_address

pytest.importorskip("nbval")
pytest.importorskip("aiomqtt")

# What the notebook does: a message through the broker RTKIT_MQTT names, the
# way the bridge tutorial reaches it, and where that broker was.
ROUNDTRIP = """\
import asyncio, os
from pathlib import Path

import aiomqtt
from rtkit.bridges.mqtt import broker_address

host, port = broker_address()
Path(os.environ["BROKER_SEEN"]).write_text(f"{host}:{port}")


async def roundtrip():
    async with aiomqtt.Client(host, port) as client:
        await client.subscribe("rtkit-plugin-test/echo", qos=1)
        await client.publish("rtkit-plugin-test/echo", b"hello", qos=1)
        async for message in client.messages:
            return message.payload


print(await asyncio.wait_for(roundtrip(), 10))
"""


def run_nbval(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``pytest -p rtkit.pytest_plugin --nbval`` on the round-trip notebook,
    in ``tmp_path``, with ``env`` added to the environment."""
    cell = new_code_cell(ROUNDTRIP, execution_count=1)
    cell.outputs = [new_output("stream", name="stdout", text="b'hello'\n")]
    notebook = tmp_path / "roundtrip.ipynb"
    nbformat.write(new_notebook(cells=[cell]), notebook)
    # A hub is not what this notebook needs: with RTKIT_URL set the plugin starts none.
    env = {**os.environ, "RTKIT_URL": "http://127.0.0.1:9", **env}
    plugins = ["-p", "no:cacheprovider", "-p", "no:asyncio", "-p", "rtkit.pytest_plugin"]
    return subprocess.run(
        [sys.executable, "-m", "pytest", *plugins, "--nbval", notebook.name],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )


def test_a_closed_rtkit_mqtt_gets_a_private_mosquitto_for_the_session(tmp_path: Path) -> None:
    if find_program("mosquitto") is None:
        pytest.skip("mosquitto is not installed (scripts/setup-test-machine installs it)")
    closed = f"127.0.0.1:{free_port()}"
    seen = tmp_path / "broker.txt"
    run = run_nbval(tmp_path, RTKIT_MQTT=closed, BROKER_SEEN=str(seen))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed" in run.stdout
    used = seen.read_text()
    assert used != closed  # the notebook was pointed at the plugin's broker
    host, port = broker_address(used)
    assert host == "127.0.0.1"
    assert not port_open(host, port), "the private mosquitto outlived the session"


def test_a_malformed_rtkit_mqtt_stops_the_run_with_its_reason(tmp_path: Path) -> None:
    run = run_nbval(tmp_path, RTKIT_MQTT="broker:mqtt", BROKER_SEEN=str(tmp_path / "x"))
    assert run.returncode == pytest.ExitCode.USAGE_ERROR, run.stdout + run.stderr
    assert "RTKIT_MQTT: the port in 'broker:mqtt' is not 1-65535" in run.stdout + run.stderr
    assert "INTERNALERROR" not in run.stdout + run.stderr
