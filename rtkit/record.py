"""Record channels to a file and replay a file into a channel.

A recording is one row per message, in the order the recorder received
them: ``channel``, ``seq``, ``ts`` (hub time), ``id``, ``sender`` and the
message's ``data``. Two formats, picked by the file's suffix (or
``format=``):

- **JSON lines** (``.jsonl``): one JSON object a line, ``data`` as the JSON
  value itself (binary data as base64 under ``bytes`` instead). Appended in
  chunks; a process killed with ``kill -9`` loses only the rows it had not
  written yet (the last second's, two chunks at most), and a torn last line
  is skipped on reading and cut off when recording resumes.
- **Parquet** (``.parquet``, needs ``rtkit[record]``, i.e. pyarrow): one row
  group per chunk, ``data`` as JSON text (binary data in a ``bytes`` column).
  Parquet writes its footer last, so the file is written as ``FILE.partial``
  and renamed when the recording stops (Ctrl-C included); a ``kill -9``
  leaves ``FILE`` as it was before and an unreadable ``FILE.partial``.

A message's data is kept whole, never flattened: a frame batch from
``publish_frame`` is one row and replays as the same batch, so ``frame()``
views and widgets see the same rows as live.

>>> rec = hub.channel("prices").record("prices.parquet")   # records until closed
>>> rec.close()
>>> rtkit.replay("prices.parquet", hub.channel("prices.replay"), speed=10)
>>> rtkit.record.load("prices.parquet", as_frame=True)        # pandas, like history()
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import functools
import hashlib
import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import anyio
import orjson

from .errors import ConfigurationError, RecordingError, RtkitError
from .protocol import Message

if TYPE_CHECKING:
    import pandas as pd

    from .client import aio
    from .client.sync import Channel as SyncChannel
    from .client.sync import Client as SyncClient
    from .client.sync import _Runner

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "Format",
    "Recorder",
    "ReplayStats",
    "SyncRecorder",
    "iter_messages",
    "load",
    "record_sync",
    "replay",
    "replay_sync",
]

log = logging.getLogger(__name__)

Format = Literal["jsonl", "parquet"]

DEFAULT_CHUNK_ROWS = 10_000
"""Rows a recorder buffers before it writes them (one Parquet row group)."""
DEFAULT_FLUSH_INTERVAL = 1.0
"""Seconds after which a recorder writes what it holds, however few rows."""
_PUBLISH_WINDOW = 2_000  # replay publishes in the air, unacked
_COLUMNS = ("channel", "seq", "ts", "id", "sender", "data", "bytes")
_SUFFIXES: dict[str, Format] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}


def _format(path: Path, format: str | None) -> Format:
    if format is not None:
        if format not in ("jsonl", "parquet"):
            raise ConfigurationError(f"format must be 'jsonl' or 'parquet', got {format!r}")
        return format  # type: ignore[return-value]
    found = _SUFFIXES.get(path.suffix.lower())
    if found is None:
        raise ConfigurationError(
            f"{path}: cannot tell the format from the suffix {path.suffix!r}: name the file "
            "*.parquet or *.jsonl, or pass format='parquet'|'jsonl' (--format)"
        )
    return found


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise ConfigurationError(
            "Parquet recordings need pyarrow: pip install 'rtkit[record]' (or use a .jsonl file)"
        ) from None
    return pyarrow


def _schema(pa: Any) -> Any:
    return pa.schema(
        [
            ("channel", pa.string()),
            ("seq", pa.int64()),
            ("ts", pa.float64()),
            ("id", pa.string()),
            ("sender", pa.string()),
            ("data", pa.string()),
            ("bytes", pa.binary()),
        ]
    )


# -- writers -------------------------------------------------------------


class _JsonlWriter:
    def __init__(self, path: Path, valid_bytes: int | None) -> None:
        self.path = path
        self._file = path.open("ab")
        if valid_bytes is not None:
            # Cut a torn last line (a kill -9 mid-write) before appending.
            self._file.truncate(valid_bytes)

    def write(self, messages: list[Message]) -> None:
        lines = []
        for msg in messages:
            row: dict[str, Any] = {
                "channel": msg.channel,
                "seq": msg.seq,
                "ts": msg.ts,
                "id": msg.id,
                "sender": msg.sender,
            }
            if isinstance(msg.data, bytes):
                row["bytes"] = base64.b64encode(msg.data).decode()
            else:
                row["data"] = msg.data
            lines.append(orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE))
        # One write per chunk: a kill -9 tears at most this chunk's last line.
        self._file.write(b"".join(lines))
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class _ParquetWriter:
    def __init__(self, path: Path, existing: bool) -> None:
        pa = _pyarrow()
        self._pa = pa
        self.path = path
        self._partial = path.with_name(path.name + ".partial")
        self._schema = _schema(pa)
        self._writer = pa.parquet.ParquetWriter(str(self._partial), self._schema)
        if existing:
            # Parquet cannot be appended to: carry the old row groups over, one at a time.
            old = pa.parquet.ParquetFile(str(path))
            for i in range(old.num_row_groups):
                self._writer.write_table(old.read_row_group(i).cast(self._schema))

    def write(self, messages: list[Message]) -> None:
        data: list[str | None] = []
        raw: list[bytes | None] = []
        for msg in messages:
            if isinstance(msg.data, bytes):
                data.append(None)
                raw.append(msg.data)
            else:
                data.append(orjson.dumps(msg.data).decode())
                raw.append(None)
        table = self._pa.table(
            {
                "channel": [m.channel for m in messages],
                "seq": [m.seq for m in messages],
                "ts": [m.ts for m in messages],
                "id": [m.id for m in messages],
                "sender": [m.sender for m in messages],
                "data": data,
                "bytes": raw,
            },
            schema=self._schema,
        )
        self._writer.write_table(table)

    def close(self) -> None:
        self._writer.close()
        os.replace(self._partial, self.path)


# -- reading -------------------------------------------------------------


def _bad(path: Path, where: str, what: str) -> RecordingError:
    return RecordingError(f"{path}: {where}: {what}")


def _message(path: Path, where: str, row: Any, data_is_text: bool) -> Message:
    if not isinstance(row, dict):
        raise _bad(path, where, "not a record (a JSON object is expected)")
    channel, seq, ts = row.get("channel"), row.get("seq"), row.get("ts")
    if not isinstance(channel, str) or not channel:
        raise _bad(path, where, "no 'channel'")
    if isinstance(seq, bool) or not isinstance(seq, int):
        raise _bad(path, where, "'seq' must be an integer")
    if isinstance(ts, bool) or not isinstance(ts, int | float):
        raise _bad(path, where, "'ts' must be a number")
    raw = row.get("bytes")
    if raw is not None:
        try:
            data: Any = raw if isinstance(raw, bytes) else base64.b64decode(raw, validate=True)
        except (TypeError, ValueError):
            raise _bad(path, where, "'bytes' is not base64") from None
    elif "data" not in row:
        raise _bad(path, where, "neither 'data' nor 'bytes'")
    elif data_is_text:
        try:
            data = orjson.loads(row["data"])
        except (orjson.JSONDecodeError, TypeError):
            raise _bad(path, where, "'data' is not JSON text") from None
    else:
        data = row["data"]
    return Message(
        channel, seq, float(ts), str(row.get("id") or ""), str(row.get("sender") or ""), data
    )


def _jsonl_lines(path: Path) -> Iterator[tuple[int, int, bytes]]:
    """(line number, byte offset after the line, line) of each complete line."""
    offset = 0
    with path.open("rb") as file:
        for number, line in enumerate(file, 1):
            if not line.endswith(b"\n"):
                log.warning("%s: line %d is torn (the recorder was killed?): skipped", path, number)
                return
            offset += len(line)
            yield number, offset, line


def _iter_jsonl(path: Path, chunk_rows: int) -> Iterator[list[Message]]:
    chunk: list[Message] = []
    for number, _, line in _jsonl_lines(path):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise _bad(
                path, f"line {number}", "not JSON (is this a JSON lines recording?)"
            ) from None
        chunk.append(_message(path, f"line {number}", row, data_is_text=False))
        if len(chunk) >= chunk_rows:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _open_parquet(path: Path) -> Any:
    pa = _pyarrow()
    try:
        file = pa.parquet.ParquetFile(str(path))
    except (pa.ArrowException, OSError) as exc:
        raise RecordingError(f"{path}: not a readable Parquet file ({exc})") from None
    missing = {"channel", "seq", "ts"} - set(file.schema_arrow.names)
    if missing or not {"data", "bytes"} & set(file.schema_arrow.names):
        raise RecordingError(
            f"{path}: not an rtkit recording (columns {', '.join(file.schema_arrow.names)}; "
            f"expected {', '.join(_COLUMNS)})"
        )
    return file


def _iter_parquet(path: Path, chunk_rows: int) -> Iterator[list[Message]]:
    file = _open_parquet(path)
    row = 0
    for batch in file.iter_batches(batch_size=chunk_rows):
        chunk = []
        for record in batch.to_pylist():
            row += 1
            chunk.append(_message(path, f"row {row}", record, data_is_text=True))
        yield chunk


def _chunks(path: Path, fmt: Format, chunk_rows: int) -> Iterator[list[Message]]:
    if not path.is_file():
        raise RecordingError(f"{path}: no such recording")
    if fmt == "parquet":
        return _iter_parquet(path, chunk_rows)
    return _iter_jsonl(path, chunk_rows)


def iter_messages(
    path: str | os.PathLike[str],
    *,
    format: Format | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> Iterator[Message]:
    """The messages of a recording, in recorded order, reading ``chunk_rows`` at a time.

    Raises :class:`~rtkit.errors.RecordingError` for a missing or malformed file.

    >>> for msg in rtkit.record.iter_messages("prices.jsonl"):
    ...     print(msg.seq, msg.data)
    """
    file = Path(path)
    for chunk in _chunks(file, _format(file, format), chunk_rows):
        yield from chunk


def load(
    path: str | os.PathLike[str], *, format: Format | None = None, as_frame: bool = False
) -> list[Message] | pd.DataFrame:
    """The whole recording in memory: a list of messages, or with ``as_frame=True``
    a DataFrame built like ``history(as_frame=True)`` (frame batches back as rows).

    >>> df = rtkit.record.load("prices.parquet", as_frame=True)
    """
    messages = list(iter_messages(path, format=format))
    if not as_frame:
        return messages
    from .frames import decode_messages

    return decode_messages(messages)


def _resume_point(path: Path, fmt: Format) -> tuple[dict[str, int], int | None]:
    """The last recorded seq of each channel, and (JSON lines) the bytes to keep."""
    last: dict[str, int] = {}
    if fmt == "parquet":
        file = _open_parquet(path)
        for i in range(file.num_row_groups):
            group = file.read_row_group(i, columns=["channel", "seq"]).to_pydict()
            for channel, seq in zip(group["channel"], group["seq"], strict=True):
                last[channel] = max(seq, last.get(channel, 0))
        return last, None
    valid = 0
    for number, offset, line in _jsonl_lines(path):
        valid = offset
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise _bad(
                path, f"line {number}", "not JSON (is this a JSON lines recording?)"
            ) from None
        msg = _message(path, f"line {number}", row, data_is_text=False)
        last[msg.channel] = max(msg.seq, last.get(msg.channel, 0))
    return last, valid


# -- recording -----------------------------------------------------------


class Recorder:
    """Writes the messages of one or more channels to a file until closed.

    Made by :meth:`rtkit.aio.Channel.record` (or :func:`Recorder.start` for
    several channels). Rows are buffered and written every ``chunk_rows`` rows
    or ``flush_interval`` seconds, whichever comes first, in a worker thread
    while the next chunk fills: memory stays bounded by two chunks, and a
    full buffer holds up the channel's callbacks rather than growing.

    Recording into an existing file resumes it: each channel subscribes from
    the last seq the file holds, so while the hub retains the messages the
    file has no gap and no duplicate. ``since`` (for channels the file does
    not hold yet) starts from history; None starts with the next message.

    >>> rec = await Recorder.start(hub, ["prices", "trades"], "day.parquet")
    >>> ...
    >>> await rec.close()
    """

    def __init__(
        self,
        client: aio.Client,
        channels: Sequence[str],
        path: str | os.PathLike[str],
        *,
        format: Format | None = None,
        since: int | None = None,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
    ) -> None:
        if not channels:
            raise ConfigurationError("record: name at least one channel")
        if chunk_rows < 1 or not flush_interval > 0:
            raise ConfigurationError("record: chunk_rows must be >= 1 and flush_interval > 0")
        self.path = Path(path)
        self.format: Format = _format(self.path, format)
        self.channels = list(dict.fromkeys(channels))
        self.rows = 0
        """Rows written to the file by this recorder so far."""
        self.received = 0
        """Messages received so far (written, being written or buffered)."""
        self.gaps = 0
        """Times the hub could not resume a channel (messages lost to the recording)."""
        self.resumed: dict[str, int] = {}
        """The last seq per channel the file already held when recording started."""
        self._client = client
        self._since = since
        self._chunk_rows = chunk_rows
        self._flush_interval = flush_interval
        self._buffer: list[Message] = []
        self._lock = asyncio.Lock()
        # The chunk being written while the next one fills: at most two in memory.
        self._writing: asyncio.Future[None] | None = None
        self._writer: _JsonlWriter | _ParquetWriter | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._subscribed: list[aio.Channel] = []
        self._closed = False

    @classmethod
    async def start(
        cls,
        client: aio.Client,
        channels: Sequence[str],
        path: str | os.PathLike[str],
        **options: Any,
    ) -> Recorder:
        """Make a recorder and start it: it is recording when this returns."""
        recorder = cls(client, channels, path, **options)
        await recorder._start()
        return recorder

    def __repr__(self) -> str:
        state = "closed" if self._closed else "recording"
        return f"<rtkit.record.Recorder {self.path} {state} rows={self.rows}>"

    async def __aenter__(self) -> Recorder:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _start(self) -> None:
        existing = self.path.exists() and self.path.stat().st_size > 0
        valid: int | None = None
        if existing:
            self.resumed, valid = await anyio.to_thread.run_sync(
                _resume_point, self.path, self.format
            )
        if self.format == "parquet":
            self._writer = await anyio.to_thread.run_sync(_ParquetWriter, self.path, existing)
        else:
            self._writer = await anyio.to_thread.run_sync(_JsonlWriter, self.path, valid)
        try:
            for name in self.channels:
                channel = self._client.channel(name)
                channel.on_gap(self._on_gap)
                since = self.resumed.get(name, self._since)
                await channel.subscribe(self._on_message, since=since)
                self._subscribed.append(channel)
        except BaseException:
            await self.close()
            raise
        self._flusher = asyncio.ensure_future(self._flush_every())
        log.info("recording %s to %s (resumed at %s)", self.channels, self.path, self.resumed)

    async def _on_message(self, msg: Message) -> None:
        self._buffer.append(msg)
        self.received += 1
        if len(self._buffer) >= self._chunk_rows:
            await self._hand_off()

    def _on_gap(self, channel: str, info: Any) -> None:
        self.gaps += 1
        log.warning(
            "recording %s: channel %r lost messages the hub no longer has", self.path, channel
        )

    async def _flush_every(self) -> None:
        while True:
            await asyncio.sleep(self._flush_interval)
            await self.flush()

    async def _hand_off(self) -> None:
        """Start writing the buffer once the previous chunk is written."""
        async with self._lock:
            if self._writing is not None:
                # Shielded, and forgotten only once done: cancelling the
                # flusher must not let a later write or close overtake it.
                await asyncio.shield(self._writing)  # a write error surfaces here
                self._writing = None
            rows, self._buffer = self._buffer, []
            if rows:
                self._writing = asyncio.ensure_future(self._write(rows))

    async def _write(self, rows: list[Message]) -> None:
        assert self._writer is not None
        await anyio.to_thread.run_sync(self._writer.write, rows)
        self.rows += len(rows)

    async def flush(self) -> None:
        """Write the buffered rows now, and wait until they are written."""
        await self._hand_off()
        async with self._lock:
            if self._writing is not None:
                await asyncio.shield(self._writing)
                self._writing = None

    async def close(self) -> None:
        """Stop recording, write what is buffered and close the file; idempotent."""
        if self._closed:
            return
        self._closed = True
        for channel in self._subscribed:
            channel.off_gap(self._on_gap)
            # The client closing first is fine: the subscription went with it.
            with contextlib.suppress(RtkitError):
                await channel.unsubscribe(self._on_message)
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        # Shielded: a Ctrl-C during close must still leave a readable file.
        await asyncio.shield(self._finish())

    async def _finish(self) -> None:
        await self.flush()
        if self._writer is not None:
            await anyio.to_thread.run_sync(self._writer.close)
        log.info("recorded %d row(s) to %s", self.rows, self.path)


class SyncRecorder:
    """The blocking twin of :class:`Recorder`, made by :meth:`rtkit.Channel.record`.

    >>> with hub.channel("prices").record("prices.jsonl") as rec:
    ...     time.sleep(60)
    >>> rec.rows
    """

    def __init__(self, runner: _Runner, recorder: Recorder) -> None:
        self._runner = runner
        self.aio = recorder
        """The :class:`Recorder` underneath."""

    def __repr__(self) -> str:
        return repr(self.aio)

    def __enter__(self) -> SyncRecorder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def path(self) -> Path:
        return self.aio.path

    @property
    def rows(self) -> int:
        """Rows written so far."""
        return self.aio.rows

    def flush(self) -> None:
        """Write the buffered rows now."""
        self._runner.run("flush", self.aio.flush)

    def close(self) -> None:
        """Stop recording and close the file."""
        self._runner.run("close", self.aio.close)


def record_sync(
    client: SyncClient, channels: Sequence[str], path: str | os.PathLike[str], **options: Any
) -> SyncRecorder:
    """Blocking :meth:`Recorder.start` for a client from :func:`rtkit.connect`."""
    runner = client._runner
    assert runner.client is not None
    start = functools.partial(Recorder.start, runner.client, channels, path, **options)
    recorder = runner.run("record", start)
    return SyncRecorder(runner, recorder)


# -- replay --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReplayStats:
    """What a replay did: ``rows`` published (duplicates of an earlier run included),
    ``loops`` completed and ``seconds`` taken."""

    rows: int
    loops: int
    seconds: float


def _identity(first: Message, run: str) -> str:
    key = orjson.dumps([first.channel, first.seq, first.ts, first.id, run])
    return hashlib.sha256(key).hexdigest()[:12]


def _message_id(identity: str, loop: int, row: int) -> str:
    # The row's place in the file, not its seq: a file may hold one channel's
    # seqs twice (recorded across a restart of a hub without a durable store).
    return f"rp-{identity}-{loop}-{row}"


async def replay(
    path: str | os.PathLike[str],
    channel: aio.Channel,
    *,
    speed: float = 1.0,
    loop: bool | int = False,
    source: str | None = None,
    run: str = "",
    format: Format | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> ReplayStats:
    """Publish each recorded message's data to ``channel``, keeping its timing.

    The gaps between messages are the recorded ones (hub times) divided by
    ``speed``; ``speed=0`` (or ``math.inf``) publishes as fast as the hub
    takes them, batched. ``loop=True`` repeats until cancelled, ``loop=N``
    plays N times. ``source`` replays only the rows of that recorded channel.

    Each publish has an idempotency id made of the recording's identity (its
    first row, plus ``run``), the loop number and the row's place in the
    file: a replay
    restarted after a crash does not double what the hub already stored
    within its dedup window (5 minutes by default). To play the same file
    again on purpose within that window, pass another ``run``.

    >>> stats = await rtkit.aio.replay("prices.parquet", hub.channel("replay"), speed=10)
    """
    file = Path(path)
    fmt = _format(file, format)
    if speed < 0 or math.isnan(speed):
        raise ConfigurationError(
            f"replay: speed must be >= 0 (0: as fast as possible), got {speed}"
        )
    if isinstance(loop, bool):
        passes: float = math.inf if loop else 1
    elif loop < 1:
        raise ConfigurationError(f"replay: loop must be True, False or >= 1, got {loop}")
    else:
        passes = loop
    fast = speed == 0 or math.isinf(speed)
    # Open once up front so a bad file fails before anything is published.
    await anyio.to_thread.run_sync(lambda: next(_chunks(file, fmt, 1), None))

    in_flight: collections.deque[asyncio.Future[int]] = collections.deque()
    rows = 0
    loops = 0
    started = time.monotonic()
    offset = 0.0  # recorded seconds played by the previous loops
    identity: str | None = None
    reading: asyncio.Future[list[Message] | None] | None = None
    try:
        while loops < passes:
            first_ts: float | None = None
            last_ts = 0.0
            count = 0
            row = 0
            chunks = _chunks(file, fmt, chunk_rows)
            # The next chunk is read in a thread while this one is published.
            reading = asyncio.ensure_future(anyio.to_thread.run_sync(next, chunks, None))
            while True:
                chunk = await reading
                reading = None
                if chunk is None:
                    break
                reading = asyncio.ensure_future(anyio.to_thread.run_sync(next, chunks, None))
                for msg in chunk:
                    row += 1
                    if source is not None and msg.channel != source:
                        continue
                    if identity is None:
                        identity = _identity(msg, run)
                    if first_ts is None:
                        first_ts = msg.ts
                    last_ts = max(last_ts, msg.ts)
                    count += 1
                    if not fast:
                        due = started + (offset + msg.ts - first_ts) / speed
                        delay = due - time.monotonic()
                        if delay > 0:
                            await asyncio.sleep(delay)
                    in_flight.append(
                        await channel.publish(
                            msg.data, id=_message_id(identity, loops, row), wait=False
                        )
                    )
                    rows += 1
                    if len(in_flight) >= _PUBLISH_WINDOW:
                        await in_flight.popleft()
            if count == 0:
                if source is not None:
                    raise RecordingError(f"{file}: no rows of channel {source!r}")
                break  # an empty recording: nothing to play, not even in a loop
            loops += 1
            span = last_ts - (first_ts or last_ts)
            # The next loop starts one average gap after this one's last row.
            offset += span + (span / (count - 1) if count > 1 else 0.0)
        while in_flight:
            await in_flight.popleft()
    finally:
        for future in in_flight:
            future.cancel()
        if reading is not None:  # stopped early: let the read in the thread finish
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError, RtkitError):
                await reading
    return ReplayStats(rows, loops, time.monotonic() - started)


def replay_sync(
    path: str | os.PathLike[str],
    channel: SyncChannel,
    *,
    speed: float = 1.0,
    loop: bool | int = False,
    source: str | None = None,
    run: str = "",
    format: Format | None = None,
) -> ReplayStats:
    """Blocking :func:`replay` into a channel of :func:`rtkit.connect`'s client.

    Runs on the client's I/O thread; Ctrl-C (a notebook's interrupt) stops it.

    >>> rtkit.replay("prices.parquet", hub.channel("prices.replay"), speed=10)
    ReplayStats(rows=1200, loops=1, seconds=6.0)
    """

    async def run_it() -> ReplayStats:
        return await replay(
            path, channel.aio, speed=speed, loop=loop, source=source, run=run, format=format
        )

    return channel._runner.run("replay", run_it)
