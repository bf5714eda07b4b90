"""The SQLite file the SQLite store's concerns share: schema, connections,
lifecycle.

One connection writes, only ever from the writer thread (an
``anyio.to_thread`` capacity-1 limiter, :attr:`SQLiteDatabase.write_limiter`);
reads use a second, read-only connection with a limiter of its own (WAL lets
it read while the writer writes). The channel and document stores run their
SQL through these two.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from typing import Final, Literal

import anyio

from ...errors import ConfigurationError, Unavailable

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "SQLiteDatabase"]

log = logging.getLogger(__name__)

#: ``PRAGMA user_version`` of the schema this module writes. Bump it and add a
#: step to ``MIGRATIONS`` to change the schema.
SCHEMA_VERSION: Final = 3

MIGRATIONS: Final[dict[int, tuple[str, ...]]] = {
    1: (
        """CREATE TABLE IF NOT EXISTS channels (
            name  TEXT PRIMARY KEY,
            epoch TEXT NOT NULL,
            head  INTEGER NOT NULL DEFAULT 0
        ) WITHOUT ROWID""",
        # A rowid table: rows land in time order (payloads stay together, and
        # age pruning deletes a rowid prefix); only the small (channel, seq)
        # index entries scatter over channels.
        """CREATE TABLE IF NOT EXISTS messages (
            channel TEXT NOT NULL,
            seq     INTEGER NOT NULL,
            ts      REAL NOT NULL,
            id      TEXT NOT NULL,
            sender  TEXT NOT NULL,
            kind    INTEGER NOT NULL,
            data    BLOB NOT NULL,
            UNIQUE (channel, seq)
        )""",
        # Append-only, no key index (see the module docstring); a key used
        # again after it expired is a second row, and the newest row wins.
        """CREATE TABLE IF NOT EXISTS dedup (
            channel TEXT NOT NULL,
            sender  TEXT NOT NULL,
            id      TEXT NOT NULL,
            seq     INTEGER NOT NULL,
            ts      REAL NOT NULL
        )""",
    ),
    2: (
        """CREATE TABLE IF NOT EXISTS doc_snapshots (
            name     TEXT PRIMARY KEY,
            snapshot BLOB NOT NULL,
            upto     INTEGER NOT NULL
        ) WITHOUT ROWID""",
        """CREATE TABLE IF NOT EXISTS doc_updates (
            id   INTEGER PRIMARY KEY AUTOINCREMENT,
            doc  TEXT NOT NULL,
            data BLOB NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS doc_updates_by_doc ON doc_updates (doc, id)",
    ),
    # Settings of the database itself, e.g. the salt that channel epochs
    # are derived from (stable across restarts, unlike a memory store's).
    3: (
        """CREATE TABLE IF NOT EXISTS settings (
            name  TEXT PRIMARY KEY,
            value TEXT NOT NULL
        ) WITHOUT ROWID""",
    ),
}


class SQLiteDatabase:
    """One database file in WAL mode, its two connections and the store's
    lifecycle: ``new -> opening -> open (-> broken) -> closing -> closed``."""

    def __init__(self, path: str | os.PathLike[str], synchronous: str = "NORMAL") -> None:
        self.path = os.fspath(path)
        if not self.path or self.path == ":memory:" or self.path.startswith("file:"):
            raise ConfigurationError(
                f"SQLiteStore needs a file path, not {self.path!r} (use memory:// for no file)"
            )
        synchronous = synchronous.upper()
        if synchronous not in {"NORMAL", "FULL"}:
            raise ConfigurationError("sqlite synchronous must be NORMAL or FULL")
        self.synchronous = synchronous
        self.state: Literal["new", "opening", "open", "broken", "closing", "closed"] = "new"
        # Writer side: touched only while holding write_limiter.
        self.write_limiter = anyio.CapacityLimiter(1)
        self.wconn: sqlite3.Connection | None = None
        # Reader side: touched only while holding read_limiter.
        self.read_limiter = anyio.CapacityLimiter(1)
        self.rconn: sqlite3.Connection | None = None

    def check_open(self) -> None:
        if self.state == "open":
            return
        if self.state in {"new", "opening"}:
            raise RuntimeError("the store is not open: call 'await store.open()' first")
        if self.state == "broken":
            raise Unavailable(f"the SQLite store {self.path} failed (see the log); restart the hub")
        raise RuntimeError("the store is closed")

    def connect(self) -> sqlite3.Connection:
        # Autocommit mode (isolation_level=None): transactions are explicit.
        # check_same_thread=False: a capacity-1 limiter serialises each
        # connection, but anyio may run successive calls on different threads.
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 5000")
        return conn

    def open_sync(self) -> sqlite3.Connection:
        """Connect (creating or migrating the schema); returns the writer's
        connection. In the writer thread."""
        self.wconn = conn = self.connect()
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise ConfigurationError(f"{self.path}: SQLite refused WAL mode (got {mode!r})")
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        self._migrate(conn)
        self.rconn = self.connect()
        self.rconn.execute("PRAGMA query_only = 1")
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")  # one process migrates at a time
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise ConfigurationError(
                    f"{self.path} has schema version {version}, newer than this rtkit "
                    f"understands ({SCHEMA_VERSION}); upgrade rtkit"
                )
            for step in range(version + 1, SCHEMA_VERSION + 1):
                log.info("sqlite store %s: migrating schema to version %d", self.path, step)
                for statement in MIGRATIONS[step]:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {step}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def close_sync(self) -> None:
        if self.wconn is not None:
            try:
                self.wconn.execute("PRAGMA optimize")
            except sqlite3.Error:
                log.exception("sqlite store %s: PRAGMA optimize failed", self.path)
            self.wconn.close()
            self.wconn = None
        if self.rconn is not None:
            self.rconn.close()
            self.rconn = None
