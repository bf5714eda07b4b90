"""The rtkit client: :mod:`.aio` is the asyncio implementation, :mod:`.sync`
the blocking facade that runs it on an I/O thread of its own.

Public names are re-exported by :mod:`rtkit` (blocking) and :mod:`rtkit.aio`
(async); import from there.
"""

from __future__ import annotations

from ._types import ClientMetrics, GapInfo, Message
from ._url import split_url
from .docs import SharedChange
from .sync import Channel, Client, Presence, SharedDoc, connect

__all__ = [
    "Channel",
    "Client",
    "ClientMetrics",
    "GapInfo",
    "Message",
    "Presence",
    "SharedChange",
    "SharedDoc",
    "connect",
    "split_url",
]
