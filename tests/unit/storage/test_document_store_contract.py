"""The DocumentStore contract (``store.docs``), run against every backend,
and what only the SQLite one promises about documents."""

from __future__ import annotations

from pathlib import Path

import pycrdt
import pytest

from rtkit.storage import DocumentStore, SQLiteStore, Store


@pytest.fixture
def docs(store: Store) -> DocumentStore:
    """The document store of one backend's ``store`` (see conftest.py)."""
    assert isinstance(store.docs, DocumentStore)
    return store.docs


def edit(doc: pycrdt.Doc, key: str, value: object) -> bytes:
    updates: list[bytes] = []
    sub = doc.observe(lambda event: updates.append(event.update))
    doc.get("state", type=pycrdt.Map)[key] = value
    doc.unobserve(sub)
    return updates[0]


async def test_docs_store_updates_and_compact_into_snapshots(docs: DocumentStore) -> None:
    record = await docs.load("params")
    assert (record.snapshot, record.updates, record.last_id) == (None, [], 0)
    doc: pycrdt.Doc = pycrdt.Doc()
    updates = [edit(doc, f"k{i}", i) for i in range(5)]
    counts = [await docs.append("params", u) for u in updates]
    assert counts == [1, 2, 3, 4, 5]
    record = await docs.load("params")
    assert record.updates == updates and record.snapshot is None

    snapshot = doc.get_update()
    await docs.compact("params", snapshot, record.last_id)
    later = edit(doc, "late", True)
    assert await docs.append("params", later) == 1
    compacted = await docs.load("params")
    assert compacted.snapshot == snapshot and compacted.updates == [later]
    # A compaction covering less than the current snapshot is ignored.
    await docs.compact("params", b"\x00\x00", record.last_id - 1)
    assert (await docs.load("params")).snapshot == snapshot

    rebuilt: pycrdt.Doc = pycrdt.Doc()
    for u in [compacted.snapshot or b"", *compacted.updates]:
        rebuilt.apply_update(u)
    assert (
        rebuilt.get("state", type=pycrdt.Map).to_py() == doc.get("state", type=pycrdt.Map).to_py()
    )
    assert (await docs.load("other")).updates == []


async def test_sqlite_docs_survive_a_restart(tmp_path: Path) -> None:
    doc: pycrdt.Doc = pycrdt.Doc()
    async with SQLiteStore(tmp_path / "rt.db") as store:
        await store.docs.append("d", edit(doc, "a", 1))
        await store.docs.compact("d", doc.get_update(), (await store.docs.load("d")).last_id)
        await store.docs.append("d", edit(doc, "b", 2))
    async with SQLiteStore(tmp_path / "rt.db") as store:
        record = await store.docs.load("d")
        assert record.snapshot is not None and len(record.updates) == 1
