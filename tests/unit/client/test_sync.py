"""The blocking facade's behaviour that needs no hub."""

from __future__ import annotations

import threading

import pytest

from rtkit.client import sync
from rtkit.errors import ConfigurationError, NotConnected


def io_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("rtkit")]


def test_bad_configuration_fails_before_a_thread_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RTKIT_URL", raising=False)
    before = threading.active_count()
    with pytest.raises(ConfigurationError, match="RTKIT_URL"):
        sync.connect()
    with pytest.raises(ConfigurationError):
        sync.connect("localhost:8765")
    assert threading.active_count() == before


def test_a_failed_connect_leaves_no_thread_behind() -> None:
    with pytest.raises(NotConnected, match="rtkit hub --allow-anonymous"):
        sync.connect("http://127.0.0.1:9", connect_timeout=5)
    for thread in threading.enumerate():
        if thread.name.startswith("rtkit"):
            thread.join(5)
    assert io_threads() == []
