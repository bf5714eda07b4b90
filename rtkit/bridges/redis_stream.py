"""The Redis Streams source (``pip install 'rtkit[redis]'``, on redis-py).

It reads streams with ``XREAD`` from the last entry id the hub acked. That
id is kept in a small JSON state file per bridge (``state_file``), written
(atomically) a few times a second once the hub acked every entry up to it;
publish ids are ``redis:{stream}:{entry id}``, so entries read again after
a crash are stored once. Without a state file the bridge starts at
``start`` each time (``"$"``: only new entries, ``"0"``: the whole stream).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio

from ..errors import ConfigurationError
from ._core import (
    BridgeState,
    Position,
    SourceMessage,
    TopicMap,
    decode_payload,
    read_positions,
    write_positions,
)

__all__ = ["RedisStreamSource"]


class RedisStreamSource:
    """Entries of Redis streams, exactly once into the hub.

    ``topics`` is a plain :class:`TopicMap` whose patterns are stream keys
    (no wildcards; ``{topic}`` in a template is the key). An entry's data is
    its field ``field`` decoded (JSON if it parses), or, when it has no such
    field, all its fields as an object.

    >>> source = RedisStreamSource("redis://127.0.0.1:6379/0",
    ...     topics=TopicMap([("sensors", "sensors.raw")], flavor="plain"),
    ...     state_file="bridge-sensors.json")
    """

    kind = "redis"

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        topics: TopicMap,
        state_file: str | os.PathLike[str] | None = None,
        start: str = "$",
        field: str = "data",
        batch: int = 500,
    ) -> None:
        self.url, self.topics, self._field, self._batch = url, topics, field, batch
        self._path = Path(state_file) if state_file is not None else None
        self._committed: dict[str, str] = read_positions(self._path) if self._path else {}
        self._saved = dict(self._committed)
        # Where the next XREAD starts: after what was read (in flight in the
        # client), which is at or after what the hub acked.
        self._read: dict[str, str] = {s: self._committed.get(s, start) for s in topics.patterns}

    async def checkpoint(self) -> str | None:
        if self._path is not None and self._committed != self._saved:
            snapshot = dict(self._committed)
            await anyio.to_thread.run_sync(write_positions, self._path, snapshot)
            self._saved = snapshot
        if not self._committed:
            return None
        return ",".join(f"{k}:{v}" for k, v in sorted(self._committed.items()))

    def _committer(self, stream: str, entry_id: str) -> Any:
        def commit() -> None:
            self._committed[stream] = entry_id

        return commit

    def _data(self, fields: dict[bytes, bytes]) -> Any:
        key = self._field.encode()
        if key in fields:
            return decode_payload(fields[key])
        return {k.decode(errors="replace"): decode_payload(v) for k, v in fields.items()}

    async def messages(self, state: BridgeState) -> AsyncIterator[SourceMessage]:
        async for batch in self.batches(state, self._batch):
            for msg in batch:
                yield msg

    async def batches(self, state: BridgeState, size: int) -> AsyncIterator[list[SourceMessage]]:
        """Lists of at most ``size`` entries per stream: each one XREAD's worth."""
        try:
            import redis.asyncio as aioredis
        except ImportError:
            raise ConfigurationError(
                "the Redis Streams bridge needs redis-py: pip install 'rtkit[redis]'"
            ) from None
        size = min(size, self._batch)
        client = aioredis.Redis.from_url(self.url, socket_connect_timeout=5)
        try:
            await client.ping()
            # "$" means "after what is there now": pin it to an id, so a
            # reconnect does not skip what came meanwhile.
            for stream, last in self._read.items():
                if last == "$":
                    info = None
                    if await client.exists(stream):
                        info = await client.xinfo_stream(stream)
                    self._read[stream] = info["last-generated-id"].decode() if info else "0-0"
            state.connected = True
            while True:
                streams: dict[Any, Any] = dict(self._read)
                reply: Any = await client.xread(streams, count=size, block=1000)
                for raw_stream, entries in reply or ():
                    stream = raw_stream.decode()
                    batch: list[SourceMessage] = []
                    for raw_id, fields in entries:
                        entry_id = raw_id.decode()
                        batch.append(
                            SourceMessage(stream, self._data(fields), Position(stream, entry_id))
                        )
                    if batch:
                        self._read[stream] = entry_id
                        # Committing the last entry commits the stream up to it.
                        batch[-1].commit = self._committer(stream, entry_id)
                        yield batch
        finally:
            await client.aclose()
