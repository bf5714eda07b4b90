"""Where the hub keeps channels, presence and shared documents.

A store composes three small protocols, one per concern
(:class:`ChannelStore`, :class:`PresenceStore`, :class:`DocumentStore`,
reached as ``store.channels``, ``store.presence`` and ``store.docs``), and a
URL picks the backend: ``store_from_url("memory://")`` (the default),
``store_from_url("sqlite:///rtkit.db")``, ``store_from_url("redis://...")``.

What lives where:

- :mod:`.base`: the protocols and the records they speak in;
- :mod:`.url`: :func:`store_from_url` and the URL's query options;
- :mod:`.ids`, :mod:`.dedup`, :mod:`.ranges`, :mod:`.codec`,
  :mod:`.lifecycle`: what several backends share;
- :mod:`.presence`: the presence rules, and presence in this process's
  memory for the embedded backends;
- :mod:`.feed`: the feed of the embedded backends, which delivers each
  message as it is stored (every store has a ``feed``: the one way stored
  messages reach the hub);
- :mod:`.memory`, :mod:`.sqlite`, :mod:`.redis`: the backends, each a
  package with a module per concern. No backend imports another.

The backends (:class:`MemoryStore`, :class:`SQLiteStore`) are imported on
first use, so importing this package stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import (
    Appended,
    ChannelStore,
    DocRecord,
    DocumentStore,
    Member,
    Message,
    PresenceChange,
    PresenceStore,
    Range,
    Retention,
    Store,
)
from .url import store_from_url

if TYPE_CHECKING:
    from .memory import MemoryStore
    from .sqlite import SQLiteStore

__all__ = [
    "Appended",
    "ChannelStore",
    "DocRecord",
    "DocumentStore",
    "Member",
    "MemoryStore",
    "Message",
    "PresenceChange",
    "PresenceStore",
    "Range",
    "Retention",
    "SQLiteStore",
    "Store",
    "store_from_url",
]


def __getattr__(name: str) -> Any:
    if name == "MemoryStore":
        from .memory import MemoryStore

        return MemoryStore
    if name == "SQLiteStore":
        from .sqlite import SQLiteStore

        return SQLiteStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
