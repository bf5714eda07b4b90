"""Reads of a channel bounded in bytes: what one ack may carry.

A history or subscribe ack is built whole in memory and queued on the
socket, so each carries at most ``max_bytes`` of messages (the compact JSON
of their envelopes, about). The store is read in chunks sized from what the
messages read so far weigh, so a request for 10,000 messages of 100 KB
never materialises them all: it stops at the first message that does not
fit and says there is ``more``.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from ..protocol import Message
from ..storage.base import ChannelStore

# A message's envelope besides its data and strings: keys, seq, ts, quotes.
ENVELOPE_OVERHEAD = 64
# Messages per store read: the first read's, and the bounds of later ones
# (sized from the average message so far). The upper bound is also what a
# chunk of unexpectedly large messages can cost before the byte cap stops it.
FIRST_CHUNK = 64
MIN_CHUNK = 16
MAX_CHUNK = 512


def message_bytes(msg: Message) -> int:
    """About the size of ``msg``'s envelope on the wire."""
    data = msg.data
    if isinstance(data, bytes | bytearray):
        size = len(data)
    else:
        try:
            size = len(orjson.dumps(data))
        except (TypeError, orjson.JSONEncodeError):
            size = 0  # binary nested in JSON: travels as attachments
    return size + len(msg.channel) + len(msg.id) + len(msg.sender) + ENVELOPE_OVERHEAD


@dataclass(frozen=True, slots=True)
class Page:
    """Messages in seq order that fit one ack. ``seq`` is the channel's head
    as of the read that bounds the page (the last forward, the first
    backward), ``complete`` as :class:`~rtkit.storage.base.Range` says for
    ``since``, and ``more`` is True when the range asked for holds more
    messages than fit (not when ``limit`` was reached)."""

    messages: list[Message]
    seq: int
    epoch: str
    complete: bool
    more: bool


def _next_chunk(size: int, count: int, max_bytes: int, left: int) -> int:
    average = max(size // max(count, 1), 1)
    return max(MIN_CHUNK, min(MAX_CHUNK, (max_bytes - size) // average + 1, left))


async def read_forward(
    channels: ChannelStore,
    channel: str,
    *,
    since: int,
    before: int | None,
    limit: int,
    max_bytes: int,
) -> Page:
    """The oldest messages after ``since`` (and before ``before``), at most
    ``limit`` and ``max_bytes`` (one message always)."""
    out: list[Message] = []
    size = 0
    cursor = since
    want = min(FIRST_CHUNK, limit)
    first = await channels.read(channel, since=cursor, before=before, limit=want)
    rng = first
    while True:
        for msg in rng.messages:
            n = message_bytes(msg)
            if out and size + n > max_bytes:
                return Page(out, rng.seq, first.epoch, first.complete, more=True)
            out.append(msg)
            size += n
        if len(rng.messages) < want or len(out) >= limit or rng.epoch != first.epoch:
            return Page(out, rng.seq, first.epoch, first.complete, more=False)
        cursor = out[-1].seq
        want = _next_chunk(size, len(out), max_bytes, limit - len(out))
        rng = await channels.read(channel, since=cursor, before=before, limit=want)


async def read_backward(
    channels: ChannelStore,
    channel: str,
    *,
    before: int | None,
    limit: int,
    max_bytes: int,
) -> Page:
    """The newest messages (before ``before``), at most ``limit`` and
    ``max_bytes`` (one message always), in seq order."""
    newest_first: list[Message] = []
    size = 0
    want = min(FIRST_CHUNK, limit)
    first = await channels.read(channel, before=before, limit=want)
    rng = first
    more = False
    while True:
        for msg in reversed(rng.messages):
            n = message_bytes(msg)
            if newest_first and size + n > max_bytes:
                more = True
                break
            newest_first.append(msg)
            size += n
        if (
            more
            or len(rng.messages) < want
            or len(newest_first) >= limit
            or rng.epoch != first.epoch
        ):
            break
        want = _next_chunk(size, len(newest_first), max_bytes, limit - len(newest_first))
        rng = await channels.read(channel, before=newest_first[-1].seq, limit=want)
    newest_first.reverse()
    return Page(newest_first, first.seq, first.epoch, first.complete, more=more)
