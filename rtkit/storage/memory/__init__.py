"""The default store: everything in this process's memory.

- :mod:`.store`: :class:`MemoryStore`, the lifecycle and the composition;
- :mod:`.channels`: :class:`MemoryChannels`, messages, history and
  idempotency keys;
- :mod:`.docs`: :class:`MemoryDocs`, shared documents.

Presence is :class:`rtkit.storage.presence.LocalPresence`, which the SQLite
store uses too.
"""

from __future__ import annotations

from .channels import MemoryChannels
from .docs import MemoryDocs
from .store import MemoryStore

__all__ = ["MemoryChannels", "MemoryDocs", "MemoryStore"]
