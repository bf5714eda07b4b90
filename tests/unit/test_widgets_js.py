"""The widgets' pure JavaScript (rtkit/widgets/js/src/values.js) under Node.js:
table cells shown as pandas shows the same values, min/max downsampling to
the pixel grid, compact y tick labels and y scales by magnitude.

Each test sends a list of calls to one Node.js process and compares the
answers with what pandas and numpy say.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from rtkit.frames import encode_batches

VALUES_JS = Path(__file__).resolve().parents[2] / "rtkit" / "widgets" / "js" / "src" / "values.js"

RUNNER = """
import * as values from %s;
let input = "";
for await (const chunk of process.stdin) input += chunk;
const out = JSON.parse(input).map(([fn, args]) => {
  const result = values[fn](...args);
  return result instanceof Map ? Object.fromEntries(result) : result;
});
process.stdout.write(JSON.stringify(out));
"""


def js(calls: list[tuple[str, list[Any]]]) -> list[Any]:
    """``values.<fn>(*args)`` for each call, in one Node.js process."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("Node.js is missing: the widgets are built with it (make setup)")
    proc = subprocess.run(
        [node, "--input-type=module", "-e", RUNNER % json.dumps(VALUES_JS.as_uri())],
        input=json.dumps(calls),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return list(json.loads(proc.stdout))


def pandas_text(value: Any) -> str:
    """One cell as pandas shows it: missing values as NaT, <NA>, None or NaN,
    floats as their repr, timestamps and timedeltas as str()."""
    if value is None:
        return "None"
    if value is pd.NA:
        return "<NA>"
    if value is pd.NaT:
        return "NaT"
    if isinstance(value, float | np.floating):
        return "NaN" if math.isnan(value) else repr(float(value))
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    return str(value)


def test_table_cells_read_as_pandas_shows_them() -> None:
    stamps = ["2025-05-31 23:20:24.999500", None, "2024-10-27 02:30:00", "1999-12-31 23:59:59.5"]
    df = pd.DataFrame(
        {
            "utc": pd.to_datetime(stamps, format="ISO8601").tz_localize("UTC").as_unit("us"),
            "paris": pd.to_datetime(stamps, format="ISO8601")
            .tz_localize("UTC")
            .tz_convert("Europe/Paris"),
            "naive_s": pd.to_datetime(
                ["2025-05-31 23:20:24", None, "2020-02-29 00:00:00", "1970-01-01 00:00:00"]
            ).as_unit("s"),
            "ny_ms": pd.to_datetime(stamps, format="ISO8601")
            .tz_localize("UTC")
            .tz_convert("America/New_York")
            .as_unit("ms"),
            "f": [101.25, np.nan, 1e16, 1e-05],
            "g": [1.0, -0.0, 123456.789, 2.5e-7],
            "i": np.array([1, -2, 3, 2**40], dtype="int64"),
            "n": pd.array([1, None, 3, 4], dtype="Int64"),
            "b": [True, False, True, False],
            "nb": pd.array([True, None, False, True], dtype="boolean"),
            "s": ["buy", None, "ü", ""],
            "d": pd.to_timedelta([1.5, None, -1.5, 86400 * 3 + 0.000001], unit="s"),
        }
    )
    (batch,) = json.loads(json.dumps(encode_batches(df)))  # as the wire carries it
    calls = [
        ("formatValue", [value, dtype])
        for dtype, column in zip(batch["dtypes"], batch["data"], strict=True)
        for value in column
    ]
    shown = js(calls)
    expected = [pandas_text(df[c].iloc[i]) for c in df.columns for i in range(len(df))]
    mismatches = [
        (c, i, got, want)
        for (c, i), got, want in zip(
            [(c, i) for c in df.columns for i in range(len(df))], shown, expected, strict=True
        )
        if got != want
    ]
    assert not mismatches
    # The user's report: a tz-aware timestamp was shown as an integer.
    assert shown[0] == "2025-05-31 23:20:24.999500+00:00"


def test_plain_json_values_and_hub_time() -> None:
    ts = 1748733624.9995
    got = js(
        [
            ("formatValue", [1, None]),
            ("formatValue", [2.5, None]),
            ("formatValue", [None, None]),
            ("formatValue", [True, None]),
            ("formatValue", [{"a": [1]}, None]),
            ("formatHubTime", [ts]),
        ]
    )
    assert got[:5] == ["1", "2.5", "None", "True", '{"a":[1]}']
    assert got[5] == str(pd.Timestamp(ts, unit="s", tz="UTC").round("us"))


def test_min_max_downsampling_draws_one_point_per_pixel_column_and_keeps_extremes() -> None:
    rng = np.random.default_rng(5)
    n, width = 20_000, 900
    xs = np.sort(rng.uniform(0, 100, n)).tolist()
    ys: list[float | None] = np.cumsum(rng.normal(0, 1, n)).tolist()
    ys[10] = None  # a missing value is skipped, not drawn
    (out,) = js([("minMax", [xs, ys, 0, 100, width])])
    x, y = np.array(out["x"]), np.array(out["y"])
    assert np.all(np.diff(x) > 0)
    cols = np.minimum(width - 1, (x / 100 * width).astype(int))
    assert np.bincount(cols).max() == 1  # one point per pixel column
    assert len(x) > 0.9 * width  # ...and nearly every column has one
    # Every pair of pixel columns keeps the lowest and highest of its points,
    # drawn within the pair.
    values = np.array([np.nan if v is None else v for v in ys])
    all_pairs = np.minimum(width - 1, (np.array(xs) / 100 * width).astype(int)) // 2
    for pair in np.unique(all_pairs)[:: width // 60]:
        mine = values[all_pairs == pair]
        drawn = y[cols // 2 == pair]
        assert drawn.min() == np.nanmin(mine) and drawn.max() == np.nanmax(mine)
    # An odd width: still one point per column, the last pair of three.
    (odd,) = js([("minMax", [xs, ys, 0, 100, 757])])
    odd_cols = np.minimum(756, (np.array(odd["x"]) / 100 * 757).astype(int))
    assert np.bincount(odd_cols).max() == 1 and len(odd_cols) <= 757
    # Fewer points than pixel columns: every one of them drawn where it is.
    (few,) = js([("minMax", [[1, 2, 3], [3, 1, 2], 1, 3, 900])])
    assert few == {"x": [1, 2, 3], "y": [3, 1, 2]}
    # A burst at one x (no span): its extremes, in order.
    (same,) = js([("minMax", [[5, 5, 5], [2, 9, 1], 5, 5, 900])])
    assert same == {"x": [5, 5], "y": [9, 1]}


def test_tick_labels_are_compact_and_distinct() -> None:
    cases = [
        [216_000, 217_000, 218_000],
        [217_000, 217_500, 218_000],
        [0, 50_000_000, 100_000_000],
        [99.5, 100, 100.5],
        [-0.002, 0, 0.002],
        [0, 0.5, 1],
    ]
    got = js([("compactTicks", [c]) for c in cases])
    assert got[0] == ["216k", "217k", "218k"]
    assert got[1] == ["217.0k", "217.5k", "218.0k"]
    assert got[2] == ["0M", "50M", "100M"]
    assert got[3] == ["99.5", "100.0", "100.5"]
    assert got[4] == ["-0.002", "0.000", "0.002"]
    for labels in got:
        assert len(set(labels)) == len(labels)  # neighbours never read the same
        assert max(map(len, labels)) <= 7


def test_y_scales_by_magnitude() -> None:
    got = js(
        [
            ("scaleGroups", [{"bid": 101.2, "ask": 101.3, "n": 217_000}]),
            ("scaleGroups", [{"a": 1.0, "b": 15.0, "c": 0.0}]),
        ]
    )
    assert got[0] == [["n"], ["ask", "bid"]]
    assert got[1] == [["b", "a", "c"]]
