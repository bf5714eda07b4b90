"""The session guard's pure parts: client addresses and the rate-limited log."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from rtkit.hub.transport.guard import RateLimitedLog, client_address


def aiohttp_environ(peer: str, forwarded: str | None = None) -> dict[str, object]:
    environ: dict[str, object] = {"aiohttp.request": SimpleNamespace(remote=peer)}
    if forwarded is not None:
        environ["HTTP_X_FORWARDED_FOR"] = forwarded
    return environ


def test_the_peer_counts_unless_it_is_a_trusted_proxy() -> None:
    trusted = frozenset({"10.0.0.1"})
    # A client cannot pick its own address by sending the header itself.
    assert client_address(aiohttp_environ("192.0.2.7", "203.0.113.9"), trusted) == "192.0.2.7"
    # Behind the proxy: the address it appended (the last one) counts.
    spoofed_then_real = "198.51.100.1, 203.0.113.9"
    assert client_address(aiohttp_environ("10.0.0.1", spoofed_then_real), trusted) == (
        "203.0.113.9"
    )
    assert client_address(aiohttp_environ("10.0.0.1", "not an ip"), trusted) == "10.0.0.1"
    tornado = {"tornado.handler": SimpleNamespace(request=SimpleNamespace(remote_ip="::1"))}
    assert client_address(tornado, frozenset()) == "::1"
    assert client_address({"asgi.scope": {"client": ("127.0.0.3", 5)}}, frozenset()) == (
        "127.0.0.3"
    )


def test_the_log_lets_a_burst_through_per_window(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("rtkit.test.guard")
    limited = RateLimitedLog(logger, burst=3, window=3600)
    with caplog.at_level(logging.INFO, logger=logger.name):
        for n in range(100):
            limited.info("line %d", n)
    assert [r.getMessage() for r in caplog.records] == ["line 0", "line 1", "line 2"]
    assert limited.suppressed == 97
