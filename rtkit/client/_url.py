"""Hub URL → the two things python-socketio wants: an origin and a path.

The hub may sit under a base path (inside jupyter-server it is
``{base_url}rtkit/socket.io/``), but Engine.IO only takes the scheme, host and
query string from the URL it is given and reads the path from a separate
``socketio_path`` argument. Users give one URL; this module splits it.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from ..errors import ConfigurationError
from ..protocol import SOCKETIO_PATH

__all__ = ["split_url"]

_SCHEMES = frozenset({"http", "https", "ws", "wss"})


def split_url(url: str) -> tuple[str, str]:
    """Split a hub URL into ``(origin, socketio_path)``.

    The path of the URL is the hub's base path; a trailing ``socket.io``
    segment is accepted and not doubled. The query string stays on the origin
    (Engine.IO forwards it on every request).

    >>> split_url("http://127.0.0.1:8765")
    ('http://127.0.0.1:8765', 'socket.io')
    >>> split_url("https://hub.example/user/ada/rtkit/")
    ('https://hub.example', 'user/ada/rtkit/socket.io')
    """
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError(
            "the hub URL is empty: pass url='http://127.0.0.1:8765' or set RTKIT_URL"
        )
    text = url.strip()
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise ConfigurationError(
            f"hub URL {text!r}: expected http://, https://, ws:// or wss://, "
            "for example http://127.0.0.1:8765"
        )
    try:
        # .port parses lazily and raises ValueError for "host:abc" or "host:99999".
        parts.port  # noqa: B018
    except ValueError as exc:
        raise ConfigurationError(f"hub URL {text!r}: {exc}") from None
    if not parts.hostname:
        raise ConfigurationError(f"hub URL {text!r} has no host, e.g. http://127.0.0.1:8765")
    segments = [s for s in parts.path.split("/") if s]
    if segments and segments[-1] == SOCKETIO_PATH:
        segments.pop()
    socketio_path = "/".join([*segments, SOCKETIO_PATH])
    origin = urlunsplit((scheme, parts.netloc, "", parts.query, ""))
    return origin, socketio_path
