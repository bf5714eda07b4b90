"""The PresenceStore contract (``store.presence``), run against every
backend. Deadlines are passed in; nothing sleeps."""

from __future__ import annotations

import pytest

from rtkit.errors import Forbidden, TooLarge
from rtkit.protocol import Member
from rtkit.storage import PresenceStore, Store

LIMITS = {"max_members": 3, "max_state_bytes": 256}


@pytest.fixture
def presence(store: Store) -> PresenceStore:
    """The presence store of one backend's ``store`` (see conftest.py)."""
    assert isinstance(store.presence, PresenceStore)
    return store.presence


def member(user: str, **state: object) -> Member:
    return Member(f"id-{user}", user, user.title(), "#000", dict(state), 0)


async def test_one_member_per_user_counting_connections(presence: PresenceStore) -> None:
    join = await presence.join("r", "c1", member("ada", cell=1), expires=100.0, **LIMITS)
    assert join is not None and join.event == "join" and join.member.connections == 1
    again = await presence.join("r", "c2", member("ada", status="on"), expires=100.0, **LIMITS)
    assert again is not None and again.event == "update"
    assert again.member.connections == 2
    assert again.member.state == {"cell": 1, "status": "on"}
    # The same connection joining again with nothing new changes nothing.
    assert await presence.join("r", "c2", member("ada"), expires=100.0, **LIMITS) is None
    await presence.join("r", "c3", member("bob"), expires=100.0, **LIMITS)
    assert [m.user for m in await presence.members("r")] == ["ada", "bob"]

    left = await presence.leave("r", "id-ada", "c1")
    assert left is not None and left.event == "update" and left.member.connections == 1
    assert await presence.leave("r", "id-ada", "c1") is None  # already gone
    left = await presence.leave("r", "id-ada", "c2")
    assert left is not None and left.event == "leave" and left.member.user == "ada"
    assert [m.user for m in await presence.members("r")] == ["bob"]
    assert await presence.members("elsewhere") == []


async def test_state_updates_merge_and_are_bounded(presence: PresenceStore) -> None:
    await presence.join("r", "c1", member("ada", a=1), expires=100.0, **LIMITS)
    change = await presence.update("r", "id-ada", {"a": None, "b": 2}, max_state_bytes=256)
    assert change is not None and change.member.state == {"b": 2}
    assert await presence.update("r", "id-ada", {"b": 2}, max_state_bytes=256) is None
    assert await presence.update("r", "nobody", {"b": 2}, max_state_bytes=256) is None
    with pytest.raises(TooLarge):
        await presence.update("r", "id-ada", {"big": "x" * 300}, max_state_bytes=256)
    with pytest.raises(TooLarge):
        await presence.join("r", "c9", member("eve", big="x" * 300), expires=1.0, **LIMITS)
    assert [m.state for m in await presence.members("r")] == [{"b": 2}]


async def test_rooms_are_bounded(presence: PresenceStore) -> None:
    for i, user in enumerate(["a", "b", "c"]):
        await presence.join("r", f"c{i}", member(user), expires=100.0, **LIMITS)
    with pytest.raises(Forbidden, match="full"):
        await presence.join("r", "c9", member("d"), expires=100.0, **LIMITS)
    # A member already in the room may add connections.
    await presence.join("r", "c10", member("a"), expires=100.0, **LIMITS)


async def test_connections_lapse_unless_refreshed(presence: PresenceStore) -> None:
    await presence.join("r", "live", member("ada"), expires=10.0, **LIMITS)
    await presence.join("r", "dead", member("ada"), expires=10.0, **LIMITS)
    await presence.join("r", "dead", member("bob"), expires=10.0, **LIMITS)
    await presence.join("s", "dead", member("bob"), expires=10.0, **LIMITS)
    assert await presence.expire(now=5.0) == []
    await presence.refresh(["live"], expires=30.0)
    changes = await presence.expire(now=20.0)
    summary = sorted((c.room, c.event, c.member.user, c.member.connections) for c in changes)
    assert summary == [
        ("r", "leave", "bob", 0),
        ("r", "update", "ada", 1),
        ("s", "leave", "bob", 0),
    ]
    assert [(m.user, m.connections) for m in await presence.members("r")] == [("ada", 1)]
    assert await presence.expire(now=25.0) == []
    assert len(await presence.expire(now=31.0)) == 1


async def test_a_refused_join_leaves_nothing_behind(presence: PresenceStore) -> None:
    with pytest.raises(TooLarge):
        await presence.join("r", "c1", member("eve", big="x" * 300), expires=100.0, **LIMITS)
    assert await presence.members("r") == []
    assert await presence.leave("r", "id-eve", "c1") is None
    assert await presence.expire(now=1000.0) == []
    # The connection that was refused can join once its state fits.
    join = await presence.join("r", "c1", member("eve"), expires=100.0, **LIMITS)
    assert join is not None and join.event == "join"
