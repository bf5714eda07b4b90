"""Channels in the SQLite file: group commit, seqs, history, idempotency.

- **Group commit.** ``append`` queues a row and waits; one flusher task hands
  everything queued to the writer thread, which stores it in a single
  transaction and commits once. Thousands of publishes per second then cost a
  few commits per second instead of one fsync-bound commit each. A publish is
  acked only after its transaction committed, so what the hub fans out is on
  disk (WAL + ``synchronous=NORMAL`` survives the process being killed;
  ``FULL`` also survives power loss).
- **Seqs are assigned by the writer, in queue order.** The queue is filled in
  call order without yielding, so concurrent appends to a channel get
  consecutive seqs in call order; and because a seq only exists once its
  transaction commits, a failed commit leaves no gap.
- **Never block the event loop.** Writes go through the database's writer
  thread, reads through its reader (see :mod:`.database`); ``head`` is
  answered from memory.
- **Idempotency keys** are checked in an in-memory cache and written to the
  ``dedup`` table with their message, so a restarted hub reloads them at
  ``open`` and still dedups within the window. The table has no index on the
  key on purpose: random keys scatter index writes over many pages, which cut
  write throughput about 4x in measurements. It is only read in bulk at
  ``open``; past ``max_dedup_keys`` keys the oldest are forgotten, as in the
  memory store.
- **Delivery.** ``append`` hands its newly stored message to the store's
  :class:`~rtkit.storage.feed.LocalFeed` when its transaction committed,
  right before returning; a duplicate is never delivered again.
- **Retention** is enforced on every read (count and age) but rows are
  deleted periodically by the writer, never on the publish path. Both tables
  are rowid tables filled in time order, so expired rows are a rowid prefix
  and need no index on ``ts``. The per-channel byte cap is applied by the
  same periodic prune. A channel whose messages have all gone is then
  forgotten (its row deleted) unless the hub has subscribers to it.
- **Reads create nothing.** A channel gets its row with its first message;
  until then reads report seq 0 and the epoch the first append will store,
  derived from a salt kept in the ``settings`` table
  (:func:`~rtkit.storage.ids.channel_epoch`).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any, Final

import anyio
import anyio.to_thread

from ...errors import BadRequest, ConfigurationError, Unavailable
from ..base import Appended, Message, Range, Retention
from ..codec import decode_data, encode_data
from ..dedup import MAX_DEDUP_KEYS, DedupCache, Key
from ..feed import LocalFeed
from ..ids import channel_epoch, new_message_id
from ..ranges import trim_selection
from .database import SQLiteDatabase

__all__ = ["MAX_BATCH", "SQLiteChannels"]

log = logging.getLogger(__name__)

# Rows per transaction: bounds how long one commit (and so the acks waiting
# on it) can take when publishers outrun the disk.
MAX_BATCH: Final = 4096

_INSERT_MESSAGE: Final = (
    "INSERT INTO messages (channel, seq, ts, id, sender, kind, data) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_KEY: Final = "INSERT INTO dedup (channel, sender, id, seq, ts) VALUES (?, ?, ?, ?, ?)"
# Rows are appended in time order, so everything before the first row young
# enough to keep is expired (ts may step back a little; rows then live until
# the next prune).
_PRUNE_PREFIX: Final = """DELETE FROM {table} WHERE rowid < coalesce(
    (SELECT rowid FROM {table} WHERE ts >= ? ORDER BY rowid LIMIT 1),
    (SELECT max(rowid) + 1 FROM {table}))"""
_SELECT_COLUMNS: Final = "SELECT seq, ts, id, sender, kind, data FROM messages"
# The newest seq of a channel whose messages, counted from the newest, are
# over the byte cap: it and everything older go.
_OVER_BYTES: Final = """SELECT seq FROM (
    SELECT seq, sum(length(CAST(data AS BLOB))) OVER (ORDER BY seq DESC) AS total
    FROM messages WHERE channel = ?)
    WHERE total > ? ORDER BY seq DESC LIMIT 1"""
_EMPTY_CHANNELS: Final = """SELECT name FROM channels
    WHERE NOT EXISTS (SELECT 1 FROM messages WHERE messages.channel = channels.name)"""


def _check_utf8(text: str) -> None:
    try:
        text.encode()
    except UnicodeEncodeError:
        # A lone surrogate, say from a JSON "\ud800" escape: SQLite cannot store it.
        raise BadRequest(f"{text!r} is not valid Unicode text") from None


class _Channel:
    __slots__ = ("epoch", "head")

    def __init__(self, epoch: str, head: int = 0) -> None:
        self.epoch = epoch
        self.head = head  # last committed seq


# One queued append: a plain tuple, because this is built for every publish
# and a tuple costs a fraction of a class instance. The writer returns the seqs.
_Row = tuple[
    str,  # channel
    Any,  # data, as given (returned in the Message)
    int,  # kind
    str | bytes,  # payload
    str,  # sender
    str,  # msg_id
    float,  # ts
    Key | None,  # idempotency key
    float,  # dedup window
    asyncio.Future[Appended],
]


class SQLiteChannels:
    """A :class:`~rtkit.storage.base.ChannelStore` in a :class:`SQLiteDatabase`
    (see the module docstring).

    ``clock`` gives "now" for age-based retention; ``prune_interval`` is how
    often (seconds) expired rows and keys are deleted.
    """

    def __init__(
        self,
        db: SQLiteDatabase,
        retention: Retention,
        feed: LocalFeed,
        *,
        clock: Callable[[], float] = time.time,
        prune_interval: float = 10.0,
        max_dedup_keys: int = MAX_DEDUP_KEYS,
    ) -> None:
        if prune_interval <= 0:
            raise ConfigurationError("prune_interval must be positive")
        self._db = db
        self._feed = feed
        self.retention = retention
        self._clock = clock
        self._prune_interval = prune_interval

        # Event-loop side.
        self._channels: dict[str, _Channel] = {}
        self._unsaved: dict[str, str] = {}  # channels (-> epoch) not yet in the database
        self._drop: set[str] = set()  # channels to delete from the database
        self._salt = ""  # channel epochs are derived from it (see load_sync)
        self._dedup: DedupCache[tuple[int, float]] = DedupCache(max_dedup_keys)
        # Keys queued but not committed -> futures of duplicates waiting on them.
        self._inflight: dict[Key, list[asyncio.Future[Appended]]] = {}
        self._queue: deque[list[_Row]] = deque()
        self._open_batch: list[_Row] | None = None
        self._wakeup = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None

        # Writer-thread side (touched only while holding the database's write limiter).
        self._heads: dict[str, int] = {}
        self._touched: set[str] = set()
        self._last_prune = 0.0
        self._scan_empty = True  # look for channels without messages at the next prune
        self._empty_found: list[str] = []  # what the last prune found, for the event loop

    # -- lifecycle, driven by the store -------------------------------------

    def load_sync(
        self,
    ) -> tuple[list[tuple[str, str, int]], list[tuple[str, str, str, int, float]]]:
        """The stored channels and newest idempotency keys (newest first), for
        :meth:`start`. In the writer thread, once the database is open."""
        conn = self._db.wconn
        assert conn is not None
        conn.execute(
            "INSERT OR IGNORE INTO settings (name, value) VALUES ('epoch_salt', ?)",
            (uuid.uuid4().hex,),
        )
        self._salt = conn.execute(
            "SELECT value FROM settings WHERE name = 'epoch_salt'"
        ).fetchone()[0]
        channels = conn.execute("SELECT name, epoch, head FROM channels").fetchall()
        # The newest keys, newest first; pruning keeps the table to the window.
        keys = conn.execute(
            "SELECT channel, sender, id, seq, ts FROM dedup ORDER BY rowid DESC LIMIT ?",
            (self._dedup.max_keys,),
        ).fetchall()
        self._heads = {name: head for name, _, head in channels}
        self._touched = set(self._heads)  # count limits may have been lowered
        self._last_prune = self._clock()
        return channels, keys

    def start(
        self,
        channels: list[tuple[str, str, int]],
        keys: list[tuple[str, str, str, int, float]],
    ) -> None:
        """Take what :meth:`load_sync` found and start the flusher."""
        for name, epoch, head in channels:
            self._channels[name] = _Channel(epoch, head)
        for channel, sender, msg_id, seq, ts in reversed(keys):  # oldest first
            self._dedup.load((channel, sender, msg_id), (seq, ts), ts)
        self._flusher = asyncio.get_running_loop().create_task(
            self._flush_loop(), name=f"rtkit sqlite flusher {self._db.path}"
        )
        self._flusher.add_done_callback(self._flusher_done)

    async def stop(self) -> None:
        """Commit everything queued (the database is ``closing``)."""
        self._wakeup.set()
        if self._flusher is not None and not self._flusher.done():
            # Shielded: a cancelled close() must not cut a commit short.
            await asyncio.shield(self._flusher)

    def _epoch(self, name: str) -> str:
        return channel_epoch(self._salt, name, self._clock(), self.retention.max_age)

    def _channel(self, name: str) -> _Channel:
        ch = self._channels.get(name)
        if ch is None:
            # The epoch reads reported while the channel had no row, saved
            # with this first message's transaction.
            ch = self._channels[name] = _Channel(self._epoch(name))
            self._unsaved[name] = ch.epoch
            self._wakeup.set()
        return ch

    # -- the ChannelStore protocol -----------------------------------------

    async def append(
        self,
        channel: str,
        data: Any,
        *,
        sender: str,
        msg_id: str | None,
        ts: float,
        dedup_window: float,
    ) -> Appended:
        """Store one message; returns once its transaction committed.

        See :meth:`rtkit.storage.base.ChannelStore.append`. Raises TypeError for data
        that is neither JSON nor bytes, and :class:`rtkit.errors.Unavailable`
        when the database cannot be written.
        """
        if self._db.state != "open":
            self._db.check_open()
        # Encode and check here, not in the writer: a bad value fails only its
        # caller, not the whole batch it would have joined.
        kind, payload = encode_data(data)
        for text in (channel, sender, msg_id):
            if text is not None and not text.isascii():
                _check_utf8(text)
        key: Key | None = None
        if msg_id is None:
            msg_id = new_message_id()  # unique: no dedup key needed
        elif dedup_window > 0:
            key = (channel, sender, msg_id)
            waiting = self._inflight.get(key)
            if waiting is not None:
                dup: asyncio.Future[Appended] = asyncio.get_running_loop().create_future()
                waiting.append(dup)
                return await dup
            first = self._dedup.get(key, ts, dedup_window)
            if first is not None:
                return Appended(await self._stored(key, first, data), duplicate=True)
        if channel not in self._channels:
            self._channel(channel)
        fut: asyncio.Future[Appended] = asyncio.get_running_loop().create_future()
        batch = self._open_batch
        if batch is None or len(batch) >= MAX_BATCH:
            batch = self._open_batch = []
            self._queue.append(batch)
        batch.append((channel, data, kind, payload, sender, msg_id, ts, key, dedup_window, fut))
        if key is not None:
            self._inflight[key] = []
        self._wakeup.set()
        appended = await fut
        # Delivered in the appender's own turn, as the message is acked: a
        # cancelled append is neither acked nor delivered.
        deliver = self._feed.deliver
        if deliver is not None:
            deliver(appended.message)
        return appended

    async def read(
        self,
        channel: str,
        *,
        since: int | None = None,
        before: int | None = None,
        limit: int | None = None,
        last: int | None = None,
    ) -> Range:
        """Committed messages of a channel in seq order.

        See :meth:`rtkit.storage.base.ChannelStore.read`; ``last`` keeps the newest
        ``last``, then ``limit`` keeps the oldest ``limit`` when ``since`` is
        given and the newest otherwise.
        """
        self._db.check_open()
        ch = self._channels.get(channel)
        if ch is None:
            # No row: nothing to read, and nothing to create for asking.
            return Range([], 0, self._epoch(channel), since is None or since == 0)
        epoch = ch.epoch
        messages, head, complete = await anyio.to_thread.run_sync(
            self._read_sync, channel, since, before, limit, last, limiter=self._db.read_limiter
        )
        return Range(messages, head, epoch, complete)

    async def head(self, channel: str) -> tuple[int, str]:
        """The channel's latest committed seq (0 if none) and its epoch."""
        self._db.check_open()
        ch = self._channels.get(channel)
        if ch is None:
            return 0, self._epoch(channel)
        return ch.head, ch.epoch

    async def prune(self) -> None:
        """Delete expired messages and idempotency keys now.

        This also happens every ``prune_interval`` seconds on its own; call
        it after lowering retention, or in tests.
        """
        self._db.check_open()
        await anyio.to_thread.run_sync(
            self._prune_sync, self._dedup.max_window, limiter=self._db.write_limiter
        )

    # -- event-loop internals ---------------------------------------------

    async def _stored(self, key: Key, first: tuple[int, float], data: Any) -> Message:
        """The message an idempotency key first stored (for a duplicate append)."""
        channel, sender, msg_id = key
        seq, ts = first
        stored = await anyio.to_thread.run_sync(
            self._fetch_sync, channel, seq, limiter=self._db.read_limiter
        )
        # Pruned since: the caller sent the same id, so its data stands in.
        return Message(channel, seq, ts, msg_id, sender, data if stored is None else stored.data)

    async def _flush_loop(self) -> None:
        while True:
            self._wakeup.clear()
            if self._queue or self._unsaved or self._drop:
                if await self._flush_batch():
                    self._forget_empty()
                    continue
                if self._queue:
                    continue
                # The database refused even the bookkeeping: retry on new work
                # or after a pause, rather than spin on a broken disk.
                if self._db.state == "closing":
                    log.error("sqlite store %s: closing with unsaved channel epochs", self._db.path)
                    return
            elif self._db.state == "closing":
                return
            try:
                async with asyncio.timeout(self._prune_interval):
                    await self._wakeup.wait()
            except TimeoutError:
                await self._idle()
                self._forget_empty()

    def _forget_empty(self) -> None:
        """Forget the channels the last prune found without messages, unless
        someone follows them; their rows go with the next transaction."""
        found, self._empty_found = self._empty_found, []
        if not found or self._queue or self._open_batch:
            return  # an append may be queued for one: the next prune finds them again
        for name in found:
            ch = self._channels.get(name)
            if ch is None or name in self._unsaved or not self._feed.forget(name):
                continue
            del self._channels[name]
            self._drop.add(name)
        if self._drop:
            log.debug("sqlite store %s: forgetting %d channels", self._db.path, len(self._drop))
            self._wakeup.set()

    async def _idle(self) -> None:
        # Nothing to write for a while: messages and keys still age out.
        self._dedup.prune(self._clock())
        try:
            await anyio.to_thread.run_sync(
                self._maybe_prune_sync, self._dedup.max_window, limiter=self._db.write_limiter
            )
        except Exception:
            log.exception("sqlite store %s: pruning failed", self._db.path)

    async def _flush_batch(self) -> bool:
        """Write the oldest queued batch; False if the database refused it."""
        rows = self._queue.popleft() if self._queue else []
        if rows is self._open_batch:
            self._open_batch = None
        unsaved, self._unsaved = self._unsaved, {}
        drop, self._drop = self._drop, set()
        try:
            seqs, heads = await anyio.to_thread.run_sync(
                self._write_sync,
                rows,
                unsaved,
                drop,
                self._dedup.max_window,
                limiter=self._db.write_limiter,
            )
        except Exception as exc:  # one failed batch must not stop the flusher
            log.exception("sqlite store %s: writing %d messages failed", self._db.path, len(rows))
            self._unsaved = unsaved | self._unsaved  # channels are retried with the next batch
            self._drop = drop | self._drop
            self._fail(rows, exc)
            return False
        if self._queue:
            # Start writing the next batch first: SQLite releases the GIL, so
            # the writer works while this loop wakes this batch's appenders.
            # Callbacks run in FIFO order, so batches still resolve in order.
            asyncio.get_running_loop().call_soon(self._resolve, rows, seqs, heads)
        else:
            self._resolve(rows, seqs, heads)
        return True

    def _resolve(self, rows: list[_Row], seqs: list[int], heads: dict[str, int]) -> None:
        """Hand a committed batch's results to its appenders, in call order."""
        for name, head in heads.items():
            self._channels[name].head = head
        dedup, inflight = self._dedup, self._inflight
        for (channel, data, _, _, sender, msg_id, ts, key, window, fut), seq in zip(
            rows, seqs, strict=True
        ):
            msg = Message(channel, seq, ts, msg_id, sender, data)
            if not fut.done():  # its caller may have been cancelled
                fut.set_result(Appended(msg))
            if key is not None:
                dedup.put(key, (seq, ts), ts, window)
                # A key is queued at most once: later appends of it wait here.
                for dup in inflight.pop(key, ()):
                    if not dup.done():
                        dup.set_result(Appended(msg, duplicate=True))

    def _fail(self, rows: list[_Row], exc: BaseException) -> None:
        for row in rows:
            key = row[7]
            dups = self._inflight.pop(key, []) if key is not None else []
            for fut in [row[9], *dups]:
                if not fut.done():
                    err = Unavailable(f"the message could not be stored: {exc}")
                    err.__cause__ = exc
                    fut.set_exception(err)

    def _flusher_done(self, task: asyncio.Task[None]) -> None:
        # Only reached through a bug or a cancelled loop; fail loudly rather
        # than leave appenders waiting forever.
        if task.cancelled():
            exc: BaseException = RuntimeError("the sqlite flusher was cancelled")
        else:
            err = task.exception()
            if err is None:
                return
            exc = err
            log.error("sqlite store %s: flusher crashed", self._db.path, exc_info=exc)
        while self._queue:
            self._fail(self._queue.popleft(), exc)
        self._open_batch = None
        if self._db.state == "open":
            self._db.state = "broken"  # refuse new work; close() still cleans up

    # -- writer thread ------------------------------------------------------

    def _write_sync(
        self, rows: list[_Row], unsaved: dict[str, str], drop: set[str], max_window: float
    ) -> tuple[list[int], dict[str, int]]:
        """Store a batch in one transaction; returns its seqs and each channel's new head."""
        conn = self._db.wconn
        assert conn is not None
        heads = self._heads
        new: dict[str, int] = {}
        seqs: list[int] = []
        messages: list[tuple[str, int, float, str, str, int, str | bytes]] = []
        keys: list[tuple[str, str, str, int, float]] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            if drop:
                # First: a forgotten channel published to again in this batch
                # starts over with a new row.
                conn.executemany("DELETE FROM channels WHERE name = ?", [(n,) for n in drop])
            for channel, _, kind, payload, sender, msg_id, ts, key, _, _ in rows:
                seq = new.get(channel)
                if seq is None:
                    seq = 0 if channel in drop else heads.get(channel, 0)
                seq += 1
                new[channel] = seq
                seqs.append(seq)
                messages.append((channel, seq, ts, msg_id, sender, kind, payload))
                if key is not None:
                    keys.append((channel, sender, msg_id, seq, ts))
            if unsaved:
                conn.executemany(
                    "INSERT OR IGNORE INTO channels (name, epoch) VALUES (?, ?)", unsaved.items()
                )
            if messages:
                conn.executemany(_INSERT_MESSAGE, messages)
            if keys:
                conn.executemany(_INSERT_KEY, keys)
            if new:
                conn.executemany(
                    "UPDATE channels SET head = ? WHERE name = ?",
                    [(head, name) for name, head in new.items()],
                )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        for name in drop:
            heads.pop(name, None)
            self._touched.discard(name)
        heads.update(new)
        self._touched.update(new)
        # The batch is committed: a failing prune must not fail its appends.
        try:
            self._maybe_prune_sync(max_window)
        except Exception:
            log.exception("sqlite store %s: pruning failed", self._db.path)
        return seqs, new

    def _maybe_prune_sync(self, max_window: float) -> None:
        if self._db.wconn is not None and self._clock() - self._last_prune >= self._prune_interval:
            self._prune_sync(max_window)

    def _prune_sync(self, max_window: float) -> None:
        conn = self._db.wconn
        assert conn is not None
        now = self._clock()
        self._last_prune = now
        keep = self.retention.max_messages
        conn.execute("BEGIN IMMEDIATE")
        try:
            aged = conn.execute(
                _PRUNE_PREFIX.format(table="messages"), (now - self.retention.max_age,)
            ).rowcount
            counted = 0
            for name in self._touched:
                head = self._heads.get(name, 0)
                if head > keep:
                    counted += conn.execute(
                        "DELETE FROM messages WHERE channel = ? AND seq <= ?", (name, head - keep)
                    ).rowcount
                over = conn.execute(_OVER_BYTES, (name, self.retention.max_bytes)).fetchone()
                if over is not None:
                    # The newest message stays, however big.
                    counted += conn.execute(
                        "DELETE FROM messages WHERE channel = ? AND seq <= ?",
                        (name, min(over[0], head - 1)),
                    ).rowcount
            keys = 0
            # The largest window seen in this process; unknown (0) keeps every key.
            if max_window > 0:
                keys = conn.execute(
                    _PRUNE_PREFIX.format(table="dedup"), (now - max_window,)
                ).rowcount
            if aged or counted or self._scan_empty:
                self._empty_found = [row[0] for row in conn.execute(_EMPTY_CHANNELS)]
                self._scan_empty = False
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._touched.clear()
        if aged or counted or keys:
            log.debug(
                "sqlite store %s pruned %d aged and %d surplus messages, %d keys",
                self._db.path,
                aged,
                counted,
                keys,
            )

    # -- reader thread --------------------------------------------------------

    def _read_sync(
        self,
        channel: str,
        since: int | None,
        before: int | None,
        limit: int | None,
        last: int | None,
    ) -> tuple[list[Message], int, bool]:
        conn = self._db.rconn
        if conn is None:
            raise RuntimeError("the store is closed")
        cutoff = self._clock() - self.retention.max_age
        # One transaction, so head and messages come from the same snapshot.
        conn.execute("BEGIN")
        try:
            found = conn.execute("SELECT head FROM channels WHERE name = ?", (channel,)).fetchone()
            head: int = 0 if found is None else found[0]
            # Seqs up to here are over the count limit, whether pruned yet or not.
            dropped = max(head - self.retention.max_messages, 0)
            complete = True
            if since is not None and since != head:
                if since > head or since < dropped:  # > head: counted in another epoch
                    complete = False
                else:
                    nxt = conn.execute(
                        "SELECT ts FROM messages WHERE channel = ? AND seq = ?",
                        (channel, since + 1),
                    ).fetchone()
                    complete = nxt is not None and nxt[0] >= cutoff
            sql = f"{_SELECT_COLUMNS} WHERE channel = ? AND seq > ? AND ts >= ?"
            args: list[Any] = [channel, dropped if since is None else max(since, dropped), cutoff]
            if before is not None:
                sql += " AND seq < ?"
                args.append(before)
            newest = last if last is not None else (limit if since is None else None)
            if newest is not None:
                sql += " ORDER BY seq DESC LIMIT ?"
                args.append(max(newest, 0))
            else:
                sql += " ORDER BY seq"
                if limit is not None:
                    sql += " LIMIT ?"
                    args.append(max(limit, 0))
            rows = conn.execute(sql, args).fetchall()
        finally:
            conn.execute("COMMIT")
        if newest is not None:
            rows.reverse()
        messages = [
            Message(channel, seq, ts, msg_id, sender, decode_data(kind, data))
            for seq, ts, msg_id, sender, kind, data in rows
        ]
        if last is not None and limit is not None:
            messages = trim_selection(messages, since=since, limit=limit, last=None)
        return messages, head, complete

    def _fetch_sync(self, channel: str, seq: int) -> Message | None:
        conn = self._db.rconn
        if conn is None:
            raise RuntimeError("the store is closed")
        found = conn.execute(
            f"{_SELECT_COLUMNS} WHERE channel = ? AND seq = ?", (channel, seq)
        ).fetchone()
        if found is None:
            return None
        seq, ts, msg_id, sender, kind, data = found
        return Message(channel, seq, ts, msg_id, sender, decode_data(kind, data))
