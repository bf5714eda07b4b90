from __future__ import annotations

import random

import pytest

from rtkit.client._backoff import Backoff
from rtkit.errors import ConfigurationError


def test_ceiling_doubles_up_to_the_cap() -> None:
    b = Backoff(base=0.25, cap=10.0)
    assert [b.ceiling(n) for n in range(8)] == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_ceiling_of_huge_attempts_is_the_cap() -> None:
    b = Backoff(base=0.25, cap=10.0)
    assert b.ceiling(63) == 10.0
    assert b.ceiling(10_000) == 10.0


def test_full_jitter_spans_zero_to_ceiling() -> None:
    b = Backoff(base=1.0, cap=8.0)
    assert b.delay(3, rng=lambda: 0.0) == 0.0
    assert b.delay(3, rng=lambda: 0.5) == 4.0
    assert b.delay(3, rng=lambda: 0.999) == pytest.approx(7.992)


def test_delays_are_random_within_bounds() -> None:
    b = Backoff(base=0.25, cap=10.0)
    rng = random.Random(42)
    for attempt in range(20):
        delays = [b.delay(attempt, rng=rng.random) for _ in range(200)]
        assert all(0.0 <= d <= b.ceiling(attempt) for d in delays)
        # full jitter: spread over the whole window, not clustered at its middle
        assert min(delays) < 0.1 * b.ceiling(attempt) < 0.9 * b.ceiling(attempt) < max(delays)


def test_default_is_quarter_second_to_ten_seconds() -> None:
    assert Backoff() == Backoff(base=0.25, cap=10.0)


@pytest.mark.parametrize(("base", "cap"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_rejects_bad_settings(base: float, cap: float) -> None:
    with pytest.raises(ConfigurationError):
        Backoff(base=base, cap=cap)


def test_rejects_negative_attempt() -> None:
    with pytest.raises(ValueError, match="attempt"):
        Backoff().ceiling(-1)
