"""The widgets' kernel relay against a real hub: coalesced to <= 30 updates/s."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import rtkit
from rtkit.pytest_plugin import InProcessHub
from rtkit.widgets import LiveChart, StatusBadge
from rtkit.widgets._base import RELAY_RATE

from .helpers import poll_until


class Recorder:
    def __init__(self) -> None:
        self.updates: list[tuple[float, dict[str, Any]]] = []
        self.lock = threading.Lock()

    def __call__(self, content: dict[str, Any], buffers: Any = None) -> None:
        with self.lock:
            self.updates.append((time.monotonic(), content))

    def seqs(self) -> list[int]:
        with self.lock:
            return [env["seq"] for _, c in self.updates for env in c["envs"]]


def test_relay_coalesces_a_fast_channel(
    rt_hub_inprocess_factory: Callable[..., InProcessHub], monkeypatch: pytest.MonkeyPatch
) -> None:
    total = 3_000
    # As fast as the hub acks, past the default per-connection publish rate.
    fast = rt_hub_inprocess_factory(extra_args=["--publish-rate", "0"])
    with rtkit.connect(fast.url) as hub:
        chart = LiveChart(hub.channel("relay.fast"), series=["i"], mode="relay")
        sent = Recorder()
        monkeypatch.setattr(chart, "send", sent)
        chart._on_front_end_msg(chart, {"type": "relay", "channel": "relay.fast"}, [])
        try:
            ch = hub.channel("relay.fast")
            started = time.monotonic()
            for i in range(total):
                ch.publish({"i": i})
            poll_until(lambda: len(sent.seqs()) >= total, "every message relayed", 20)
            elapsed = time.monotonic() - started
        finally:
            chart.close()
    assert sent.seqs() == list(range(1, total + 1))
    updates = len(sent.updates)
    # At most RELAY_RATE updates a second (plus the first), however fast the feed.
    assert updates <= RELAY_RATE * elapsed + 1, (updates, elapsed)
    assert updates < total / 10
    last = sent.updates[-1][1]
    assert last["coalesced"] == total - updates and last["dropped"] == 0
    gaps = [b - a for (a, _), (b, _) in zip(sent.updates, sent.updates[1:], strict=False)]
    assert min(gaps) >= 0.8 / RELAY_RATE


def test_widgets_without_a_front_end_build_their_state() -> None:
    chart = LiveChart("c", series=["a", "b"], window="30s")
    assert (chart.window_rows, chart.window_seconds) == (0, 30.0)
    assert LiveChart("c", window=500).window_rows == 500
    assert StatusBadge("c").mode == "auto"
    with pytest.raises(ValueError):
        LiveChart("c", window="often")
    chart.close()


def test_a_status_badge_on_the_relay_sends_the_bridges_last_reports(
    rt_hub_inprocess: InProcessHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    with rtkit.connect(rt_hub_inprocess.url) as hub:
        hub.channel("bridges").publish({"bridge": "north", "source": "mqtt"})
        hub.channel("bridges.north").publish({"status": "connecting", "every": 5.0})
        hub.channel("bridges.north").publish({"status": "connected", "every": 5.0, "lag": 4})
        badge = StatusBadge(bridges=True, mode="relay", hub=hub)
        sent = Recorder()
        monkeypatch.setattr(badge, "send", sent)
        badge._on_front_end_msg(badge, {"type": "bridges"}, [])

        def lines() -> dict[str, Any]:
            with sent.lock:
                last = sent.updates[-1][1] if sent.updates else {"bridges": []}
            return {b["name"]: b["report"] for b in last["bridges"]}

        try:
            poll_until(lambda: lines().get("north", {}).get("lag") == 4, "north's last report")
            # A bridge announced later is followed too, and its reports come live.
            hub.channel("bridges").publish({"bridge": "south", "source": "nats"})
            hub.channel("bridges.south").publish({"status": "disconnected", "errors": 3})
            poll_until(lambda: lines().get("south", {}).get("errors") == 3, "south's report")
            assert lines()["north"]["status"] == "connected"
            last = sent.updates[-1][1]
            assert last["type"] == "bridges" and last["more"] == 0
            assert abs(last["now"] - time.time()) < 5
        finally:
            badge._on_front_end_msg(badge, {"type": "bridges.stop"}, [])
            assert badge._bridge_relay is None
            badge.close()
    with pytest.raises(ValueError):
        StatusBadge(bridges="yes")  # type: ignore[arg-type]
