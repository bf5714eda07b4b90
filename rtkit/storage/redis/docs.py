"""Shared documents in Redis: a stream of updates plus a snapshot.

Per document (``<prefix>doc:{<name>}:...``): ``id`` numbers the updates,
``log`` is the stream of them (entry id ``<id>-0``), ``snap`` a hash with the
snapshot and the last update id it covers. Each stored update is announced
on ``<prefix>events`` so that the other hubs can apply it.
"""

from __future__ import annotations

import orjson

from ..base import DocRecord
from .connection import RedisConnection

__all__ = ["RedisDocs"]

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


class RedisDocs:
    """A :class:`~rtkit.storage.base.DocumentStore` in Redis, shared by every
    hub using the same URL and prefix."""

    def __init__(self, conn: RedisConnection) -> None:
        self._conn = conn
        conn.add_script("doc_append", _DOC_APPEND)
        conn.add_script("doc_compact", _DOC_COMPACT)

    def _doc_key(self, name: str, part: str) -> str:
        return f"{self._conn.prefix}doc:{{{name}}}:{part}"

    async def load(self, name: str) -> DocRecord:
        async with self._conn.redis.pipeline(transaction=True) as pipe:
            pipe.hmget(self._doc_key(name, "snap"), "snapshot", "upto")
            pipe.xrange(self._doc_key(name, "log"), "-", "+")
            (snapshot, upto), entries = await pipe.execute()
        last = int(entries[-1][0].split(b"-", 1)[0]) if entries else int(upto or 0)
        return DocRecord(snapshot, [f[b"u"] for _, f in entries], last)

    async def append(self, name: str, update: bytes) -> int:
        header = orjson.dumps({"k": "d", "o": self._conn.origin, "doc": name}) + b"\n"
        count = await self._conn.scripts["doc_append"](
            keys=[self._doc_key(name, "id"), self._doc_key(name, "log")],
            args=[bytes(update), self._conn.events, header],
        )
        return int(count)

    async def compact(self, name: str, snapshot: bytes, upto: int) -> None:
        await self._conn.scripts["doc_compact"](
            keys=[self._doc_key(name, "snap"), self._doc_key(name, "log")],
            args=[bytes(snapshot), upto],
        )
