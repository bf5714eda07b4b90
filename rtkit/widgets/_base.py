"""The widget classes; see :mod:`rtkit.widgets`."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import anywidget
import orjson
import traitlets

from ..client import sync
from ..config import DEFAULT_BRIDGE_CHANNEL
from ..errors import HubError, RtkitError
from ..frames import _pandas, decode_messages, is_batch, parse_window
from ..protocol import CHANNEL_NAME_RE, MAX_HISTORY_LIMIT, Message, validate_channel

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
# The front-end of every widget here: one bundle (rtkit/widgets/js, built by
# esbuild), whose entry renders the widget its model's ``_kind`` names.
BUNDLE = "widgets.js"
# jupyter-server drops iopub messages past 1000/s; one widget stays far below.
RELAY_RATE = 30.0
# Stored messages a chart fetches when it opens, to fill its window.
BACKFILL = 2_000
# What the relay's backfill fetches at most: pages of this many messages,
# until this many bytes of JSON (the page that crosses it included).
RELAY_BACKFILL_PAGE = 50
RELAY_BACKFILL_BYTES = 4 * 1024 * 1024
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

    def __init__(
        self, widget: _HubWidget, channel: sync.Channel, rate: float, backfill: int = 0
    ) -> None:
        self.widget = widget
        self.channel = channel
        self.backfill = backfill
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
        if self.backfill > 0:
            # The stored messages before the live ones (the front-end drops
            # any it also got live); here, off the kernel's shell thread.
            try:
                stored = _stored_envelopes(self.channel, self.backfill, RELAY_BACKFILL_BYTES)
                self.widget.send({"type": "backfill", "envs": stored})
            except HubError as exc:
                _send_error(self.widget, exc)
            except Exception:
                log.debug("rtkit: widget relay backfill failed", exc_info=True)
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


# StatusBadge(bridges=True) on the relay: announcements read, bridges
# followed (a subscription each), as the front-end does on the direct path.
BRIDGE_INDEX_SCAN = 256
MAX_BADGE_BRIDGES = 16


class _BridgeRelay:
    """Kernel-side bridge lines for a :class:`StatusBadge` on the relay:
    follows the bridges' report channels through the kernel's connection
    and sends the last report of each once a second (a few hundred bytes)."""

    def __init__(self, widget: anywidget.AnyWidget, hub: sync.Client, index: str) -> None:
        self.widget = widget
        self.hub = hub
        self.index = index
        self.lock = threading.Lock()
        self.reports: dict[str, tuple[int, float, Any]] = {}  # name -> (seq, ts, report)
        self.announced: list[str] = []  # names to follow, newest first
        self.followed: dict[str, sync.Channel] = {}
        self.more = 0
        self.stopped = threading.Event()
        self.index_channel = hub.channel(index)
        self.thread = threading.Thread(target=self._run, name="rtkit-bridge-relay", daemon=True)
        self.thread.start()

    def _on_announce(self, msg: Message) -> None:
        name = msg.data.get("bridge") if isinstance(msg.data, dict) else None
        if isinstance(name, str):
            with self.lock:
                self.announced.append(name)

    def _on_report(self, msg: Message) -> None:
        name = msg.channel[len(self.index) + 1 :]
        if not isinstance(msg.data, dict):
            return
        with self.lock:
            seen = self.reports.get(name)
            if seen is None or msg.seq > seen[0]:
                self.reports[name] = (msg.seq, msg.ts, msg.data)

    def _follow(self, name: str) -> None:
        if name in self.followed or not CHANNEL_NAME_RE.fullmatch(f"{self.index}.{name}"):
            return
        if len(self.followed) >= MAX_BADGE_BRIDGES:
            self.more += 1
            return
        channel = self.hub.channel(f"{self.index}.{name}")
        self.followed[name] = channel
        channel.subscribe(self._on_report)
        for msg in channel.history(limit=1):
            self._on_report(msg)

    def _run(self) -> None:
        try:
            self.index_channel.subscribe(self._on_announce)
            stored = self.index_channel.history(limit=BRIDGE_INDEX_SCAN)
            with self.lock:
                self.announced[:0] = [  # newest first: those are kept past the cap
                    m.data["bridge"]
                    for m in reversed(stored)
                    if isinstance(m.data, dict) and isinstance(m.data.get("bridge"), str)
                ]
        except RtkitError as exc:
            self._send({"type": "bridges", "error": {"message": str(exc)}})
            return
        while not self.stopped.is_set():
            with self.lock:
                names, self.announced = self.announced, []
            try:
                for name in names:
                    self._follow(name)
            except RtkitError as exc:  # a bridge's channel refused: go on with the others
                log.debug("rtkit: bridge relay could not follow a bridge: %s", exc)
            with self.lock:
                bridges = [
                    {"name": name, "report": report, "ts": ts}
                    for name, (_, ts, report) in self.reports.items()
                ]
            message = {"type": "bridges", "now": time.time(), "bridges": bridges}
            if not self._send({**message, "more": self.more}):
                return
            self.stopped.wait(1.0)

    def _send(self, message: dict[str, Any]) -> bool:
        try:
            self.widget.send(message)
        except Exception:  # the comm closed under us: stop relaying
            log.debug("rtkit: bridge relay stopped", exc_info=True)
            return False
        return True

    def stop(self) -> None:
        self.stopped.set()
        if threading.current_thread() is not self.thread:
            self.thread.join(5.0)  # before reading what it follows
        self.index_channel.unsubscribe(self._on_announce)
        for channel in list(self.followed.values()):
            channel.unsubscribe(self._on_report)


def _stored_envelopes(channel: sync.Channel, limit: int, budget: int) -> list[Any]:
    """The newest ``limit`` stored messages of ``channel`` as envelopes, oldest
    first, asked for in small pages from the newest back and stopped once
    their JSON passes ``budget`` bytes: one comm message stays bounded
    however big each message is."""
    out: list[Any] = []
    size = 0
    before: int | None = None
    while len(out) < limit and size < budget:
        page = channel.history(before=before, limit=min(RELAY_BACKFILL_PAGE, limit - len(out)))
        if not page:
            break
        envs = [msg.envelope() for msg in page]
        size += sum(len(orjson.dumps(env, default=str)) for env in envs)
        out[:0] = envs
        before = page[0].seq
        if before <= 1:
            break
    return out


def _send_error(widget: anywidget.AnyWidget, exc: HubError) -> None:
    """Shows the hub's refusal inside the widget (the relay path's twin of
    the front-end's own ack handling)."""
    try:
        widget.send({"type": "error", "error": exc.to_wire()})
    except Exception:  # the comm closed under us: nobody left to tell
        log.debug("rtkit: could not show a widget error", exc_info=True)


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
        self._backfill = 0  # stored messages the front-end asked the relay for
        _check_bundle()
        if isinstance(channel, sync.Channel):
            hub = hub or channel._client
            channel = channel.name
        if channel or not self._channel_optional:
            # A clear error now, rather than a widget that stays empty.
            validate_channel(channel, type(self).__name__)
        super().__init__(channel=channel, **kwargs)
        self._hub = hub
        self._relay_rate = min(float(relay_rate), RELAY_RATE)
        self.on_msg(self._on_front_end_msg)

    # StatusBadge() without a channel shows the whole connection.
    _channel_optional = False

    def _on_front_end_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if not isinstance(content, dict):
            return
        if content.get("type") == "relay" and self._relay is None:
            backfill = content.get("history")
            self._backfill = (
                min(backfill, MAX_HISTORY_LIMIT)
                if isinstance(backfill, int) and not isinstance(backfill, bool) and backfill > 0
                else 0
            )
            try:
                self._relay = self._start_relay()
            except HubError as exc:  # refused (forbidden, bad name): say so in the widget
                _send_error(self, exc)
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
        channel = self._kernel_hub().channel(self.channel)
        return _Relay(self, channel, self._relay_rate, self._backfill)

    def close(self) -> None:
        # Also runs from __del__ of a widget whose __init__ raised.
        relay, self._relay = getattr(self, "_relay", None), None
        if relay is not None:
            relay.stop()
        super().close()


