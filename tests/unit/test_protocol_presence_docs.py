"""Validation of the presence and shared-document requests, and member state."""

from __future__ import annotations

from typing import Any

import pytest

from rtkit.errors import BadRequest, TooLarge
from rtkit.protocol import (
    Member,
    member_id_for,
    merge_state,
    parse_doc_sync,
    parse_doc_update,
    parse_member,
    parse_presence_join,
    parse_presence_leave,
    parse_presence_list,
    parse_presence_update,
)


def test_join_takes_a_room_and_an_optional_state_object() -> None:
    assert parse_presence_join({"room": "lab.a"}).state == {}
    assert parse_presence_join({"room": "lab.a", "state": None}).state == {}
    req = parse_presence_join({"room": "lab.a", "state": {"cell": 3}})
    assert (req.room, req.state) == ("lab.a", {"cell": 3})


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (None, "must be a JSON object"),
        ({}, "'room' must be a string"),
        ({"room": "a b"}, "invalid room name"),
        ({"room": "*"}, "invalid room name"),
        ({"room": "a", "state": [1]}, "'state' must be an object"),
        ({"room": "a", "extra": 1}, "unknown field"),
    ],
)
def test_bad_joins_say_what_is_wrong(payload: Any, fragment: str) -> None:
    with pytest.raises(BadRequest, match=fragment):
        parse_presence_join(payload)


def test_update_needs_a_state_and_leave_list_only_a_room() -> None:
    assert parse_presence_update({"room": "r", "state": {}}).state == {}
    with pytest.raises(BadRequest, match="'state' must be an object"):
        parse_presence_update({"room": "r"})
    assert parse_presence_leave({"room": "r"}).room == "r"
    assert parse_presence_list({"room": "r"}).room == "r"
    with pytest.raises(BadRequest, match="unknown field"):
        parse_presence_leave({"room": "r", "state": {}})


def test_merge_state_is_a_top_level_patch_with_null_deleting() -> None:
    old = {"a": 1, "b": {"x": 1}}
    merged = merge_state(old, {"b": {"y": 2}, "a": None, "c": "z"}, 4096)
    assert merged == {"b": {"y": 2}, "c": "z"}
    assert old == {"a": 1, "b": {"x": 1}}  # not mutated
    with pytest.raises(TooLarge, match="over the 20-byte limit"):
        merge_state({}, {"k": "x" * 30}, 20)
    with pytest.raises(BadRequest):
        merge_state({}, {"k": object()}, 4096)


def test_member_ids_depend_on_the_user_only_and_are_dom_safe() -> None:
    assert member_id_for("ada") == member_id_for("ada")
    assert member_id_for("ada") != member_id_for("grace")
    assert member_id_for("a b<script>").isalnum()


def test_member_round_trips_through_its_wire_form() -> None:
    member = Member("m1", "ada", "Ada", "#fff", {"cell": 2}, 2)
    assert parse_member(member.to_wire()) == member
    with pytest.raises(ValueError, match="connections"):
        parse_member({**member.to_wire(), "connections": "2"})
    with pytest.raises(ValueError, match="state"):
        parse_member({**member.to_wire(), "state": []})


def test_doc_requests_carry_binary() -> None:
    assert parse_doc_sync({"doc": "params", "state_vector": b"\x00"}).state_vector == b"\x00"
    assert parse_doc_sync({"doc": "params"}).state_vector == b"\x00"
    assert parse_doc_update({"doc": "p", "update": bytearray(b"\x00\x00")}).update == b"\x00\x00"
    with pytest.raises(BadRequest, match="must be binary"):
        parse_doc_update({"doc": "p", "update": "AAA="})
    with pytest.raises(BadRequest, match="must be binary"):
        parse_doc_update({"doc": "p"})
    with pytest.raises(BadRequest, match="invalid doc name"):
        parse_doc_sync({"doc": "", "state_vector": b"\x00"})
