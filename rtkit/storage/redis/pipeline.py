"""A connection to Redis of its own whose commands go out back to back.

Redis answers the commands of one connection one at a time, in the order
they arrive. A writer that waits for each reply before it sends the next
leaves Redis idle while the hub works and the hub idle while Redis works:
at fan-out to 100 subscribers the hub's publish path waited on Redis a
fifth of the time. Here a write goes out as soon as it is ready and its
replies are read when they come, so several are on their way at once and
still take effect in the order they were written. (redis-py's pipelines
read a batch's replies before the next batch can be written.)

The connection is one the client's pool makes
(:meth:`~redis.asyncio.ConnectionPool.make_connection`, with the pool's
settings and timeouts) but does not lend out; it is written with
``send_packed_command`` and read with ``read_response``, the pair
redis-py's own pipelines use (pinned by
``tests/contract/test_redis_contract.py``). A broken connection is dropped,
never reused: a reader still waiting on it cannot take a reply meant for
its successor.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from .connection import RedisConnection

__all__ = ["PipelinedConnection", "pack"]

log = logging.getLogger(__name__)

Replies = Callable[[list[Any]], None]


def _bulk(value: str | bytes | int) -> bytes:
    if isinstance(value, str):
        value = value.encode()
    elif isinstance(value, int):
        value = b"%d" % value
    return b"$%d\r\n%s\r\n" % (len(value), value)


def pack(head: tuple[int, bytes], args: Iterable[str | bytes | int]) -> bytes:
    """One command in RESP: ``head`` (from :func:`pack_head`), then
    ``args``. A fraction of what redis-py's general-purpose packer costs
    for a call of a few hundred arguments."""
    parts = [_bulk(a) for a in args]
    return b"*%d\r\n%s%s" % (head[0] + len(parts), head[1], b"".join(parts))


def pack_head(*args: str | bytes | int) -> tuple[int, bytes]:
    """A command's fixed first arguments, packed once (see :func:`pack`)."""
    return len(args), b"".join(_bulk(a) for a in args)


class PipelinedConnection:
    """Writes of packed commands on one connection, each write's replies
    handed over in write order.

    >>> await link.send([pack(pack_head("EVAL", script), [0, "x"])], on_replies)
    """

    def __init__(self, conn: RedisConnection) -> None:
        self._conn = conn
        self._link: Any = None  # redis-py's Connection, made on first use
        # Per write on its way, in order: how many replies, and whom to tell.
        self._expected: deque[tuple[int, Replies]] = deque()
        self._reader: asyncio.Task[None] | None = None

    @property
    def in_flight(self) -> int:
        """Writes whose replies have not all been read."""
        return len(self._expected)

    async def send(self, commands: list[bytes], on_replies: Replies) -> None:
        """Write ``commands``. ``on_replies`` is called once, with one entry
        per command in order: its reply, or the ``ResponseError`` it got,
        or, if the connection broke before its reply was read, that error
        (the command may or may not have run)."""
        link = self._link
        if link is None:
            link = self._link = self._conn.redis.connection_pool.make_connection()
        self._expected.append((len(commands), on_replies))
        try:
            await link.send_packed_command(commands, check_health=False)
        except Exception as exc:
            self._break(link, exc)
            return
        if self._reader is None and self._link is link:
            self._reader = asyncio.get_running_loop().create_task(self._read(link))

    async def _read(self, link: Any) -> None:
        from redis.exceptions import ResponseError

        try:
            while self._expected and self._link is link:
                count, on_replies = self._expected[0]
                replies: list[Any] = []
                for _ in range(count):
                    try:
                        replies.append(await link.read_response())
                    except ResponseError as exc:  # that command failed, not the link
                        replies.append(exc)
                if self._link is not link:
                    return  # broken meanwhile: everyone waiting was told
                self._expected.popleft()
                _tell(on_replies, replies)
        except Exception as exc:
            self._break(link, exc)
        finally:
            if self._reader is asyncio.current_task():
                self._reader = None

    def _break(self, link: Any, exc: BaseException) -> None:
        """Drop ``link``; every write on its way gets ``exc``."""
        if self._link is not link:
            return  # dropped already
        self._link = None
        self._reader = None  # the old one returns by itself; the next write starts one
        expected, self._expected = self._expected, deque()
        # redis-py has closed it already where writing or reading failed.
        for count, on_replies in expected:
            _tell(on_replies, [exc] * count)

    async def close(self) -> None:
        link, reader = self._link, self._reader
        if link is None:
            return
        self._break(link, ConnectionError("the Redis store is closed"))
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        await link.disconnect(nowait=True)


def _tell(on_replies: Replies, replies: list[Any]) -> None:
    try:
        on_replies(replies)
    except Exception:
        log.exception("handling %d Redis replies failed", len(replies))
