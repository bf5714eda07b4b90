"""Seq fields beyond what a store can hold are bad_request at parsing, and
the parse functions answer any JSON value with a request or a BadRequest,
never another exception."""

from __future__ import annotations

import random
from typing import Any

import pytest

from rtkit.errors import BadRequest
from rtkit.protocol import MAX_SEQ, parse_history, parse_subscribe

HUGE = [MAX_SEQ + 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 10**30]


@pytest.mark.parametrize("value", HUGE)
@pytest.mark.parametrize(
    ("parse", "field"),
    [
        (parse_history, "since"),
        (parse_history, "before"),
        (parse_subscribe, "since"),
    ],
)
def test_seqs_beyond_max_are_bad_requests(parse: Any, field: str, value: int) -> None:
    with pytest.raises(BadRequest, match=r"must be <= 9007199254740991"):
        parse({"channel": "ch", field: value})


def test_largest_seq_is_accepted() -> None:
    assert parse_history({"channel": "ch", "since": MAX_SEQ}).since == MAX_SEQ
    assert parse_subscribe({"channel": "ch", "since": MAX_SEQ}).since == MAX_SEQ
    assert parse_history({"channel": "ch", "before": MAX_SEQ}).before == MAX_SEQ


def _value(rng: random.Random, depth: int = 0) -> Any:
    pick = rng.randrange(9 if depth < 2 else 7)
    return [
        lambda: None,
        lambda: rng.choice([True, False]),
        lambda: rng.choice([0, -1, 1, MAX_SEQ, *HUGE, -(2**64), rng.randrange(-(2**70), 2**70)]),
        lambda: rng.choice([0.5, -0.0, 1e308, 2.0**64]),
        lambda: rng.choice(["", "ch", "x" * 300, "a b", "*"]),
        lambda: rng.randbytes(rng.randrange(4)),
        lambda: "\ud800",
        lambda: [_value(rng, depth + 1) for _ in range(rng.randrange(3))],
        lambda: {rng.choice(["since", "x"]): _value(rng, depth + 1)},
    ][pick]()


@pytest.mark.parametrize("parse", [parse_history, parse_subscribe])
def test_fuzzed_requests_parse_or_are_bad_requests(parse: Any) -> None:
    rng = random.Random(15)
    fields = ["channel", "since", "before", "limit", "history", "epoch"]
    for _ in range(5000):
        payload = {
            f: _value(rng) if rng.random() < 0.7 else "ch"
            for f in rng.sample(fields, rng.randrange(len(fields)))
        }
        try:
            req = parse(payload)
        except BadRequest:
            continue
        for f in ("since", "before", "limit", "history"):
            value = getattr(req, f, None)
            assert value is None or 0 <= value <= MAX_SEQ, (payload, req)
