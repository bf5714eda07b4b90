"""Every exception rtkit raises, as one tree.

Each wire error code (``ack["error"]["code"]``) maps to exactly one class, so
``except rtkit.RateLimited`` catches what the hub answered with
``rate_limited``::

    RtkitError
    ├── ConfigurationError (ValueError)   bad URL, missing token, bad option
    ├── NotConnected (ConnectionError)    the hub cannot be reached right now
    ├── AckTimeout (TimeoutError)         the hub did not answer in time
    ├── OfflineQueueFull                  too many publishes queued while offline
    ├── ClientClosed                      the client was closed
    ├── UnsupportedData (TypeError)       a value rtkit cannot publish (names the fix)
    └── HubError                          the hub answered {"ok": false, ...}
        ├── BadRequest (ValueError)           bad_request
        ├── Unauthorized (PermissionError)    unauthorized
        ├── Forbidden (PermissionError)       forbidden
        ├── NotFound (LookupError)            not_found
        ├── TooLarge (ValueError)             too_large
        ├── RateLimited                       rate_limited
        ├── Unavailable                       unavailable
        └── InternalError                     internal
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AckTimeout",
    "BadRequest",
    "ClientClosed",
    "ConfigurationError",
    "Forbidden",
    "HubError",
    "InternalError",
    "NotConnected",
    "NotFound",
    "OfflineQueueFull",
    "RateLimited",
    "RtkitError",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
    "UnsupportedData",
    "error_for_code",
]


class RtkitError(Exception):
    """Base class of every rtkit exception."""


class ConfigurationError(RtkitError, ValueError):
    """A setting, URL or argument cannot work (the message says how to fix it)."""


class NotConnected(RtkitError, ConnectionError):
    """The hub cannot be reached right now."""


class AckTimeout(RtkitError, TimeoutError):
    """The hub did not acknowledge a request in time."""


class OfflineQueueFull(RtkitError):
    """Publishing while offline filled the bounded offline queue."""


class ClientClosed(RtkitError):
    """The client was closed; create a new one with ``rtkit.connect()``."""


class UnsupportedData(RtkitError, TypeError):
    """A value that cannot be published; raised before anything is queued
    or sent, saying which type, where in the value, and how to convert it."""


class HubError(RtkitError):
    """The hub refused a request; ``code`` is the wire error code."""

    code: ClassVar[str] = "internal"

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.code)
        self.message = message or self.code

    def to_wire(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class BadRequest(HubError, ValueError):
    code = "bad_request"


class Unauthorized(HubError, PermissionError):
    code = "unauthorized"


class Forbidden(HubError, PermissionError):
    code = "forbidden"


class NotFound(HubError, LookupError):
    code = "not_found"


class TooLarge(HubError, ValueError):
    code = "too_large"


class RateLimited(HubError):
    code = "rate_limited"


class Unavailable(HubError):
    code = "unavailable"


class InternalError(HubError):
    code = "internal"


_BY_CODE: dict[str, type[HubError]] = {
    cls.code: cls
    for cls in (
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        TooLarge,
        RateLimited,
        Unavailable,
        InternalError,
    )
}


def error_for_code(code: str, message: str = "") -> HubError:
    """The exception for a wire error code (unknown codes become InternalError)."""
    cls = _BY_CODE.get(code, InternalError)
    return cls(message or code)
