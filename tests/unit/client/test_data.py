"""The rule for what a Python value becomes on the wire (README, "What you
can publish"), and the one-line error for what it does not cover."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import traceback
import uuid
from typing import Any

import numpy as np
import pandas as pd
import pytest

from rtkit.client._data import to_wire
from rtkit.errors import UnsupportedData

UTC = dt.UTC


class Side(enum.Enum):
    BUY = "buy"


@dataclasses.dataclass
class Tick:
    px: float
    qty: int


CASES: list[tuple[str, Any, Any]] = [
    ("plain", {"a": [1, 2.5, "x", True, None]}, {"a": [1, 2.5, "x", True, None]}),
    ("tuple", (1, 2), [1, 2]),
    ("int keys", {1: "a"}, {"1": "a"}),
    ("nan", float("nan"), None),
    ("inf inside", {"x": [1.0, float("inf"), -float("inf")]}, {"x": [1.0, None, None]}),
    ("np.float64", np.float64(1.5), 1.5),
    ("np.float32 nan", np.float32("nan"), None),
    ("np.int64", np.int64(7), 7),
    ("np.bool_", np.bool_(True), True),
    ("np array", np.array([1.0, np.nan, 3.0]), [1.0, None, 3.0]),
    ("np 2d int", np.arange(6).reshape(2, 3), [[0, 1, 2], [3, 4, 5]]),
    ("np slice", np.arange(6.0).reshape(2, 3)[:, 1], [1.0, 4.0]),
    ("np text", np.array(["a", "b"]), ["a", "b"]),
    ("np datetime64", np.datetime64("2024-05-01T12:30:00"), "2024-05-01T12:30:00"),
    (
        "np datetime64 array with NaT",
        np.array(["2024-05-01", "NaT"], dtype="datetime64[s]"),
        ["2024-05-01T00:00:00", None],
    ),
    ("np timedelta64", np.timedelta64(1500, "ms"), 1.5),
    ("datetime", dt.datetime(2024, 5, 1, 12, 30, tzinfo=UTC), "2024-05-01T12:30:00+00:00"),
    ("naive datetime", dt.datetime(2024, 5, 1, 12, 30), "2024-05-01T12:30:00"),
    ("date", dt.date(2024, 5, 1), "2024-05-01"),
    ("time", dt.time(9, 15, 30), "09:15:30"),
    ("timedelta", dt.timedelta(minutes=1, seconds=30), 90.0),
    (
        "pd.Timestamp",
        pd.Timestamp("2024-05-01 12:30:00.123456789", tz="UTC"),
        "2024-05-01T12:30:00.123456789+00:00",
    ),
    ("pd.NaT", pd.NaT, None),
    ("pd.NA", pd.NA, None),
    ("pd.Timedelta", pd.Timedelta("2.5s"), 2.5),
    ("pd.Series", pd.Series({"bid": 1.5, "ask": np.nan}), {"bid": 1.5, "ask": None}),
    ("a DataFrame row", pd.DataFrame({"px": [1.0], "n": [2]}).iloc[0], {"px": 1.0, "n": 2.0}),
    ("Decimal", decimal.Decimal("1.10"), "1.10"),
    ("Decimal NaN", decimal.Decimal("NaN"), None),
    ("UUID", uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
    ("set", {3, 1, 2}, [1, 2, 3]),
    ("frozenset", frozenset({"b", "a"}), ["a", "b"]),
    ("dataclass", Tick(1.5, 2), {"px": 1.5, "qty": 2}),
    ("enum", Side.BUY, "buy"),
]


@pytest.mark.parametrize(("value", "wire"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_the_rule(value: Any, wire: Any) -> None:
    converted, size = to_wire(value)
    assert converted == wire
    assert size > 0


def test_bytes_go_as_binary() -> None:
    assert to_wire(b"\x00\x01") == (b"\x00\x01", 2)
    assert to_wire(bytearray(b"ab")) == (b"ab", 2)


@pytest.mark.parametrize(
    ("value", "names", "fix"),
    [
        ({"fig": object()}, "object at data['fig']", "str(value)"),
        ({"z": [1, 2j]}, "complex at data['z'][1]", "value.real"),
        (pd.DataFrame({"a": [1]}), "pandas.DataFrame", "publish_frame(df)"),
        ({"blob": b"xx"}, "bytes at data['blob']", "base64"),
        (2**70, "integer beyond 64 bits", "str(value)"),
    ],
    ids=["object", "complex", "DataFrame", "nested bytes", "big int"],
)
def test_anything_else_fails_with_one_line_naming_the_type_and_the_fix(
    value: Any, names: str, fix: str
) -> None:
    with pytest.raises(UnsupportedData) as caught:
        to_wire(value)
    message = str(caught.value)
    assert names in message and fix in message
    assert "\n" not in message
    # One traceback, not three chained ones.
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    shown = "".join(traceback.format_exception(caught.value))
    assert "During handling" not in shown and "direct cause" not in shown
    assert isinstance(caught.value, TypeError)  # what json's callers catch
