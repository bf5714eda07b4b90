from __future__ import annotations

import pytest

from rtkit.errors import RateLimited
from rtkit.hub.limits import TokenBucket


def test_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=10, burst=5)
    now = bucket._last
    assert all(bucket.take(now=now) for _ in range(5))
    assert not bucket.take(now=now)
    assert bucket.retry_after() > 0
    assert bucket.take(now=now + 0.11)  # a token refills every 1/rate seconds
    assert not bucket.take(now=now + 0.11)


def test_zero_rate_means_unlimited() -> None:
    bucket = TokenBucket(rate=0, burst=1)
    assert all(bucket.take() for _ in range(10_000))


def test_a_byte_quota_takes_a_request_whole_or_not_at_all() -> None:
    quota = TokenBucket(rate=1000, burst=4000)
    now = quota._last
    assert quota.take(3000, now=now)
    assert not quota.take(2000, now=now)  # 1000 left: nothing is taken
    assert quota.take(1000, now=now)
    assert quota.retry_after(2000) == pytest.approx(2.0)
    with pytest.raises(RateLimited, match="publish_bytes_rate"):
        quota.take_bytes_or_refuse(2000, "publish")
