"""Where the hub keeps channels: one small protocol, a backend per URL.

``store_from_url("memory://")`` (the default), ``store_from_url("sqlite:///rtkit.db")``.
The backends (:class:`MemoryStore`, :class:`SQLiteStore`) are imported on first
use, so importing this package stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import (
    Appended,
    DocRecord,
    Member,
    Message,
    PresenceChange,
    Range,
    Retention,
    Store,
    store_from_url,
)

if TYPE_CHECKING:
    from .memory import MemoryStore
    from .sqlite import SQLiteStore

__all__ = [
    "Appended",
    "DocRecord",
    "Member",
    "MemoryStore",
    "Message",
    "PresenceChange",
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
