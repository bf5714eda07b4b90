"""Channels in Redis: numbering, history and idempotency in one Lua script.

Per channel (``<prefix>{<channel>}:...``, see
:meth:`RedisConnection.channel_key
<rtkit.storage.redis.connection.RedisConnection.channel_key>`)::

    seq     INCR counter, the channel's head
    epoch   changes when the counter restarts
    log     a stream, entry id ``<seq>-0``, trimmed to max_messages and max_bytes
    bytes   payload bytes in ``log``
    id:<len(sender)>:<sender>:<msg id>   idempotency key, PX window
    n       pub/sub channel: the newest seq after each append call

The script checks the idempotency keys, numbers, stores and announces the
messages of one channel, so every hub sees one order: Redis runs scripts one
at a time, and PUBLISH order is seq order. Publishes that arrive while the
previous calls are on their way wait and then go together: one call per
channel, written on the appends' own connection in order (see
:mod:`.pipeline`), and one announcement for the lot, so a busy hub pays one
call per burst, not per message. The sender's
length in the idempotency key keeps ``("ann", "b:1")`` and ``("ann:b", "1")``
apart.

A channel's keys lapse together ``max_age`` after its last message. Reads
create none of them: a channel without keys reports seq 0 and the epoch its
first append will store, derived from a salt kept in ``<prefix>epoch-salt``
(:func:`~rtkit.storage.ids.channel_epoch`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..base import Answer, Appended, Message, Range, Retention, into_future
from ..codec import decode_data, encode_data
from ..ids import channel_epoch, new_epoch, new_message_id
from ..ranges import trim_selection
from .connection import RedisConnection
from .pipeline import PipelinedConnection, pack, pack_head

__all__ = ["RedisChannels"]

log = logging.getLogger(__name__)

# Reads in flight at once. Each holds one of redis-py's pooled connections
# (100 by default, shared with presence and documents); over that, redis-py
# raises instead of waiting, so a burst of reads waits here instead.
MAX_CONCURRENT_READS = 32

# Appends the messages of one channel, in order, in one call: a batch of
# publishes that arrived together costs one round trip and one announcement.
#   KEYS: seq, log, epoch, bytes, then the batch's idempotency keys
#   ARGV: epoch if new, max_messages, max_bytes, max_age ms, notify channel,
#         then 7 per message: ts, id, sender, kind, payload, index of its
#         idempotency key in KEYS (0: none), dedup window ms
# Returns 2 per message: {seq, epoch}, or {0, "<seq>:<ts>"} of the message
# an idempotency key already names.
_APPEND = """
local seq = 0
local epoch = redis.call('GET', KEYS[3])
if not epoch then epoch = ARGV[1] end
local stored_epoch = false
local added = 0
local out = {}
for m = 6, #ARGV, 7 do
  local ts, key_index = ARGV[m], tonumber(ARGV[m + 5])
  local first = false
  if key_index > 0 then
    first = redis.call('GET', KEYS[key_index])
    if first then
      local first_ts = tonumber(string.match(first, ':(.*)$'))
      if tonumber(ts) - first_ts > tonumber(ARGV[m + 6]) / 1000 then first = false end
    end
  end
  if first then
    out[#out + 1] = 0
    out[#out + 1] = first
  else
    seq = redis.call('INCR', KEYS[1])
    if not stored_epoch then
      redis.call('SET', KEYS[3], epoch)
      stored_epoch = true
    end
    redis.call('XADD', KEYS[2], seq .. '-0',
      't', ts, 'i', ARGV[m + 1], 's', ARGV[m + 2], 'k', ARGV[m + 3], 'd', ARGV[m + 4])
    added = added + string.len(ARGV[m + 4])
    if key_index > 0 then
      -- Kept a little past the window: the window counts in message time.
      redis.call('SET', KEYS[key_index], seq .. ':' .. ts, 'PX', ARGV[m + 6] + 60000)
    end
    out[#out + 1] = seq
    out[#out + 1] = epoch
  end
end
if seq == 0 then return out end
-- Exact trimming, oldest first, to max_messages and max_bytes (the newest
-- entry stays, however big); ~ trimming would leave the byte count unknown.
local total = redis.call('INCRBY', KEYS[4], added)
local count = redis.call('XLEN', KEYS[2])
local max_n, max_b = tonumber(ARGV[2]), tonumber(ARGV[3])
if count > max_n or total > max_b then
  local from = '-'
  local keep = nil
  while count > 1 and (count > max_n or total > max_b) and not keep do
    local batch = redis.call('XRANGE', KEYS[2], from, '+', 'COUNT', 100)
    if #batch == 0 then break end
    for _, entry in ipairs(batch) do
      if count <= 1 or (count <= max_n and total <= max_b) then
        keep = entry[1]
        break
      end
      local fields = entry[2]
      for j = 1, #fields, 2 do
        if fields[j] == 'd' then total = total - string.len(fields[j + 1]) end
      end
      count = count - 1
      from = '(' .. entry[1]
    end
  end
  if not keep then keep = seq .. '-0' end
  redis.call('XTRIM', KEYS[2], 'MINID', keep)
  redis.call('SET', KEYS[4], total)
end
for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ARGV[4]) end
-- One announcement for the batch: the newest seq says all before it exist.
redis.call('PUBLISH', ARGV[5], seq)
return out
"""

# Most messages one append call carries; a bigger batch is split, in order.
APPEND_BATCH = 256
# Append calls on their way to Redis at once, on the appends' own connection
# (see PipelinedConnection): the next call is written while the last one is
# answered, and gathers the publishes that arrive meanwhile.
APPENDS_IN_FLIGHT = 2

# EVAL with the script's text rather than EVALSHA: Redis caches it by its
# hash either way, and a Redis that lost its scripts (a restart, SCRIPT
# FLUSH) runs it all the same. With EVALSHA the NOSCRIPT replies would have
# to be retried, after calls written behind them had run: out of order.
_EVAL_APPEND = pack_head("EVAL", _APPEND)


class AppendListener(Protocol):
    """Told of every append call: ``appending`` when it is sent,
    ``stored_here`` when it is answered, with the messages it stored (none
    if it failed), a gap-free run of one channel in seq order."""

    def appending(self, channel: str) -> None: ...

    def stored_here(self, channel: str, messages: list[Message]) -> None: ...


@dataclass(slots=True)
class _PendingAppend:
    message: Message  # seq 0 until stored
    dedup_key: str  # "" without an idempotency id
    # The script's ARGV for it but the key index: ts, id, sender, kind, payload, window ms.
    fields: tuple[str, str, str, int, str | bytes, int]
    then: Answer


def _answer(pending: _PendingAppend, result: Appended | Exception) -> None:
    try:
        pending.then(result)
    except Exception:
        log.exception("answering an append to %r failed", pending.message.channel)


class RedisChannels:
    """A :class:`~rtkit.storage.base.ChannelStore` in Redis, shared by every
    hub using the same URL and prefix."""

    def __init__(
        self,
        conn: RedisConnection,
        retention: Retention,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._conn = conn
        self.retention = retention
        self._clock = clock
        self._salt = ""  # channel epochs are derived from it (see open)
        self._reading = asyncio.Semaphore(MAX_CONCURRENT_READS)
        # Appends wait here in call order. The writer takes all that are
        # waiting, one call per channel, and writes the calls in that order
        # on one connection: Redis runs them in that order, so concurrent
        # appends get seqs in call order.
        self._appends: list[_PendingAppend] = []
        self._writer: asyncio.Task[None] | None = None
        self._calls = PipelinedConnection(conn)
        self._room = asyncio.Semaphore(APPENDS_IN_FLIGHT)
        self._last_batch = 0  # messages the writer's last call carried
        # Duplicates being read back (held here: the loop keeps only weak
        # references to tasks).
        self._reading_back: set[asyncio.Task[None]] = set()
        # Told of each append call (the feed: it delivers what this hub
        # stored without reading it back).
        self.listener: AppendListener | None = None

    async def open(self) -> None:
        """Read (or make) the salt every hub on this prefix derives epochs from."""
        key = f"{self._conn.prefix}epoch-salt"
        await self._conn.redis.set(key, new_epoch() + new_epoch(), nx=True)
        salt = await self._conn.redis.get(key)
        self._salt = salt.decode()

    def _epoch_of(self, channel: str, now: float) -> str:
        return channel_epoch(self._salt, channel, now, self.retention.max_age)

    async def wait_written(self) -> None:
        """Until the appends already handed to the writer are answered."""
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
        # Then until their calls are answered (or the link to Redis broke,
        # within its socket timeout).
        for _ in range(APPENDS_IN_FLIGHT):
            await self._room.acquire()
        for _ in range(APPENDS_IN_FLIGHT):
            self._room.release()

    async def close(self) -> None:
        """After :meth:`wait_written`: drop the appends' own connection."""
        await self._calls.close()

    def _key(self, channel: str, part: str) -> str:
        return self._conn.channel_key(channel, part)

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
        done: asyncio.Future[Appended] = asyncio.get_running_loop().create_future()
        self.append_soon(
            channel,
            data,
            sender=sender,
            msg_id=msg_id,
            ts=ts,
            dedup_window=dedup_window,
            then=functools.partial(into_future, done),
        )
        return await done

    def append_soon(
        self,
        channel: str,
        data: Any,
        *,
        sender: str,
        msg_id: str | None,
        ts: float,
        dedup_window: float,
        then: Answer,
    ) -> None:
        """:meth:`append`, queued for the writer (see
        :class:`~rtkit.storage.base.QueuedChannelStore`)."""
        kind, payload = encode_data(data)
        dedup_key = ""
        if msg_id is None:
            msg_id = new_message_id()
        elif dedup_window > 0:
            # Length-prefixed: no sender and id can spell another pair's key.
            dedup_key = self._key(channel, f"id:{len(sender)}:{sender}:{msg_id}")
        life = self._conn.life
        if life.state != "open":
            life.check_open()
        self._appends.append(
            _PendingAppend(
                Message(channel, 0, ts, msg_id, sender, data),
                dedup_key,
                (repr(ts), msg_id, sender, kind, payload, max(1, int(dedup_window * 1000))),
                then,
            )
        )
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_appends())

    async def _duplicate(self, pending: _PendingAppend, first: bytes) -> None:
        """Answer ``pending`` with the message its idempotency key names
        (``first`` is ``<seq>:<ts>``)."""
        m = pending.message
        first_seq, _, first_ts = first.decode().partition(":")
        try:
            entries = await self._conn.redis.xrange(
                self._key(m.channel, "log"), f"{first_seq}-0", f"{first_seq}-0"
            )
        except Exception as exc:
            _answer(pending, exc)
            return
        if entries:
            appended = Appended(self._message(m.channel, *entries[0]), duplicate=True)
        else:  # trimmed already: what the key remembers
            original = Message(m.channel, int(first_seq), float(first_ts), m.id, m.sender, m.data)
            appended = Appended(original, duplicate=True)
        _answer(pending, appended)

    def _append_command(self, batch: list[_PendingAppend]) -> bytes:
        """The EVAL that appends ``batch`` (one channel's), packed."""
        first = batch[0].message
        channel = first.channel
        keys = [self._key(channel, part) for part in ("seq", "log", "epoch", "bytes")]
        args: list[str | bytes | int] = [
            self._epoch_of(channel, first.ts),
            self.retention.max_messages,
            self.retention.max_bytes,
            int(self.retention.max_age * 1000),
            self._conn.notify_channel(channel),
        ]
        for pending in batch:
            index = 0
            if pending.dedup_key:
                keys.append(pending.dedup_key)
                index = len(keys)
            ts, msg_id, sender, kind, payload, window_ms = pending.fields
            args += (ts, msg_id, sender, kind, payload, index, window_ms)
        return pack(_EVAL_APPEND, [len(keys), *keys, *args])

    async def _write_appends(self) -> None:
        try:
            while self._appends:
                # At most APPENDS_IN_FLIGHT calls on their way: the next
                # gathers what arrives meanwhile.
                await self._room.acquire()
                if self._last_batch > 1:
                    # Under load, let the loop first read the publishes that
                    # have already arrived (two turns: a wake-up runs before
                    # the reads its turn's poll finds), so that they go in
                    # this call. Measured at fan-out to 100: calls of ~27
                    # messages without it, ~40 with it; no timer, so a lone
                    # publish, or one under light load, never waits.
                    await asyncio.sleep(0)
                    await asyncio.sleep(0)
                waiting, self._appends = self._appends, []
                self._last_batch = len(waiting)
                by_channel: dict[str, list[_PendingAppend]] = {}
                for pending in waiting:
                    by_channel.setdefault(pending.message.channel, []).append(pending)
                batches = [
                    appends[i : i + APPEND_BATCH]
                    for appends in by_channel.values()
                    for i in range(0, len(appends), APPEND_BATCH)
                ]
                commands = [self._append_command(b) for b in batches]
                if self.listener is not None:
                    for batch in batches:
                        self.listener.appending(batch[0].message.channel)
                await self._calls.send(commands, functools.partial(self._answered, batches))
        finally:
            self._writer = None

    def _answered(self, batches: list[list[_PendingAppend]], replies: list[Any]) -> None:
        self._room.release()
        for batch, reply in zip(batches, replies, strict=True):
            self._settle(batch, reply)

    def _settle(self, batch: list[_PendingAppend], result: Any) -> None:
        if isinstance(result, Exception):
            for pending in batch:
                _answer(pending, result)
            self._tell_listener(batch[0].message.channel, [])
            return
        stored: list[Message] = []
        duplicates: list[tuple[_PendingAppend, bytes]] = []
        for n, pending in enumerate(batch):
            seq = result[2 * n]
            if seq:
                m = pending.message
                pending.message = Message(m.channel, int(seq), m.ts, m.id, m.sender, m.data)
                stored.append(pending.message)
            else:
                duplicates.append((pending, result[2 * n + 1]))
        for pending in batch:
            if pending.message.seq:
                _answer(pending, Appended(pending.message))
        # One script call numbers its messages without a gap: the feed can
        # deliver them as one run, after the acks just queued have left (see
        # RedisFeed.stored_here).
        self._tell_listener(batch[0].message.channel, stored)
        for pending, first in duplicates:
            task = asyncio.get_running_loop().create_task(self._duplicate(pending, first))
            self._reading_back.add(task)
            task.add_done_callback(self._reading_back.discard)

    def _tell_listener(self, channel: str, stored: list[Message]) -> None:
        if self.listener is not None:
            try:
                self.listener.stored_here(channel, stored)
            except Exception:
                log.exception("delivering %d messages of %r failed", len(stored), channel)

    @staticmethod
    def _message(channel: str, entry_id: bytes, fields: dict[bytes, bytes]) -> Message:
        return Message(
            channel,
            int(entry_id.split(b"-", 1)[0]),
            float(fields[b"t"]),
            fields[b"i"].decode(),
            fields[b"s"].decode(),
            decode_data(int(fields[b"k"]), fields[b"d"]),
        )

    async def read(
        self,
        channel: str,
        *,
        since: int | None = None,
        before: int | None = None,
        limit: int | None = None,
        last: int | None = None,
    ) -> Range:
        log_key = self._key(channel, "log")
        hi = "+" if before is None else f"{before - 1}-0"
        candidate = self._epoch_of(channel, self._clock())
        async with self._reading, self._conn.redis.pipeline(transaction=True) as pipe:
            pipe.get(self._key(channel, "seq"))
            pipe.get(self._key(channel, "epoch"))
            pipe.xrange(log_key, "-", "+", count=1)
            if (before is not None and before <= 1) or 0 in (last, limit):
                pipe.echo("empty")
            elif since is not None:
                count = limit if last is None else None
                pipe.xrange(log_key, f"{since + 1}-0", hi, count=count)
            else:
                counts = [n for n in (last, limit) if n is not None]
                pipe.xrevrange(log_key, hi, "-", count=min(counts) if counts else None)
            head_raw, epoch_raw, first_entry, entries = await pipe.execute()
        head = int(head_raw or 0)
        epoch = epoch_raw.decode() if epoch_raw else candidate
        if not isinstance(entries, list):
            entries = []
        elif since is None:
            entries.reverse()
        cutoff = self._clock() - self.retention.max_age
        # MAXLEN ~ trims in whole stream nodes: drop what max_messages excludes.
        oldest = head - self.retention.max_messages + 1
        messages = [self._message(channel, eid, f) for eid, f in entries]
        messages = [m for m in messages if m.seq >= oldest]
        aged = [m for m in messages if m.ts >= cutoff]
        complete = True
        if since is not None:
            first = int(first_entry[0][0].split(b"-", 1)[0]) if first_entry else head + 1
            first = max(first, oldest)
            complete = since <= head and (
                since == head or (first <= since + 1 and len(aged) == len(messages))
            )
        return Range(
            trim_selection(aged, since=since, limit=limit, last=last), head, epoch, complete
        )

    async def head(self, channel: str) -> tuple[int, str]:
        # Read only: a channel without keys reports the epoch its first
        # append will store, and nothing is written for asking.
        async with self._reading, self._conn.redis.pipeline(transaction=True) as pipe:
            pipe.get(self._key(channel, "seq"))
            pipe.get(self._key(channel, "epoch"))
            seq, epoch = await pipe.execute()
        if epoch:
            return int(seq or 0), epoch.decode()
        return int(seq or 0), self._epoch_of(channel, self._clock())
