"""Connection errors that name the cause, against real servers.

"Is it running? Start one with ..." only when nothing answers; an HTTP
refusal of the handshake says what it means (401/403: the token, with the
Jupyter hints; 404: the path, with the right URL when the server is a
Jupyter server); credentials never appear in a message or a log line.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

import rtkit
from rtkit.errors import ConfigurationError, NotConnected, Unauthorized
from rtkit.pytest_plugin import InProcessHub
from tests.jupyter.server import JupyterServer

SECRET_TOKEN = "s3cret-token-value-0123456789"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_nothing_listening_says_start_a_hub() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(NotConnected, match="Is it running") as caught:
        rtkit.connect(url, connect_timeout=5)
    assert "rtkit hub --allow-anonymous" in str(caught.value)


def test_a_wrong_path_on_a_standalone_hub_says_the_path_is_wrong(
    shared_hub: InProcessHub,
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        rtkit.connect(shared_hub.url + "/rtkit", connect_timeout=5)
    message = str(caught.value)
    assert "HTTP 404" in message and "no rtkit hub at that path" in message
    assert "Is it running" not in message


# -- inside Jupyter ---------------------------------------------------------------


@pytest.fixture(scope="module")
def jupyter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    server = JupyterServer(tmp_path_factory.mktemp("jupyter")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def wire_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Everything rtkit and the Socket.IO client log, down to every packet."""
    wire = logging.getLogger("rtkit.client.wire")
    before = wire.level
    wire.setLevel(logging.DEBUG)
    caplog.set_level(logging.DEBUG)
    try:
        yield caplog
    finally:
        wire.setLevel(before)


def _refused(url: str, token: str | None) -> Exception:
    try:
        client = rtkit.connect(url, token=token, connect_timeout=10)
    except Exception as exc:
        return exc
    client.close()
    raise AssertionError(f"{url} connected")


@pytest.mark.jupyter
def test_a_missing_or_wrong_token_is_unauthorized_with_the_jupyter_hints(
    jupyter: JupyterServer, wire_log: pytest.LogCaptureFixture
) -> None:
    for token in (None, "not-the-token-" + SECRET_TOKEN):
        exc = _refused(jupyter.hub_url, token)
        assert isinstance(exc, Unauthorized), exc
        message = str(exc)
        assert "HTTP 403" in message
        for hint in ("RTKIT_TOKEN", "?token=", "token=...", "jupyter server list"):
            assert hint in message
        assert "Is it running" not in message
        assert SECRET_TOKEN not in message
    assert SECRET_TOKEN not in wire_log.text


@pytest.mark.jupyter
@pytest.mark.parametrize(
    "path",
    ["", "lab", "lab/tree/analysis.ipynb", "rtkt"],
    ids=["server-root", "lab", "a-notebook", "typo"],
)
def test_a_jupyter_url_that_is_not_the_hub_names_the_hub_url(
    jupyter: JupyterServer, path: str, wire_log: pytest.LogCaptureFixture
) -> None:
    exc = _refused(jupyter.url + path, jupyter.token)
    assert isinstance(exc, ConfigurationError), exc
    message = str(exc)
    assert f"its rtkit hub is at {jupyter.hub_url}" in message
    assert "Is it running" not in message
    assert jupyter.token not in message
    assert jupyter.token not in wire_log.text


@pytest.mark.jupyter
def test_a_lab_url_with_its_token_never_shows_the_token(
    jupyter: JupyterServer, wire_log: pytest.LogCaptureFixture
) -> None:
    """The reported case: a `/lab?token=...` URL printed the token."""
    exc = _refused(f"{jupyter.url}lab?token={jupyter.token}", None)
    message = str(exc)
    assert isinstance(exc, ConfigurationError), exc
    assert jupyter.hub_url in message and "token=***" in message
    assert jupyter.token not in message
    assert jupyter.token not in repr(exc)
    assert jupyter.token not in wire_log.text


@pytest.mark.jupyter
def test_the_token_in_the_url_works_and_is_never_shown(
    jupyter: JupyterServer, wire_log: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    with rtkit.connect(f"{jupyter.hub_url}?token={jupyter.token}") as hub:
        assert hub.channel("x").publish(1) >= 1
        shown = [repr(hub), hub.url, str(hub.metrics)]
    with rtkit.connect(jupyter.hub_url, token=jupyter.token) as hub:
        hub.channel("x").publish(2)
        shown.append(repr(hub))
    assert all(jupyter.token not in text for text in shown), shown
    # Every packet was logged, the CONNECT with its auth included.
    assert "Sending packet" in wire_log.text
    assert jupyter.token not in wire_log.text
