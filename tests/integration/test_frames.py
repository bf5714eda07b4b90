"""pandas views against a real hub: publish_frame, frame(), history(as_frame=True), gaps."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest

import rtkit
import rtkit.aio
from rtkit.pytest_plugin import HubProcess, InProcessHub

from .helpers import poll_until

WAIT = 20.0
FAST_RECONNECT: dict[str, Any] = {"reconnect_delay": 0.05, "reconnect_delay_max": 0.3}


def _frame(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    return pd.DataFrame(
        {
            "sensor": pd.array(rng.integers(0, 5, n), dtype="int64"),
            "temp": np.where(rng.random(n) < 0.1, np.nan, rng.normal(20, 2, n)),
            "site": np.where(rng.random(n) < 0.1, None, rng.choice(["a", "b", "c"], n)),
            "at": pd.date_range("2025-03-30 00:00", periods=n, freq="min", tz="Europe/Paris"),
            "count": pd.array(np.where(rng.random(n) < 0.2, None, rng.integers(0, 9, n)), "Int64"),
        }
    )


def test_publish_frame_round_trips_through_frame_and_history(
    rt_hub_inprocess: InProcessHub,
) -> None:
    df = _frame(5_000)
    with rtkit.connect(rt_hub_inprocess.url) as pub, rtkit.connect(rt_hub_inprocess.url) as sub:
        view = sub.channel("sensors").frame(window=3_000)
        seqs = pub.channel("sensors").publish_frame(df, batch_rows=700)
        assert seqs == list(range(1, 9))  # 5000 rows in batches of 700: 8 messages
        poll_until(lambda: view.rows_received == 5_000, "the view to take in every row")
        live = view.df
        assert len(live) == 3_000
        assert dict(live.dtypes) == dict(df.dtypes)
        pd.testing.assert_frame_equal(
            live.reset_index(drop=True), df.iloc[-3_000:].reset_index(drop=True)
        )
        assert isinstance(live.index, pd.DatetimeIndex) and str(live.index.tz) == "UTC"

        hist = pub.channel("sensors").history(as_frame=True, columns=["at", "temp"])
        pd.testing.assert_frame_equal(
            hist.reset_index(drop=True), df[["at", "temp"]].reset_index(drop=True)
        )
        view.close()
        pub.channel("sensors").publish({"temp": 1.0})
        assert view.rows_received == 5_000  # closed: no longer fed


# Row messages: n is in every row, x and s are missing from one each.
ROWS: list[dict[str, Any]] = [
    {"n": 1, "x": 0.5, "s": "a"},
    {"n": 2, "s": "b"},
    {"n": 3, "x": 1.5},
    {"n": 4, "x": -2.0, "s": "d"},
]


def _batch() -> pd.DataFrame:
    """What row messages cannot carry: zoned timestamps, nullable ints, strings, with gaps."""
    at = pd.DatetimeIndex(["2025-03-30 01:30", None, "2025-03-30 03:30"])  # across the DST jump
    return pd.DataFrame(
        {
            "at": at.tz_localize("Europe/Paris"),
            "count": pd.array([1, None, 3], dtype="Int64"),
            "label": pd.array(["a", None, "c"], dtype="string"),
        }
    )


def _hub_times(messages: list[rtkit.Message]) -> pd.DatetimeIndex:
    return pd.DatetimeIndex([pd.Timestamp(m.ts, unit="s", tz="UTC") for m in messages])


def _check_index(df: pd.DataFrame, messages: list[rtkit.Message], start: float, end: float) -> None:
    index = df.index
    assert isinstance(index, pd.DatetimeIndex) and str(index.tz) == "UTC"
    assert index.name == "ts" and index.is_monotonic_increasing
    # Hub time of each message (the hub runs on this machine's clock)...
    slack = pd.Timedelta("1ms")
    assert index[0] >= pd.Timestamp(start, unit="s", tz="UTC") - slack
    assert index[-1] <= pd.Timestamp(end, unit="s", tz="UTC") + slack
    # ...and the very ts the envelopes carry, to well below a microsecond.
    assert abs(index - _hub_times(messages)).max() < pd.Timedelta("1us")


def _check_rows_frame(
    df: pd.DataFrame, messages: list[rtkit.Message], start: float, end: float
) -> None:
    assert [m.data for m in messages] == ROWS
    _check_index(df, messages, start, end)
    assert list(df.columns) == ["n", "x", "s"]
    assert df["n"].dtype == np.dtype("int64")
    assert df["x"].dtype == np.dtype("float64")
    assert pd.api.types.is_string_dtype(df["s"].dtype)
    assert df["n"].tolist() == [1, 2, 3, 4]
    assert df["x"].isna().tolist() == [False, True, False, False]
    assert df["x"].dropna().tolist() == [0.5, 1.5, -2.0]
    assert df["s"].isna().tolist() == [False, False, True, False]
    assert df["s"].dropna().tolist() == ["a", "b", "d"]


def _check_batch_frame(df: pd.DataFrame, batch: rtkit.Message, start: float, end: float) -> None:
    src = _batch()
    _check_index(df, [batch] * len(src), start, end)  # one message: one hub time for all rows
    assert dict(df.dtypes) == dict(src.dtypes)
    assert str(df["at"].dt.tz) == "Europe/Paris"
    pd.testing.assert_frame_equal(df.reset_index(drop=True), src)
    assert df.isna().sum().tolist() == [1, 1, 1]


def _check_selected(df: pd.DataFrame, messages: list[rtkit.Message]) -> None:
    """``since=1, limit=2, columns=["s", "n", "nope"]``: rows 2 and 3, in that column order."""
    assert [m.seq for m in messages] == [2, 3]
    assert list(df.columns) == ["s", "n", "nope"]
    assert abs(df.index - _hub_times(messages)).max() < pd.Timedelta("1us")
    assert df["n"].tolist() == [2, 3]
    assert df["s"].isna().tolist() == [False, True]
    assert df["nope"].isna().all()


def test_history_as_frame_with_the_blocking_client(rt_hub_inprocess: InProcessHub) -> None:
    with rtkit.connect(rt_hub_inprocess.url) as hub:
        rows, batches = hub.channel("rows"), hub.channel("batches")
        start = time.time()
        assert [rows.publish(row) for row in ROWS] == [1, 2, 3, 4]
        assert batches.publish_frame(_batch()) == [1]
        end = time.time()

        messages = rows.history()
        assert isinstance(messages, list)
        _check_rows_frame(rows.history(as_frame=True), messages, start, end)
        _check_batch_frame(batches.history(as_frame=True), batches.history()[0], start, end)
        _check_selected(
            rows.history(since=1, limit=2, as_frame=True, columns=["s", "n", "nope"]),
            rows.history(since=1, limit=2),
        )
        pd.testing.assert_frame_equal(rows.history_frame(), rows.history(as_frame=True))

        empty = hub.channel("never").history(as_frame=True)
        assert len(empty) == 0 and str(empty.index.tz) == "UTC"
        with pytest.raises(TypeError, match="as_frame=True"):
            rows.history(columns=["n"])  # type: ignore[call-overload]


async def test_history_as_frame_with_the_async_client(rt_hub_inprocess: InProcessHub) -> None:
    async with await rtkit.aio.connect(rt_hub_inprocess.url) as hub:
        rows, batches = hub.channel("rows"), hub.channel("batches")
        start = time.time()
        assert [await rows.publish(row) for row in ROWS] == [1, 2, 3, 4]
        assert await batches.publish_frame(_batch()) == [1]
        end = time.time()

        messages = await rows.history()
        assert isinstance(messages, list)
        _check_rows_frame(await rows.history(as_frame=True), messages, start, end)
        batch = (await batches.history())[0]
        _check_batch_frame(await batches.history(as_frame=True), batch, start, end)
        _check_selected(
            await rows.history(since=1, limit=2, as_frame=True, columns=["s", "n", "nope"]),
            await rows.history(since=1, limit=2),
        )
        pd.testing.assert_frame_equal(await rows.history_frame(), await rows.history(as_frame=True))

        empty = await hub.channel("never").history(as_frame=True)
        assert len(empty) == 0 and str(empty.index.tz) == "UTC"
        with pytest.raises(TypeError, match="as_frame=True"):
            await rows.history(columns=["n"])  # type: ignore[call-overload]


def test_time_window_over_live_row_messages(rt_hub_inprocess: InProcessHub) -> None:
    with rtkit.connect(rt_hub_inprocess.url) as hub:
        ch = hub.channel("ticks")
        view = ch.frame(window="300ms")
        first = ch.publish({"px": 0.0})
        poll_until(lambda: view.received == 1, "the first tick")
        start = time.monotonic()
        n = 0
        # Publish for a little over a second: the view must hold only the last 300 ms.
        while time.monotonic() - start < 1.2:
            n += 1
            ch.publish({"px": float(n)})
        poll_until(lambda: view.received == n + 1, "every tick")
        df = view.df
        assert first == 1
        assert 0 < len(df) < n
        assert df.index[-1] - df.index[0] <= pd.Timedelta("300ms")
        assert df["px"].iloc[-1] == float(n)
        view.close()


def test_a_time_window_empties_after_the_stream_stops(rt_hub_inprocess: InProcessHub) -> None:
    """The window is measured against the hub's clock: rows published once
    leave a 500 ms view without any further message."""
    with rtkit.connect(rt_hub_inprocess.url) as hub:
        ch = hub.channel("frames.stopped")
        view = ch.frame(window="500ms")
        ch.publish_frame(pd.DataFrame({"x": np.arange(5_000)}), batch_rows=1_000)
        poll_until(lambda: view.rows_received == 5_000, "the batches")
        assert 0 < len(view.df) <= 5_000
        received = view.received
        poll_until(lambda: len(view.df) == 0, "the rows to leave the window", within=5.0)
        hub_now = view.hub_now()
        assert hub_now is not None and abs(hub_now - time.time()) < 1.0
        assert view.received == received and view._chunk_rows == 0
        view.close()


@pytest.mark.slow
def test_a_lost_history_shows_in_the_frame(rt_hub_factory: Callable[..., HubProcess]) -> None:
    hub = rt_hub_factory()  # memory store: a restart loses the channel
    with rtkit.connect(hub.url, **FAST_RECONNECT) as client:
        ch = client.channel("feed")
        view = ch.frame(window=100)
        for i in range(3):
            ch.publish({"x": float(i)})
        poll_until(lambda: view.received == 3, "the first messages")
        hub.kill()
        hub.start()
        poll_until(lambda: bool(view.gaps), "the gap notice")
        ch.publish({"x": 10.0})
        poll_until(lambda: view.received == 4, "the message after the gap")
        df = view.df
        assert df["x"].isna().tolist() == [False, False, False, True, False]
        assert view.gaps[0].last_seq == 3
        view.close()


def test_a_closed_view_is_released(rt_hub_inprocess: InProcessHub) -> None:
    """Closing a frame() view lets it go: the channel holds no callback of it
    (a gap callback used to stay behind and keep the closed view alive)."""
    import gc
    import weakref

    with rtkit.connect(rt_hub_inprocess.url) as hub:
        channel = hub.channel("frames.release")

        def used_and_closed() -> weakref.ref[Any]:
            view = channel.frame(window=10)
            channel.publish({"x": 1})
            poll_until(lambda: view.received == 1, "the view to see the message")
            view.close()
            return weakref.ref(view)

        ref = used_and_closed()
        gc.collect()
        assert ref() is None, "a closed view is still referenced"
        # The channel still works for others.
        other = channel.frame(window=10)
        channel.publish({"x": 2})
        poll_until(lambda: other.received == 1, "a new view to see a new message")
        other.close()
