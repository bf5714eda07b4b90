"""Many connections' timers on a few of the event loop's.

Every idle connection waits for two things: its next Engine.IO ping, and
the moment it has been silent too long. One ``call_at`` handle each is
about 200 bytes with its slot in the loop's heap, for every connection, and
a handle cancelled early stays in that heap until its time comes. A
:class:`Wheel` groups such deadlines into slots of ``RESOLUTION`` seconds:
one loop timer per slot, and a list entry (8 bytes) per deadline in it. A
deadline fires up to ``RESOLUTION`` late, which Engine.IO's pings and
timeouts (tens of seconds) leave plenty of room for.
"""

from __future__ import annotations

import asyncio
import logging
import math
import weakref
from typing import Protocol

log = logging.getLogger(__name__)

# Seconds per slot: the most a deadline fires late.
RESOLUTION = 1.0


class Due(Protocol):
    """Something with a deadline: told when it has come. A deadline cannot
    be taken back; an item that no longer cares returns at once."""

    def on_due(self) -> None: ...


class Wheel:
    """Deadlines grouped into slots, one event-loop timer per slot."""

    __slots__ = ("_resolution", "_slots")

    def __init__(self, resolution: float = RESOLUTION) -> None:
        # No reference to the loop: the registry below maps the loop to its
        # wheel weakly, which a wheel holding its loop would defeat.
        self._resolution = resolution
        self._slots: dict[int, list[Due]] = {}

    def at(self, when: float, item: Due) -> None:
        """Call ``item.on_due()`` at loop time ``when`` (or up to one slot later)."""
        slot = math.ceil(when / self._resolution)
        items = self._slots.get(slot)
        if items is None:
            items = self._slots[slot] = []
            asyncio.get_running_loop().call_at(slot * self._resolution, self._fire, slot)
        items.append(item)

    def __len__(self) -> int:
        return sum(len(items) for items in self._slots.values())

    def _fire(self, slot: int) -> None:
        for item in self._slots.pop(slot, ()):
            try:
                item.on_due()
            except Exception:
                # One connection's failure must not cost the others their turn.
                log.exception("a deadline's handler failed")


_wheels: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Wheel] = weakref.WeakKeyDictionary()


def wheel() -> Wheel:
    """The running event loop's wheel (made on first use)."""
    loop = asyncio.get_running_loop()
    found = _wheels.get(loop)
    if found is None:
        found = _wheels[loop] = Wheel()
    return found
