"""Notebook widgets: live channels (a line chart, a table, a status badge),
who is here (a presence bar) and widgets bound to shared documents (``link``).

>>> from rtkit.widgets import LiveChart, PresenceBar, StatusBadge, link
>>> LiveChart("prices", series=["bid", "ask"], window="30s")
>>> LiveChart("sensors", series=["value"], x="timestamp", by="sensor_id")
>>> StatusBadge("prices")
>>> PresenceBar("analysis")
>>> HubMonitor()          # the hub's channels, users, slow consumers, live
>>> link(ipywidgets.FloatSlider(), hub.shared("params"), "alpha")

Inside Jupyter (rtkit's server extension loaded) the widget's JavaScript
talks to the hub itself, same-origin at ``{base_url}rtkit/socket.io/`` with
the browser's Jupyter login: charts keep moving while the kernel is busy,
the kernel is not on the data path, and the presence bar shows each person
as who they are logged in as. Where the browser cannot reach a hub, the
kernel relays through the widget's comm, coalesced to at most
``relay_rate`` updates per second.

Needs ``pip install 'rtkit[widgets]'`` (anywidget and ipywidgets). The
front-end of all four widgets (``js/src``, with socket.io-client and uPlot)
is bundled into ``static/widgets.js`` when the package is built; nothing is
fetched from a CDN.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._base import LiveChart, LiveTable, StatusBadge
    from ._link import Link, link
    from ._monitor import HubMonitor
    from ._presence import PresenceBar

__all__ = ["HubMonitor", "Link", "LiveChart", "LiveTable", "PresenceBar", "StatusBadge", "link"]

# Where each name lives; imported on first use, so that ``import rtkit.widgets``
# works (and says what is missing) without the widget packages.
_MODULES = {
    "LiveChart": "_base",
    "LiveTable": "_base",
    "StatusBadge": "_base",
    "PresenceBar": "_presence",
    "HubMonitor": "_monitor",
    "Link": "_link",
    "link": "_link",
}


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        try:
            module = importlib.import_module(f".{_MODULES[name]}", __name__)
        except ImportError as exc:
            if exc.name not in ("anywidget", "ipywidgets", "traitlets"):
                raise
            raise ImportError(
                "rtkit's notebook widgets need anywidget and ipywidgets: "
                "pip install 'rtkit[widgets]'"
            ) from None
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
