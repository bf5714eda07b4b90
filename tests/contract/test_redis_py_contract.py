"""What rtkit.storage.redis.pipeline relies on in redis-py: a connection the
pool makes but does not lend out, with the pool's settings; packed commands
written with ``send_packed_command`` while earlier replies are still unread,
and read back in order with ``read_response``, which raises an error reply
as ``ResponseError`` and keeps the connection; and RESP as
``pipeline.pack`` writes it."""

from __future__ import annotations

import asyncio

import pytest

from rtkit.pytest_plugin import REDIS_URL
from rtkit.storage.redis.pipeline import pack, pack_head

aioredis = pytest.importorskip("redis.asyncio")
pytestmark = pytest.mark.redis

PIPELINE = "rtkit.storage.redis.pipeline"


async def test_a_pool_made_connection_pipelines_and_reads_replies_in_order(
    rt_redis_prefix: str,
) -> None:
    from redis.exceptions import ResponseError

    pool = aioredis.BlockingConnectionPool.from_url(REDIS_URL, socket_timeout=3.0)
    client = aioredis.Redis.from_pool(pool)
    link = pool.make_connection()
    key = f"{rt_redis_prefix}counter"
    try:
        assert link.socket_timeout == 3.0, f"pool timeout ({PIPELINE})"
        incr = pack(pack_head("INCR"), [key])
        bad = pack(pack_head("NOSUCHCOMMAND"), [])
        echo = pack(pack_head("EVAL", "return ARGV[1]"), [0, b"\x00bytes\r\n"])
        # Written before any reply is read: the second write does not wait.
        await link.send_packed_command([incr, incr], check_health=False)
        await link.send_packed_command([bad, echo, incr], check_health=False)
        assert await link.read_response() == 1
        assert await link.read_response() == 2
        with pytest.raises(ResponseError):
            await link.read_response()
        assert link.is_connected, f"an error reply keeps the connection ({PIPELINE})"
        assert await link.read_response() == b"\x00bytes\r\n"
        assert await link.read_response() == 3
        # The pool did not lend it: its connections stay free for the rest.
        assert await asyncio.wait_for(client.get(key), 3) == b"3"
    finally:
        await link.disconnect()
        await client.delete(key)
        await client.aclose()
