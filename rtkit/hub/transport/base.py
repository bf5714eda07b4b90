"""The interface between the hub and its connections' transports.

Everything here is rtkit's own: the hub's modules (``core``, ``fanout``,
``presence``, ``docs``) use only these names, whatever the host.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Protocol

# Writes one complete websocket frame to a connection's transport, or
# returns False when it cannot right now (closing, or its buffer is full).
FrameWriter = Callable[[bytes], bool]

# A connection's environ carries its FrameWriter under this key when the host
# can offer one (the aiohttp and tornado hosts do, for websocket connections).
FRAME_WRITER_KEY = "rtkit.frame_writer"

# Bytes the host holds for a connection below Engine.IO's queue, not yet on
# the wire. Part of the send budget: a host whose websocket send does not
# wait for its buffer to drain (tornado's) would otherwise buffer without
# bound behind an empty queue.
WriteBuffered = Callable[[], int]

# A connection's environ carries its WriteBuffered under this key when the
# host can tell (aiohttp and tornado, with the fast paths on or off).
WRITE_BUFFERED_KEY = "rtkit.write_buffered"

# Set to 0 (or "false", "no", "off") to turn off every fast path that relies
# on upstream internals; the hub then uses the libraries' public API only.
FAST_PATHS_ENV = "RTKIT_FAST_PATHS"


def fast_paths_enabled() -> bool:
    """Whether the private-internals fast paths are on (``RTKIT_FAST_PATHS``).

    On unless the variable says otherwise. Read when a hub or a host is built,
    so a process (and every hub it starts) runs one way throughout::

        RTKIT_FAST_PATHS=0 rtkit hub --allow-anonymous
    """
    value = os.environ.get(FAST_PATHS_ENV, "1").strip().lower()
    return value not in {"0", "false", "no", "off"}


class Transport(Protocol):
    """What the hub does with one connection's outgoing side.

    Engine.IO keeps a send queue per connection and a writer task that
    drains it onto the wire. The hub queues packets onto it, reads its depth
    and the bytes it holds (a connection too far behind is dropped; a request
    whose ack may be large waits for them to drain first), and, when nothing is queued or
    being written, may put a prebuilt frame on the wire itself through the
    connection's :data:`FrameWriter` without overtaking anything.
    """

    @property
    def closed(self) -> bool:
        """The connection is gone or going: nothing sent now would arrive."""
        ...

    def depth(self) -> int:
        """Packets queued and not yet taken by the writer task."""
        ...

    def pending_bytes(self) -> int:
        """About how many bytes are queued and not yet taken by the writer
        task: what the connection's send budget is measured in."""
        ...

    async def wait_below(self, limit: int, within: float, *, packets: int | None = None) -> bool:
        """Wait until fewer than ``limit`` bytes (and, if given, fewer than
        ``packets`` packets) are queued: the client is reading. False if that
        did not happen within ``within`` seconds."""
        ...

    def queue_packet(self, packet: Any) -> None:
        """Append an Engine.IO packet to the send queue, without waiting."""
        ...

    def idle(self) -> bool:
        """Nothing queued and nothing held by the writer task: a frame
        written straight to the wire now keeps the connection's order."""
        ...
