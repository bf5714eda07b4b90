"""Stores of every backend, for the contract tests of each concern.

``make_store`` builds fresh, opened stores of one backend (parametrized:
memory, SQLite on a file in ``tmp_path``, Redis under the test's own key
prefix, skipped without Redis); ``store`` is one of them with the default
retention. Every store made is closed after the test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from rtkit.pytest_plugin import REDIS_URL
from rtkit.storage import MemoryStore, Retention, SQLiteStore, Store
from rtkit.storage.redis import RedisStore

MakeStore = Callable[..., Awaitable[Store]]


@pytest.fixture(params=["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)])
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MakeStore]:
    stores: list[Store] = []
    redis_prefix = request.getfixturevalue("rt_redis_prefix") if request.param == "redis" else ""

    async def make(retention: Retention = Retention()) -> Store:  # noqa: B008
        store: Store
        if request.param == "memory":
            store = MemoryStore(retention)
        elif request.param == "redis":
            store = RedisStore(
                REDIS_URL, prefix=f"{redis_prefix}{len(stores)}:", retention=retention
            )
        else:
            store = SQLiteStore(tmp_path / f"rt{len(stores)}.db", retention)
        await store.open()
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.close()


@pytest.fixture
async def store(make_store: MakeStore) -> Store:
    return await make_store()
