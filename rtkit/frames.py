"""pandas views of channels: live rolling windows, batched publishing, history.

pandas is imported on first use (``pip install 'rtkit[pandas]'``), so ``import
rtkit`` never pays for it. The channel methods are the way in:

>>> view = hub.channel("prices").frame(window="5min")
>>> view.df.tail()                     # indexed by hub time (UTC)
>>> hub.channel("prices").publish_frame(df)
>>> hub.channel("prices").history_frame(limit=1000)

Wire format of a batch (one message each, column-oriented, JSON)::

    {"rtkit": "frame", "v": 1, "rows": N,
     "columns": ["px", "t", ...], "dtypes": ["float64", "datetime64[ns, UTC]", ...],
     "data": [[...column 0...], [...column 1...], ...]}

Missing values travel as ``null``; timestamps and timedeltas as integers in
their dtype's unit, so nothing is lost on the way back. Any other message
becomes one row: a JSON object gives its keys as columns, anything else lands
in a ``value`` column.

A gap (the hub could not resume the channel, ``recovered: false``) is visible
in the frame as one row of missing values at the hub time of the first
message after it, which also breaks a plotted line there; ``view.gaps`` lists
the :class:`~rtkit.GapInfo` of each.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from .protocol import Message

if TYPE_CHECKING:
    import pandas as pd

    from .client._types import GapInfo

__all__ = [
    "FRAME_TAG",
    "LiveFrame",
    "decode_messages",
    "encode_batches",
    "is_batch",
    "parse_window",
]

FRAME_TAG = "frame"
_VERSION = 1
# Below the hub's default 256 KiB payload cap, with room for the envelope.
MAX_BATCH_BYTES = 200_000
DEFAULT_BATCH_ROWS = 2_000
# Row messages are collected in a list and turned into a DataFrame chunk at
# this size (or when .df is read): one DataFrame per message would be slow.
_PENDING_FLUSH = 1_024


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:
        raise ImportError(
            "rtkit's DataFrame views need pandas: pip install 'rtkit[pandas]'"
        ) from None
    return pandas


def is_batch(data: Any) -> bool:
    """True when a message's ``data`` is a frame batch made by ``publish_frame``."""
    return isinstance(data, dict) and data.get("rtkit") == FRAME_TAG and "data" in data


# -- encoding ------------------------------------------------------------


def _encode_column(series: pd.Series) -> tuple[str, list[Any]]:
    pd = _pandas()
    np = __import__("numpy")
    dtype = series.dtype
    mask = series.isna().to_numpy()
    if isinstance(dtype, pd.DatetimeTZDtype) or getattr(dtype, "kind", "") in "mM":
        values = series.array.asi8.tolist()
    elif isinstance(dtype, np.dtype) and dtype.kind in "biuf":
        values = series.to_numpy().tolist()
    else:
        # Extension dtypes (Int64, string, category...) and objects.
        values = series.to_numpy(dtype=object, na_value=None).tolist()
    if mask.any():
        for i in np.flatnonzero(mask).tolist():
            values[i] = None
    return str(dtype), values


def _batch(df: pd.DataFrame, start: int, stop: int) -> dict[str, Any]:
    part = df.iloc[start:stop]
    dtypes: list[str] = []
    data: list[list[Any]] = []
    for name in part.columns:
        dtype, values = _encode_column(part[name])
        dtypes.append(dtype)
        data.append(values)
    return {
        "rtkit": FRAME_TAG,
        "v": _VERSION,
        "rows": stop - start,
        "columns": [str(c) for c in part.columns],
        "dtypes": dtypes,
        "data": data,
    }


