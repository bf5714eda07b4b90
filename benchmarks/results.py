"""Where the benchmarks write: one markdown file, one section per script.

``benchmarks/RESULTS.md`` starts with run.py's report (:func:`write_head`);
every other script owns one section after it, between a pair of markers
named after it (:func:`write_section`)::

    <!-- scaling:begin -->
    ## Scaling out: ...
    <!-- scaling:end -->

Writing a section replaces what its markers enclose, or appends the section
when the file has none yet; the rest of the file is left as it is.
"""

from __future__ import annotations

import re
from pathlib import Path

RESULTS_MD = Path(__file__).resolve().with_name("RESULTS.md")
TITLE = "# rtkit benchmark results\n"

# Any script's begin marker: where run.py's part of the file ends.
_ANY_BEGIN = re.compile(r"^<!-- [\w.-]+:begin -->$", re.MULTILINE)


def markers(name: str) -> tuple[str, str]:
    """The begin and end markers of section ``name`` (e.g. ``"scaling"``)."""
    if not re.fullmatch(r"[\w.-]+", name):
        raise ValueError(f"a section name is letters, digits, '_', '-' or '.': {name!r}")
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def write_section(name: str, body: str, path: Path = RESULTS_MD) -> None:
    """Put ``body`` (markdown, without markers) between section ``name``'s
    markers in ``path``, replacing what was there; append the section if
    the file has none (create the file if there is none)."""
    begin, end = markers(name)
    block = f"{begin}\n{body.strip(chr(10))}\n{end}"
    text = path.read_text() if path.exists() else TITLE
    start = text.find(begin)
    stop = text.find(end, start) if start >= 0 else -1
    if start >= 0 and stop >= 0:
        text = text[:start] + block + text[stop + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def write_head(body: str, path: Path = RESULTS_MD) -> None:
    """Replace everything before the first section in ``path`` with ``body``
    (run.py's report), keeping the other scripts' sections after it."""
    old = path.read_text() if path.exists() else ""
    first = _ANY_BEGIN.search(old)
    sections = old[first.start() :].rstrip("\n") if first else ""
    text = body.rstrip("\n") + "\n"
    if sections:
        text += "\n" + sections + "\n"
    path.write_text(text)
