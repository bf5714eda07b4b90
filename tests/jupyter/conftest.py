"""Fixtures: real jupyter servers with rtkit's extension, under a base_url."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.brokers import Broker, mosquitto

from .server import JupyterServer


@pytest.fixture(scope="module")
def jupyter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    """One server for a module's tests (starting one takes a few seconds)."""
    server = JupyterServer(tmp_path_factory.mktemp("jupyter")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def jupyter_factory(tmp_path: Path) -> Iterator[type[JupyterServer]]:
    """``jupyter_factory(home, ...)``-style: servers stopped after the test."""
    started: list[JupyterServer] = []

    def make(**kwargs: object) -> JupyterServer:
        server = JupyterServer(tmp_path / f"server{len(started)}", **kwargs)  # type: ignore[arg-type]
        started.append(server)
        return server

    yield make  # type: ignore[misc]
    for server in started:
        server.stop()


@pytest.fixture
def mqtt_broker() -> Iterator[Broker]:
    """A private mosquitto for the test (tests/integration/brokers.py)."""
    broker = mosquitto().start()
    try:
        yield broker
    finally:
        broker.stop()
