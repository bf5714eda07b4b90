"""The client package's seams, read from its source with ``ast``.

- No module reaches into another object's private members: ``x._name`` is
  allowed only on ``self``/``cls`` inside the class that defines ``_name``.
  The session module may also use private names of third-party objects (it
  is the one place that knows python-socketio), never the client's own.
- (That its modules import each other without cycles is checked with the
  hub's and storage's, in tests/unit/test_import_structure.py.)
- Only the session module imports python-socketio or python-engineio.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import rtkit.client

PACKAGE = Path(rtkit.client.__file__).parent
SESSION_MODULE = "_session"
ACCESSORS = frozenset({"getattr", "setattr", "delattr", "hasattr"})


def modules() -> dict[str, ast.Module]:
    return {
        path.stem: ast.parse(path.read_text(), filename=str(path))
        for path in sorted(PACKAGE.glob("*.py"))
    }


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def names_defined_by(cls: ast.ClassDef) -> set[str]:
    """Members a class defines: methods, class attributes, slots and ``self.x = ...``."""
    names: set[str] = set()
    for node in cls.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
            slots = any(isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets)
            if slots and isinstance(node.value, ast.Tuple | ast.List):
                names.update(e.value for e in node.value.elts if isinstance(e, ast.Constant))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    for node in ast.walk(cls):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign | ast.AugAssign):
            targets = [node.target]
        for target in targets:
            for leaf in ast.walk(target):
                if (
                    isinstance(leaf, ast.Attribute)
                    and isinstance(leaf.value, ast.Name)
                    and leaf.value.id in ("self", "cls")
                ):
                    names.add(leaf.attr)
    return names


@dataclass(frozen=True)
class Access:
    module: str
    line: int
    receiver: str
    name: str
    enclosing_class: ast.ClassDef | None

    def __str__(self) -> str:
        return f"{self.module}.py:{self.line}: {self.receiver}.{self.name}"


def private_accesses(module: str, tree: ast.Module) -> Iterator[Access]:
    """Every ``x._name`` (and ``getattr(x, "_name")``) with the class it sits in."""

    def visit(node: ast.AST, cls: ast.ClassDef | None) -> Iterator[Access]:
        if isinstance(node, ast.ClassDef):
            cls = node
        if isinstance(node, ast.Attribute) and is_private(node.attr):
            receiver = ast.unparse(node.value)
            yield Access(module, node.lineno, receiver, node.attr, cls)
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ACCESSORS
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and is_private(node.args[1].value)
        ):
            receiver = ast.unparse(node.args[0])
            yield Access(module, node.lineno, receiver, node.args[1].value, cls)
        for child in ast.iter_child_nodes(node):
            yield from visit(child, cls)

    yield from visit(tree, None)


def test_no_module_reaches_into_private_members() -> None:
    trees = modules()
    own_private_names = {
        name
        for tree in trees.values()
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
        for name in names_defined_by(node)
        if is_private(name)
    }
    offending: list[str] = []
    for module, tree in trees.items():
        for access in private_accesses(module, tree):
            cls = access.enclosing_class
            if (
                access.receiver in ("self", "cls")
                and cls is not None
                and access.name in names_defined_by(cls)
            ):
                continue
            if module == SESSION_MODULE and access.name not in own_private_names:
                continue  # a third-party object's internals, known here only
            offending.append(str(access))
    assert offending == []


def test_the_check_sees_a_reach_into_another_object() -> None:
    source = (
        "class Channel:\n"
        "    def __init__(self, client):\n"
        "        self._client = client\n"
        "    def send(self):\n"
        "        self._client._request()\n"
        "        getattr(self._client, '_spawn')()\n"
    )
    found = [str(a) for a in private_accesses("sample", ast.parse(source))]
    cls = next(n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ClassDef))
    assert "_client" in names_defined_by(cls)
    assert "sample.py:5: self._client._request" in found
    assert "sample.py:6: self._client._spawn" in found


@pytest.mark.parametrize("library", ["socketio", "engineio"])
def test_only_the_session_knows_python_socketio(library: str) -> None:
    importers = set()
    for module, tree in modules().items():
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            if any(name.split(".")[0] == library for name in names):
                importers.add(module)
    assert importers <= {SESSION_MODULE}
