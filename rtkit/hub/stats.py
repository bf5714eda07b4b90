"""The counters behind a hub's metrics, kept on the request paths.

Plain ints, dicts of ints and bucket lists: no locks, no library calls, so
counting costs a few hundred nanoseconds per publish and nothing per
recipient. :mod:`rtkit.hub.metrics` reads them (and the rest of the hub's
state) when Prometheus scrapes.
"""

from __future__ import annotations

import contextlib
import time
from bisect import bisect_left
from collections.abc import Iterator, Mapping
from typing import Any

from ..errors import HubError
from ..protocol import CLIENT_EVENTS, PUBLISH

#: Upper bounds (seconds) of the latency histograms' buckets: from a
#: synchronous in-memory append (microseconds) to a store far away.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)

# Request events counted under their own name; anything else a client
# sends counts as "other", so clients cannot add label values.
_EVENTS = CLIENT_EVENTS
# python-engineio's disconnect reasons (engineio.Server.reason).
_REASONS = frozenset(
    {"server disconnect", "client disconnect", "ping timeout", "transport close", "transport error"}
)


class Histogram:
    """Bucket counts of observed values, Prometheus style (``le`` bounds),
    without a library: one bisect and two additions per observation.

    >>> h = Histogram((0.001, 0.01)); h.observe(0.002); h.counts
    [0, 1, 0]
    """

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        """``[(le, count of values <= le)]``, ending with ``+Inf``."""
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
        return out


class HubStats:
    """The counters the hub increments as things happen (see the module
    docstring); the collector reads them."""

    def __init__(self) -> None:
        self.connects = 0
        self.refused: dict[str, int] = {}  # by error code
        self.disconnects: dict[str, int] = {}  # by reason
        self.requests: dict[tuple[str, str], int] = {}  # (event, "ok" or error code)
        self.publish_ok = 0  # kept apart: the one counted on the hot path
        self.published = 0  # messages stored by publishes to this hub
        self.duplicates = 0  # repeated ids answered with the first seq
        self.published_bytes = 0
        self.publish_ack = Histogram()
        self.store_seconds: dict[str, Histogram] = {}
        self.store_errors: dict[str, int] = {}

    # -- connections --------------------------------------------------------

    def connected(self) -> None:
        self.connects += 1

    def refused_connect(self, code: str) -> None:
        self.refused[code] = self.refused.get(code, 0) + 1

    def disconnected(self, reason: Any) -> None:
        key = reason if reason in _REASONS else "other"
        self.disconnects[key] = self.disconnects.get(key, 0) + 1

    # -- requests -----------------------------------------------------------

    def answered(self, event: Any, ack: Mapping[str, Any], started: float) -> None:
        """Count a request's ack (``started``: its perf_counter at arrival)."""
        if event == PUBLISH:
            self.publish_answered(ack, started)
            return
        self._count(event, ack.get("error"))

    def publish_answered(self, ack: Mapping[str, Any], started: float) -> None:
        """Count and time a publish's ack: the hot path, so one int for the
        usual ok and the histogram's observe written out."""
        seconds = time.perf_counter() - started
        hist = self.publish_ack
        hist.counts[bisect_left(hist.bounds, seconds)] += 1
        hist.total += seconds
        error = ack.get("error")
        if error is None:
            self.publish_ok += 1
        else:
            self._count(PUBLISH, error)

    def _count(self, event: Any, error: Mapping[str, Any] | None) -> None:
        code = "ok" if error is None else str(error.get("code", "internal"))
        key = (event if event in _EVENTS else "other", code)
        self.requests[key] = self.requests.get(key, 0) + 1

    def request_counts(self) -> dict[tuple[str, str], int]:
        """``{(event, code): answered}``, the ok publishes included."""
        counts = dict(self.requests)
        if self.publish_ok:
            counts[(PUBLISH, "ok")] = self.publish_ok
        return counts

    def stored(self, duplicate: bool) -> None:
        """A publish was stored (or found to be a duplicate)."""
        if duplicate:
            self.duplicates += 1
        else:
            self.published += 1

    # -- the store ----------------------------------------------------------

    @contextlib.contextmanager
    def timed(self, op: str) -> Iterator[None]:
        """Time a store operation; count it as an error if it raises."""
        started = time.perf_counter()
        try:
            yield
        except HubError:
            raise  # an answer about the request (a bad range), not a store failure
        except Exception:
            self.store_error(op)
            raise
        finally:
            self.store_time(op, time.perf_counter() - started)

    def store_time(self, op: str, seconds: float) -> None:
        hist = self.store_seconds.get(op)
        if hist is None:
            hist = self.store_seconds[op] = Histogram()
        hist.observe(seconds)

    def store_error(self, op: str) -> None:
        self.store_errors[op] = self.store_errors.get(op, 0) + 1
