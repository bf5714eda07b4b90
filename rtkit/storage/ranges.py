"""What every channel store does to a selection of messages before
returning it from ``read``."""

from __future__ import annotations

from .base import Message

__all__ = ["trim_selection"]


def trim_selection(
    selected: list[Message], *, since: int | None, limit: int | None, last: int | None
) -> list[Message]:
    """Apply ``read``'s ``last`` and ``limit`` to messages already filtered.

    ``last`` keeps the newest ``last``; ``limit`` then keeps the oldest
    ``limit`` when ``since`` is given (paging forward) and the newest
    ``limit`` otherwise (paging back from ``before``, or the latest).
    """
    # (Slice starts clamped at 0: a negative start would count from the end.)
    if last is not None:
        selected = selected[max(len(selected) - max(last, 0), 0) :]
    if limit is not None:
        limit = max(limit, 0)
        if since is not None:
            selected = selected[:limit]
        else:
            selected = selected[max(len(selected) - limit, 0) :]
    return selected