def encode_batches(
    df: pd.DataFrame, batch_rows: int = DEFAULT_BATCH_ROWS, max_bytes: int = MAX_BATCH_BYTES
) -> list[dict[str, Any]]:
    """Split ``df`` into column-oriented batch payloads of at most ``batch_rows`` rows.

    A batch whose JSON would exceed ``max_bytes`` is split further. A
    DataFrame index other than the default range index becomes a column (via
    ``reset_index``), so it is not lost.
    """
    pd = _pandas()
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"publish_frame wants a pandas DataFrame, got {type(df).__name__}")
    if batch_rows < 1:
        raise ValueError("batch_rows must be at least 1")
    if not (isinstance(df.index, pd.RangeIndex) and df.index.name is None):
        df = df.reset_index()
    out: list[dict[str, Any]] = []
    todo = [(start, min(start + batch_rows, len(df))) for start in range(0, len(df), batch_rows)]
    todo.reverse()
    while todo:
        start, stop = todo.pop()
        payload = _batch(df, start, stop)
        if stop - start > 1 and len(orjson.dumps(payload)) > max_bytes:
            mid = (start + stop) // 2
            todo += [(mid, stop), (start, mid)]
            continue
        out.append(payload)
    return out


# -- decoding ------------------------------------------------------------


def _decode_column(dtype: str, values: list[Any]) -> Any:
    pd = _pandas()
    np = __import__("numpy")
    if dtype.startswith(("datetime64", "timedelta64")):
        # "datetime64[ns, Europe/Paris]" -> unit "ns", tz "Europe/Paris".
        kind, _, rest = dtype.partition("[")
        unit, _, tz = rest.rstrip("]").partition(",")
        ints = np.array([np.iinfo(np.int64).min if v is None else v for v in values], "i8")
        arr = ints.view(f"{'M8' if kind == 'datetime64' else 'm8'}[{unit.strip()}]")
        if kind == "timedelta64":
            return pd.TimedeltaIndex(arr)
        index = pd.DatetimeIndex(arr)
        tz = tz.strip()
        return index.tz_localize("UTC").tz_convert(tz) if tz else index
    try:
        return pd.array(values, dtype=pd.api.types.pandas_dtype(dtype))
    except (TypeError, ValueError):
        return values  # an unknown dtype from a newer pandas: leave it to inference


def _ts_index(ts: Any) -> pd.DatetimeIndex:
    pd = _pandas()
    return pd.DatetimeIndex(pd.to_datetime(ts, unit="s", utc=True), name="ts")


def _batch_frame(data: dict[str, Any], ts: float) -> pd.DataFrame:
    pd = _pandas()
    np = __import__("numpy")
    columns = data.get("columns") or []
    dtypes = data.get("dtypes") or []
    cols = data.get("data") or []
    rows = int(data.get("rows") or (len(cols[0]) if cols else 0))
    index = _ts_index(np.full(rows, ts))
    body = {
        name: _decode_column(dtype, values)
        for name, dtype, values in zip(columns, dtypes, cols, strict=False)
    }
    return pd.DataFrame(body, index=index)


def _rows_frame(rows: Sequence[tuple[float, Any]]) -> pd.DataFrame:
    pd = _pandas()
    records = [data if isinstance(data, dict) else {"value": data} for _, data in rows]
    return pd.DataFrame.from_records(records, index=_ts_index([ts for ts, _ in rows]))


def _gap_frame(ts: float) -> pd.DataFrame:
    pd = _pandas()
    return pd.DataFrame(index=_ts_index([ts]))


def _concat(parts: list[pd.DataFrame]) -> pd.DataFrame:
    pd = _pandas()
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame(index=_ts_index([]))
    if len(parts) == 1:
        return parts[0]
    return pd.concat(parts, copy=False) if _pandas_major() < 3 else pd.concat(parts)


def _pandas_major() -> int:
    return int(_pandas().__version__.split(".")[0])


