"""Identifiers every backend makes: message ids and channel epochs."""

from __future__ import annotations

import itertools
import uuid

__all__ = ["new_epoch", "new_message_id"]

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
