"""Notebook widgets for live channels: a line chart, a table and a status badge.

>>> from rtkit.widgets import LiveChart, StatusBadge
>>> LiveChart("prices", series=["bid", "ask"], window="30s")
>>> StatusBadge("prices")

Inside Jupyter (rtkit's server extension loaded) the widget's JavaScript
subscribes to the hub itself, same-origin at ``{base_url}rtkit/socket.io/``
with the browser's Jupyter login: charts keep moving while the kernel is
busy, and the kernel is not on the data path. Where the browser cannot reach
a hub, the kernel relays through the widget's comm, coalesced to at most
``relay_rate`` updates per second.

Needs ``pip install 'rtkit[widgets]'`` (anywidget and ipywidgets). The
front-end (socket.io-client and uPlot) is bundled into ``static/`` when the
package is built; nothing is fetched from a CDN.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._base import LiveChart, LiveTable, StatusBadge

__all__ = ["LiveChart", "LiveTable", "StatusBadge"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        try:
            from . import _base
        except ImportError as exc:
            if exc.name not in ("anywidget", "ipywidgets", "traitlets"):
                raise
            raise ImportError(
                "rtkit's notebook widgets need anywidget and ipywidgets: "
                "pip install 'rtkit[widgets]'"
            ) from None
        return getattr(_base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
