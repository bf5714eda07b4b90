"""Identifiers every backend makes: message ids and channel epochs."""

from __future__ import annotations

import hashlib
import itertools
import uuid

__all__ = ["channel_epoch", "new_epoch", "new_message_id"]

# Message ids the store makes: a random per-process prefix keeps them unique
# across restarts and hub processes; a counter is ~10x cheaper than uuid4().
_ID_PREFIX = uuid.uuid4().hex[:16]
_id_counter = itertools.count(1)


def new_message_id() -> str:
    """A message id unique across processes, for publishes without one."""
    return f"{_ID_PREFIX}-{next(_id_counter):x}"


def new_epoch() -> str:
    """A fresh random epoch token."""
    return uuid.uuid4().hex[:12]


def channel_epoch(salt: str, channel: str, now: float, period: float) -> str:
    """The epoch of a channel that holds no messages, derived instead of stored.

    A read of a channel nobody has published to reports it without creating
    anything, and the first append stores it, so a client that subscribed
    while the channel was empty and then saw its first messages keeps the
    same epoch. ``salt`` is per store (a memory store's changes with the
    process, so a restart changes every epoch). ``period`` is the store's
    ``max_age``: a channel is forgotten only once all its messages are older
    than that, so it is born again in a later period, under another epoch,
    and a client that still counts in the old one is told it has a gap.
    """
    era = int(now // period)
    return hashlib.blake2b(
        f"{era}:{channel}".encode(), key=salt.encode()[:64], digest_size=6
    ).hexdigest()
