"""The ``new -> open -> closed`` lifecycle a store shares with its concerns.

A backend's store opens and closes the resources its channel, presence and
document stores use; each of those checks, before touching them, that the
store is open, and says how to fix it when it is not.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["Lifecycle"]


class Lifecycle:
    """Where a store is in its life, read by the parts it composes.

    >>> life = Lifecycle()
    >>> life.check_open()
    Traceback (most recent call last):
    RuntimeError: the store is not open: call 'await store.open()' first
    """

    __slots__ = ("state",)

    def __init__(self) -> None:
        self.state: Literal["new", "open", "closed"] = "new"

    def check_open(self) -> None:
        if self.state != "open":
            raise RuntimeError(
                "the store is not open: call 'await store.open()' first"
                if self.state == "new"
                else "the store is closed"
            )
