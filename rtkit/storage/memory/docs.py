"""Shared documents in this process's memory."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..base import DocRecord
from ..lifecycle import Lifecycle

__all__ = ["MemoryDocs"]


@dataclass(slots=True)
class _DocLog:
    snapshot: bytes | None = None
    upto: int = 0  # the last update id the snapshot covers
    updates: list[tuple[int, bytes]] = field(default_factory=list)  # (id, update)
    next_id: int = 1


class MemoryDocs:
    """A :class:`~rtkit.storage.base.DocumentStore` in this process's memory:
    per document, a snapshot and the numbered updates stored after it."""

    def __init__(self, life: Lifecycle) -> None:
        self._life = life
        self._docs: dict[str, _DocLog] = {}

    def clear(self) -> None:
        self._docs.clear()

    async def load(self, name: str) -> DocRecord:
        """The document's snapshot and later updates; see
        :meth:`~rtkit.storage.base.DocumentStore.load`."""
        self._life.check_open()
        log_ = self._docs.get(name)
        if log_ is None:
            return DocRecord(None, [], 0)
        last = log_.updates[-1][0] if log_.updates else log_.upto
        return DocRecord(log_.snapshot, [update for _, update in log_.updates], last)

    async def append(self, name: str, update: bytes) -> int:
        """Store one update; returns the count after the snapshot."""
        self._life.check_open()
        log_ = self._docs.get(name)
        if log_ is None:
            log_ = self._docs[name] = _DocLog()
        log_.updates.append((log_.next_id, bytes(update)))
        log_.next_id += 1
        return len(log_.updates)

    async def compact(self, name: str, snapshot: bytes, upto: int) -> None:
        """Make ``snapshot`` the base and drop the updates it covers."""
        self._life.check_open()
        log_ = self._docs.get(name)
        if log_ is None or upto <= log_.upto:
            return
        log_.snapshot = bytes(snapshot)
        log_.upto = upto
        log_.updates = [(i, u) for i, u in log_.updates if i > upto]
