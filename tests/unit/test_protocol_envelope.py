"""parse_envelope: the hub's envelopes, and what it refuses."""

from __future__ import annotations

from typing import Any

import pytest

from rtkit.protocol import Message, parse_envelope

HUB_SHAPED: dict[str, Any] = {
    "channel": "prices",
    "seq": 7,
    "ts": 1718000000.5,
    "id": "a1",
    "sender": "ada",
    "data": {"px": 1.0},
}


def test_the_hubs_envelope_reads_back_as_a_message() -> None:
    assert parse_envelope(HUB_SHAPED) == Message(
        "prices", 7, 1718000000.5, "a1", "ada", {"px": 1.0}
    )
    assert parse_envelope({**HUB_SHAPED, "data": b"\x00"}).data == b"\x00"


def test_other_clients_envelopes_are_read_leniently() -> None:
    # A stock hub-side tool may write an int ts or leave out id and sender.
    msg = parse_envelope({"channel": "c", "seq": 1, "ts": 5})
    assert (msg.ts, type(msg.ts), msg.id, msg.sender, msg.data) == (5.0, float, "", "", None)
    assert parse_envelope({**HUB_SHAPED, "id": 12}).id == "12"


@pytest.mark.parametrize(
    "env, problem",
    [
        (["prices", 7], "must be an object"),
        (None, "must be an object"),
        ({**HUB_SHAPED, "channel": None}, "without a channel name"),
        ({**HUB_SHAPED, "seq": True}, "without an integer seq"),
        ({**HUB_SHAPED, "seq": "7"}, "without an integer seq"),
        ({**HUB_SHAPED, "ts": "now"}, "ts must be a number"),
        ({**HUB_SHAPED, "ts": False}, "ts must be a number"),
    ],
)
def test_malformed_envelopes_are_refused_with_the_reason(env: Any, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_envelope(env)
