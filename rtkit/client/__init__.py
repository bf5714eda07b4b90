"""The rtkit client: :mod:`.aio` is the asyncio implementation, :mod:`.sync`
the blocking facade that runs it on an I/O thread of its own.

Where the asyncio implementation lives:

- :mod:`.aio`: ``Client`` and ``connect``, a thin facade over the parts below;
- :mod:`._session`: the session (the Socket.IO transport seam, connect and
  reconnect supervision, request/ack, event dispatch, resume hooks, the
  callback dispatcher, held tasks), the only module that knows python-socketio;
- :mod:`.channel`: ``Channel``, the publish outbox and its pump, the channel
  registry;
- :mod:`.presence` and :mod:`.docs`: ``Presence`` and ``SharedDoc`` with
  their registries;
- pure pieces: :mod:`._cursor` (resume position), :mod:`._queue` (outbox),
  :mod:`._data` (what a Python value becomes on the wire), :mod:`._backoff`,
  :mod:`._url`, :mod:`._types`, :mod:`._token` (token providers: when to
  renew, how to call one).

Channels, presence and documents use only the session's methods, never
each other's private members (``tests/unit/client/test_structure.py``).

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
