from __future__ import annotations

import pytest

from rtkit.client._url import jupyter_hub_url, redact, split_url
from rtkit.errors import ConfigurationError


@pytest.mark.parametrize(
    ("url", "origin", "path"),
    [
        ("http://127.0.0.1:8765", "http://127.0.0.1:8765", "socket.io"),
        ("http://127.0.0.1:8765/", "http://127.0.0.1:8765", "socket.io"),
        ("  http://127.0.0.1:8765  ", "http://127.0.0.1:8765", "socket.io"),
        ("https://hub.example", "https://hub.example", "socket.io"),
        ("ws://localhost:8765", "ws://localhost:8765", "socket.io"),
        ("wss://hub.example:443", "wss://hub.example:443", "socket.io"),
        ("HTTP://Hub.Example:8765", "http://Hub.Example:8765", "socket.io"),
        # a base path, as inside jupyter-server: {base_url}rtkit/socket.io/
        ("http://host/base/rtkit", "http://host", "base/rtkit/socket.io"),
        ("http://host/base/rtkit/", "http://host", "base/rtkit/socket.io"),
        ("http://host:8888/user/ada/rtkit", "http://host:8888", "user/ada/rtkit/socket.io"),
        ("http://host//double//slash/", "http://host", "double/slash/socket.io"),
        # an explicit socket.io segment is not doubled
        ("http://host/socket.io", "http://host", "socket.io"),
        ("http://host/socket.io/", "http://host", "socket.io"),
        ("http://host/base/rtkit/socket.io/", "http://host", "base/rtkit/socket.io"),
        # the query string travels with the origin (Engine.IO keeps it)
        ("http://host/base?tenant=a", "http://host?tenant=a", "base/socket.io"),
        # IPv6 and credentials stay in the netloc
        ("http://[::1]:8765", "http://[::1]:8765", "socket.io"),
        ("http://u:p@host:1/x", "http://u:p@host:1", "x/socket.io"),
    ],
)
def test_split_url(url: str, origin: str, path: str) -> None:
    assert split_url(url) == (origin, path)


@pytest.mark.parametrize(
    ("url", "hint"),
    [
        ("", "RTKIT_URL"),
        ("   ", "RTKIT_URL"),
        ("127.0.0.1:8765", "http://"),
        ("localhost:8765", "http://"),
        ("ftp://host", "http://"),
        ("http://", "no host"),
        ("http:///path", "no host"),
        ("http://host:notaport", "port"),
        ("http://host:99999", "(?i)port"),
    ],
)
def test_split_url_rejects(url: str, hint: str) -> None:
    with pytest.raises(ConfigurationError, match=hint):
        split_url(url)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("http://h:8888/lab?token=abc123&x=1", "http://h:8888/lab?token=***&x=1"),
        ("ws://h/socket.io/?EIO=4&token=abc123&t=1", "ws://h/socket.io/?EIO=4&token=***&t=1"),
        ('0/rtkit,{"token":"eyJhbGciOi.x.y"}', '0/rtkit,{"token":"***"}'),
        ("{'Authorization': 'Bearer eyJhbGciOi.x.y'}", "{'Authorization': 'Bearer ***'}"),
        ("Authorization: token 0123456789abcdef", "Authorization: token ***"),
        ("no secrets here", "no secrets here"),
    ],
)
def test_redact_masks_credentials(text: str, shown: str) -> None:
    assert redact(text) == shown


def test_redact_masks_a_known_secret_anywhere() -> None:
    assert redact("refused s3cret-value!", "s3cret-value") == "refused ***!"


@pytest.mark.parametrize(
    ("url", "hub"),
    [
        ("http://127.0.0.1:8888/lab?token=x", "http://127.0.0.1:8888/rtkit"),
        ("http://h:8888/user/ada/lab/tree/a.ipynb", "http://h:8888/user/ada/rtkit"),
        ("http://h:8888/user/ada/tree", "http://h:8888/user/ada/rtkit"),
        ("http://h:8888/notebooks/a.ipynb", "http://h:8888/rtkit"),
        ("http://h:8888/rtkit", None),
        ("http://h:8765", None),
    ],
)
def test_a_jupyter_page_url_names_the_hub_url(url: str, hub: str | None) -> None:
    assert jupyter_hub_url(url) == hub
