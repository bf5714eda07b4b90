"""The package surface and the URL that picks a backend (its import structure:
tests/unit/test_import_structure.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

import rtkit.storage
from rtkit.errors import ConfigurationError
from rtkit.storage import MemoryStore, Retention, SQLiteStore, Store, store_from_url
from rtkit.storage.dedup import DedupCache


def test_exported_names() -> None:
    assert sorted(rtkit.storage.__all__) == [
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
    for name in rtkit.storage.__all__:
        assert getattr(rtkit.storage, name) is not None
    with pytest.raises(AttributeError):
        _ = rtkit.storage.NoSuchStore


def test_store_from_url(tmp_path: Path) -> None:
    memory = store_from_url("memory://?max_messages=7&max_age=30")
    assert isinstance(memory, MemoryStore)
    assert memory.retention == Retention(max_messages=7, max_age=30.0)
    assert memory.url == "memory://"

    path = tmp_path / "rt.db"
    sqlite = store_from_url(f"sqlite:///{path}?synchronous=full")
    assert isinstance(sqlite, SQLiteStore)
    assert isinstance(sqlite, Store)
    assert sqlite.path == str(path)
    assert sqlite.synchronous == "FULL"
    assert sqlite.url == f"sqlite:///{path}"
    assert store_from_url(sqlite.url).path == sqlite.path  # type: ignore[attr-defined]

    with pytest.raises(ConfigurationError):
        store_from_url("memory://?max_messages=0")


def test_dedup_cache_forgets_expired_and_surplus_keys() -> None:
    cache: DedupCache[int] = DedupCache(max_keys=3)
    for i in range(3):
        cache.put(("ch", "ann", f"k{i}"), i, ts=100.0 + i, window=10.0)
    assert cache.get(("ch", "ann", "k0"), now=105.0, window=10.0) == 0
    cache.put(("ch", "ann", "k3"), 3, ts=103.0, window=10.0)  # over max_keys: k0 goes
    assert len(cache) == 3
    assert cache.get(("ch", "ann", "k0"), now=105.0, window=10.0) is None
    assert cache.dropped == 1
    cache.put(("ch", "ann", "k4"), 4, ts=112.5, window=10.0)  # k1 (101) and k2 (102) expire
    assert len(cache) == 2
    assert cache.get(("ch", "ann", "k3"), now=112.5, window=10.0) == 3
    assert cache.get(("ch", "ann", "k3"), now=113.5, window=10.0) is None


# -- import structure -----------------------------------------------------------
