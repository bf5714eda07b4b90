"""The store a URL names, and the query options every backend understands.

``store_from_url("memory://")``, ``store_from_url("sqlite:///path/to.db")``,
``store_from_url("redis://127.0.0.1:6379/0?prefix=team:")`` (shared by many
hubs). Query parameters set retention per channel:
``?max_messages=10000&max_age=3600&max_bytes=67108864``; ``memory`` also
takes ``max_total_bytes=`` (all channels together), ``sqlite`` takes
``synchronous=normal|full``, ``redis`` takes ``prefix=`` and passes the rest
to redis-py.

Backends are imported only when their URL is used, so that naming a memory
store never imports sqlite3 or redis.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlencode, urlsplit

from ..errors import ConfigurationError
from .base import Retention, Store
from .redact import redact_url

__all__ = ["parse_retention", "redact_url", "store_from_url"]


def store_from_url(url: str) -> Store:
    """Build (but do not open) the store a URL names."""
    parts = urlsplit(url)
    params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    retention = parse_retention(params, url)
    if parts.scheme == "memory":
        from .memory import MemoryStore
        from .memory.channels import MAX_TOTAL_BYTES

        total = _int_option(params, "max_total_bytes", MAX_TOTAL_BYTES, url)
        _no_extra(params, url)
        return MemoryStore(retention=retention, max_total_bytes=total)
    if parts.scheme == "sqlite":
        from .sqlite import SQLiteStore

        # sqlite:///relative.db and sqlite:////absolute/path.db, as SQLAlchemy has it
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        if parts.netloc or not path:
            raise ConfigurationError(
                f"bad SQLite URL {redact_url(url)!r}: use sqlite:///relative/path.db or sqlite:////abs/path.db"
            )
        synchronous = params.pop("synchronous", "normal").upper()
        if synchronous not in {"NORMAL", "FULL"}:
            raise ConfigurationError("sqlite synchronous= must be normal or full")
        _no_extra(params, url)
        return SQLiteStore(path, retention=retention, synchronous=synchronous)
    if parts.scheme in {"redis", "rediss"}:
        return _redis_store(url, params, retention)
    raise ConfigurationError(
        f"unknown store URL {redact_url(url)!r}: use memory://, sqlite:///path.db or redis://host:port/0"
    )


def parse_retention(params: dict[str, str], url: str) -> Retention:
    """Take ``max_messages``, ``max_age`` and ``max_bytes`` out of ``params``
    (defaults where absent)."""
    default = Retention()
    try:
        return Retention(
            max_messages=int(params.pop("max_messages", default.max_messages)),
            max_age=float(params.pop("max_age", default.max_age)),
            max_bytes=int(params.pop("max_bytes", default.max_bytes)),
        )
    except ValueError as exc:
        raise ConfigurationError(f"bad retention in store URL {redact_url(url)!r}: {exc}") from None


def _redis_store(url: str, params: dict[str, str], retention: Retention) -> Store:
    """``redis://host:port/db?prefix=team:`` (other query options go to redis-py)."""
    from .redis import RedisStore, import_redis

    import_redis()  # fail here, with the install hint, rather than at open()
    prefix = params.pop("prefix", "rtkit:")
    if not prefix:
        raise ConfigurationError("redis prefix= must not be empty")
    base = url.split("?", 1)[0]
    if params:
        base += "?" + urlencode(params)
        params.clear()
    return RedisStore(base, prefix=prefix, retention=retention)


def _int_option(params: dict[str, str], name: str, default: int, url: str) -> int:
    try:
        value = int(params.pop(name, default))
    except ValueError:
        raise ConfigurationError(f"bad {name} in store URL {url!r}: not an integer") from None
    if value < 1:
        raise ConfigurationError(f"{name} in store URL {url!r} must be >= 1")
    return value


def _no_extra(params: dict[str, str], url: str) -> None:
    if params:
        raise ConfigurationError(
            f"unknown option(s) {sorted(params)} in store URL {redact_url(url)!r}"
        )
