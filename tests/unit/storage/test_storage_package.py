"""The package surface, its import structure, and the URL that picks a backend."""

from __future__ import annotations

import ast
import importlib.util
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

STORAGE = Path(rtkit.storage.__file__).parent
BACKENDS = ("memory", "sqlite", "redis")


def _module_names() -> dict[str, Path]:
    names: dict[str, Path] = {}
    for path in STORAGE.rglob("*.py"):
        parts = ["rtkit", "storage", *path.relative_to(STORAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def storage_import_graph() -> dict[str, set[str]]:
    """Module -> the modules of rtkit.storage it imports, anywhere in it
    (module level, inside functions, and under ``if TYPE_CHECKING:``)."""
    modules = _module_names()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = importlib.util.resolve_name("." * node.level + base, package)
                for alias in node.names:
                    # "from pkg import mod" imports the module pkg.mod, not just pkg.
                    sub = f"{base}.{alias.name}"
                    targets.add(sub if sub in modules else base)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def test_no_import_cycles_in_storage() -> None:
    graph = storage_import_graph()
    # The walk sees real edges (or it would pass on nothing).
    assert "rtkit.storage.base" in graph["rtkit.storage.memory.channels"]
    assert "rtkit.storage.memory" in graph["rtkit.storage"]  # under TYPE_CHECKING
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            cycle = [*path[path.index(name) :], name]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        if name in done:
            return
        for target in sorted(graph[name]):
            visit(target, [*path, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])


def test_backends_import_no_other_backend() -> None:
    graph = storage_import_graph()

    def backend_of(name: str) -> str | None:
        parts = name.split(".")
        return parts[2] if len(parts) > 2 and parts[2] in BACKENDS else None

    for name, targets in graph.items():
        if name in {"rtkit.storage", "rtkit.storage.url"}:
            continue  # they pick a backend by its name, lazily
        own = backend_of(name)
        # A backend may import only itself and shared modules; a shared module
        # serves every backend and imports none.
        foreign = sorted(t for t in targets if backend_of(t) not in {None, own})
        assert not foreign, f"{name} imports {foreign}"
