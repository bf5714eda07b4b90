"""A griffe extension for the documentation site (mkdocs.yml): rtkit's
docstrings are written in light reStructuredText, the site renders Markdown.

What it converts, as mkdocstrings loads each docstring:

- ``>>>`` examples become ``pycon`` code blocks;
- a paragraph ending in ``::`` and the indented block after it become a
  code block;
- roles such as ``:class:`rtkit.aio.Client``` (``~`` keeps the last name)
  become code spans. They are not turned into links: many name private or
  relative targets, and ``mkdocs build --strict`` fails on a broken one.

``double backticks`` need nothing: Markdown reads them as code already.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj):`(~?)\.?([^`]+)`")
_FENCE = "```"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _role(match: re.Match[str]) -> str:
    short, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


def _fenced(lines: list[str], indent: int, lang: str) -> list[str]:
    pad = " " * indent
    width = min((_indent(line) for line in lines if line.strip()), default=indent)
    body = [pad + line[width:] if line.strip() else "" for line in lines]
    while body and not body[0]:
        body.pop(0)
    while body and not body[-1]:
        body.pop()
    return ["", f"{pad}{_FENCE}{lang}", *body, f"{pad}{_FENCE}", ""]


def to_markdown(text: str) -> str:
    """One docstring, from rtkit's reST to Markdown."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith(">>>"):
            # An example runs up to the next blank line (its output included).
            start = i
            while i < len(lines) and lines[i].strip():
                i += 1
            out += _fenced(lines[start:i], _indent(line), "pycon")
            continue
        if stripped.endswith("::") and not stripped.startswith(".."):
            base = _indent(line)
            head = line.rstrip()[:-2].rstrip()
            if head.strip():
                out.append(_ROLE.sub(_role, head) + ":")
            i += 1
            start = i
            while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > base):
                i += 1
            block = lines[start:i]
            first = next((b.strip() for b in block if b.strip()), "")
            out += _fenced(block, base, "pycon" if first.startswith(">>>") else "")
            continue
        out.append(_ROLE.sub(_role, line))
        i += 1
    return "\n".join(out).strip("\n")


class ReSTToMarkdown(griffe.Extension):
    """Rewrites every docstring griffe loads (see the module docstring)."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = to_markdown(obj.docstring.value)
