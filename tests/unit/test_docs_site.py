"""The documentation site states what the code does: every widget option and
every ``rtkit demo`` option is on its page, and the docstrings' reST becomes
Markdown the site can render. (``make test`` also builds the site with
``mkdocs build --strict``, which fails on a broken reference.)"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import re
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"


def documented(page: str) -> set[str]:
    """The names a page shows as code (`name`)."""
    return set(re.findall(r"`([A-Za-z_][\w-]*)", (DOCS / page).read_text()))


@pytest.mark.parametrize("name", ["LiveChart", "LiveTable", "StatusBadge", "PresenceBar"])
def test_every_widget_option_is_documented(name: str) -> None:
    anywidget = pytest.importorskip("anywidget")
    import rtkit.widgets

    cls = getattr(rtkit.widgets, name)
    own = set(cls.class_traits(sync=True)) - set(anywidget.AnyWidget.class_traits(sync=True))
    options = {t for t in own if not t.startswith("_")} - {"window_rows", "window_seconds"}
    for klass in cls.__mro__:  # keyword arguments of the class and its bases
        if "__init__" in vars(klass) and klass.__module__.startswith("rtkit."):
            params = inspect.signature(klass.__init__).parameters.values()
            options |= {p.name for p in params if p.kind is p.KEYWORD_ONLY}
            options |= {p.name for p in params if p.name in ("channel", "room")}
    missing = options - documented("widgets.md")
    assert not missing, f"docs/widgets.md does not name {name}'s options {sorted(missing)}"


def test_every_demo_option_is_documented() -> None:
    from rtkit.cli import build_parser

    sub = next(
        a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    ).choices["demo"]
    options = {s for a in sub._actions for s in a.option_strings if s.startswith("--")}
    text = (DOCS / "demo.md").read_text()
    missing = {o for o in options - {"--help"} if f"`{o}" not in text}
    assert not missing, f"docs/demo.md does not name {sorted(missing)}"


def _rst() -> ModuleType:
    spec = importlib.util.spec_from_file_location("griffe_rst", REPO / "scripts" / "griffe_rst.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docstring_rest_becomes_markdown() -> None:
    pytest.importorskip("griffe")
    to_markdown = _rst().to_markdown
    text = (
        "Join with :meth:`rtkit.Client.presence` (see :class:`~rtkit.aio.Presence`).\n"
        "\n"
        ">>> room = hub.presence('a')\n"
        ">>> [m.name for m in room.members]\n"
        "['Ada']\n"
        "\n"
        "The tree::\n"
        "\n"
        "    RtkitError\n"
        "    └── HubError\n"
        "\n"
        "After."
    )
    assert to_markdown(text).split("\n") == [
        "Join with `rtkit.Client.presence` (see `Presence`).",
        "",
        "",
        "```pycon",
        ">>> room = hub.presence('a')",
        ">>> [m.name for m in room.members]",
        "['Ada']",
        "```",
        "",
        "",
        "The tree:",
        "",
        "```",
        "RtkitError",
        "└── HubError",
        "```",
        "",
        "After.",
    ]
