"""rtkit.frames without a hub: batch encoding, dtype round trips, windows, gaps."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import numpy as np
import pandas as pd
import pytest

from rtkit.client._types import GapInfo
from rtkit.frames import LiveFrame, decode_messages, encode_batches, parse_window
from rtkit.protocol import Message

T0 = 1_750_000_000.0


def _msg(seq: int, data: Any, ts: float | None = None) -> Message:
    # Through JSON, as the wire does it: a batch must survive json.dumps/loads.
    wire = json.loads(json.dumps(data, allow_nan=False))
    return Message("ch", seq, T0 + seq if ts is None else ts, f"m{seq}", "ada", wire)


def _mixed(n: int = 6) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "i": np.arange(n, dtype="int64"),
            "f": [1.5, np.nan, 2.5, -0.0, 1e300, np.nan][:n],
            "s": ["a", None, "ü", "", "x", "y"][:n],
            "t": pd.to_datetime(
                [
                    "2024-03-31 01:30",
                    None,
                    "2024-10-27 02:30",
                    "2025-01-01 00:00",
                    "2025-06-01 12:00",
                    None,
                ][:n]
            )
            .tz_localize("UTC")
            .tz_convert("Europe/Paris"),
            "n": pd.array([1, None, 3, None, 5, 6][:n], dtype="Int64"),
            "b": [True, False, True, True, False, True][:n],
            "d": pd.to_timedelta([1, 2, None, 4, 5, 6][:n], unit="s"),
        }
    )


def test_dtypes_and_missing_values_survive_a_round_trip() -> None:
    df = _mixed()
    batches = encode_batches(df, batch_rows=4)
    assert [b["rows"] for b in batches] == [4, 2]
    out = decode_messages([_msg(i + 1, b) for i, b in enumerate(batches)])
    assert list(out.columns) == list(df.columns)
    assert dict(out.dtypes) == dict(df.dtypes)
    pd.testing.assert_frame_equal(out.reset_index(drop=True), df)
    assert str(out.index.tz) == "UTC" and out.index.name == "ts"


def test_a_named_index_becomes_a_column() -> None:
    idx = pd.date_range("2025-01-01", periods=3, freq="s", tz="UTC", name="when")
    df = pd.DataFrame({"px": [1.0, 2.0, 3.0]}, index=idx)
    (batch,) = encode_batches(df)
    out = decode_messages([_msg(1, batch)])
    assert list(out.columns) == ["when", "px"]
    assert (out["when"].to_numpy() == idx.to_numpy()).all()


def test_batches_stay_under_the_byte_cap() -> None:
    df = pd.DataFrame({"s": ["x" * 100] * 5_000})
    batches = encode_batches(df, batch_rows=5_000, max_bytes=100_000)
    assert sum(b["rows"] for b in batches) == 5_000
    assert all(len(json.dumps(b)) <= 100_000 for b in batches)
    assert len(batches) > 1


def test_row_messages_become_rows_and_columns_can_be_picked() -> None:
    msgs = [_msg(1, {"a": 1, "b": "x"}), _msg(2, {"a": 2}), _msg(3, 7.5)]
    out = decode_messages(msgs, columns=["a", "value"])
    assert list(out.columns) == ["a", "value"]
    assert out["a"].tolist()[:2] == [1, 2]
    assert out["value"].iloc[2] == 7.5
    assert list(out.index) == list(pd.to_datetime([T0 + 1, T0 + 2, T0 + 3], unit="s", utc=True))


def test_history_with_a_hole_shows_a_row_of_missing_values() -> None:
    out = decode_messages([_msg(1, {"a": 1}), _msg(2, {"a": 2}), _msg(5, {"a": 5})])
    assert len(out) == 4
    assert out["a"].isna().tolist() == [False, False, True, False]


def test_row_window_keeps_the_last_rows_and_bounds_memory() -> None:
    view = LiveFrame("ch", window=100)
    for seq in range(1, 5_001):
        view.on_message(_msg(seq, {"x": seq}))
        assert view._chunk_rows + len(view._pending) <= 100 + 1_024 + 1_024
    df = view.df
    assert df["x"].tolist() == list(range(4_901, 5_001))
    assert view.received == 5_000 and len(view) == 100


def test_row_window_over_batches() -> None:
    view = LiveFrame("ch", window=250)
    for seq in range(1, 101):
        batch = encode_batches(pd.DataFrame({"x": np.arange(100) + 100 * (seq - 1)}))[0]
        view.on_message(_msg(seq, batch))
        assert view._chunk_rows <= 250 + 100
    assert view.df["x"].tolist() == list(range(9_750, 10_000))
    assert view.rows_received == 10_000


def test_time_window_follows_the_newest_message() -> None:
    view = LiveFrame("ch", window="10s", columns=["x"])
    view._clock = lambda: 0.0  # read at the instant the newest message arrived
    for seq in range(1, 2_001):
        view.on_message(_msg(seq, {"x": seq, "other": 0}, ts=T0 + seq / 10))
    df = view.df
    assert list(df.columns) == ["x"]
    # Messages every 0.1 s: the last 10 seconds hold 101 of them (both ends included).
    assert df["x"].tolist() == list(range(1_900, 2_001))
    newest = df.index[-1]
    assert (newest - df.index[0]) <= pd.Timedelta("10s")


def test_time_window_ends_at_the_hub_clock_when_the_stream_stops() -> None:
    """Rows leave a time window as the hub's clock moves on, with no new
    message: the clock is estimated from when messages arrived."""
    local = [100.0]  # the local monotonic clock, moved by hand
    view = LiveFrame("ch", window="10s")
    view._clock = lambda: local[0]
    # 20,000 rows in two batches at hub times T0 and T0 + 1, received 50 ms
    # after they were stamped (and one older backlog message, received late).
    view.on_message(_msg(1, {"x": -1}, ts=T0 - 30))
    for seq in (2, 3):
        ts = T0 + seq - 2
        local[0] = 100.0 + (seq - 2) + 0.05
        batch = encode_batches(pd.DataFrame({"x": np.arange(10_000)}), batch_rows=10_000)[0]
        view.on_message(_msg(seq, batch, ts=ts))
    assert len(view) == 20_000
    assert view.hub_now() == pytest.approx(T0 + 1)
    local[0] += 9.5  # hub time T0 + 10.5: the first batch is out of the window
    assert view.hub_now() == pytest.approx(T0 + 10.5)
    assert len(view) == 10_000
    assert view.df.index[0] == pd.Timestamp(T0 + 1, unit="s", tz="UTC")
    local[0] += 60  # a minute later: nothing left, and nothing held
    assert len(view) == 0
    assert view._chunk_rows == 0 and not view._chunks


def test_a_gap_is_a_row_of_missing_values_and_listed() -> None:
    view = LiveFrame("ch", window=10)
    view.on_message(_msg(1, {"x": 1.0}))
    view.on_message(_msg(2, {"x": 2.0}))
    info = GapInfo("ch", last_seq=2, last_epoch="e1", seq=0, epoch="e2", first_seq=1)
    view.on_gap("other", info)  # another channel's gap is not ours
    view.on_gap("ch", info)
    view.on_message(_msg(1, {"x": 10.0}, ts=T0 + 50))
    df = view.df
    assert df["x"].isna().tolist() == [False, False, True, False]
    assert df.index[2] == df.index[3]
    assert view.gaps == [info]


def test_windows_are_validated() -> None:
    assert parse_window(5) == (5, None)
    assert parse_window("5min") == (None, 300.0)
    assert parse_window(pd.Timedelta("2s")) == (None, 2.0)
    for bad in (0, True, "soon", "-1s"):
        with pytest.raises((ValueError, TypeError)):
            parse_window(bad)


def test_import_rtkit_does_not_import_pandas() -> None:
    code = "import sys, rtkit, rtkit.aio; rtkit.connect; print('pandas' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"


def test_channel_twins_and_widgets_expose_the_live_data_names() -> None:
    import rtkit
    import rtkit.aio
    import rtkit.frames
    import rtkit.widgets

    for cls in (rtkit.Channel, rtkit.aio.Channel):
        for name in ("frame", "publish_frame", "history_frame"):
            assert callable(getattr(cls, name)), (cls, name)
    assert set(rtkit.frames.__all__) == {
        "FRAME_TAG", "LiveFrame", "decode_messages", "encode_batches", "is_batch", "parse_window",
    }  # fmt: skip
    for name in ("LiveChart", "LiveTable", "StatusBadge"):
        assert getattr(rtkit.widgets, name).__module__ == "rtkit.widgets._base"
