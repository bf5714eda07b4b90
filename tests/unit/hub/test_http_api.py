"""The HTTP API's pieces that need no server: the key option, the status
map, the OpenAPI document."""

from __future__ import annotations

import pytest
from openapi_spec_validator import validate as validate_openapi

from rtkit.cli import build_parser, hub_config
from rtkit.config import HubConfig
from rtkit.errors import ConfigurationError
from rtkit.hub.http_api import STATUS_BY_CODE
from rtkit.hub.openapi import openapi_document
from rtkit.protocol import ERROR_CODES

KEY = "a-long-enough-api-key-0123"


def test_every_wire_error_code_has_an_http_status() -> None:
    assert set(STATUS_BY_CODE) == set(ERROR_CODES)
    document = openapi_document()
    codes = document["components"]["schemas"]["Error"]["properties"]["error"]["properties"]
    assert set(codes["code"]["enum"]) == set(ERROR_CODES)


def test_the_document_is_openapi_3_1_with_the_mount_point_given() -> None:
    document = openapi_document("/user/ada/rtkit/api")
    validate_openapi(document)
    assert document["servers"] == [{"url": "/user/ada/rtkit/api"}]


def test_the_api_key_is_checked_and_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="at least 16 characters"):
        HubConfig(allow_anonymous=True, api_key="short")
    config = HubConfig(allow_anonymous=True, api_key=KEY)
    assert KEY not in repr(config)
    monkeypatch.setenv("RTKIT_API_KEY", KEY)
    args = build_parser().parse_args(["hub", "--allow-anonymous"])
    assert hub_config(args).api_key == KEY
    args = build_parser().parse_args(
        ["hub", "--allow-anonymous", "--api-key", "other-key-0123456789"]
    )
    assert hub_config(args).api_key == "other-key-0123456789"