def decode_messages(messages: Iterable[Message], columns: Sequence[str] | None = None) -> Any:
    """A DataFrame of ``messages`` (frame batches and row messages), indexed by hub time.

    Where consecutive messages skip seqs (history no longer retained), a row
    of missing values marks the gap.
    """
    parts: list[Any] = []
    pending: list[tuple[float, Any]] = []
    last: int | None = None
    for msg in messages:
        if last is not None and msg.seq > last + 1:
            if pending:
                parts.append(_rows_frame(pending))
                pending = []
            parts.append(_gap_frame(msg.ts))
        last = msg.seq
        if is_batch(msg.data):
            if pending:
                parts.append(_rows_frame(pending))
                pending = []
            parts.append(_batch_frame(msg.data, msg.ts))
        else:
            pending.append((msg.ts, msg.data))
    if pending:
        parts.append(_rows_frame(pending))
    df = _concat(parts)
    return _select(df, columns)


def _select(df: Any, columns: Sequence[str] | None) -> Any:
    if columns is None:
        return df
    return df.reindex(columns=list(columns))


# -- windows -------------------------------------------------------------


def parse_window(window: int | str | Any) -> tuple[int | None, float | None]:
    """``(rows, seconds)``: an int is a row count, a string or timedelta a time span."""
    if isinstance(window, bool):
        raise TypeError("window must be a row count or a time span, not a bool")
    if isinstance(window, int):
        if window < 1:
            raise ValueError("a row window must hold at least one row")
        return window, None
    pd = _pandas()
    try:
        span = pd.Timedelta(window)
    except (TypeError, ValueError):
        raise ValueError(
            f"window must be a row count (int) or a time span ('5min', '30s'), got {window!r}"
        ) from None
    seconds = span.total_seconds()
    if not seconds > 0:
        raise ValueError(f"a time window must be positive, got {window!r}")
    return None, seconds


