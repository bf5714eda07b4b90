"""The Redis the store contract also runs on: a key prefix per test, deleted after."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

REDIS = os.environ.get("RTKIT_TEST_REDIS", "redis://127.0.0.1:6379/0")


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A fresh key prefix on ``REDIS``; skips the test when no Redis answers."""
    import redis

    client = redis.Redis.from_url(REDIS, socket_connect_timeout=1)
    try:
        client.ping()
    except Exception as exc:
        client.close()
        pytest.skip(f"no Redis at {REDIS} ({exc}); .ci/run starts one")
    prefix = f"rtkit-test-{uuid.uuid4().hex[:8]}:"
    try:
        yield prefix
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