class LiveChart(_HubWidget):
    """A live line chart of a channel.

    ``series`` names the numeric fields to plot (default: every numeric field
    seen). ``x`` names the column on the x axis: any time or numeric column;
    by default the hub time of each message, except that the rows of a
    ``publish_frame`` batch take their times from the batch's first time
    column (the DataFrame's time column or index). ``by`` names a key
    column: each field is split into one series per key (a colour per key,
    in the legend). ``y_scale`` is ``"auto"`` (fields of similar magnitude
    share a y axis, others get axes of their own), ``"shared"`` or
    ``"independent"`` (an axis per field).

    ``window`` is a row count or a time span (``"30s"``); a time window of
    live times ends at the hub's clock, so a stopped stream scrolls out.
    Each series is downsampled to at most a min and a max per pixel column.
    On opening, the chart fills its window from the channel's history (up to
    ``backfill`` messages; 0 turns that off). Pause/resume, CSV and PNG
    download are buttons above the plot; hovering shows the values. Errors
    (a refused channel, a field never seen) show inside the widget.

    >>> LiveChart("sensors", series=["value"], x="timestamp", by="sensor_id", window="2min")
    """

    _kind = traitlets.Unicode("chart").tag(sync=True)
    series = traitlets.List(traitlets.Unicode()).tag(sync=True)
    x = traitlets.Unicode("").tag(sync=True)
    by = traitlets.Unicode("").tag(sync=True)
    y_scale = traitlets.Enum(("auto", "shared", "independent"), "auto").tag(sync=True)
    window_rows = traitlets.Int(0).tag(sync=True)
    window_seconds = traitlets.Float(0.0).tag(sync=True)
    backfill = traitlets.Int(BACKFILL).tag(sync=True)
    paused = traitlets.Bool(False).tag(sync=True)
    height = traitlets.Int(260).tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)

    def __init__(
        self,
        channel: str | sync.Channel = "",
        *,
        series: list[str] | None = None,
        x: str | None = None,
        by: str | None = None,
        y_scale: str = "auto",
        window: int | str | Any = 1_000,
        backfill: int = BACKFILL,
        **kwargs: Any,
    ) -> None:
        rows, seconds = parse_window(window)
        for name, value in (("x", x), ("by", by)):
            if value is not None and not (isinstance(value, str) and value):
                raise ValueError(f"LiveChart: {name} must be a column name, got {value!r}")
        if series is not None and (
            isinstance(series, str) or not all(isinstance(s, str) and s for s in series)
        ):
            raise ValueError(f"LiveChart: series must be a list of field names, got {series!r}")
        if isinstance(backfill, bool) or not isinstance(backfill, int) or backfill < 0:
            raise ValueError(f"LiveChart: backfill must be a message count >= 0, got {backfill!r}")
        super().__init__(
            channel,
            series=list(series or []),
            x=x or "",
            by=by or "",
            y_scale=y_scale,
            window_rows=rows or 0,
            window_seconds=seconds or 0.0,
            backfill=min(backfill, MAX_HISTORY_LIMIT),
            **kwargs,
        )

    def to_frame(self) -> Any:
        """The chart's window as a pandas DataFrame, read from the channel's
        history through the kernel's connection (the last
        ``MAX_HISTORY_LIMIT`` messages at most): indexed by the x column (hub
        time when there is none), with the ``by`` column and the series.

        >>> chart.to_frame().groupby("sensor_id")["value"].describe()
        """
        pd = _pandas()
        rows, seconds = self.window_rows or None, self.window_seconds or None
        limit = min(rows or MAX_HISTORY_LIMIT, MAX_HISTORY_LIMIT)
        messages = self._kernel_hub().channel(self.channel).history(limit=limit)
        df = decode_messages(messages)
        x = self.x
        if not x and messages and all(is_batch(m.data) for m in messages):
            # As the chart does: a batch's rows take their first time column.
            x = next((c for c in df.columns if str(df[c].dtype).startswith("datetime64")), "")
        if x and x in df.columns:
            df = df.set_index(x)
        if seconds is not None and len(df):
            end = df.index.max()
            if not x:  # hub time: the window ends at the clock now
                end = max(end, pd.Timestamp.now(tz="UTC"))
            span = pd.Timedelta(seconds=seconds) if hasattr(end, "tzinfo") else seconds
            df = df[df.index >= end - span]
        if rows is not None:
            df = df.iloc[-rows:]
        keep = [c for c in [self.by, *self.series] if c and c in df.columns]
        return df[keep] if self.series else df

    def to_csv(self, path: str | Path | None = None) -> str | None:
        """The window (:meth:`to_frame`) as CSV: written to ``path``, or returned as text."""
        df = self.to_frame()
        if path is None:
            return str(df.to_csv())
        df.to_csv(path)
        return None


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

    ``bridges=True`` adds a line per bridge reporting to the hub (state,
    lag, errors; stale when it fell silent), read from the bridges' report
    channels (``bridge_channel`` and ``bridge_channel.<name>``) by the
    browser's own connection to the hub, as the status API lists them.

    >>> StatusBadge("prices")
    >>> StatusBadge(bridges=True)
    """

    _kind = traitlets.Unicode("status").tag(sync=True)
    _channel_optional = True
    bridges = traitlets.Bool(False).tag(sync=True)
    bridge_channel = traitlets.Unicode(DEFAULT_BRIDGE_CHANNEL).tag(sync=True)

    def __init__(
        self,
        channel: str | sync.Channel = "",
        *,
        bridges: bool = False,
        bridge_channel: str = DEFAULT_BRIDGE_CHANNEL,
        **kwargs: Any,
    ) -> None:
        if not isinstance(bridges, bool):
            raise ValueError(f"StatusBadge: bridges must be True or False, got {bridges!r}")
        if bridges:
            validate_channel(bridge_channel, "StatusBadge")
        self._bridge_relay: _BridgeRelay | None = None
        super().__init__(channel, bridges=bridges, bridge_channel=bridge_channel, **kwargs)

    def _on_front_end_msg(self, widget: Any, content: Any, buffers: Any) -> None:
        kind = content.get("type") if isinstance(content, dict) else None
        if kind == "bridges" and self.bridges and self._bridge_relay is None:
            # The browser cannot reach the hub: the kernel follows the bridges.
            try:
                self._bridge_relay = _BridgeRelay(self, self._kernel_hub(), self.bridge_channel)
            except RtkitError as exc:
                self.send({"type": "bridges", "error": {"message": str(exc)}})
        elif kind == "bridges.stop" and self._bridge_relay is not None:
            self._bridge_relay.stop()
            self._bridge_relay = None
        else:
            super()._on_front_end_msg(widget, content, buffers)

    def close(self) -> None:
        relay, self._bridge_relay = getattr(self, "_bridge_relay", None), None
        if relay is not None:
            relay.stop()
        super().close()
