"""Per-channel analytics: rolling message rate, bytes, subscribers,
publishers and last activity, kept cheaply enough to leave on.

What each figure costs where:

- message counts cost the fan-out nothing: a channel's seq grows by one per
  stored message (on every hub of a cluster, whoever published), so the
  rate is the growth of the seq the fan-out already keeps, read once a
  second by :meth:`ChannelAnalytics.sample`;
- bytes and publishers are counted where a publish is checked (its size is
  measured there anyway for the payload cap): a dict look-up and two
  additions per message. They are this hub's publishes only;
- subscribers are the fan-out's own sets (this hub's connections).

Rates are over the last :data:`WINDOW` seconds of samples. The table is
bounded: at most ``max_channels`` entries, the longest idle dropped first,
and a channel idle for :data:`FORGET_AFTER` seconds is forgotten.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FORGET_AFTER", "WINDOW", "ChannelAnalytics"]

# Seconds of samples a rate is measured over, taken about once a second.
WINDOW = 10.0
# A channel with no activity for this long leaves the table.
FORGET_AFTER = 600.0
# Distinct publishers remembered per channel (the figure saturates there).
MAX_PUBLISHERS = 1000


@dataclass(slots=True)
class _Sample:
    at: float
    seq: int
    bytes: int


@dataclass(slots=True)
class _Stats:
    bytes: int = 0  # bytes published through this hub, since start
    messages: int = 0  # messages published through this hub, since start
    last_publish: float = 0.0  # time.time() of the last publish through this hub
    last_seq: int = 0  # the seq at the last sample
    last_activity: float = 0.0  # when the seq last grew (sampled) or a publish came
    publishers: dict[str, float] = field(default_factory=dict)  # user -> last publish
    created: float = 0.0
    samples: deque[_Sample] = field(default_factory=lambda: deque(maxlen=int(WINDOW) + 2))


class ChannelAnalytics:
    """Rolling figures per channel, for the status and HTTP APIs and ``rtkit top``.

    ``channel_seqs`` returns ``{channel: (local subscribers, latest seq)}``
    (the fan-out's :meth:`~rtkit.hub.fanout.FanOut.channel_stats`).

    >>> analytics = ChannelAnalytics(lambda: {"prices": (2, 10)})
    >>> analytics.published("prices", "ann", 120)
    >>> analytics.report()["prices"]["subscribers"]
    2
    """

    def __init__(
        self,
        channel_seqs: Callable[[], Mapping[str, tuple[int, int]]],
        *,
        max_channels: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._channel_seqs = channel_seqs
        self._max_channels = max_channels
        self._clock = clock
        self._stats: dict[str, _Stats] = {}

    def published(self, channel: str, user: str, size: int) -> None:
        """Count one message published through this hub (hot path: keep it tiny)."""
        stats = self._stats.get(channel)
        if stats is None:
            stats = self._stats[channel] = _Stats(created=self._clock())
        stats.bytes += size
        stats.messages += 1
        stats.last_publish = now = self._clock()
        publishers = stats.publishers
        if user in publishers or len(publishers) < MAX_PUBLISHERS:
            publishers[user] = now

    def counts(self) -> dict[str, tuple[int, int]]:
        """``{channel: (messages, bytes)}`` published through this hub since
        the channel entered the table (for the Prometheus metrics)."""
        return {name: (stats.messages, stats.bytes) for name, stats in self._stats.items()}

    def sample(self) -> None:
        """Take one sample of every channel: called about once a second."""
        now = self._clock()
        seqs = self._channel_seqs()
        for name, (_, seq) in seqs.items():
            stats = self._stats.get(name)
            if stats is None:
                if len(self._stats) >= self._max_channels:
                    continue  # make_room below frees space for the next sample
                stats = self._stats[name] = _Stats(last_seq=seq, created=now)
            if not stats.samples and stats.messages:
                # First seen through publishes since the last sample: they
                # count towards the rate from when the first one came.
                stats.samples.append(_Sample(stats.created, max(0, seq - stats.messages), 0))
            if seq > stats.last_seq:
                stats.last_seq = seq
                stats.last_activity = now
            stats.samples.append(_Sample(now, seq, stats.bytes))
        self._forget(now, seqs)

    def _forget(self, now: float, seqs: Mapping[str, tuple[int, int]]) -> None:
        idle = [
            name
            for name, stats in self._stats.items()
            if now - self._active(stats) > FORGET_AFTER and not seqs.get(name, (0, 0))[0]
        ]
        for name in idle:
            del self._stats[name]
        over = len(self._stats) - self._max_channels
        if over > 0:
            for name in sorted(self._stats, key=lambda n: self._active(self._stats[n]))[:over]:
                del self._stats[name]
        for stats in self._stats.values():
            if stats.publishers:
                cutoff = now - WINDOW
                stale = [u for u, at in stats.publishers.items() if at < cutoff]
                for user in stale:
                    del stats.publishers[user]

    @staticmethod
    def _active(stats: _Stats) -> float:
        return max(stats.last_activity, stats.last_publish)

    def report(self) -> dict[str, dict[str, Any]]:
        """``{channel: figures}``, JSON-ready: ``subscribers``, ``seq``,
        ``rate`` and ``bytes_rate`` (per second over the last samples),
        ``bytes`` and ``published`` (publishes this hub took in since
        start, resends of an idempotent id included),
        ``publishers`` (distinct users publishing here in the window) and
        ``last_activity`` (unix time, or None)."""
        now = self._clock()
        seqs = self._channel_seqs()
        out: dict[str, dict[str, Any]] = {}
        for name in sorted(set(seqs) | set(self._stats)):
            subscribers, seq = seqs.get(name, (0, 0))
            stats = self._stats.get(name)
            if stats is None:
                out[name] = {
                    "subscribers": subscribers,
                    "seq": seq,
                    "rate": 0.0,
                    "bytes_rate": 0.0,
                    "bytes": 0,
                    "published": 0,
                    "publishers": 0,
                    "last_activity": None,
                }
                continue
            rate = bytes_rate = 0.0
            samples = [s for s in stats.samples if now - s.at <= WINDOW + 1.0]
            if samples:
                first = samples[0]
                # The newest figures count too, sampled or not: a burst
                # since the last sample shows at once.
                span = max(now - first.at, 1.0)
                rate = max(0, max(seq, stats.last_seq) - first.seq) / span
                bytes_rate = (stats.bytes - first.bytes) / span
            active = self._active(stats)
            out[name] = {
                "subscribers": subscribers,
                "seq": max(seq, stats.last_seq),
                "rate": round(rate, 2),
                "bytes_rate": round(bytes_rate, 1),
                "bytes": stats.bytes,
                "published": stats.messages,
                "publishers": sum(1 for at in stats.publishers.values() if now - at <= WINDOW),
                "last_activity": active or None,
            }
        return out
