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
