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
    ├── TokenUnavailable                  the token provider failed (retried)
    ├── UnsupportedData (TypeError)       a value rtkit cannot publish (names the fix)
    ├── RecordingError (ValueError)       a recording file that cannot be read
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
    "RecordingError",
    "RtkitError",
    "TokenUnavailable",
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


class RecordingError(RtkitError, ValueError):
    """A recording (``rtkit record``'s file) is missing, torn in the middle or
    not a recording; the message names the file and the line or row."""


class NotConnected(RtkitError, ConnectionError):
    """The hub cannot be reached right now."""


class AckTimeout(RtkitError, TimeoutError):
    """The hub did not acknowledge a request in time."""


class OfflineQueueFull(RtkitError):
    """Publishing while offline filled the bounded offline queue."""


class ClientClosed(RtkitError):
    """The client was closed; create a new one with ``rtkit.connect()``."""


class TokenUnavailable(RtkitError):
    """The client's token provider raised, timed out or returned no token.

    Raised by ``connect()`` when there is no first token; later the client
    retries with backoff and reports each failure as an ``"auth_error"``
    event (:meth:`rtkit.aio.Client.on`)."""


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
    """A malformed request: a missing or mistyped field, a bad channel, room or
    document name (``bad_request``). Fix the request; retrying it is useless."""

    code = "bad_request"


class Unauthorized(HubError, PermissionError):
    """No valid token: missing, signed with another secret, expired, or revoked
    with its kernel (``unauthorized``). Refused at connect, the client stops
    instead of retrying."""

    code = "unauthorized"


class Forbidden(HubError, PermissionError):
    """The token does not grant this channel or room, or a cap is reached:
    subscriptions per connection, connections per user, members per room
    (``forbidden``)."""

    code = "forbidden"


class NotFound(HubError, LookupError):
    """What the request names is not there, e.g. ``unsubscribe`` from a channel
    not subscribed, a presence update before joining (``not_found``)."""

    code = "not_found"


class TooLarge(HubError, ValueError):
    """Over a size cap: a message over ``--max-payload``, a shared document over
    ``--max-doc-bytes``, presence state over 4 KiB (``too_large``). Nothing
    was stored."""

    code = "too_large"


class RateLimited(HubError):
    """Over a rate or concurrency limit: publishes, reads or bytes per second,
    requests in flight (``rate_limited``). Slow down, batch, or retry later."""

    code = "rate_limited"


class Unavailable(HubError):
    """The hub cannot serve the request now: its store is unreachable, it is
    shutting down, or the connection dropped meanwhile (``unavailable``).
    Nothing was stored; retry, after a reconnect if need be."""

    code = "unavailable"


class InternalError(HubError):
    """The hub failed unexpectedly (``internal``); its log says why. Unknown
    error codes map here too."""

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
