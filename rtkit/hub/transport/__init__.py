"""The transport seam: every use of upstream internals lives in this package.

The rest of the hub writes to its connections through a small interface
(:class:`Transport`: closed, depth, bytes pending, wait for them to drain,
queue a packet, idle; and a host's :data:`FrameWriter`: write a frame) and
never names a private attribute of python-socketio, python-engineio,
tornado, aiohttp, jupyter_server or asyncio. What lives where:

- ``base``: the interface, :data:`FRAME_WRITER_KEY`, and the one switch for
  the fast paths, :func:`fast_paths_enabled` (``RTKIT_FAST_PATHS=0`` turns
  them all off; the hub then uses the libraries' public API).
- ``packets``: hub-to-client packets and websocket frames, encoded once for
  every recipient (the Socket.IO packet prefix is built here).
- ``sockets``: python-engineio sockets as Transports (their send queue, the
  bytes it holds, and the asyncio ``Queue._getters`` idle check of direct
  writes).
- ``server``: the ``socketio.AsyncServer`` subclasses; the fast one overrides
  four private methods to answer without a task and write acks directly.
- ``guard``: python-socketio's Engine.IO handlers wrapped to close sockets
  that break the protocol (with bounded binary attachments) or never join
  the namespace, and to cap sessions still joining per address.
- ``aiohttp_websocket``: the aiohttp host's websocket (python-engineio's
  reader loop without its per-packet task, and a direct frame writer).
- ``tornado_stream``: the tornado host's environ hook and direct frame
  writer to the IOStream.
- ``jupyter_handler``: marking a jupyter_server handler's request as
  authenticated by a kernel token.

The host-specific modules import their web framework and are imported only
by that host; importing the hub never imports aiohttp, tornado or
jupyter_server. tests/contract states every upstream fact relied on here.
"""

from __future__ import annotations

from .base import (
    FAST_PATHS_ENV,
    FRAME_WRITER_KEY,
    WRITE_BUFFERED_KEY,
    FrameWriter,
    Transport,
    WriteBuffered,
    fast_paths_enabled,
)
from .packets import EncodedPacket, encode_event, encode_messages, websocket_text_frame
from .server import (
    QUEUED,
    UNDECODABLE,
    Answerer,
    ConnectionRefused,
    HubServer,
    Queued,
    Reply,
    create_server,
)
from .sockets import Transports

__all__ = [
    "FAST_PATHS_ENV",
    "FRAME_WRITER_KEY",
    "QUEUED",
    "UNDECODABLE",
    "WRITE_BUFFERED_KEY",
    "Answerer",
    "ConnectionRefused",
    "EncodedPacket",
    "FrameWriter",
    "HubServer",
    "Queued",
    "Reply",
    "Transport",
    "Transports",
    "WriteBuffered",
    "create_server",
    "encode_event",
    "encode_messages",
    "fast_paths_enabled",
    "websocket_text_frame",
]
