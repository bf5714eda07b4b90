"""The widget classes; see :mod:`rtkit.widgets`."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import anywidget
import traitlets

from ..client import sync
from ..frames import parse_window
from ..protocol import Message

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
# The front-end of every widget here: one bundle (rtkit/widgets/js, built by
# esbuild), whose entry renders the widget its model's ``_kind`` names.
BUNDLE = "widgets.js"
# jupyter-server drops iopub messages past 1000/s; one widget stays far below.
RELAY_RATE = 30.0
# A relay update carries at most this many messages; older ones are dropped
# (a chart only shows a window anyway) and counted.
RELAY_MAX_BATCH = 5_000


def _source() -> Path | str:
    """The bundled module, or (unbuilt) a stub: importing must not fail."""
    path = STATIC / BUNDLE
    if path.is_file():
        return path
    return "export default { render({ el }) { el.textContent = 'rtkit: front-end not built'; } };"


def _check_bundle() -> None:
    path = STATIC / BUNDLE
    if not path.is_file():
        raise RuntimeError(
            f"rtkit's widget front-end is not built ({path} is missing): "
            "run `make widgets` (npm ci && esbuild) or reinstall rtkit"
        )


_kernel_client: sync.Client | None = None
_kernel_client_lock = threading.Lock()


def _shared_kernel_client() -> sync.Client:
    """One connection (``connect()``) for every relaying widget that was
    given no ``hub``: a connection each would cost a socket, an I/O thread
    and a slot of the user's connection cap, and nothing would close them."""
    global _kernel_client
    with _kernel_client_lock:
        if _kernel_client is None or _kernel_client.closed:
            from .. import connect

            _kernel_client = connect()
        return _kernel_client


class _Relay:
    """Kernel-side fallback: subscribe here and forward through the comm,
    coalesced to at most ``rate`` updates a second. Runs on the client's I/O
    thread and one flusher thread, never on the kernel's event loop."""

    def __init__(self, widget: _HubWidget, channel: sync.Channel, rate: float) -> None:
        self.widget = widget
        self.channel = channel
        self.interval = 1.0 / rate
        self.lock = threading.Lock()
        self.pending: list[dict[str, Any]] = []
        self.coalesced = 0  # messages that shared an update with others
        self.dropped = 0  # messages left out of an overfull update
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="rtkit-widget-relay", daemon=True)
        channel.subscribe(self._on_message)
        self.thread.start()

    def _on_message(self, msg: Message) -> None:
        with self.lock:
            self.pending.append(msg.envelope())  # type: ignore[arg-type]
            if len(self.pending) > 2 * RELAY_MAX_BATCH:
                cut = len(self.pending) - RELAY_MAX_BATCH
                del self.pending[:cut]
                self.dropped += cut

    def _run(self) -> None:
        while not self.stopped.wait(self.interval):
            with self.lock:
                envs, self.pending = self.pending, []
            if not envs:
                continue
            if len(envs) > RELAY_MAX_BATCH:
                self.dropped += len(envs) - RELAY_MAX_BATCH
                envs = envs[-RELAY_MAX_BATCH:]
            self.coalesced += len(envs) - 1
            try:
                self.widget.send(
                    {
                        "type": "messages",
                        "envs": envs,
                        "coalesced": self.coalesced,
                        "dropped": self.dropped,
                    }
                )
            except Exception:  # the comm closed under us: stop relaying
                log.debug("rtkit: widget relay stopped", exc_info=True)
                return

    def stop(self) -> None:
        self.stopped.set()
        self.channel.unsubscribe(self._on_message)
        if threading.current_thread() is not self.thread:
            self.thread.join(5.0)


