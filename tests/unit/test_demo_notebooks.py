"""The tutorial copies ``rtkit demo`` serves: never with saved outputs, and
a user's own edits kept (the browser test, tests/jupyter/test_demo.py, runs
the whole demo)."""

from __future__ import annotations

import json
from pathlib import Path

from rtkit import demo


def outputs(path: Path) -> list[object]:
    cells = json.loads(path.read_text())["cells"]
    return [c["outputs"] or c["execution_count"] for c in cells if c["cell_type"] == "code"]


def test_tutorials_are_copied_without_outputs(tmp_path: Path) -> None:
    shipped = sorted(demo.NOTEBOOKS.glob("*.ipynb"))
    assert any(any(outputs(nb)) for nb in shipped), "the shipped notebooks keep outputs for nbval"
    demo._copy_tutorials(tmp_path)
    assert sorted(p.name for p in tmp_path.glob("*.ipynb")) == [p.name for p in shipped]
    for copy in tmp_path.glob("*.ipynb"):
        assert not any(outputs(copy)), copy.name
        # Still a notebook nbformat reads, with every cell of the original.
        original = json.loads((demo.NOTEBOOKS / copy.name).read_text())
        assert len(json.loads(copy.read_text())["cells"]) == len(original["cells"])


def test_an_earlier_copy_keeps_its_code_and_loses_its_outputs(tmp_path: Path) -> None:
    name = "02-live-data.ipynb"
    earlier = json.loads((demo.NOTEBOOKS / name).read_text())
    earlier["cells"][1]["source"] = "print('my own version')"
    earlier["cells"][1]["outputs"] = [
        {"output_type": "stream", "name": "stdout", "text": "my own version\n"}
    ]
    earlier["cells"][1]["execution_count"] = 3
    earlier["metadata"]["widgets"] = {"application/vnd.jupyter.widget-state+json": {}}
    (tmp_path / name).write_text(json.dumps(earlier))
    unreadable = tmp_path / "03-collaboration.ipynb"
    unreadable.write_text("not json")

    demo._copy_tutorials(tmp_path)

    copy = json.loads((tmp_path / name).read_text())
    assert copy["cells"][1]["source"] == "print('my own version')"
    assert not any(outputs(tmp_path / name))
    assert "widgets" not in copy["metadata"]
    assert unreadable.read_text() == "not json"  # left alone, not overwritten
