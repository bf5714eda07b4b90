"""Exactly-once, in-order delivery: the position a subscription resumes from."""

from __future__ import annotations

from rtkit.client._cursor import Cursor
from rtkit.client._types import GapInfo, Message


def msgs(*seqs: int, channel: str = "c") -> list[Message]:
    return [Message(channel, s, 0.0, f"id{s}", "u", s) for s in seqs]


def deliver(cur: Cursor, seqs: list[int]) -> list[int]:
    return [s for s in seqs if cur.accept(s)]


def test_drops_duplicates_and_old_seqs() -> None:
    cur = Cursor("c", seq=3, epoch="e")
    assert deliver(cur, [1, 3, 4, 4, 2, 5, 5, 6]) == [4, 5, 6]
    assert cur.seq == 6


def test_fresh_subscription_starts_at_the_head() -> None:
    cur = Cursor("c")
    assert cur.subscribe_request() == {"channel": "c"}
    gap = cur.apply_ack(seq=41, epoch="e1", recovered=True, backlog=[])
    assert gap is None
    assert (cur.seq, cur.epoch) == (41, "e1")
    assert deliver(cur, [41, 42, 43]) == [42, 43]


def test_resume_sends_since_and_epoch() -> None:
    cur = Cursor("c", seq=7, epoch="e1")
    assert cur.subscribe_request() == {"channel": "c", "since": 7, "epoch": "e1"}
    # a user-given since has no epoch yet
    assert Cursor("c", seq=0).subscribe_request() == {"channel": "c", "since": 0}


def test_recovered_resume_delivers_backlog_then_live_without_holes_or_repeats() -> None:
    cur = Cursor("c", seq=5, epoch="e1")
    backlog = msgs(6, 7, 8)
    assert cur.apply_ack(seq=8, epoch="e1", recovered=True, backlog=backlog) is None
    assert cur.seq == 5  # nothing skipped before the backlog is fed
    # the hub may resend what is already in the backlog; live continues after it
    assert deliver(cur, [m.seq for m in backlog] + [7, 8, 9, 10]) == [6, 7, 8, 9, 10]


def test_backlog_overlapping_what_was_seen_is_deduplicated() -> None:
    cur = Cursor("c", seq=5, epoch="e1")
    backlog = msgs(4, 5, 6)
    assert cur.apply_ack(seq=6, epoch="e1", recovered=True, backlog=backlog) is None
    assert deliver(cur, [m.seq for m in backlog]) == [6]


def test_unrecovered_resume_reports_a_gap_and_continues_from_the_backlog() -> None:
    cur = Cursor("c", seq=5, epoch="e1")
    backlog = msgs(90, 91, 92)
    gap = cur.apply_ack(seq=92, epoch="e1", recovered=False, backlog=backlog)
    assert gap == GapInfo(
        channel="c", last_seq=5, last_epoch="e1", seq=92, epoch="e1", first_seq=90
    )
    assert deliver(cur, [m.seq for m in backlog] + [93]) == [90, 91, 92, 93]


def test_new_epoch_restarts_numbering() -> None:
    # the hub restarted with a memory store: seqs begin at 1 again
    cur = Cursor("c", seq=500, epoch="old")
    backlog = msgs(1, 2, 3)
    gap = cur.apply_ack(seq=3, epoch="new", recovered=False, backlog=backlog)
    assert gap is not None
    assert (gap.last_seq, gap.last_epoch, gap.epoch, gap.first_seq) == (500, "old", "new", 1)
    assert cur.epoch == "new"
    assert deliver(cur, [1, 2, 3, 4]) == [1, 2, 3, 4]
    assert cur.subscribe_request() == {"channel": "c", "since": 4, "epoch": "new"}


def test_unrecovered_without_backlog_continues_at_the_head() -> None:
    cur = Cursor("c", seq=5, epoch="e1")
    gap = cur.apply_ack(seq=0, epoch="e2", recovered=False, backlog=[])
    assert gap is not None and gap.first_seq == 1
    assert deliver(cur, [1, 2]) == [1, 2]


def test_user_since_without_a_position_is_recovered_quietly() -> None:
    cur = Cursor("c", seq=0)
    backlog = msgs(1, 2)
    assert cur.apply_ack(seq=2, epoch="e", recovered=True, backlog=backlog) is None
    assert deliver(cur, [1, 2, 3]) == [1, 2, 3]


def test_reset_forgets_the_position() -> None:
    cur = Cursor("c", seq=9, epoch="e")
    cur.reset()
    assert cur.subscribe_request() == {"channel": "c"}
    assert deliver(cur, [1]) == [1]
