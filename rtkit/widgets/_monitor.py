"""HubMonitor: the hub's channels, users and slow consumers, live in a notebook."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import anywidget
import traitlets

from ..errors import RtkitError
from ._base import _check_bundle, _source

log = logging.getLogger(__name__)


class HubMonitor(anywidget.AnyWidget):
    """What ``rtkit top`` shows, live: channels by message rate, connections
    by user, the connections falling behind.

    Inside Jupyter the browser reads ``{base_url}rtkit/api/status`` itself
    with the page's login, so the view keeps moving while the kernel works.
    For a standalone hub give its ``url`` and ``api_key`` (default
    ``RTKIT_API_KEY``): the kernel then reads the status every ``interval``
    seconds, in a thread of its own, while the widget is shown.

    >>> HubMonitor()                                            # inside Jupyter
    >>> HubMonitor(url="http://hub:8765", api_key="...")        # a standalone hub
    """

    _esm = _source()
    _kind = traitlets.Unicode("monitor").tag(sync=True)
    # "auto": the browser reads the status inside Jupyter, else the kernel;
    # "kernel": always the kernel (needs url).
    mode = traitlets.Unicode("auto").tag(sync=True)
    interval = traitlets.Float(1.0).tag(sync=True)
    rows = traitlets.Int(15).tag(sync=True)
    status = traitlets.Dict().tag(sync=True)

    def __init__(
        self,
        url: str = "",
        *,
        api_key: str | None = None,
        token: str | None = None,
        interval: float = 1.0,
        rows: int = 15,
        mode: str | None = None,
    ) -> None:
        _check_bundle()
        if interval <= 0:
            raise ValueError("HubMonitor: interval must be a positive number of seconds")
        if mode not in (None, "auto", "kernel"):
            raise ValueError(f"HubMonitor: mode must be 'auto' or 'kernel', not {mode!r}")
        if url:
            # A hub named here is read by the kernel (the browser has no key).
            from ..top import status_url

            status_url(url)  # a clear error now for a URL that cannot work
        super().__init__(
            mode=mode or ("kernel" if url else "auto"), interval=float(interval), rows=rows
        )
        self._url = url
        self._api_key = api_key if api_key is not None else os.environ.get("RTKIT_API_KEY")
        self._token = token
        self._poller: threading.Thread | None = None
        self._stop = threading.Event()
        self.on_msg(self._on_front_end_msg)

    def _on_front_end_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if not isinstance(content, dict):
            return
        if content.get("type") == "poll":
            self._start_polling()
        elif content.get("type") == "stop":
            self._stop.set()

    def _start_polling(self) -> None:
        if self._poller is not None and self._poller.is_alive():
            return
        if not self._url:
            self.status = {
                "error": "outside Jupyter, give the hub: HubMonitor(url=..., api_key=...)"
            }
            return
        self._stop = threading.Event()
        self._poller = threading.Thread(
            target=self._poll, args=(self._stop,), name="rtkit-hub-monitor", daemon=True
        )
        self._poller.start()

    def _poll(self, stop: threading.Event) -> None:
        from ..top import fetch_status

        while not stop.is_set():
            try:
                self.status = fetch_status(self._url, api_key=self._api_key, token=self._token)
            except RtkitError as exc:
                self.status = {"error": str(exc)}
            except Exception as exc:  # the widget shows it; the thread goes on
                log.debug("rtkit: HubMonitor could not read the status", exc_info=True)
                self.status = {"error": f"{type(exc).__name__}: {exc}"}
            stop.wait(self.interval)

    def close(self) -> None:
        # Also runs from __del__ of a monitor whose __init__ raised.
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()
        super().close()
