"""Hub URL → the two things python-socketio wants: an origin and a path.

The hub may sit under a base path (inside jupyter-server it is
``{base_url}rtkit/socket.io/``), but Engine.IO only takes the scheme, host and
query string from the URL it is given and reads the path from a separate
``socketio_path`` argument. Users give one URL; this module splits it.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

from ..errors import ConfigurationError
from ..protocol import SOCKETIO_PATH

__all__ = ["jupyter_hub_url", "redact", "split_url"]

_SCHEMES = frozenset({"http", "https", "ws", "wss"})
# Query parameters that carry credentials (Jupyter's ?token=, and kin).
_SECRET_PARAM = re.compile(
    r"(?i)([?&;](?:token|access_token|auth|password|secret|key)=)[^&#\s'\"]*"
)
# The same names as JSON or repr keys: the Socket.IO CONNECT packet's auth.
_SECRET_KEY = re.compile(
    r"""(?i)(["'](?:token|access_token|password|secret)["']\s*:\s*["'])[^"']*"""
)
_BEARER = re.compile(r"(?i)\b(bearer|token)(\s+)[A-Za-z0-9._~+/=-]{8,}")
# Path segments of Jupyter's own pages and APIs: a URL with one of them
# points at the server, not at its hub.
_JUPYTER_PAGES = frozenset(
    {"lab", "tree", "notebooks", "edit", "doc", "terminals", "consoles", "api", "login",
     "logout", "nbclassic", "voila", "files", "view"}
)  # fmt: skip


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


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with credentials masked: ``token=`` (and kin) query values,
    ``Bearer``/``token`` header values, and each of ``secrets`` wherever it
    appears.

    >>> redact("http://h:8888/lab?token=abc&x=1")
    'http://h:8888/lab?token=***&x=1'
    """
    text = _SECRET_PARAM.sub(r"\1***", text)
    text = _SECRET_KEY.sub(r"\1***", text)
    text = _BEARER.sub(r"\1\2***", text)
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def jupyter_hub_url(url: str, *, is_jupyter: bool = False) -> str | None:
    """The rtkit hub URL of the Jupyter server ``url`` points into, when it
    names one of Jupyter's pages (``.../lab?token=...``), or any URL not
    ending in ``/rtkit`` when ``is_jupyter`` (the server said it is one);
    else None. The query (a token) is left out.

    >>> jupyter_hub_url("http://127.0.0.1:8888/user/ada/lab/tree/a.ipynb?token=x")
    'http://127.0.0.1:8888/user/ada/rtkit'
    """
    parts = urlsplit(url.strip())
    segments = [s for s in parts.path.split("/") if s]
    if segments and segments[-1] == SOCKETIO_PATH:
        segments.pop()
    base: list[str] | None = None
    for index, segment in enumerate(segments):
        if segment in _JUPYTER_PAGES:
            base = segments[:index]
            break
    if base is None:
        if not is_jupyter or (segments and segments[-1] == "rtkit"):
            return None
        base = segments
    return urlunsplit((parts.scheme, parts.netloc, "/".join(["", *base, "rtkit"]), "", ""))
