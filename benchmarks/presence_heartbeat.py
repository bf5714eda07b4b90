"""What one hub's presence heartbeat costs with hundreds of rooms.

    .venv/bin/python benchmarks/presence_heartbeat.py                # Redis, 300 rooms x 3
    .venv/bin/python benchmarks/presence_heartbeat.py --store memory --rooms 1000

Fills a store with ``--rooms`` rooms of ``--per-room`` members, one
connection each (all held by this "hub"), then times the two calls of the
hub's heartbeat (``rtkit.hub.presence``), ``--repeat`` times each:
``refresh`` of every connection, and ``expire`` when nothing has lapsed (the
common case, which every hub sharing the store runs). Prints the median and
the worst in ms. Redis at $RTKIT_TEST_REDIS (default 127.0.0.1:6379) under a
fresh key prefix, deleted at the end; loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from rtkit.protocol import Member
from rtkit.pytest_plugin import REDIS_URL
from rtkit.storage import MemoryStore, SQLiteStore, Store
from rtkit.storage.redis import RedisStore


async def timed(call: Callable[[], Awaitable[object]], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        await call()
        times.append((time.perf_counter() - start) * 1000)
    return times


async def measure(store: Store, rooms: int, per_room: int, repeat: int) -> None:
    presence = store.presence
    expires = time.time() + 3600
    sem = asyncio.Semaphore(32)  # bounded concurrency for the fill

    async def join(room: int, i: int) -> None:
        async with sem:
            await presence.join(
                f"room-{room}",
                f"c{room}-{i}",
                Member(f"id-u{i}", f"u{i}", f"U{i}", "#000", {"cell": i}, 0),
                expires=expires,
                max_members=per_room,
                max_state_bytes=1024,
            )

    await asyncio.gather(*(join(r, i) for r in range(rooms) for i in range(per_room)))
    conns = [f"c{r}-{i}" for r in range(rooms) for i in range(per_room)]
    refresh = await timed(lambda: presence.refresh(conns, time.time() + 3600), repeat)
    expire = await timed(lambda: presence.expire(time.time()), repeat)
    for name, times in (("refresh", refresh), ("expire (nothing lapsed)", expire)):
        print(
            f"{name:<24} {rooms} rooms x {per_room}: median {statistics.median(times):8.2f} ms,"
            f" max {max(times):8.2f} ms ({repeat} runs)"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=["redis", "memory", "sqlite"], default="redis")
    parser.add_argument("--rooms", type=int, default=300)
    parser.add_argument("--per-room", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        prefix = f"rtkit-bench-{uuid.uuid4().hex[:8]}:"
        store: Store
        if args.store == "redis":
            store = RedisStore(REDIS_URL, prefix=prefix)
        elif args.store == "sqlite":
            store = SQLiteStore(Path(tmp) / "rt.db")
        else:
            store = MemoryStore()
        await store.open()
        try:
            print(f"{args.store} store")
            await measure(store, args.rooms, args.per_room, args.repeat)
        finally:
            await store.close()
            if args.store == "redis":
                import redis

                client = redis.Redis.from_url(REDIS_URL)
                keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
                if keys:
                    client.delete(*keys)
                client.close()


if __name__ == "__main__":
    asyncio.run(main())