class _HubWidget(anywidget.AnyWidget):
    _esm = _source()
    # Which of the bundle's widgets draws this model: "chart", "table",
    # "status" or "presence" (the renderers of js/src/widgets.js).
    _kind = traitlets.Unicode("").tag(sync=True)
    channel = traitlets.Unicode("").tag(sync=True)
    # "auto": same-origin inside Jupyter, else the kernel relay; "direct": the
    # browser connects to ``url`` (with ``token``); "relay": always the kernel.
    mode = traitlets.Unicode("auto").tag(sync=True)
    url = traitlets.Unicode("").tag(sync=True)
    path = traitlets.Unicode("/socket.io/").tag(sync=True)
    token = traitlets.Unicode("").tag(sync=True)

    def __init__(
        self,
        channel: str | sync.Channel = "",
        *,
        hub: sync.Client | None = None,
        relay_rate: float = RELAY_RATE,
        **kwargs: Any,
    ) -> None:
        self._relay: Any = None  # a _Relay, or a subclass's equivalent
        _check_bundle()
        if isinstance(channel, sync.Channel):
            hub = hub or channel._client
            channel = channel.name
        super().__init__(channel=channel, **kwargs)
        self._hub = hub
        self._relay_rate = min(float(relay_rate), RELAY_RATE)
        self.on_msg(self._on_front_end_msg)

    def _on_front_end_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if not isinstance(content, dict):
            return
        if content.get("type") == "relay" and self._relay is None:
            self._relay = self._start_relay()
        elif content.get("type") == "stop" and self._relay is not None:
            self._relay.stop()
            self._relay = None

    def _kernel_hub(self) -> sync.Client:
        """The kernel's connection for the relay: the one given, else the
        kernel's shared one."""
        if self._hub is None:
            self._hub = _shared_kernel_client()
        return self._hub

    def _start_relay(self) -> Any:
        """The browser cannot reach the hub: relay through the kernel. Returns
        an object with ``stop()``, or None."""
        if not self.channel:
            return None
        return _Relay(self, self._kernel_hub().channel(self.channel), self._relay_rate)

    def close(self) -> None:
        # Also runs from __del__ of a widget whose __init__ raised.
        relay, self._relay = getattr(self, "_relay", None), None
        if relay is not None:
            relay.stop()
        super().close()


class LiveChart(_HubWidget):
    """A live line chart of a channel: several series on a hub-time axis.

    ``series`` names the numeric fields to plot (default: every numeric field
    seen); ``window`` is a row count or a time span (``"30s"``). Pause/resume
    with the button or ``chart.paused = True``; hovering shows the values.
    Frame batches from ``publish_frame`` are plotted row by row.

    >>> LiveChart("sensors", series=["temp", "humidity"], window="2min")
    """

    _kind = traitlets.Unicode("chart").tag(sync=True)
    series = traitlets.List(traitlets.Unicode()).tag(sync=True)
    window_rows = traitlets.Int(0).tag(sync=True)
    window_seconds = traitlets.Float(0.0).tag(sync=True)
    paused = traitlets.Bool(False).tag(sync=True)
    height = traitlets.Int(260).tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)

    def __init__(
        self,
        channel: str | sync.Channel = "",
        *,
        series: list[str] | None = None,
        window: int | str | Any = 1_000,
        **kwargs: Any,
    ) -> None:
        rows, seconds = parse_window(window)
        super().__init__(
            channel,
            series=list(series or []),
            window_rows=rows or 0,
            window_seconds=seconds or 0.0,
            **kwargs,
        )


class LiveTable(_HubWidget):
    """The last ``rows`` messages of a channel as a table, newest first.

    >>> LiveTable("orders", rows=20, columns=["side", "qty", "px"])
    """

    _kind = traitlets.Unicode("table").tag(sync=True)
    rows = traitlets.Int(20).tag(sync=True)
    columns = traitlets.List(traitlets.Unicode()).tag(sync=True)

    def __init__(
        self,
        channel: str | sync.Channel = "",
        *,
        rows: int = 20,
        columns: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(channel, rows=rows, columns=list(columns or []), **kwargs)


class StatusBadge(_HubWidget):
    """Connection status: connected/reconnecting, latency, messages/s, drops.

    With a ``channel`` the rate is that channel's; without, every message the
    page's connection receives. In relay mode it shows the updates coalesced
    and the messages dropped by the kernel relay.

    >>> StatusBadge("prices")
    """

    _kind = traitlets.Unicode("status").tag(sync=True)
