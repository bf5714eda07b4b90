"""pandas views against a real hub: publish_frame, frame(), history_frame, gaps."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest

import rtkit
from rtkit.pytest_plugin import HubProcess

WAIT = 20.0
FAST_RECONNECT: dict[str, Any] = {"reconnect_delay": 0.05, "reconnect_delay_max": 0.3}


def wait_until(predicate: Callable[[], bool], what: str, within: float = WAIT) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


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


def test_publish_frame_round_trips_through_frame_and_history(rt_hub: HubProcess) -> None:
    df = _frame(5_000)
    with rtkit.connect(rt_hub.url) as pub, rtkit.connect(rt_hub.url) as sub:
        view = sub.channel("sensors").frame(window=3_000)
        seqs = pub.channel("sensors").publish_frame(df, batch_rows=700)
        assert seqs == list(range(1, 9))  # 5000 rows in batches of 700: 8 messages
        wait_until(lambda: view.rows_received == 5_000, "the view to take in every row")
        live = view.df
        assert len(live) == 3_000
        assert dict(live.dtypes) == dict(df.dtypes)
        pd.testing.assert_frame_equal(
            live.reset_index(drop=True), df.iloc[-3_000:].reset_index(drop=True)
        )
        assert isinstance(live.index, pd.DatetimeIndex) and str(live.index.tz) == "UTC"

        hist = pub.channel("sensors").history_frame(columns=["at", "temp"])
        pd.testing.assert_frame_equal(
            hist.reset_index(drop=True), df[["at", "temp"]].reset_index(drop=True)
        )
        view.close()
        pub.channel("sensors").publish({"temp": 1.0})
        assert view.rows_received == 5_000  # closed: no longer fed


def test_time_window_over_live_row_messages(rt_hub: HubProcess) -> None:
    with rtkit.connect(rt_hub.url) as hub:
        ch = hub.channel("ticks")
        view = ch.frame(window="300ms")
        first = ch.publish({"px": 0.0})
        wait_until(lambda: view.received == 1, "the first tick")
        start = time.monotonic()
        n = 0
        # Publish for a little over a second: the view must hold only the last 300 ms.
        while time.monotonic() - start < 1.2:
            n += 1
            ch.publish({"px": float(n)})
        wait_until(lambda: view.received == n + 1, "every tick")
        df = view.df
        assert first == 1
        assert 0 < len(df) < n
        assert df.index[-1] - df.index[0] <= pd.Timedelta("300ms")
        assert df["px"].iloc[-1] == float(n)
        view.close()


@pytest.mark.slow
def test_a_lost_history_shows_in_the_frame(rt_hub_factory: Callable[..., HubProcess]) -> None:
    hub = rt_hub_factory()  # memory store: a restart loses the channel
    with rtkit.connect(hub.url, **FAST_RECONNECT) as client:
        ch = client.channel("feed")
        view = ch.frame(window=100)
        for i in range(3):
            ch.publish({"x": float(i)})
        wait_until(lambda: view.received == 3, "the first messages")
        hub.kill()
        hub.start()
        wait_until(lambda: bool(view.gaps), "the gap notice")
        ch.publish({"x": 10.0})
        wait_until(lambda: view.received == 4, "the message after the gap")
        df = view.df
        assert df["x"].isna().tolist() == [False, False, False, True, False]
        assert view.gaps[0].last_seq == 3
        view.close()
