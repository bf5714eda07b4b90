"""Which browser pages may open a connection to the hub (the Origin check).

Browsers send an ``Origin`` header with every websocket handshake and
cross-origin request; other clients (the Python client, scripts) send none and
are not affected. By default only the hub's own origin is allowed, the way
python-engineio's ``cors_allowed_origins=None`` does it, so a page from
another site cannot use a hub on the visitor's machine (an anonymous hub on
127.0.0.1 included). ``--cors-origin`` adds origins; ``'*'`` allows any.

A refused origin gets one log line (per origin, for a bounded number of
origins) naming the option that would allow it: the browser itself is told
nothing more than that the handshake failed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

log = logging.getLogger(__name__)

# Distinct refused origins logged; past this, refusals are counted only.
_MAX_LOGGED = 100


class OriginCheck:
    """python-engineio's ``cors_allowed_origins`` callable: the hub's own
    origin and the ``allowed`` ones.

    >>> check = OriginCheck(["http://localhost:8888"])
    >>> check("http://localhost:8888", {})
    True
    """

    def __init__(self, allowed: Iterable[str] = ()) -> None:
        self.allowed = frozenset(o.rstrip("/").lower() for o in allowed)
        self.refused = 0
        self._logged: set[str] = set()

    def __call__(self, origin: str | None, environ: Mapping[str, Any] | None = None) -> bool:
        if not origin:
            return True  # not a browser: nothing to check
        normalized = origin.rstrip("/").lower()
        if normalized in self.allowed or normalized in _own_origins(environ or {}):
            return True
        self.refused += 1
        if origin not in self._logged and len(self._logged) < _MAX_LOGGED:
            self._logged.add(origin)
            log.warning(
                "refused a browser connection from origin %s (not this hub's own origin); "
                "to allow pages from it, start the hub with --cors-origin %s",
                origin,
                origin,
            )
        return False


def _own_origins(environ: Mapping[str, Any]) -> set[str]:
    """The origins a page served by this hub would send: scheme and Host, and
    the forwarded ones behind a proxy (as python-engineio computes them)."""
    own: set[str] = set()
    host = environ.get("HTTP_HOST")
    scheme = environ.get("wsgi.url_scheme", "http")
    if host:
        own.add(f"{scheme}://{host}".lower())
    fwd_host = environ.get("HTTP_X_FORWARDED_HOST")
    fwd_proto = environ.get("HTTP_X_FORWARDED_PROTO")
    if fwd_host or fwd_proto:
        proto = str(fwd_proto or scheme).split(",")[0].strip()
        forwarded = str(fwd_host or host or "").split(",")[0].strip()
        if forwarded:
            own.add(f"{proto}://{forwarded}".lower())
    return own
