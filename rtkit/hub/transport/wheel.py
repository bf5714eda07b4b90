"""Many connections' timers on a few of the event loop's.

Every idle connection waits for two things: its next Engine.IO ping, and
the moment it has been silent too long. One ``call_at`` handle each is
about 200 bytes with its slot in the loop's heap, for every connection, and
a handle cancelled early stays in that heap until its time comes. A
:class:`Wheel` groups such deadlines into slots of ``RESOLUTION`` seconds:
one loop timer per slot, and a list entry (8 bytes) per deadline in it. A
deadline fires up to ``RESOLUTION`` late, which Engine.IO's pings and
timeouts (tens of seconds) leave plenty of room for; a deadline less than
``FINE_BELOW`` slots away goes in a slot ten times finer.
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
# Deadlines nearer than this many slots go in slots this many times finer.
FINE_BELOW = 10


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
        self._slots: dict[float, list[Due]] = {}  # by the loop time they fire at

    def at(self, when: float, item: Due) -> None:
        """Call ``item.on_due()`` at loop time ``when`` (or up to one slot
        later; a tenth of a slot for a deadline less than ten slots away, so
        that short timeouts, a 1 s ping interval say, keep their meaning)."""
        loop = asyncio.get_running_loop()
        resolution = self._resolution
        if when - loop.time() < FINE_BELOW * resolution:
            resolution /= FINE_BELOW
        slot = math.ceil(when / resolution) * resolution
        items = self._slots.get(slot)
        if items is None:
            items = self._slots[slot] = []
            loop.call_at(slot, self._fire, slot)
        items.append(item)

    def __len__(self) -> int:
        return sum(len(items) for items in self._slots.values())

    def _fire(self, slot: float) -> None:
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
