"""Brokers for the bridge tests: Mosquitto and NATS (with JetStream) started
by the test on a free loopback port, so nothing depends on system services,
and restartable on the same port."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from rtkit._process import (
    find_program,
    free_port,
    kill_group,
    start_group,
    stop_group,
    wait_for_port,
)


def _binary(name: str) -> str:
    path = find_program(name)
    if path is None:
        # scripts/setup-test-machine installs it (make test); only a machine
        # set up some other way lacks it.
        pytest.skip(f"{name} is not installed (scripts/setup-test-machine installs it)")
    return path


class Broker:
    """A broker process on ``port``; :meth:`restart` keeps the port."""

    def __init__(self, argv: list[str], port: int) -> None:
        self.argv, self.port = argv, port
        self.proc: subprocess.Popen[Any] | None = None

    def start(self) -> Broker:
        self.proc = start_group(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc, timeout=5)
            self.proc = None

    def kill(self) -> None:
        if self.proc is not None:
            kill_group(self.proc)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


def mosquitto() -> Broker:
    port = free_port()
    return Broker([_binary("mosquitto"), "-p", str(port)], port)


def nats_server(store_dir: Path) -> Broker:
    port = free_port()
    argv = [
        _binary("nats-server"),
        "-js",
        "-a",
        "127.0.0.1",
        "-p",
        str(port),
        "-sd",
        str(store_dir),
    ]
    return Broker(argv, port)
