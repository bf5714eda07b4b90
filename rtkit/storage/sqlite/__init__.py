"""Durable embedded store: one SQLite file in WAL mode.

- :mod:`.store`: :class:`SQLiteStore`, the lifecycle and the composition;
- :mod:`.database`: the file, its schema and migrations, the writer and
  reader connections and the threads they run in;
- :mod:`.channels`: messages with group commit, history, idempotency keys
  and retention;
- :mod:`.docs`: shared documents, a snapshot plus the updates since.

Presence is ephemeral and lives in memory
(:class:`rtkit.storage.presence.LocalPresence`). Only one process may use a
database file at a time; run Redis to share channels between hub processes.
"""

from __future__ import annotations

from .channels import SQLiteChannels
from .database import SCHEMA_VERSION, SQLiteDatabase
from .docs import SQLiteDocs
from .store import SQLiteStore

__all__ = ["SCHEMA_VERSION", "SQLiteChannels", "SQLiteDatabase", "SQLiteDocs", "SQLiteStore"]
