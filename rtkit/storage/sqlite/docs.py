"""Shared documents in the SQLite file.

A snapshot row plus the Yjs updates stored after it, each update committed
in its own transaction before it is acked (document edits come batched from
clients, so there are few of them); compaction swaps the snapshot and
deletes the updates it covers in one transaction.
"""

from __future__ import annotations

import anyio
import anyio.to_thread

from ..base import DocRecord
from .database import SQLiteDatabase

__all__ = ["SQLiteDocs"]


class SQLiteDocs:
    """A :class:`~rtkit.storage.base.DocumentStore` in a :class:`SQLiteDatabase`."""

    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db

    async def load(self, name: str) -> DocRecord:
        """The document's snapshot and the updates stored after it."""
        self._db.check_open()
        return await anyio.to_thread.run_sync(self._load_sync, name, limiter=self._db.read_limiter)

    async def append(self, name: str, update: bytes) -> int:
        """Commit one update; returns the count after the snapshot."""
        self._db.check_open()
        return await anyio.to_thread.run_sync(
            self._append_sync, name, bytes(update), limiter=self._db.write_limiter
        )

    async def compact(self, name: str, snapshot: bytes, upto: int) -> None:
        """Make ``snapshot`` the base and drop the updates it covers, atomically."""
        self._db.check_open()
        await anyio.to_thread.run_sync(
            self._compact_sync, name, bytes(snapshot), upto, limiter=self._db.write_limiter
        )

    # -- writer thread ------------------------------------------------------

    def _append_sync(self, name: str, update: bytes) -> int:
        conn = self._db.wconn
        if conn is None:
            raise RuntimeError("the store is closed")
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("INSERT INTO doc_updates (doc, data) VALUES (?, ?)", (name, update))
            count: int = conn.execute(
                "SELECT count(*) FROM doc_updates WHERE doc = ?", (name,)
            ).fetchone()[0]
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return count

    def _compact_sync(self, name: str, snapshot: bytes, upto: int) -> None:
        conn = self._db.wconn
        if conn is None:
            raise RuntimeError("the store is closed")
        conn.execute("BEGIN IMMEDIATE")
        try:
            found = conn.execute(
                "SELECT upto FROM doc_snapshots WHERE name = ?", (name,)
            ).fetchone()
            if found is None or found[0] < upto:
                conn.execute(
                    "INSERT OR REPLACE INTO doc_snapshots (name, snapshot, upto) VALUES (?, ?, ?)",
                    (name, snapshot, upto),
                )
                conn.execute("DELETE FROM doc_updates WHERE doc = ? AND id <= ?", (name, upto))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    # -- reader thread --------------------------------------------------------

    def _load_sync(self, name: str) -> DocRecord:
        conn = self._db.rconn
        if conn is None:
            raise RuntimeError("the store is closed")
        # One transaction: a compaction cannot slip between the two reads.
        conn.execute("BEGIN")
        try:
            found = conn.execute(
                "SELECT snapshot, upto FROM doc_snapshots WHERE name = ?", (name,)
            ).fetchone()
            rows = conn.execute(
                "SELECT id, data FROM doc_updates WHERE doc = ? ORDER BY id", (name,)
            ).fetchall()
        finally:
            conn.execute("COMMIT")
        snapshot, upto = (None, 0) if found is None else (bytes(found[0]), int(found[1]))
        last = rows[-1][0] if rows else upto
        return DocRecord(snapshot, [bytes(data) for _, data in rows], last)
