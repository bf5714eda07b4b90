"""What only the SQLite store promises: restarts, durability, schema, pruning."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import time
from pathlib import Path

import pytest

import rtkit.storage.base
from rtkit.errors import BadRequest, ConfigurationError, Unavailable
from rtkit.storage import Retention
from rtkit.storage.sqlite import SCHEMA_VERSION, SQLiteStore

REPO = Path(rtkit.storage.base.__file__).resolve().parents[2]


async def put(
    store: SQLiteStore,
    channel: str,
    data: object,
    *,
    msg_id: str | None = None,
    ts: float | None = None,
    dedup_window: float = 300.0,
) -> int:
    appended = await store.channels.append(
        channel,
        data,
        sender="ann",
        msg_id=msg_id,
        ts=time.time() if ts is None else ts,
        dedup_window=dedup_window,
    )
    return appended.message.seq


def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


async def test_reopen_keeps_seq_epoch_dedup_and_data(tmp_path: Path) -> None:
    path = tmp_path / "rt.db"
    now = time.time()
    async with SQLiteStore(path) as store:
        for i in range(5):
            await put(store, "ch", {"i": i}, msg_id=f"m{i}", ts=now)
        await put(store, "bin", b"\x00\x01")
        head, epoch = await store.channels.head("ch")
        read_only_epoch = (await store.channels.read("never-written")).epoch
    assert head == 5

    async with SQLiteStore(path) as store:
        assert await store.channels.head("ch") == (5, epoch)
        assert (await store.channels.head("never-written"))[1] == read_only_epoch
        rng = await store.channels.read("ch")
        assert [m.data for m in rng.messages] == [{"i": i} for i in range(5)]
        assert rng.epoch == epoch
        assert (await store.channels.read("ch", since=5)).complete
        assert (await store.channels.read("bin")).messages[0].data == b"\x00\x01"

        # A restarted hub still recognises a retry within the window...
        again = await store.channels.append(
            "ch", {"i": 2}, sender="ann", msg_id="m2", ts=now + 1, dedup_window=300.0
        )
        assert again.duplicate
        assert (again.message.seq, again.message.data, again.message.ts) == (3, {"i": 2}, now)
        # ...and counts on from where it stopped.
        assert await put(store, "ch", "next", ts=now + 1) == 6


async def test_schema_version_and_idempotent_creation(tmp_path: Path) -> None:
    path = tmp_path / "rt.db"
    for _ in range(2):
        async with SQLiteStore(path):
            pass
    assert rows(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert rows(path, "PRAGMA journal_mode") == [("wal",)]

    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    store = SQLiteStore(path)
    with pytest.raises(ConfigurationError, match="newer"):
        await store.open()
    await store.close()


def test_rejects_paths_that_are_not_files() -> None:
    for path in ("", ":memory:", "file:x.db?mode=memory"):
        with pytest.raises(ConfigurationError):
            SQLiteStore(path)
    with pytest.raises(ConfigurationError):
        SQLiteStore("x.db", synchronous="OFF")


async def test_prune_deletes_expired_rows_and_keys(tmp_path: Path) -> None:
    path = tmp_path / "rt.db"
    now = time.time()
    async with SQLiteStore(path, Retention(max_messages=5, max_age=60)) as store:
        for i in range(3):
            await put(store, "aged", i, ts=now - 120, msg_id=f"old{i}", dedup_window=30.0)
        for i in range(20):
            await put(store, "busy", i, msg_id=f"k{i}", dedup_window=30.0)
        await store.channels.prune()
        assert rows(path, "SELECT channel, count(*) FROM messages GROUP BY channel") == [
            ("busy", 5)
        ]
        assert [m.data for m in (await store.channels.read("busy")).messages] == [
            15,
            16,
            17,
            18,
            19,
        ]
        # Keys older than the largest window are gone; recent ones stay.
        assert rows(path, "SELECT count(*) FROM dedup") == [(20,)]
        assert await store.channels.head("aged") == (3, (await store.channels.read("aged")).epoch)


async def test_pruning_runs_by_itself(tmp_path: Path) -> None:
    path = tmp_path / "rt.db"
    clock = [time.time()]
    retention = Retention(max_messages=2)
    async with SQLiteStore(path, retention, clock=lambda: clock[0], prune_interval=5) as store:
        for i in range(4):
            await put(store, "ch", i)
        assert rows(path, "SELECT count(*) FROM messages") == [(4,)]
        clock[0] += 6  # the next commit finds a prune due
        await put(store, "ch", 4)
        assert rows(path, "SELECT seq FROM messages ORDER BY seq") == [(4,), (5,)]


async def test_failed_commit_fails_its_appends_and_leaves_no_gap(tmp_path: Path) -> None:
    path = tmp_path / "rt.db"
    async with SQLiteStore(path) as store:
        assert await put(store, "ch", "ok") == 1
        conn = sqlite3.connect(path)
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON messages WHEN NEW.data = '\"boom\"' "
            "BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
        conn.commit()
        with pytest.raises(Unavailable, match="refused"):
            await put(store, "ch", "boom", msg_id="b1")
        conn.execute("DROP TRIGGER refuse")
        conn.commit()
        conn.close()
        assert await put(store, "ch", "after") == 2
        # The failed key was not remembered: a retry stores it.
        retry = await store.channels.append(
            "ch", "boom", sender="ann", msg_id="b1", ts=time.time(), dedup_window=300.0
        )
        assert (retry.message.seq, retry.duplicate) == (3, False)
        assert [m.data for m in (await store.channels.read("ch")).messages] == [
            "ok",
            "after",
            "boom",
        ]


async def test_a_cancelled_append_does_not_disturb_its_batch(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "rt.db") as store:
        tasks = [asyncio.create_task(put(store, "ch", i)) for i in range(10)]
        await asyncio.sleep(0)  # let every task queue its row
        tasks[3].cancel()
        done = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(done[3], asyncio.CancelledError)
        assert [d for i, d in enumerate(done) if i != 3] == [1, 2, 3, 5, 6, 7, 8, 9, 10]
        # Queued before the cancel, so stored anyway (the caller may retry with an id).
        assert [m.seq for m in (await store.channels.read("ch")).messages] == list(range(1, 11))


async def test_non_json_data_fails_only_its_caller(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "rt.db") as store:
        results = await asyncio.gather(
            put(store, "ch", 1),
            put(store, "ch", object()),
            put(store, "ch", 2),
            return_exceptions=True,
        )
        assert results[0] == 1 and results[2] == 2
        assert isinstance(results[1], TypeError)


async def test_text_sqlite_cannot_store_fails_only_its_caller(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "rt.db") as store:
        results = await asyncio.gather(
            put(store, "ch", 1),
            put(store, "ch", 2, msg_id="lone \ud800 surrogate"),
            put(store, "ch", 3, msg_id="ünïcode ☃"),
            return_exceptions=True,
        )
        assert results[0] == 1 and results[2] == 2
        assert isinstance(results[1], BadRequest)
        assert [m.id for m in (await store.channels.read("ch")).messages][1] == "ünïcode ☃"


async def test_close_commits_what_is_queued(tmp_path: Path) -> None:
    path = tmp_path / "rt.db"
    store = SQLiteStore(path)
    await store.open()
    tasks = [asyncio.create_task(put(store, "ch", i)) for i in range(50)]
    await asyncio.sleep(0)
    await store.close()
    assert sorted(await asyncio.gather(*tasks)) == list(range(1, 51))
    assert rows(path, "SELECT count(*) FROM messages") == [(50,)]


CHILD = """
import asyncio, sys, time
from rtkit.storage.sqlite import SQLiteStore

