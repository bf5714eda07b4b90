"""The presence and shared-document halves of the Store contract, on every
embedded backend. Deadlines are passed in; nothing sleeps."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pycrdt
import pytest

from rtkit.errors import Forbidden, TooLarge
from rtkit.protocol import Member
from rtkit.pytest_plugin import REDIS_URL
from rtkit.storage import MemoryStore, SQLiteStore, Store
from rtkit.storage.redis import RedisStore

LIMITS = {"max_members": 3, "max_state_bytes": 256}


@pytest.fixture(params=["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    s: Store
    if request.param == "redis":
        s = RedisStore(REDIS_URL, prefix=request.getfixturevalue("rt_redis_prefix"))
    else:
        s = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "rt.db")
    await s.open()
    yield s
    await s.close()


def member(user: str, **state: object) -> Member:
    return Member(f"id-{user}", user, user.title(), "#000", dict(state), 0)


async def test_one_member_per_user_counting_connections(store: Store) -> None:
    join = await store.presence.join("r", "c1", member("ada", cell=1), expires=100.0, **LIMITS)
    assert join is not None and join.event == "join" and join.member.connections == 1
    again = await store.presence.join(
        "r", "c2", member("ada", status="on"), expires=100.0, **LIMITS
    )
    assert again is not None and again.event == "update"
    assert again.member.connections == 2
    assert again.member.state == {"cell": 1, "status": "on"}
    # The same connection joining again with nothing new changes nothing.
    assert await store.presence.join("r", "c2", member("ada"), expires=100.0, **LIMITS) is None
    await store.presence.join("r", "c3", member("bob"), expires=100.0, **LIMITS)
    assert [m.user for m in await store.presence.members("r")] == ["ada", "bob"]

    left = await store.presence.leave("r", "id-ada", "c1")
    assert left is not None and left.event == "update" and left.member.connections == 1
    assert await store.presence.leave("r", "id-ada", "c1") is None  # already gone
    left = await store.presence.leave("r", "id-ada", "c2")
    assert left is not None and left.event == "leave" and left.member.user == "ada"
    assert [m.user for m in await store.presence.members("r")] == ["bob"]
    assert await store.presence.members("elsewhere") == []


async def test_state_updates_merge_and_are_bounded(store: Store) -> None:
    await store.presence.join("r", "c1", member("ada", a=1), expires=100.0, **LIMITS)
    change = await store.presence.update("r", "id-ada", {"a": None, "b": 2}, max_state_bytes=256)
    assert change is not None and change.member.state == {"b": 2}
    assert await store.presence.update("r", "id-ada", {"b": 2}, max_state_bytes=256) is None
    assert await store.presence.update("r", "nobody", {"b": 2}, max_state_bytes=256) is None
    with pytest.raises(TooLarge):
        await store.presence.update("r", "id-ada", {"big": "x" * 300}, max_state_bytes=256)
    with pytest.raises(TooLarge):
        await store.presence.join("r", "c9", member("eve", big="x" * 300), expires=1.0, **LIMITS)
    assert [m.state for m in await store.presence.members("r")] == [{"b": 2}]


async def test_rooms_are_bounded(store: Store) -> None:
    for i, user in enumerate(["a", "b", "c"]):
        await store.presence.join("r", f"c{i}", member(user), expires=100.0, **LIMITS)
    with pytest.raises(Forbidden, match="full"):
        await store.presence.join("r", "c9", member("d"), expires=100.0, **LIMITS)
    # A member already in the room may add connections.
    await store.presence.join("r", "c10", member("a"), expires=100.0, **LIMITS)


async def test_connections_lapse_unless_refreshed(store: Store) -> None:
    await store.presence.join("r", "live", member("ada"), expires=10.0, **LIMITS)
    await store.presence.join("r", "dead", member("ada"), expires=10.0, **LIMITS)
    await store.presence.join("r", "dead", member("bob"), expires=10.0, **LIMITS)
    await store.presence.join("s", "dead", member("bob"), expires=10.0, **LIMITS)
    assert await store.presence.expire(now=5.0) == []
    await store.presence.refresh(["live"], expires=30.0)
    changes = await store.presence.expire(now=20.0)
    summary = sorted((c.room, c.event, c.member.user, c.member.connections) for c in changes)
    assert summary == [
        ("r", "leave", "bob", 0),
        ("r", "update", "ada", 1),
        ("s", "leave", "bob", 0),
    ]
    assert [(m.user, m.connections) for m in await store.presence.members("r")] == [("ada", 1)]
    assert await store.presence.expire(now=25.0) == []
    assert len(await store.presence.expire(now=31.0)) == 1


def edit(doc: pycrdt.Doc, key: str, value: object) -> bytes:
    updates: list[bytes] = []
    sub = doc.observe(lambda event: updates.append(event.update))
    doc.get("state", type=pycrdt.Map)[key] = value
    doc.unobserve(sub)
    return updates[0]


async def test_docs_store_updates_and_compact_into_snapshots(store: Store) -> None:
    record = await store.docs.load("params")
    assert (record.snapshot, record.updates, record.last_id) == (None, [], 0)
    doc: pycrdt.Doc = pycrdt.Doc()
    updates = [edit(doc, f"k{i}", i) for i in range(5)]
    counts = [await store.docs.append("params", u) for u in updates]
    assert counts == [1, 2, 3, 4, 5]
    record = await store.docs.load("params")
    assert record.updates == updates and record.snapshot is None

    snapshot = doc.get_update()
    await store.docs.compact("params", snapshot, record.last_id)
    later = edit(doc, "late", True)
    assert await store.docs.append("params", later) == 1
    compacted = await store.docs.load("params")
    assert compacted.snapshot == snapshot and compacted.updates == [later]
    # A compaction covering less than the current snapshot is ignored.
    await store.docs.compact("params", b"\x00\x00", record.last_id - 1)
    assert (await store.docs.load("params")).snapshot == snapshot

    rebuilt: pycrdt.Doc = pycrdt.Doc()
    for u in [compacted.snapshot or b"", *compacted.updates]:
        rebuilt.apply_update(u)
    assert (
        rebuilt.get("state", type=pycrdt.Map).to_py() == doc.get("state", type=pycrdt.Map).to_py()
    )
    assert (await store.docs.load("other")).updates == []


async def test_sqlite_docs_survive_a_restart(tmp_path: Path) -> None:
    doc: pycrdt.Doc = pycrdt.Doc()
    async with SQLiteStore(tmp_path / "rt.db") as store:
        await store.docs.append("d", edit(doc, "a", 1))
        await store.docs.compact("d", doc.get_update(), (await store.docs.load("d")).last_id)
        await store.docs.append("d", edit(doc, "b", 2))
    async with SQLiteStore(tmp_path / "rt.db") as store:
        record = await store.docs.load("d")
        assert record.snapshot is not None and len(record.updates) == 1
