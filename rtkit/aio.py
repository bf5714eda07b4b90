"""The async twin of rtkit's public API: the same names, awaited.

>>> import rtkit.aio
>>> async with await rtkit.aio.connect() as hub:
...     ch = hub.channel("prices")
...     await ch.subscribe(print)
...     await ch.publish({"px": 1.0})

The client runs on the event loop that calls it. Inside a Jupyter kernel
prefer the blocking ``rtkit.connect()``: it runs on a loop of its own, while
background work on the kernel's loop stalls between cells under ipykernel 7.
"""

from __future__ import annotations

from .client._types import ClientMetrics, GapInfo, Message
from .client.aio import (
    Channel,
    Client,
    ConnectOptions,
    Presence,
    SharedChange,
    SharedDoc,
    connect,
)
from .protocol import Member
from .record import replay

__all__ = [
    "Channel",
    "Client",
    "ClientMetrics",
    "ConnectOptions",
    "GapInfo",
    "Member",
    "Message",
    "Presence",
    "SharedChange",
    "SharedDoc",
    "connect",
    "replay",
]
