"""Where a channel subscription stands, and what a subscribe ack does to it.

Pure state: the client feeds it envelopes and acks, it says what to deliver.
Dropping every ``seq <= last seen`` is what turns the hub's at-least-once
wire (resends after a resume, backlog overlapping live messages) into
exactly-once delivery for applications.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._types import GapInfo, Message

__all__ = ["Cursor"]


@dataclass(slots=True)
class Cursor:
    """The last seq seen on one channel, and the epoch it belongs to.

    ``seq is None`` means "no position yet": a subscribe without ``since``.

    >>> cur = Cursor("prices", seq=4, epoch="e1")
    >>> [cur.accept(s) for s in (4, 5, 5, 7)]
    [False, True, False, True]
    """

    channel: str
    seq: int | None = None
    epoch: str | None = None

    def subscribe_request(self) -> dict[str, Any]:
        """The ``subscribe`` payload that resumes from here."""
        req: dict[str, Any] = {"channel": self.channel}
        if self.seq is not None:
            req["since"] = self.seq
            if self.epoch is not None:
                req["epoch"] = self.epoch
        return req

    def accept(self, seq: int) -> bool:
        """True (and advance) for a seq not seen yet; False for a duplicate."""
        if self.seq is not None and seq <= self.seq:
            return False
        self.seq = seq
        return True

    def apply_ack(
        self, *, seq: int, epoch: str, recovered: bool, backlog: list[Message]
    ) -> GapInfo | None:
        """Take a ``subscribe`` ack; returns the gap when the hub could not resume.

        Afterwards feed the backlog through :meth:`accept`. Without a gap the
        position stays put (the backlog continues right after it). With one,
        the position moves to just before the backlog (or to the channel's
        latest seq when there is none): in a new epoch seqs restart at 1, so
        the old position would otherwise swallow every new message.
        """
        gap: GapInfo | None = None
        base = backlog[0].seq - 1 if backlog else seq
        if self.seq is None:
            self.seq = base
        elif not recovered:
            gap = GapInfo(
                channel=self.channel,
                last_seq=self.seq,
                last_epoch=self.epoch,
                seq=seq,
                epoch=epoch,
                first_seq=base + 1,
            )
            self.seq = base
        self.epoch = epoch
        return gap

    def reset(self) -> None:
        self.seq = None
        self.epoch = None