class LiveFrame:
    """A rolling pandas view of a channel, updated as messages arrive.

    Made by ``channel.frame(window=..., columns=...)``. ``.df`` is a fresh
    DataFrame of the last ``window`` rows (an int) or of the last time span
    (``"5min"``, a ``Timedelta``) before the hub's clock now, indexed by hub
    time (UTC): rows leave a time window as time passes, also when no new
    message arrives. Memory stays bounded by the window whether or not
    ``.df`` is read. Safe to read from any thread.

    >>> view = hub.channel("sensors").frame(window="1min", columns=["temp"])
    >>> view.df["temp"].mean()
    >>> view.close()                  # await view.close() with rtkit.aio
    """

    def __init__(
        self,
        channel: str,
        window: int | str | Any = 1_000,
        columns: Sequence[str] | None = None,
        *,
        on_close: Callable[[], Any] | None = None,
    ) -> None:
        _pandas()  # fail early with the install hint
        self.channel = channel
        self.window = window
        self.columns = list(columns) if columns is not None else None
        self._rows, self._seconds = parse_window(window)
        self._lock = threading.Lock()
        self._chunks: deque[Any] = deque()
        self._chunk_rows = 0
        self._pending: list[tuple[float, Any]] = []
        self._newest: float | None = None
        # The hub's clock, estimated without a request: hub time = local
        # monotonic time - offset, where offset is the smallest (local receive
        # time - message ts) seen, i.e. the message that came fastest. A
        # backlog's old messages give larger differences and never win.
        self._clock: Callable[[], float] = time.monotonic
        self._offset: float | None = None
        self._cache: Any = None
        self._gap_pending = False
        self._closed = False
        # What close() runs to unsubscribe, given by the channel that made the view.
        self._close: Callable[[], Any] | None = on_close
        self.gaps: list[GapInfo] = []
        """The gaps seen so far (:class:`~rtkit.GapInfo`), oldest first."""
        self.received = 0
        """Messages taken in so far."""
        self.rows_received = 0
        """Rows taken in so far (a batch counts its rows)."""
        self.updated: float | None = None
        """``time.time()`` of the last message taken in."""

    def __repr__(self) -> str:
        return (
            f"<rtkit.LiveFrame {self.channel!r} window={self.window!r} "
            f"rows={len(self)} messages={self.received}>"
        )

    def __len__(self) -> int:
        return len(self.df)

    def hub_now(self) -> float | None:
        """The hub's clock (unix seconds) as estimated from the messages
        received so far, or None before the first one."""
        with self._lock:
            return self._hub_now()

    @property
    def df(self) -> pd.DataFrame:
        """The window as a DataFrame (a new object each time the data changed,
        or rows left a time window)."""
        with self._lock:
            if self._cache is not None and self._stale(self._cache):
                self._cache = None
            if self._cache is None:
                self._flush_pending()
                df = _concat(list(self._chunks))
                df = self._trim(df)
                # Compact: the next read starts from one chunk, not many.
                self._chunks = deque([df]) if len(df) else deque()
                self._chunk_rows = len(df)
                self._cache = _select(df, self.columns)
            return self._cache

    def close(self) -> Any:
        """Stop updating (unsubscribe). With ``rtkit.aio`` this returns an awaitable."""
        self._closed = True
        close, self._close = self._close, None
        return close() if close is not None else None

    # -- feeding, on the client's I/O thread --------------------------------

    def on_message(self, msg: Message) -> None:
        """Take in one message (the channel subscription's callback)."""
        if self._closed:
            return
        with self._lock:
            self.received += 1
            self.updated = time.time()
            self._newest = msg.ts if self._newest is None else max(self._newest, msg.ts)
            offset = self._clock() - msg.ts
            if self._offset is None or offset < self._offset:
                self._offset = offset
            if self._gap_pending:
                self._gap_pending = False
                self._flush_pending()
                self._push(_gap_frame(msg.ts))
            if is_batch(msg.data):
                self._flush_pending()
                chunk = _batch_frame(msg.data, msg.ts)
                self.rows_received += len(chunk)
                self._push(chunk)
            else:
                self.rows_received += 1
                self._pending.append((msg.ts, msg.data))
                if len(self._pending) >= _PENDING_FLUSH:
                    self._flush_pending()
            self._cache = None

    def on_gap(self, channel: str, info: GapInfo) -> None:
        """Note a gap; the next message's row is preceded by a row of missing values."""
        if self._closed or channel != self.channel:
            return
        with self._lock:
            self.gaps.append(info)
            self._gap_pending = True
            self._cache = None

    # -- internals, under the lock --------------------------------------------

    def _flush_pending(self) -> None:
        if self._pending:
            rows, self._pending = self._pending, []
            self._push(_rows_frame(rows))

    def _push(self, chunk: Any) -> None:
        self._chunks.append(chunk)
        self._chunk_rows += len(chunk)
        self._evict()

    def _hub_now(self) -> float | None:
        if self._offset is None:
            return None
        return self._clock() - self._offset

    def _cutoff(self) -> Any:
        """The oldest hub time inside a time window (a UTC Timestamp), or None:
        the window ends at the hub's clock now, never before the newest message."""
        if self._seconds is None or self._newest is None:
            return None
        end = max(self._newest, self._hub_now() or self._newest)
        return _pandas().Timestamp(end - self._seconds, unit="s", tz="UTC")

    def _stale(self, df: Any) -> bool:
        """True when time has moved rows of a cached frame out of the window."""
        cutoff = self._cutoff()
        return cutoff is not None and len(df) > 0 and df.index[0] < cutoff

    def _evict(self) -> None:
        """Drop whole chunks that lie entirely outside the window."""
        chunks = self._chunks
        if self._rows is not None:
            while len(chunks) > 1 and self._chunk_rows - len(chunks[0]) >= self._rows:
                self._chunk_rows -= len(chunks.popleft())
        elif (cutoff := self._cutoff()) is not None:
            while len(chunks) > 1 and chunks[0].index[-1] < cutoff:
                self._chunk_rows -= len(chunks.popleft())

    def _trim(self, df: Any) -> Any:
        if self._rows is not None:
            return df.iloc[-self._rows :] if len(df) > self._rows else df
        cutoff = self._cutoff()
        if cutoff is not None and len(df):
            return df[df.index >= cutoff]
        return df
