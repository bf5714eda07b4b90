"""A store shared by many hub processes: Redis 7 (or Valkey).

Every hub pointed at the same Redis (and key prefix) serves the same
channels, so a load balancer needs no sticky sessions. The layout, per
channel (the ``{channel}`` hash tag keeps a channel's keys on one Redis
Cluster slot)::

    <prefix>{<channel>}:seq     INCR counter, the channel's head
    <prefix>{<channel>}:epoch   changes when the counter restarts
    <prefix>{<channel>}:log     a stream, entry id ``<seq>-0``, MAXLEN ~
    <prefix>{<channel>}:id:<sender>:<msg id>   idempotency key, PX window
    <prefix>{<channel>}:n       pub/sub channel: the seq of each new message

One Lua script checks the idempotency key, numbers, stores and announces a
message, so every hub sees one order: Redis runs scripts one at a time, and
PUBLISH order is seq order. A hub subscribes to ``:n`` of the channels its
clients follow only (``watch``/``unwatch``) and reads the messages from the
stream; a missed announcement (a pub/sub reconnect) shows as a seq gap that
the hub fills from the stream before delivering.

Presence lives in one hash per room (entries carry each connection's
deadline, and any hub expires lapsed ones), shared documents in a stream of
updates plus a snapshot. Both announce their changes on ``<prefix>events``
so that the other hubs can tell their own clients.

Needs the ``redis`` extra: ``pip install 'rtkit[redis]'``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Collection
from typing import Any

import orjson

from ..errors import ConfigurationError, Forbidden
from ..protocol import Member, merge_state, parse_member
from .base import Appended, DocRecord, FeedSink, Message, PresenceChange, Range, Retention
from .codec import decode_data, encode_data
from .memory import new_epoch, new_message_id, trim_selection

__all__ = ["RedisStore"]

log = logging.getLogger(__name__)

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
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], seq .. '-0',
  't', ARGV[2], 'i', ARGV[3], 's', ARGV[4], 'k', ARGV[5], 'd', ARGV[6])
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[9]) end
if KEYS[4] ~= '' then
  -- Kept a little past the window: the window counts in message time.
  redis.call('SET', KEYS[4], seq .. ':' .. ARGV[2], 'PX', ARGV[8] + 60000)
end
redis.call('PUBLISH', ARGV[10], seq)
return {seq, epoch}
"""

_DOC_APPEND = """
local id = redis.call('INCR', KEYS[1])
redis.call('XADD', KEYS[2], id .. '-0', 'u', ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[3] .. ARGV[1])
return redis.call('XLEN', KEYS[2])
"""

_DOC_COMPACT = """
local upto = tonumber(redis.call('HGET', KEYS[1], 'upto') or '0')
if tonumber(ARGV[2]) <= upto then return 0 end
redis.call('HSET', KEYS[1], 'upto', ARGV[2], 'snapshot', ARGV[1])
redis.call('XTRIM', KEYS[2], 'MINID', (tonumber(ARGV[2]) + 1) .. '-0')
return 1
"""


def _import_redis() -> Any:
    try:
        import redis.asyncio as aioredis
    except ImportError:
        raise ConfigurationError(
            "the redis store needs the redis package: pip install 'rtkit[redis]'"
        ) from None
    return aioredis


