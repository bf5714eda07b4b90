"""Values the client hands to applications: messages, gaps, metrics."""

from __future__ import annotations

from dataclasses import dataclass

from ..protocol import Message, parse_envelope

__all__ = ["ClientMetrics", "GapInfo", "Message", "parse_envelope"]


@dataclass(frozen=True, slots=True)
class GapInfo:
    """What a subscriber missed when the hub could not resume its channel.

    Messages after ``last_seq`` (of ``last_epoch``) up to ``first_seq - 1``
    (of ``epoch``) are lost to this subscriber: the hub no longer retained
    them, or the channel restarted (a new ``epoch``, numbering from 1 again).
    Delivery continues with ``first_seq``.
    """

    channel: str
    last_seq: int | None  # the last seq delivered before the gap
    last_epoch: str | None
    seq: int  # the channel's latest seq when it was resumed
    epoch: str  # the channel's epoch now
    first_seq: int  # the next seq that will be delivered


@dataclass(frozen=True, slots=True)
class ClientMetrics:
    """A snapshot of a client's counters (``client.metrics``)."""

    connected: bool
    messages_received: int  # delivered to subscriptions, duplicates excluded
    duplicates_dropped: int  # envelopes with seq <= last seen, dropped
    published: int  # publishes acked by the hub
    pending_publishes: int  # queued or in flight, not yet acked
    reconnects: int  # successful reconnections after a lost connection
    gaps: int  # resumes the hub could not recover
    subscriptions: int  # channels with at least one callback
    publish_requests: int = 0  # publish requests sent (a batch of rows is one)
    publish_failures: int = 0  # publishes that failed (refused, timed out, closed)
    token_refreshes: int = 0  # fresh tokens handed to the hub on a live connection
