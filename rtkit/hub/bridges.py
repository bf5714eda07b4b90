"""The bridges a hub's status lists, read from their report channels.

Bridges publish their state as ordinary messages (``rtkit.bridges._report``
says how and why): each announces its name on the index channel
(``bridges``, ``HubConfig.bridge_channel``) and reports on
``bridges.<name>``. This reads the index's latest announcements, then the
last report of each bridge named, from the store, so every hub of a
cluster lists every bridge, whatever hub or process it runs beside. Both
reads are bounded: the newest :data:`INDEX_SCAN` announcements, at most
:data:`MAX_BRIDGES` bridges.
"""

from __future__ import annotations

import math
from typing import Any

from ..protocol import CHANNEL_NAME_RE
from ..storage.base import ChannelStore
from .pages import read_backward

__all__ = ["INDEX_SCAN", "MAX_BRIDGES", "STALE_AFTER", "bridge_status"]

#: Announcements read from the index, newest first.
INDEX_SCAN = 256
#: Bridges listed at most (the most recently announced).
MAX_BRIDGES = 64
#: A bridge whose last report is older than this many of its report
#: intervals (``every``) is ``stale``: gone, or cut off from every hub.
STALE_AFTER = 3.0
# Bytes read per request: reports are a few hundred bytes each.
_READ_BYTES = 1024 * 1024


async def bridge_status(
    channels: ChannelStore, index: str, now: float
) -> dict[str, dict[str, Any]]:
    """``{name: last report + status, age, reported}``, by name.

    ``status`` is the report's own (``connected``, ``disconnected``,
    ``connecting``, ``stopped``), or ``stale`` when the report is older
    than :data:`STALE_AFTER` intervals (unless it said ``stopped``);
    ``age`` is its age in seconds by the hub's clock."""
    page = await read_backward(
        channels, index, before=None, limit=INDEX_SCAN, max_bytes=_READ_BYTES
    )
    names: list[str] = []
    for msg in reversed(page.messages):  # newest first
        name = msg.data.get("bridge") if isinstance(msg.data, dict) else None
        if (
            isinstance(name, str)
            and name not in names
            and CHANNEL_NAME_RE.fullmatch(f"{index}.{name}")
        ):
            names.append(name)
            if len(names) == MAX_BRIDGES:
                break
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(names):
        last = await read_backward(
            channels, f"{index}.{name}", before=None, limit=1, max_bytes=_READ_BYTES
        )
        if not last.messages or not isinstance(last.messages[-1].data, dict):
            out[name] = {"bridge": name, "status": "unknown", "age": None, "reported": None}
            continue
        msg = last.messages[-1]
        report: dict[str, Any] = dict(msg.data)
        age = max(0.0, now - msg.ts)
        every = report.get("every")
        if not isinstance(every, int | float) or not math.isfinite(every) or every <= 0:
            every = 5.0
        status = report.get("status")
        if status != "stopped" and age > STALE_AFTER * every:
            status = "stale"
        report.update(bridge=name, status=status, age=round(age, 3), reported=msg.ts)
        out[name] = report
    return out
