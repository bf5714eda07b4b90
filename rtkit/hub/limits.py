"""Per-connection rate limiting."""

from __future__ import annotations

import math
import time

from ..errors import RateLimited


class TokenBucket:
    """Allows ``rate`` units per second on average and bursts of ``burst``.

    A unit is one event (a publish, a read) or one byte (the byte quota on
    what a connection makes the hub store and send): :meth:`take` costs 1
    unless told otherwise. A request is taken whole or not at all, so a byte
    bucket's ``burst`` must be at least the largest request allowed. A rate
    of 0 disables the limit.

    >>> bucket = TokenBucket(rate=100, burst=200)
    >>> bucket.take()
    True
    >>> quota = TokenBucket(rate=2**21, burst=2**23)
    >>> quota.take(250_000)
    True
    """

    __slots__ = ("_burst", "_last", "_rate", "_tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._last = time.monotonic()

    def take(self, cost: float = 1.0, now: float | None = None) -> bool:
        if self._rate <= 0:
            return True
        now = time.monotonic() if now is None else now
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens >= cost:
            self._tokens -= cost
            return True
        return False

    def retry_after(self, cost: float = 1.0) -> float:
        """Seconds until a request of ``cost`` would be allowed."""
        if self._rate <= 0 or self._tokens >= cost:
            return 0.0
        return (min(cost, self._burst) - self._tokens) / self._rate

    def take_or_refuse(self, what: str = "requests", hint: str = "") -> None:
        """:meth:`take` one event, or :class:`RateLimited` saying the rate,
        what to do about it (``hint``) and when to retry."""
        if not self.take():
            advice = f": {hint}" if hint else ""
            raise RateLimited(
                f"over {self._rate:g} {what}/s on this connection (burst {self._burst:g})"
                f"{advice}; retry in {_duration(self.retry_after())}"
            )

    def take_bytes_or_refuse(self, size: int, what: str) -> None:
        """:meth:`take` ``size`` bytes, or :class:`RateLimited` saying the
        quota, the option that sets it and when to retry."""
        if not self.take(size):
            raise RateLimited(
                f"{what}: over the byte quota of {self._rate:g} bytes/s "
                f"(burst {self._burst:g}, option publish_bytes_rate); "
                f"retry in {_duration(self.retry_after(size))}"
            )


def _duration(seconds: float) -> str:
    """``"3 ms"`` or ``"1.25 s"``: never ``0.000 s`` for a wait that is short."""
    if seconds < 1.0:
        return f"{max(1, math.ceil(seconds * 1000))} ms"
    return f"{seconds:.2f} s"


#: A bucket that never refuses (rate 0), shared: it keeps no state.
UNLIMITED = TokenBucket(0, 1)