class RedisStore:
    """Channels, history, idempotency keys, presence and shared documents in
    Redis, shared by every hub using the same URL and ``prefix``.

    >>> store = RedisStore("redis://127.0.0.1:6379/0", prefix="team:")
    >>> async with store:
    ...     appended = await store.append(
    ...         "prices", {"px": 1.0}, sender="ann", msg_id="m1", ts=time.time(), dedup_window=300
    ...     )
    """

    def __init__(
        self,
        redis_url: str,
        *,
        prefix: str = "rtkit:",
        retention: Retention = Retention(),  # noqa: B008 - frozen
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = redis_url
        self.prefix = prefix
        self.retention = retention
        self._clock = clock
        self.origin = uuid.uuid4().hex[:16]  # tells this hub's announcements apart
        # redis-py's asyncio client is only partly typed: held as Any.
        self._r: Any = None
        self._scripts: dict[str, Any] = {}  # redis-py's AsyncScript objects
        self._watched: set[str] = set()
        # SUBSCRIBEs sent and not yet confirmed, by pub/sub channel name.
        self._confirm: dict[bytes, asyncio.Future[None]] = {}
        self._pubsub: Any = None
        self._feed_lock = asyncio.Lock()
        # Appends wait here in call order and go to Redis in pipelines, one
        # pipeline at a time: Redis runs them in that order, so concurrent
        # appends get seqs in call order (a connection pool would not).
        self._appends: list[tuple[list[Any], list[Any], asyncio.Future[Any]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._state = "new"

    async def __aenter__(self) -> RedisStore:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- lifecycle ----------------------------------------------------------

    def _client(self) -> Any:
        aioredis = _import_redis()
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # Fail fast: while Redis is away a publish must be answered with
        # 'unavailable' within about a second, not hang in retries.
        client = aioredis.Redis.from_url(
            self.url,
            socket_connect_timeout=1.0,
            socket_timeout=3.0,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=2,
        )
        return client

    async def open(self) -> None:
        if self._state != "new":
            raise RuntimeError(f"RedisStore.open() on a store that is {self._state}")
        self._r = self._client()
        for name, body in (
            ("append", _APPEND),
            ("doc_append", _DOC_APPEND),
            ("doc_compact", _DOC_COMPACT),
        ):
            self._scripts[name] = self._r.register_script(body)
        await self._r.ping()
        self._state = "open"
        log.info("redis store open (%s, prefix %r)", self.url, self.prefix)

    async def close(self) -> None:
        if self._state == "closed":
            return
        self._state = "closed"
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
        if self._r is not None:
            await self._r.aclose()
        log.info("redis store closed")

    @property
    def _redis(self) -> Any:
        if self._state != "open":
            self._check_open()
        return self._r

    def _key(self, channel: str, part: str) -> str:
        return f"{self.prefix}{{{channel}}}:{part}"

    def _notify_channel(self, channel: str) -> str:
        return self._key(channel, "n")

    @property
    def _events(self) -> str:
        return f"{self.prefix}events"

    # -- channels -----------------------------------------------------------

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
            dedup_key = self._key(channel, f"id:{sender}:{msg_id}")
        keys = [
            self._key(channel, "seq"),
            self._key(channel, "log"),
            self._key(channel, "epoch"),
            dedup_key,
        ]
        args = [
            new_epoch(),
            repr(ts),
            msg_id,
            sender,
            kind,
            payload,
            self.retention.max_messages,
            max(1, int(dedup_window * 1000)),
            int(self.retention.max_age * 1000),
            self._notify_channel(channel),
        ]
        if self._state != "open":
            self._check_open()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._appends.append((keys, args, fut))
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_appends())
        seq, extra = await fut
        if seq:
            return Appended(Message(channel, int(seq), ts, msg_id, sender, data))
        first_seq, _, first_ts = extra.decode().partition(":")
        entries = await self._redis.xrange(
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
                    async with self._redis.pipeline(transaction=False) as pipe:
                        for keys, args, _ in batch:
                            await self._scripts["append"](keys=keys, args=args, client=pipe)
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

    def _check_open(self) -> None:
        if self._state != "open":
            raise RuntimeError(
                "the store is not open: call 'await store.open()' first"
                if self._state == "new"
                else "the store is closed"
            )

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
        candidate = new_epoch()
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.get(self._key(channel, "seq"))
            self._epoch(pipe, channel, candidate)
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

    def _epoch(self, pipe: Any, channel: str, candidate: str) -> None:
        # The epoch is made by whoever needs it first, reader or writer; it
        # lapses with the channel's other keys (then the seq restarts too).
        pipe.set(
            self._key(channel, "epoch"),
            candidate,
            nx=True,
            get=True,
            px=int(self.retention.max_age * 1000),
        )

    async def head(self, channel: str) -> tuple[int, str]:
        candidate = new_epoch()
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.get(self._key(channel, "seq"))
            self._epoch(pipe, channel, candidate)
            seq, epoch = await pipe.execute()
        return int(seq or 0), epoch.decode() if epoch else candidate

    # -- the feed other hubs' changes arrive by -------------------------------

    async def watch(self, channel: str, within: float = 5.0) -> None:
        """Receive ``channel``'s announcements from now on (once this returns:
        Redis has confirmed the subscription, so nothing published later is
        missed). Without a link to Redis it raises ConnectionError."""
        async with self._feed_lock:
            if channel in self._watched:
                return
            if self._pubsub is None:
                raise ConnectionError("the link to Redis is down")
            name = self._notify_channel(channel)
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._confirm[name.encode()] = fut
            self._watched.add(channel)
            try:
                await self._pubsub.subscribe(name)
                await asyncio.wait_for(asyncio.shield(fut), within)
            except BaseException:
                self._watched.discard(channel)
                self._confirm.pop(name.encode(), None)
                raise

    async def unwatch(self, channel: str) -> None:
        async with self._feed_lock:
            if channel not in self._watched:
                return
            self._watched.discard(channel)
            if self._pubsub is not None:
                with contextlib.suppress(Exception):
                    await self._pubsub.unsubscribe(self._notify_channel(channel))

    async def run_feed(self, sink: FeedSink, *, max_backoff: float = 2.0) -> None:
        """Deliver announcements to ``sink`` until cancelled, reconnecting
        with backoff; ``sink.feed_state`` hears when the link goes and returns."""
        aioredis = _import_redis()
        from redis.exceptions import RedisError

        backoff = 0.05
        notify_prefix = self.prefix.encode()
        while True:
            client = self._client()
            pubsub = client.pubsub()
            try:
                async with self._feed_lock:
                    channels = [self._notify_channel(c) for c in self._watched]
                    await pubsub.subscribe(self._events, *channels)
                    # Wait for every confirmation: from here on nothing is missed.
                    confirmed = 0
                    while confirmed < len(channels) + 1:
                        msg = await pubsub.get_message(timeout=1.0)
                        if msg is None:
                            raise ConnectionError("no subscribe confirmation from Redis")
                        if msg["type"] == "subscribe":
                            confirmed += 1
                    self._pubsub = pubsub
                backoff = 0.05
                sink.feed_state(True)
                while True:
                    msg = await pubsub.get_message(timeout=1.0)
                    if msg is None:
                        continue
                    if msg["type"] == "subscribe":
                        fut = self._confirm.pop(msg["channel"], None)
                        if fut is not None and not fut.done():
                            fut.set_result(None)
                        continue
                    if msg["type"] != "message":
                        continue
                    chan: bytes = msg["channel"]
                    if chan == self._events.encode():
                        self._dispatch_event(msg["data"], sink)
                    elif chan.startswith(notify_prefix) and chan.endswith(b"}:n"):
                        name = chan[len(notify_prefix) + 1 : -3].decode()
                        sink.feed_seq(name, int(msg["data"]))
            except (RedisError, OSError, ConnectionError, aioredis.ConnectionError) as exc:
                log.warning("redis feed lost (%s); reconnecting in %.2f s", exc, backoff)
            finally:
                self._pubsub = None
                for fut in self._confirm.values():
                    if not fut.done():
                        fut.set_exception(ConnectionError("the link to Redis dropped"))
                        fut.exception()  # retrieved by the waiter, if still there
                self._confirm.clear()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                with contextlib.suppress(Exception):
                    await client.aclose()
            sink.feed_state(False)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, max_backoff)

    def _dispatch_event(self, raw: bytes, sink: FeedSink) -> None:
        header, _, body = raw.partition(b"\n")
        event = orjson.loads(header)
        if event.get("o") == self.origin:
            return
        if event["k"] == "d":
            sink.feed_doc(event["doc"], body)
        elif event["k"] == "p":
            member = parse_member(event["member"])
            sink.feed_presence(PresenceChange(event["room"], event["event"], member))

    def _presence_event(self, change: PresenceChange) -> bytes:
        return orjson.dumps(
            {
                "k": "p",
                "o": self.origin,
                "room": change.room,
                "event": change.event,
                "member": change.member.to_wire(),  # the wire form clients get too
            }
        )

    # -- presence -----------------------------------------------------------

    def _room_key(self, room: str) -> str:
        return f"{self.prefix}presence:{room}"

    def _conn_key(self, conn: str) -> str:
        return f"{self.prefix}presence-conn:{conn}"

    async def _room_txn(
        self,
        room: str,
        change_fn: Callable[
            [dict[str, dict[str, Any]]], tuple[Any, list[str], PresenceChange | None]
        ],
    ) -> Any:
        """Read a room, let ``change_fn`` edit it (returning its result, the
        member ids it touched and the change to announce), write it back
        atomically; retried when another hub wrote the room meanwhile."""
        from redis.exceptions import WatchError

        key = self._room_key(room)
        while True:
            async with self._redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(key)
                    raw = await pipe.hgetall(key)
                    entries = {k.decode(): orjson.loads(v) for k, v in raw.items()}
                    result, touched, change = change_fn(entries)
                    pipe.multi()
                    for member_id in touched:
                        if member_id in entries:
                            pipe.hset(key, member_id, orjson.dumps(entries[member_id]))
                        else:
                            pipe.hdel(key, member_id)
                    if entries:
                        pipe.sadd(f"{self.prefix}presence-rooms", room)
                    if change is not None:
                        pipe.publish(self._events, self._presence_event(change))
                    await pipe.execute()
                    return result
                except WatchError:
                    continue

    @staticmethod
    def _member(entry: dict[str, Any], connections: int | None = None) -> Member:
        count = len(entry["conns"]) if connections is None else connections
        return Member(
            entry["id"], entry["user"], entry["name"], entry["color"], entry["state"], count
        )

    async def presence_join(
        self,
        room: str,
        conn: str,
        member: Member,
        *,
        expires: float,
        max_members: int,
        max_state_bytes: int,
    ) -> PresenceChange | None:
        def change(entries: dict[str, dict[str, Any]]) -> Any:
            entry = entries.get(member.id)
            if entry is None:
                if len(entries) >= max_members:
                    raise Forbidden(f"room {room!r} is full ({max_members} members)")
                state = merge_state({}, member.state, max_state_bytes)
                entry = entries[member.id] = {
                    "id": member.id,
                    "user": member.user,
                    "name": member.name,
                    "color": member.color,
                    "state": state,
                    "conns": {conn: expires},
                    "order": time.time(),
                }
                joined = PresenceChange(room, "join", self._member(entry))
                return joined, [member.id], joined
            state = merge_state(entry["state"], member.state, max_state_bytes)
            changed = state != entry["state"] or conn not in entry["conns"]
            entry["state"] = state
            entry["conns"][conn] = expires
            c = PresenceChange(room, "update", self._member(entry)) if changed else None
            return c, [member.id], c

        result: PresenceChange | None = await self._room_txn(room, change)
        await self._redis.sadd(self._conn_key(conn), room)
        return result

    async def presence_update(
        self, room: str, member_id: str, patch: dict[str, Any], *, max_state_bytes: int
    ) -> PresenceChange | None:
        def change(entries: dict[str, dict[str, Any]]) -> Any:
            entry = entries.get(member_id)
            if entry is None:
                return None, [], None
            state = merge_state(entry["state"], patch, max_state_bytes)
            if state == entry["state"]:
                return None, [], None
            entry["state"] = state
            c = PresenceChange(room, "update", self._member(entry))
            return c, [member_id], c

        result: PresenceChange | None = await self._room_txn(room, change)
        return result

    async def presence_leave(self, room: str, member_id: str, conn: str) -> PresenceChange | None:
        def change(entries: dict[str, dict[str, Any]]) -> Any:
            entry = entries.get(member_id)
            if entry is None or conn not in entry["conns"]:
                return None, [], None
            del entry["conns"][conn]
            if entry["conns"]:
                c = PresenceChange(room, "update", self._member(entry))
            else:
                del entries[member_id]
                c = PresenceChange(room, "leave", self._member(entry, 0))
            return c, [member_id], c

        result: PresenceChange | None = await self._room_txn(room, change)
        await self._redis.srem(self._conn_key(conn), room)
        return result

    async def presence_members(self, room: str) -> list[Member]:
        raw = await self._redis.hgetall(self._room_key(room))
        entries = sorted((orjson.loads(v) for v in raw.values()), key=lambda e: e["order"])
        return [self._member(e) for e in entries]

    async def presence_refresh(self, conns: Collection[str], expires: float) -> None:
        for conn in conns:
            rooms = await self._redis.smembers(self._conn_key(conn))
            for raw_room in rooms:

                def change(entries: dict[str, dict[str, Any]], conn: str = conn) -> Any:
                    touched = [i for i, e in entries.items() if conn in e["conns"]]
                    for i in touched:
                        entries[i]["conns"][conn] = expires
                    return None, touched, None

                await self._room_txn(raw_room.decode(), change)
            # The index outlives a killed hub by a bounded time only.
            await self._redis.expire(self._conn_key(conn), int(max(60, expires - time.time()) * 4))

    async def presence_expire(self, now: float) -> list[PresenceChange]:
        changes: list[PresenceChange] = []
        rooms_key = f"{self.prefix}presence-rooms"
        for raw_room in await self._redis.smembers(rooms_key):
            room = raw_room.decode()

            def change(entries: dict[str, dict[str, Any]], room: str = room) -> Any:
                touched: list[str] = []
                found: list[PresenceChange] = []
                for member_id, entry in list(entries.items()):
                    lapsed = [c for c, deadline in entry["conns"].items() if deadline < now]
                    if not lapsed:
                        continue
                    for c in lapsed:
                        del entry["conns"][c]
                    touched.append(member_id)
                    if entry["conns"]:
                        found.append(PresenceChange(room, "update", self._member(entry)))
                    else:
                        del entries[member_id]
                        found.append(PresenceChange(room, "leave", self._member(entry, 0)))
                return found, touched, None

            found: list[PresenceChange] = await self._room_txn(room, change)
            for c in found:
                await self._redis.publish(self._events, self._presence_event(c))
            changes.extend(found)
            if not await self._redis.exists(self._room_key(room)):
                await self._redis.srem(rooms_key, room)
        return changes

    # -- shared documents ---------------------------------------------------

    def _doc_key(self, name: str, part: str) -> str:
        return f"{self.prefix}doc:{{{name}}}:{part}"

    async def doc_load(self, name: str) -> DocRecord:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hmget(self._doc_key(name, "snap"), "snapshot", "upto")
            pipe.xrange(self._doc_key(name, "log"), "-", "+")
            (snapshot, upto), entries = await pipe.execute()
        last = int(entries[-1][0].split(b"-", 1)[0]) if entries else int(upto or 0)
        return DocRecord(snapshot, [f[b"u"] for _, f in entries], last)

    async def doc_append(self, name: str, update: bytes) -> int:
        header = orjson.dumps({"k": "d", "o": self.origin, "doc": name}) + b"\n"
        count = await self._scripts["doc_append"](
            keys=[self._doc_key(name, "id"), self._doc_key(name, "log")],
            args=[bytes(update), self._events, header],
        )
        return int(count)

    async def doc_compact(self, name: str, snapshot: bytes, upto: int) -> None:
        await self._scripts["doc_compact"](
            keys=[self._doc_key(name, "snap"), self._doc_key(name, "log")],
            args=[bytes(snapshot), upto],
        )


def redis_store_from_url(url: str, params: dict[str, str], retention: Retention) -> RedisStore:
    """``redis://host:port/db?prefix=team:`` (other query options go to redis-py)."""
    _import_redis()
    prefix = params.pop("prefix", "rtkit:")
    if not prefix:
        raise ConfigurationError("redis prefix= must not be empty")
    base = url.split("?", 1)[0]
    if params:
        from urllib.parse import urlencode

        base += "?" + urlencode(params)
        params.clear()
    return RedisStore(base, prefix=prefix, retention=retention)