async def main(path):
    store = SQLiteStore(path)
    await store.open()
    print("epoch", (await store.channels.head("dur"))[1], flush=True)
    i = 0
    while True:
        # Several in flight, so commits hold more than one row.
        appends = [
            store.channels.append("dur", {"i": i + k, "pad": "x" * 200}, sender="child",
                         msg_id=f"m{i + k}", ts=time.time(), dedup_window=300.0)
            for k in range(10)
        ]
        for done in asyncio.as_completed(appends):
            m = (await done).message
            print(m.seq, m.data["i"], flush=True)
        i += 10

asyncio.run(main(sys.argv[1]))
"""


@pytest.mark.slow
async def test_acked_appends_survive_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "durable.db"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, str(path), stdout=asyncio.subprocess.PIPE, env=env
    )
    assert proc.stdout is not None
    acked: dict[int, int] = {}
    try:
        async with asyncio.timeout(60):
            first = (await proc.stdout.readline()).decode().split()
            assert first[0] == "epoch", first
            epoch = first[1]
            while len(acked) < 300:
                line = await proc.stdout.readline()
                assert line, "the child exited early"
                seq, i = map(int, line.split())
                acked[seq] = i
    finally:
        proc.kill()  # SIGKILL: no chance to flush or close anything
        await proc.wait()

    async with SQLiteStore(path) as store:
        head, reopened_epoch = await store.channels.head("dur")
        assert reopened_epoch == epoch
        assert head >= max(acked)
        stored = {m.seq: m.data for m in (await store.channels.read("dur")).messages}
        assert list(stored) == list(range(1, head + 1))  # gap-free
        for seq, i in acked.items():
            assert stored[seq] == {"i": i, "pad": "x" * 200}
        # Retries of acked ids are still recognised, and counting goes on.
        retry = await store.channels.append(
            "dur", {}, sender="child", msg_id=f"m{acked[1]}", ts=time.time(), dedup_window=300.0
        )
        assert (retry.duplicate, retry.message.seq) == (True, 1)
        assert await put(store, "dur", "after") == head + 1
