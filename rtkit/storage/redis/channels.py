"""Channels in Redis: numbering, history and idempotency in one Lua script.

Per channel (``<prefix>{<channel>}:...``, see
:meth:`RedisConnection.channel_key
<rtkit.storage.redis.connection.RedisConnection.channel_key>`)::

    seq     INCR counter, the channel's head
    epoch   changes when the counter restarts
    log     a stream, entry id ``<seq>-0``, trimmed to max_messages and max_bytes
    bytes   payload bytes in ``log``
    id:<len(sender)>:<sender>:<msg id>   idempotency key, PX window
    n       pub/sub channel: the seq of each new message

The script checks the idempotency key, numbers, stores and announces a
message, so every hub sees one order: Redis runs scripts one at a time, and
PUBLISH order is seq order. The sender's length in the idempotency key keeps
``("ann", "b:1")`` and ``("ann:b", "1")`` apart.

A channel's keys lapse together ``max_age`` after its last message. Reads
create none of them: a channel without keys reports seq 0 and the epoch its
first append will store, derived from a salt kept in ``<prefix>epoch-salt``
(:func:`~rtkit.storage.ids.channel_epoch`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from ..base import Appended, Message, Range, Retention
from ..codec import decode_data, encode_data
from ..ids import channel_epoch, new_epoch, new_message_id
from ..ranges import trim_selection
from .connection import RedisConnection

__all__ = ["RedisChannels"]

# Reads in flight at once. Each holds one of redis-py's pooled connections
# (100 by default, shared with presence and documents); over that, redis-py
# raises instead of waiting, so a burst of reads waits here instead.
MAX_CONCURRENT_READS = 32

_APPEND = """
if KEYS[4] ~= '' then
  local first = redis.call('GET', KEYS[4])
  if first then
    local first_ts = tonumber(string.match(first, ':(.*)$'))
    if tonumber(ARGV[2]) - first_ts <= tonumber(ARGV[8]) / 1000 then return {0, first} end
  end
end
local seq = redis.call('INCR', KEYS[1])
local epoch = redis.call('GET', KEYS[3])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[3], epoch)
end
redis.call('XADD', KEYS[2], seq .. '-0',
  't', ARGV[2], 'i', ARGV[3], 's', ARGV[4], 'k', ARGV[5], 'd', ARGV[6])
-- Exact trimming, oldest first, to max_messages and max_bytes (the newest
-- entry stays, however big); ~ trimming would leave the byte count unknown.
local total = redis.call('INCRBY', KEYS[5], string.len(ARGV[6]))
local count = redis.call('XLEN', KEYS[2])
local max_n, max_b = tonumber(ARGV[7]), tonumber(ARGV[11])
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
  redis.call('SET', KEYS[5], total)
end
for _, i in ipairs({1, 2, 3, 5}) do redis.call('PEXPIRE', KEYS[i], ARGV[9]) end
if KEYS[4] ~= '' then
  -- Kept a little past the window: the window counts in message time.
  redis.call('SET', KEYS[4], seq .. ':' .. ARGV[2], 'PX', ARGV[8] + 60000)
end
redis.call('PUBLISH', ARGV[10], seq)
return {seq, epoch}
"""


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
        conn.add_script("append", _APPEND)
        self._salt = ""  # channel epochs are derived from it (see open)
        self._reading = asyncio.Semaphore(MAX_CONCURRENT_READS)
        # Appends wait here in call order and go to Redis in pipelines, one
        # pipeline at a time: Redis runs them in that order, so concurrent
        # appends get seqs in call order (a connection pool would not).
        self._appends: list[tuple[list[Any], list[Any], asyncio.Future[Any]]] = []
        self._writer: asyncio.Task[None] | None = None

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
        kind, payload = encode_data(data)
        dedup_key = ""
        if msg_id is None:
            msg_id = new_message_id()
        elif dedup_window > 0:
            # Length-prefixed: no sender and id can spell another pair's key.
            dedup_key = self._key(channel, f"id:{len(sender)}:{sender}:{msg_id}")
        keys = [
            self._key(channel, "seq"),
            self._key(channel, "log"),
            self._key(channel, "epoch"),
            dedup_key,
            self._key(channel, "bytes"),
        ]
        args = [
            self._epoch_of(channel, ts),
            repr(ts),
            msg_id,
            sender,
            kind,
            payload,
            self.retention.max_messages,
            max(1, int(dedup_window * 1000)),
            int(self.retention.max_age * 1000),
            self._conn.notify_channel(channel),
            self.retention.max_bytes,
        ]
        life = self._conn.life
        if life.state != "open":
            life.check_open()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._appends.append((keys, args, fut))
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_appends())
        seq, extra = await fut
        if seq:
            return Appended(Message(channel, int(seq), ts, msg_id, sender, data))
        first_seq, _, first_ts = extra.decode().partition(":")
        entries = await self._conn.redis.xrange(
            self._key(channel, "log"), f"{first_seq}-0", f"{first_seq}-0"
        )
        if entries:
            return Appended(self._message(channel, *entries[0]), duplicate=True)
        return Appended(
            Message(channel, int(first_seq), float(first_ts), msg_id, sender, data),
            duplicate=True,
        )

    async def _write_appends(self) -> None:
        try:
            while self._appends:
                batch, self._appends = self._appends[:512], self._appends[512:]
                try:
                    async with self._conn.redis.pipeline(transaction=False) as pipe:
                        script = self._conn.scripts["append"]
                        for keys, args, _ in batch:
                            await script(keys=keys, args=args, client=pipe)
                        results = await pipe.execute(raise_on_error=False)
                except Exception as exc:
                    results = [exc] * len(batch)
                for (_, _, fut), result in zip(batch, results, strict=True):
                    if fut.done():
                        continue
                    if isinstance(result, BaseException):
                        fut.set_exception(result)
                    else:
                        fut.set_result(result)
        finally:
            self._writer = None

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
