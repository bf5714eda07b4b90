"""Client pieces that need no hub: configuration, ack and refusal mapping, sizes."""

from __future__ import annotations

import pytest

from rtkit.client import aio
from rtkit.errors import (
    AckTimeout,
    BadRequest,
    ClientClosed,
    ConfigurationError,
    InternalError,
    NotConnected,
    RateLimited,
    TooLarge,
    Unauthorized,
    Unavailable,
)


def test_url_and_token_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTKIT_URL", "http://hub.example:9000/base/rtkit")
    monkeypatch.setenv("RTKIT_TOKEN", "t0k")
    client = aio.Client()
    assert client.url == "http://hub.example:9000/base/rtkit"
    assert client._auth() == {"token": "t0k"}
    assert (client._origin, client._path) == ("http://hub.example:9000", "base/rtkit/socket.io")


def test_explicit_arguments_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTKIT_URL", "http://env:1")
    monkeypatch.setenv("RTKIT_TOKEN", "env-token")
    client = aio.Client("http://arg:2", "arg-token")
    assert client.url == "http://arg:2"
    assert client._auth() == {"token": "arg-token"}


def test_no_token_sends_an_empty_auth(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RTKIT_TOKEN", raising=False)
    assert aio.Client("http://127.0.0.1:8765")._auth() == {}
    assert aio.Client("http://127.0.0.1:8765", "")._auth() == {}


def test_missing_url_says_how_to_start_a_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RTKIT_URL", raising=False)
    with pytest.raises(ConfigurationError, match="rtkit hub --allow-anonymous") as info:
        aio.Client()
    assert "RTKIT_URL" in str(info.value)


@pytest.mark.parametrize(
    "options",
    [
        {"ack_timeout": 0},
        {"connect_timeout": -1},
        {"max_offline_queue": 0},
        {"max_in_flight": 0},
        {"reconnect_delay": 0},
        {"reconnect_delay": 5, "reconnect_delay_max": 1},
    ],
)
def test_bad_options_are_refused(options: aio.ConnectOptions) -> None:
    with pytest.raises(ConfigurationError):
        aio.Client("http://127.0.0.1:8765", **options)


def test_ok_ack_is_returned() -> None:
    ack = {"ok": True, "seq": 3, "ts": 1.0}
    assert aio._check_ack("publish", (ack,)) is ack


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        ("rate_limited", RateLimited),
        ("too_large", TooLarge),
        ("bad_request", BadRequest),
        ("unauthorized", Unauthorized),
        ("unavailable", Unavailable),
        ("something_new", InternalError),
    ],
)
def test_error_acks_raise_the_mapped_exception(code: str, cls: type[Exception]) -> None:
    ack = {"ok": False, "error": {"code": code, "message": "why"}}
    with pytest.raises(cls, match="why"):
        aio._check_ack("publish", (ack,))


@pytest.mark.parametrize("args", [(), (None,), ("ok",), ({"ok": False},), ({"ok": 1},)])
def test_malformed_acks_are_internal_errors(args: tuple[object, ...]) -> None:
    with pytest.raises(InternalError):
        aio._check_ack("publish", args)


def test_refusal_with_a_code_maps_to_its_exception() -> None:
    client = aio.Client("http://127.0.0.1:8765")
    err = client._connect_failure(
        [{"code": "unauthorized", "message": "token expired"}], ConnectionError("refused")
    )
    assert isinstance(err, Unauthorized) and err.message == "token expired"
    err = client._connect_failure(
        [{"code": "unavailable", "message": "shutting down"}], ConnectionError()
    )
    assert isinstance(err, Unavailable)


def test_refusal_nested_by_python_socketio_is_understood() -> None:
    client = aio.Client("http://127.0.0.1:8765")
    data = {"message": "no", "data": {"code": "unauthorized", "message": "bad token"}}
    err = client._connect_failure([data], ConnectionError())
    assert isinstance(err, Unauthorized) and err.message == "bad token"


def test_refusal_without_a_code_is_an_authentication_refusal() -> None:
    client = aio.Client("http://127.0.0.1:8765")
    err = client._connect_failure([{"message": "Connection rejected by server"}], ConnectionError())
    assert isinstance(err, Unauthorized)


def test_unreachable_hub_is_not_connected_with_a_hint() -> None:
    client = aio.Client("http://127.0.0.1:8765")
    err = client._connect_failure(["Connection error"], ConnectionError("Connection error"))
    assert isinstance(err, NotConnected)
    assert "http://127.0.0.1:8765" in str(err) and "rtkit hub --allow-anonymous" in str(err)
    err = client._connect_failure([], TimeoutError())
    assert isinstance(err, NotConnected) and "no answer within" in str(err)


def test_encoded_size() -> None:
    assert aio._encoded_size(b"x" * 10) == 10
    assert aio._encoded_size({"a": [1, 2]}) == len('{"a":[1,2]}')
    assert aio._encoded_size({2, 1}) == len("[1,2]")  # a set goes as a sorted list
    # The hub stores JSON or bytes, not bytes inside JSON, nor integers past
    # 64 bits: both are refused before they are queued (tests/unit/client/test_data.py).
    with pytest.raises(TypeError, match="base64"):
        aio._encoded_size({"blob": b"x" * 1000})
    with pytest.raises(TypeError, match="64 bits"):
        aio._encoded_size(2**70)


def test_channels_are_cached_and_validated() -> None:
    client = aio.Client("http://127.0.0.1:8765")
    assert client.channel("prices") is client.channel("prices")
    with pytest.raises(BadRequest):
        client.channel("no spaces")


def test_unknown_state_event_is_refused() -> None:
    client = aio.Client("http://127.0.0.1:8765")
    with pytest.raises(ConfigurationError, match="connect"):
        client.on("connected", print)  # type: ignore[arg-type]


async def test_using_a_client_before_open_or_after_close() -> None:
    client = aio.Client("http://127.0.0.1:8765")
    with pytest.raises(RuntimeError, match="not open"):
        await client.channel("c").publish(1)
    await client.close()
    await client.close()  # idempotent
    with pytest.raises(ClientClosed):
        await client.channel("c").publish(1)
    with pytest.raises(ClientClosed):
        await client.channel("c").subscribe(print)
    with pytest.raises(RuntimeError):
        await client.open()


async def test_connect_to_nothing_fails_fast() -> None:
    # port 9 (discard) on loopback: nothing listens there in a test environment
    with pytest.raises(NotConnected, match="cannot connect"):
        await aio.connect("http://127.0.0.1:9", connect_timeout=5)


def test_error_types_keep_their_builtin_bases() -> None:
    assert issubclass(AckTimeout, TimeoutError)
    assert issubclass(NotConnected, ConnectionError)
