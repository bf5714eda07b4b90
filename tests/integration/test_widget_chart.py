"""LiveChart's kernel side against a real hub: bad names, refusals and
backfill through the relay, and the window as a DataFrame (to_frame/to_csv)."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest

import rtkit
from rtkit.pytest_plugin import InProcessHub
from rtkit.widgets import LiveChart, LiveTable, StatusBadge, _base

from .conftest import SECRET, token
from .helpers import poll_until


class Sent:
    """What a widget sends its front-end (the comm replaced by a list)."""

    def __init__(self) -> None:
        self.contents: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def __call__(self, content: dict[str, Any], buffers: Any = None) -> None:
        with self.lock:
            self.contents.append(content)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        with self.lock:
            return [c for c in self.contents if c.get("type") == kind]


def sensors(rows_per_sensor: int, sensors: int = 8) -> pd.DataFrame:
    """A recorded multi-sensor feed: one row per sensor and 10 ms tick."""
    n = rows_per_sensor * sensors
    ticks = pd.date_range("2025-05-31 23:20:00", periods=rows_per_sensor, freq="10ms", tz="UTC")
    rng = np.random.default_rng(3)
    return pd.DataFrame(
        {
            "timestamp": np.repeat(ticks, sensors),
            "sensor_id": np.tile([f"s{i}" for i in range(sensors)], rows_per_sensor),
            "value": rng.normal(20, 2, n) + np.tile(np.arange(sensors) * 10, rows_per_sensor),
        }
    )


def test_a_bad_channel_name_is_a_clear_error_at_construction() -> None:
    for cls in (LiveChart, LiveTable, StatusBadge):
        with pytest.raises(ValueError, match=r"invalid channel name 'my channel'"):
            cls("my channel")
    with pytest.raises(ValueError, match="x must be a column name"):
        LiveChart("ok", x="")
    with pytest.raises(ValueError, match="series must be a list"):
        LiveChart("ok", series="value")  # type: ignore[arg-type]
    StatusBadge().close()  # the whole connection: no channel needed


def test_the_relay_backfills_then_reports_a_refusal(
    rt_hub_inprocess_factory: Callable[..., InProcessHub], monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = rt_hub_inprocess_factory(secret=SECRET)
    with rtkit.connect(hub.url, token=token(subscribe=["open.*"], publish=["*"])) as client:
        ch = client.channel("open.feed")
        for i in range(30):
            ch.publish({"i": i})

        chart = LiveChart(ch, series=["i"], mode="relay", backfill=20)
        sent = Sent()
        monkeypatch.setattr(chart, "send", sent)
        chart._on_front_end_msg(chart, {"type": "relay", "channel": "open.feed", "history": 20}, [])
        try:
            poll_until(lambda: bool(sent.of_type("backfill")), "the backfill")
            (backfill,) = sent.of_type("backfill")
            assert [env["seq"] for env in backfill["envs"]] == list(range(11, 31))
            ch.publish({"i": 30})
            poll_until(lambda: bool(sent.of_type("messages")), "a live message")
            assert sent.of_type("messages")[0]["envs"][0]["seq"] == 31
        finally:
            chart.close()

        # A backfill stops at its byte budget (in pages), keeping the newest.
        monkeypatch.setattr(_base, "RELAY_BACKFILL_PAGE", 4)
        monkeypatch.setattr(_base, "RELAY_BACKFILL_BYTES", 500)
        envs = _base._stored_envelopes(ch, 25, _base.RELAY_BACKFILL_BYTES)
        size = len(json.dumps(envs[4:]))
        assert 0 < len(envs) < 25 and size < 500 <= len(json.dumps(envs))
        assert [env["seq"] for env in envs] == list(range(32 - len(envs), 32))

        # A channel the token may not subscribe to: the widget is told why.
        refused = LiveChart(client.channel("closed.feed"), mode="relay")
        sent = Sent()
        monkeypatch.setattr(refused, "send", sent)
        refused._on_front_end_msg(refused, {"type": "relay", "channel": "closed.feed"}, [])
        (error,) = sent.of_type("error")
        assert error["error"]["code"] == "forbidden"
        assert "closed.feed" in error["error"]["message"]
        refused.close()


def test_to_frame_and_to_csv_give_the_window(rt_hub_inprocess: InProcessHub) -> None:
    df = sensors(rows_per_sensor=500)
    with rtkit.connect(rt_hub_inprocess.url) as client:
        ch = client.channel("chart.export")
        ch.publish_frame(df, batch_rows=1_000)
        chart = LiveChart(
            ch, series=["value"], x="timestamp", by="sensor_id", window=2_000, hub=client
        )
        try:
            out = chart.to_frame()
            assert out.index.name == "timestamp"
            assert list(out.columns) == ["sensor_id", "value"]
            expected = df.iloc[-2_000:].set_index("timestamp")
            pd.testing.assert_frame_equal(out, expected)
            # A time window: the last 1.5 s of data time.
            chart.window_rows, chart.window_seconds = 0, 1.5
            last = chart.to_frame()
            assert last.index.min() >= df["timestamp"].max() - pd.Timedelta("1.5s")
            assert len(last) == 151 * 8
            text = chart.to_csv()
            assert text is not None
            back = pd.read_csv(io.StringIO(text))
            assert list(back.columns) == ["timestamp", "sensor_id", "value"]
            assert len(back) == len(last)
        finally:
            chart.close()
