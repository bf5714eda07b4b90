"""The hub's Origin check (no server needed)."""

from __future__ import annotations

import logging

import pytest

from rtkit.config import HubConfig
from rtkit.hub.core import _origin_rule
from rtkit.hub.origins import OriginCheck

ENV = {"HTTP_HOST": "127.0.0.1:8765", "wsgi.url_scheme": "http"}


def test_own_origin_and_no_origin_pass_others_do_not() -> None:
    check = OriginCheck()
    assert check(None, ENV) and check("", ENV)
    assert check("http://127.0.0.1:8765", ENV)
    assert not check("http://127.0.0.1:8888", ENV)
    assert not check("https://127.0.0.1:8765", ENV)  # another scheme, another origin
    behind_proxy = {
        **ENV,
        "HTTP_X_FORWARDED_HOST": "hub.example",
        "HTTP_X_FORWARDED_PROTO": "https",
    }
    assert check("https://hub.example", behind_proxy)


def test_allowed_origins_pass_and_refusals_are_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    check = OriginCheck(["http://localhost:8888/"])
    assert check("http://LOCALHOST:8888", ENV)
    with caplog.at_level(logging.WARNING, logger="rtkit.hub.origins"):
        for _ in range(5):
            assert not check("http://evil.example", ENV)
    assert check.refused == 5
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "--cors-origin http://evil.example" in lines[0]


def test_the_rule_engineio_gets() -> None:
    anon = {"allow_anonymous": True}
    assert isinstance(_origin_rule(HubConfig(**anon)), OriginCheck)
    assert _origin_rule(HubConfig(cors_allowed_origins="*", **anon)) == "*"
    assert _origin_rule(HubConfig(cors_allowed_origins=("a", "*"), **anon)) == "*"
    assert _origin_rule(HubConfig(check_origin=False, **anon)) == []
