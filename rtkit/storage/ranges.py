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
    if last is not None:
        selected = selected[len(selected) - max(last, 0) :]
    if limit is not None:
        limit = max(limit, 0)
        selected = selected[:limit] if since is not None else selected[len(selected) - limit :]
    return selected
