"""rtkit: live channels, presence and shared state for Jupyter over Socket.IO.

>>> import rtkit
>>> with rtkit.connect("http://127.0.0.1:8765") as hub:
...     hub.channel("prices").publish({"px": 1.0})

The client (and with it python-socketio and aiohttp) is imported on first
use, so ``import rtkit`` stays cheap for the command line and the hub.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    AckTimeout,
    BadRequest,
    ClientClosed,
    ConfigurationError,
    Forbidden,
    HubError,
    InternalError,
    NotConnected,
    NotFound,
    OfflineQueueFull,
    RateLimited,
    RecordingError,
    RtkitError,
    TokenUnavailable,
    TooLarge,
    Unauthorized,
    Unavailable,
    UnsupportedData,
)
from .protocol import Member, Message

if TYPE_CHECKING:
    from .client import (
        Channel,
        Client,
        ClientMetrics,
        GapInfo,
        Presence,
        SharedChange,
        SharedDoc,
        connect,
    )
    from .record import replay_sync as replay

__version__ = "0.1.0"

__all__ = [
    "AckTimeout",
    "BadRequest",
    "Channel",
    "Client",
    "ClientClosed",
    "ClientMetrics",
    "ConfigurationError",
    "Forbidden",
    "GapInfo",
    "HubError",
    "InternalError",
    "Member",
    "Message",
    "NotConnected",
    "NotFound",
    "OfflineQueueFull",
    "Presence",
    "RateLimited",
    "RecordingError",
    "RtkitError",
    "SharedChange",
    "SharedDoc",
    "TokenUnavailable",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
    "UnsupportedData",
    "__version__",
    "connect",
    "replay",
]

_CLIENT_NAMES = frozenset(
    {
        "Channel",
        "Client",
        "ClientMetrics",
        "GapInfo",
        "Presence",
        "SharedChange",
        "SharedDoc",
        "connect",
    }
)


def __getattr__(name: str) -> Any:
    if name == "replay":
        from .record import replay_sync

        return replay_sync
    if name in _CLIENT_NAMES:
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module 'rtkit' has no attribute {name!r}")
