"""Store URLs as they may be shown: in logs, the status API and errors.

A neutral module (no backend imports), so that every backend and the hub
use the one function; :mod:`rtkit.storage.url` re-exports it.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit

__all__ = ["REDACTED", "redact_url"]

# Query options whose value is a credential (redis-py takes ``password=``).
_SECRET_OPTIONS = frozenset({"password", "pass", "pwd", "secret", "token", "auth"})
REDACTED = "***"


def redact_url(url: str) -> str:
    """``url`` with its credentials masked, for logs, status and errors.

    The user name stays (it says which account is used), the password in the
    authority and any credential-like query option become ``***``:
    ``redis://:pw@host:6379/0`` -> ``redis://:***@host:6379/0``. A string that
    does not parse is masked after its scheme rather than shown.

    >>> redact_url("redis://default:s3cret@127.0.0.1:6379/0?prefix=t:")
    'redis://default:***@127.0.0.1:6379/0?prefix=t:'
    """
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hostport = netloc.rpartition("@")
            user, colon, _ = userinfo.partition(":")
            if colon:
                userinfo = f"{user}:{REDACTED}"
            elif parts.scheme in {"redis", "rediss"}:
                # redis://secret@host: a lone userinfo is the password to some clients.
                userinfo = REDACTED
            netloc = f"{userinfo}@{hostport}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            if any(k.lower() in _SECRET_OPTIONS for k, _ in pairs):
                query = "&".join(
                    f"{k}={REDACTED}" if k.lower() in _SECRET_OPTIONS else urlencode({k: v})
                    for k, v in pairs
                )
    except ValueError:
        scheme = url.split(":", 1)[0] if ":" in url else ""
        return f"{scheme}:{REDACTED}" if scheme.isalnum() else REDACTED
    # Not urlunsplit: it turns sqlite:////abs into sqlite://abs.
    rebuilt = f"{parts.scheme}://{netloc}{parts.path}" if parts.scheme else f"{netloc}{parts.path}"
    if query:
        rebuilt += f"?{query}"
    if parts.fragment:
        rebuilt += f"#{parts.fragment}"
    return rebuilt
