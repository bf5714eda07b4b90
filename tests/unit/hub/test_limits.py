from __future__ import annotations

from rtkit.hub.limits import TokenBucket


def test_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=10, burst=5)
    now = bucket._last
    assert all(bucket.take(now) for _ in range(5))
    assert not bucket.take(now)
    assert bucket.retry_after() > 0
    assert bucket.take(now + 0.11)  # a token refills every 1/rate seconds
    assert not bucket.take(now + 0.11)


def test_zero_rate_means_unlimited() -> None:
    bucket = TokenBucket(rate=0, burst=1)
    assert all(bucket.take() for _ in range(10_000))
