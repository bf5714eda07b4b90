"""Reconnect delays: exponential backoff with full jitter.

"Full jitter" (AWS architecture blog, *Exponential Backoff and Jitter*) draws
each delay uniformly from ``[0, min(cap, base * 2**attempt)]``. When a hub
restarts, every client it had reconnects at once; spreading them over the
whole window instead of around its middle is what keeps the restarted hub
from being knocked over again by a synchronized wave.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import ConfigurationError

__all__ = ["Backoff"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays for reconnect attempt 0, 1, 2, ...

    >>> Backoff(base=0.25, cap=10.0).ceiling(3)
    2.0
    """

    base: float = 0.25
    cap: float = 10.0

    def __post_init__(self) -> None:
        if not self.base > 0 or not self.cap >= self.base:
            raise ConfigurationError(
                f"reconnect delays need 0 < base <= cap, got base={self.base}, cap={self.cap}"
            )

    def ceiling(self, attempt: int) -> float:
        """The largest delay attempt number ``attempt`` (from 0) may wait."""
        if attempt < 0:
            raise ValueError("attempt must be >= 0")
        # Past 2**64 the float grows without bound; the cap has long won by then.
        if attempt >= 64:
            return self.cap
        return min(self.cap, self.base * 2.0**attempt)

    def delay(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        """A random delay in ``[0, ceiling(attempt)]``."""
        return rng() * self.ceiling(attempt)
