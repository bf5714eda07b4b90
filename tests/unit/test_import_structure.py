"""How rtkit's modules import each other, read from their source with ``ast``.

Every import counts: at module level, inside functions, and under
``if TYPE_CHECKING:`` (a type-only cycle is still a knot for the reader).

- ``rtkit.client``, ``rtkit.hub`` and ``rtkit.storage`` have no import cycles
  among their own modules.
- The layers point one way (DESIGN.md): protocol, errors and config import
  none of the others; storage imports no hub; the hub no host, client or CLI;
  the client no hub, storage or host.
- A storage backend imports no other backend; shared storage modules import
  none (only ``store_from_url`` picks one, lazily, by name).
"""

from __future__ import annotations

import ast
import importlib.util
from functools import cache
from pathlib import Path

import pytest

import rtkit

ROOT = Path(rtkit.__file__).parent
BACKENDS = ("memory", "sqlite", "redis")


@cache
def modules() -> dict[str, Path]:
    """Every module of rtkit by dotted name (packages by their own name)."""
    names: dict[str, Path] = {}
    for path in ROOT.rglob("*.py"):
        parts = ["rtkit", *path.relative_to(ROOT).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def imports_of(name: str, source: str, known: dict[str, Path] | None = None) -> set[str]:
    """The rtkit modules that module ``name`` imports, anywhere in ``source``."""
    known = modules() if known is None else known
    path = known.get(name)
    package = name if path is not None and path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = importlib.util.resolve_name("." * node.level + base, package)
            for alias in node.names:
                # "from pkg import mod" imports the module pkg.mod, not just pkg.
                sub = f"{base}.{alias.name}"
                targets.add(sub if sub in known else base)
    return {t for t in targets if t in known and t != name}


@cache
def graph() -> dict[str, frozenset[str]]:
    return {name: frozenset(imports_of(name, path.read_text())) for name, path in modules().items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    visiting: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> list[str] | None:
        if node in visiting:
            return [*visiting[visiting.index(node) :], node]
        if node in done:
            return None
        visiting.append(node)
        for target in sorted(edges[node]):
            cycle = visit(target)
            if cycle is not None:
                return cycle
        visiting.pop()
        done.add(node)
        return None

    for start in sorted(edges):
        cycle = visit(start)
        if cycle is not None:
            return cycle
    return None


def within(package: str) -> dict[str, set[str]]:
    """The import graph among ``package`` and its submodules only."""

    def inside(name: str) -> bool:
        return name == package or name.startswith(package + ".")

    return {n: {t for t in ts if inside(t)} for n, ts in graph().items() if inside(n)}


@pytest.mark.parametrize("package", ["rtkit.client", "rtkit.hub", "rtkit.storage"])
def test_no_import_cycles(package: str) -> None:
    edges = within(package)
    assert sum(map(len, edges.values())) > len(edges) // 2, "the walk sees no imports"
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_type_only_and_function_level_imports_count() -> None:
    known = {"rtkit.x": Path("x.py"), "rtkit.x.a": Path("a.py"), "rtkit.x.b": Path("b.py")}
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from .b import B\n"
        "def f():\n    from . import a\n"
    )
    assert imports_of("rtkit.x.c", source, known) == {"rtkit.x.a", "rtkit.x.b"}
    assert find_cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]


# Layer -> layers it must never import (DESIGN.md, "Layers").
FORBIDDEN = {
    "rtkit.protocol": ("rtkit.storage", "rtkit.hub", "rtkit.hosts", "rtkit.client"),
    "rtkit.errors": ("rtkit.storage", "rtkit.hub", "rtkit.hosts", "rtkit.client"),
    "rtkit.config": ("rtkit.storage", "rtkit.hub", "rtkit.hosts", "rtkit.client"),
    "rtkit.storage": ("rtkit.hub", "rtkit.hosts", "rtkit.client", "rtkit.cli"),
    "rtkit.hub": ("rtkit.hosts", "rtkit.client", "rtkit.cli", "rtkit.widgets"),
    "rtkit.client": ("rtkit.hub", "rtkit.storage", "rtkit.hosts", "rtkit.cli"),
}


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layers_import_one_way(layer: str) -> None:
    wrong = sorted(
        f"{name} imports {target}"
        for name, targets in within(layer).items()
        for target in graph()[name]
        if target.startswith(tuple(f"{f}." for f in FORBIDDEN[layer])) or target in FORBIDDEN[layer]
    )
    assert not wrong, wrong


def test_storage_backends_import_no_other_backend() -> None:
    def backend_of(name: str) -> str | None:
        parts = name.split(".")
        return parts[2] if len(parts) > 2 and parts[2] in BACKENDS else None

    edges = within("rtkit.storage")
    assert "rtkit.storage.base" in edges["rtkit.storage.memory.channels"]
    for name, targets in edges.items():
        if name in {"rtkit.storage", "rtkit.storage.url"}:
            continue  # they pick a backend by its name, lazily
        own = backend_of(name)
        foreign = sorted(t for t in targets if backend_of(t) not in {None, own})
        assert not foreign, f"{name} imports {foreign}"
