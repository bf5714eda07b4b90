"""Per-connection rate limiting."""

from __future__ import annotations

import time

from ..errors import RateLimited


class TokenBucket:
    """Allows ``rate`` events per second on average and bursts of ``burst``.

    A rate of 0 disables the limit.

    >>> bucket = TokenBucket(rate=100, burst=200)
    >>> bucket.take()
    True
    """

    __slots__ = ("_burst", "_last", "_rate", "_tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._last = time.monotonic()

    def take(self, now: float | None = None) -> bool:
        if self._rate <= 0:
            return True
        now = time.monotonic() if now is None else now
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def retry_after(self) -> float:
        """Seconds until the next event would be allowed."""
        if self._rate <= 0 or self._tokens >= 1.0:
            return 0.0
        return (1.0 - self._tokens) / self._rate

    def take_or_refuse(self, what: str = "requests") -> None:
        """:meth:`take`, or :class:`RateLimited` saying the rate and when to retry."""
        if not self.take():
            raise RateLimited(f"over {self._rate:g} {what}/s; retry in {self.retry_after():.3f} s")


#: A bucket that never refuses (rate 0), shared: it keeps no state.
UNLIMITED = TokenBucket(0, 1)


class ByteBucket:
    """Allows ``rate`` bytes per second on average and bursts of ``burst``
    bytes: a quota on what one connection makes the hub store and send.

    A rate of 0 disables the quota. A request is taken whole or not at all,
    so ``burst`` must be at least the largest request allowed.

    >>> quota = ByteBucket(rate=2**21, burst=2**23)
    >>> quota.take(250_000)
    True
    """

    __slots__ = ("_burst", "_last", "_rate", "_tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._last = time.monotonic()

    def take(self, size: int, now: float | None = None) -> bool:
        if self._rate <= 0:
            return True
        now = time.monotonic() if now is None else now
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens >= size:
            self._tokens -= size
            return True
        return False

    def retry_after(self, size: int) -> float:
        """Seconds until ``size`` bytes would be allowed."""
        if self._rate <= 0 or self._tokens >= size:
            return 0.0
        return (min(float(size), self._burst) - self._tokens) / self._rate

    def take_or_refuse(self, size: int, what: str) -> None:
        """:meth:`take`, or :class:`RateLimited` saying the quota, the option
        that sets it and when to retry."""
        if not self.take(size):
            raise RateLimited(
                f"{what}: over the byte quota of {self._rate:g} bytes/s "
                f"(burst {self._burst:g}, option publish_bytes_rate); "
                f"retry in {self.retry_after(size):.3f} s"
            )
