"""The AMQP and PostgreSQL bridges against a RabbitMQ node and a PostgreSQL
cluster of their own (tests/integration/brokers.py), so a broker can be
restarted mid-stream without touching the machine's services."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

import rtkit.aio
from rtkit._process import kill_group, stop_group
from rtkit.bridges import Bridge, TopicMap
from rtkit.pytest_plugin import InProcessHub

from .brokers import Broker, postgres, rabbitmq
from .helpers import bridge_process, history, wait_count, wait_until

aio_pika = pytest.importorskip("aio_pika")
psycopg = pytest.importorskip("psycopg")


# -- RabbitMQ ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def rabbit() -> Iterator[Broker]:
    """One private RabbitMQ node for the module's tests (it takes 5-10 s to
    start); each test uses queues and exchanges of its own."""
    broker = rabbitmq()
    try:
        yield broker.start()
    finally:
        broker.close()


def amqp_url(broker: Broker) -> str:
    return f"amqp://guest:guest@127.0.0.1:{broker.port}/"


async def amqp_publish(
    url: str,
    numbers: range,
    *,
    exchange: str = "",
    routing_key: str = "",
    key_of: Any = None,
    id_prefix: str = "m",
) -> None:
    """Persistent messages ``{"i": i}`` with the message id ``{id_prefix}{i}``,
    each confirmed by the broker."""
    async with await aio_pika.connect(url) as conn:
        channel = await conn.channel()
        target = await channel.get_exchange(exchange) if exchange else channel.default_exchange
        for i in numbers:
            message = aio_pika.Message(
                orjson.dumps({"i": i}),
                message_id=f"{id_prefix}{i}",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            )
            await target.publish(message, routing_key=key_of(i) if key_of else routing_key)


async def amqp_publish_without_ids(port: int, queue: str, numbers: range) -> None:
    """Persistent messages ``{"i": i}`` with no ``message_id``, over a bare
    AMQP 0-9-1 connection: aio-pika and aiormq give every message a random
    id, and producers in other languages often set none."""
    from pamqp import body, commands, frame, header

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    buffer = b""

    async def expect(kind: type) -> Any:
        nonlocal buffer
        while True:
            try:
                used, _, value = frame.unmarshal(buffer)
            except Exception:  # pamqp: not a whole frame yet
                chunk = await reader.read(65536)
                assert chunk, "the broker closed the connection"
                buffer += chunk
                continue
            buffer = buffer[used:]
            if isinstance(value, kind):
                return value

    def send(value: Any, channel: int = 0) -> None:
        writer.write(frame.marshal(value, channel))

    try:
        writer.write(frame.marshal(header.ProtocolHeader(), 0))
        await expect(commands.Connection.Start)
        send(commands.Connection.StartOk(mechanism="PLAIN", response="\0guest\0guest"))
        tune = await expect(commands.Connection.Tune)
        send(commands.Connection.TuneOk(tune.channel_max, tune.frame_max, 0))
        send(commands.Connection.Open("/"))
        await expect(commands.Connection.OpenOk)
        send(commands.Channel.Open(), 1)
        await expect(commands.Channel.OpenOk)
        for i in numbers:
            data = orjson.dumps({"i": i})
            send(commands.Basic.Publish(routing_key=queue), 1)
            properties = commands.Basic.Properties(delivery_mode=2)
            send(header.ContentHeader(0, len(data), properties), 1)
            send(body.ContentBody(data), 1)
        # The broker handles a connection's frames in order: once it
        # answers the close, every message is in the queue.
        send(commands.Connection.Close(200, "done", 0, 0))
        await expect(commands.Connection.CloseOk)
    finally:
        writer.close()
        await writer.wait_closed()


async def queue_state(url: str, queue: str) -> tuple[int, int]:
    """(messages ready, consumers) of a queue."""
    async with await aio_pika.connect(url) as conn:
        channel = await conn.channel()
        declared = await channel.declare_queue(queue, passive=True)
        result = declared.declaration_result
        return result.message_count, result.consumer_count


async def assert_lag_counts_down(
    hub_process: InProcessHub, source: Any, count: int, batch: int | None = None
) -> None:
    """Bridge ``count`` waiting messages: the status's lag, as the transform
    sees it, starts near ``count``, counts down, and is 0 once all are in."""
    seen: list[int | None] = []
    async with rtkit.aio.Client(hub_process.url) as hub:

        def note_lag(channel: str, data: Any, msg: Any) -> Any:
            seen.append(bridge.state.lag)
            return data

        extra = {} if batch is None else {"batch": batch}
        bridge = Bridge(source, client=hub, transform=note_lag, **extra)
        task = asyncio.create_task(bridge.run())
        try:
            await wait_until(lambda: bridge.state.published == count, "the hub acked all")
            await wait_until(lambda: bridge.state.lag == 0, "lag 0 once all read", within=5)
        finally:
            bridge.stop()
            await asyncio.wait_for(task, 10)
    assert seen[0] is not None and seen[0] >= count * 2 // 3, seen[:5]  # nearly all waiting
    assert max(lag or 0 for lag in seen[-100:]) < count // 3  # counted down as it read


@pytest.mark.slow
async def test_amqp_exchange_bindings_in_order_across_a_broker_restart(
    rt_hub_inprocess: InProcessHub, rabbit: Broker
) -> None:
    from rtkit.bridges.amqp import AmqpSource

    url = amqp_url(rabbit)
    async with await aio_pika.connect(url) as conn:
        channel = await conn.channel()
        await channel.declare_exchange("plant", aio_pika.ExchangeType.TOPIC, durable=True)

    def key_of(i: int) -> str:
        # Every tenth reading goes to a key no binding matches.
        return "plant.line1.debug.x" if i % 10 == 9 else f"plant.line{1 + i % 2}.power"

    async with rtkit.aio.Client(rt_hub_inprocess.url) as hub:
        topics = TopicMap([("plant.*.power", "power.{1}")], flavor="amqp")
        source = AmqpSource(url, topics=topics, exchange="plant", queue="plant-to-hub", prefetch=50)
        bridge = Bridge(source, client=hub)
        task = asyncio.create_task(bridge.run())
        try:
            await wait_until(lambda: bridge.state.connected, "bridge bound and consuming")
            await amqp_publish(url, range(2000), exchange="plant", key_of=key_of)
            await wait_count(hub, "power.line1", 200)
            # Mid-stream: deliveries in flight and not yet acked come again
            # after the restart, flagged redelivered; their message ids make
            # them duplicates on the hub.
            await asyncio.to_thread(rabbit.restart)
            await wait_until(
                lambda: bridge.state.connected and bridge.state.reconnects >= 1,
                "bridge back on the restarted broker",
                within=30,
            )
            await amqp_publish(url, range(2000, 3000), exchange="plant", key_of=key_of)
            expected = [i for i in range(3000) if i % 10 != 9]
            await wait_count(hub, "power.line1", len([i for i in expected if i % 2 == 0]))
            await wait_count(hub, "power.line2", len([i for i in expected if i % 2 == 1]))
            await wait_until(lambda: bridge.state.pending == 0, "every delivery settled")
        finally:
            bridge.stop()
            await asyncio.wait_for(task, 10)
        assert await history(hub, "power.line1") == [{"i": i} for i in expected if i % 2 == 0]
        assert await history(hub, "power.line2") == [{"i": i} for i in expected if i % 2 == 1]
        state = bridge.state
        assert state.errors >= 1 and state.last_error  # the lost connection, said
        assert state.gaps == 0  # a named durable queue kept what came meanwhile
        assert state.last_position is not None
        assert await queue_state(url, "plant-to-hub") == (0, 0)  # all acked; consumer gone


@pytest.mark.parametrize("with_ids", [True, False], ids=["message-ids", "no-ids"])
async def test_amqp_redeliveries_are_stored_once_only_with_message_ids(
    rt_hub_inprocess: InProcessHub, rabbit: Broker, with_ids: bool
) -> None:
    from rtkit.bridges.amqp import AmqpSource

    url = amqp_url(rabbit)
    # Names and ids longer than a publish id holds whole: shortened, still
    # recognised.
    queue = f"redeliver-{'ids' if with_ids else 'bare'}-" + "q" * 150
    async with await aio_pika.connect(url) as conn:
        channel = await conn.channel()
        await channel.declare_queue(queue, durable=True)
    if with_ids:
        await amqp_publish(url, range(30), routing_key=queue, id_prefix="m" * 200)
    else:
        await amqp_publish_without_ids(rabbit.port, queue, range(30))
    release = asyncio.Event()

    async def hold_the_first(channel: str, data: Any, msg: Any) -> Any:
        if data["i"] == 0:
            await release.wait()
        return data

    async with rtkit.aio.Client(rt_hub_inprocess.url) as hub:
        source = AmqpSource(
            url, topics=TopicMap([("#", "r")], flavor="amqp"), queue=queue, prefetch=10
        )
        bridge = Bridge(source, client=hub, transform=hold_the_first)
        task = asyncio.create_task(bridge.run())
        try:
            await wait_until(lambda: bridge.state.received == 1, "the first delivery held")
            # The broker drops the connection while 10 deliveries are unacked:
            # they go back to the queue and come again, flagged redelivered.
            ctl = await asyncio.create_subprocess_exec(
                "/usr/lib/rabbitmq/bin/rabbitmqctl",
                "close_all_connections",
                "test",
                env=rabbit.env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            _, stderr = await asyncio.wait_for(ctl.communicate(), 60)
            assert ctl.returncode == 0, stderr
            release.set()
            await wait_until(lambda: bridge.state.reconnects >= 1, "bridge reconnected")
            await wait_count(hub, "r", 30 if with_ids else 40)
            await wait_until(lambda: bridge.state.pending == 0, "every delivery settled")
        finally:
            bridge.stop()
            await asyncio.wait_for(task, 10)
        got = [m["i"] for m in await history(hub, "r")]
        if with_ids:
            assert got == list(range(30))  # exactly once
            assert bridge.state.redelivered == 0  # recognised by their ids
        else:
            assert got == [*range(10), *range(30)]  # at least once: the ten twice
            assert bridge.state.redelivered == 10
        assert await queue_state(url, queue) == (0, 0)


async def test_amqp_bridge_stopped_acks_everything_the_hub_has(
    rt_hub_inprocess: InProcessHub, rabbit: Broker
) -> None:
    """A bridge stopped (SIGTERM, bridge.stop()) acks, on the channel it
    read from, every delivery the hub acked: none comes again."""
    from rtkit.bridges.amqp import AmqpSource

    url = amqp_url(rabbit)
    async with await aio_pika.connect(url) as conn:
        channel = await conn.channel()
        await channel.declare_queue("stop-acks", durable=True)
    await amqp_publish(url, range(2000), routing_key="stop-acks")
    async with rtkit.aio.Client(rt_hub_inprocess.url) as hub:
        source = AmqpSource(
            url, topics=TopicMap([("#", "stops")], flavor="amqp"), queue="stop-acks"
        )
        bridge = Bridge(source, client=hub)
        task = asyncio.create_task(bridge.run())
        await wait_until(lambda: bridge.state.published == 2000, "the hub acked all")
        bridge.stop()
        await asyncio.wait_for(task, 10)
        assert await queue_state(url, "stop-acks") == (0, 0)
        assert bridge.state.errors == 0, bridge.state.last_error


async def test_amqp_lag_is_the_backlog_in_the_queue_down_to_zero(
    rt_hub_inprocess: InProcessHub, rabbit: Broker
) -> None:
    """The status's lag: what waits in the queue (and in the bridge's
    inbox), large while a backlog drains, 0 once it is gone."""
    from rtkit.bridges.amqp import AmqpSource

    url = amqp_url(rabbit)
    async with await aio_pika.connect(url) as conn:
        channel = await conn.channel()
        await channel.declare_queue("lag", durable=True)
    await amqp_publish(url, range(3000), routing_key="lag")
    source = AmqpSource(url, topics=TopicMap([("#", "lag")], flavor="amqp"), queue="lag")
    await assert_lag_counts_down(rt_hub_inprocess, source, 3000, batch=100)


@pytest.mark.slow
async def test_amqp_bridge_killed_mid_stream_delivers_each_message_once(
    rt_hub_inprocess: InProcessHub, rabbit: Broker, tmp_path: Path
) -> None:
    url = amqp_url(rabbit)
    async with await aio_pika.connect(url) as conn:
        channel = await conn.channel()
        await channel.declare_queue("meter-readings", durable=True)
    await amqp_publish(url, range(3000), routing_key="meter-readings")
    args = ["amqp", "--amqp", url, "--queue", "meter-readings", "--prefetch", "200"]
    args += ["--map", "#=meter"]
    log = tmp_path / "bridge.log"
    proc = None
    try:
        async with rtkit.aio.Client(rt_hub_inprocess.url) as hub:
            proc = bridge_process(args, rt_hub_inprocess.url, log)
            await wait_count(hub, "meter", 500)
            kill_group(proc)  # kill -9: its unacked deliveries go back to the queue
            await amqp_publish(url, range(3000, 5000), routing_key="meter-readings")
            proc = bridge_process(args, rt_hub_inprocess.url, log)
            await wait_count(hub, "meter", 5000)
            deadline = time.monotonic() + 20
            while await queue_state(url, "meter-readings") != (0, 1):
                assert time.monotonic() < deadline, log.read_text()
                await asyncio.sleep(0.1)
            assert await history(hub, "meter") == [{"i": i} for i in range(5000)]
    finally:
        if proc is not None:
            stop_group(proc, timeout=5)


# -- PostgreSQL -------------------------------------------------------------------


@pytest.fixture
def pg() -> Iterator[Broker]:
    """A private PostgreSQL cluster (initdb takes about 2 s)."""
    broker = postgres()
    try:
        yield broker.start()
    finally:
        broker.close()


def pg_dsn(broker: Broker) -> str:
    return f"postgresql://postgres@127.0.0.1:{broker.port}/postgres"


@pytest.fixture
async def db(pg: Broker) -> AsyncIterator[Any]:
    """An autocommit connection to ``pg``."""
    conn = await psycopg.AsyncConnection.connect(pg_dsn(pg), autocommit=True)
    try:
        yield conn
    finally:
        await conn.close()


async def test_postgres_listen_in_order_with_a_gap_across_a_restart(
    rt_hub_inprocess: InProcessHub, pg: Broker
) -> None:
    from rtkit.bridges.postgres import PostgresNotifySource

    dsn = pg_dsn(pg)

    async def notify(numbers: range) -> None:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            for i in numbers:
                await conn.execute("SELECT pg_notify('readings', %s)", (orjson.dumps(i).decode(),))
            await conn.execute("SELECT pg_notify('elsewhere', 'not listened to')")

    async with rtkit.aio.Client(rt_hub_inprocess.url) as hub:
        topics = TopicMap([("readings", "pg.readings")], flavor="plain")
        bridge = Bridge(PostgresNotifySource(dsn, topics=topics), client=hub)
        task = asyncio.create_task(bridge.run())
        try:
            await wait_until(lambda: bridge.state.connected, "bridge listening")
            await notify(range(300))
            await wait_count(hub, "pg.readings", 300)
            await asyncio.to_thread(pg.restart)
            await wait_until(
                lambda: bridge.state.connected and bridge.state.reconnects >= 1,
                "bridge listening on the restarted server",
            )
            await notify(range(300, 600))
            await wait_count(hub, "pg.readings", 600)
        finally:
            bridge.stop()
            await asyncio.wait_for(task, 10)
        assert await history(hub, "pg.readings") == list(range(600))
        assert bridge.state.gaps == 1  # notifications sent while away are lost: said so
        assert bridge.state.last_position is None
        assert bridge.state.errors >= 1 and bridge.state.last_error


async def insert_rows(conn: Any, numbers: range, per_transaction: int = 50) -> None:
    """Outbox rows ``{"i": i}`` on topic ``orders.{eu|us}``, several per transaction."""
    for start in range(numbers.start, numbers.stop, per_transaction):
        async with conn.transaction(), conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO outbox (topic, payload) VALUES (%s, %s)",
                [
                    (f"orders.{'eu' if i % 2 else 'us'}", orjson.dumps({"i": i}).decode())
                    for i in range(start, min(start + per_transaction, numbers.stop))
                ],
            )


async def test_postgres_outbox_row_committed_late_is_not_skipped(
    rt_hub_inprocess: InProcessHub, pg: Broker, db: Any
) -> None:
    """Row ids are taken before commit: a row that becomes visible after a
    row with a larger id was read still reaches the hub, once."""
    from rtkit.bridges.postgres import PostgresOutboxSource, outbox_ddl

    for statement in outbox_ddl("outbox"):
        await db.execute(statement)
    dsn = pg_dsn(pg)
    async with (
        rtkit.aio.Client(rt_hub_inprocess.url) as hub,
        await psycopg.AsyncConnection.connect(dsn) as slow,
    ):
        topics = TopicMap([("#", "late")], flavor="amqp")
        source = PostgresOutboxSource(dsn, topics=topics, table="outbox", poll=0.05)
        bridge = Bridge(source, client=hub)
        task = asyncio.create_task(bridge.run())
        try:
            await wait_until(lambda: bridge.state.connected, "bridge reading the outbox")
            await db.execute("INSERT INTO outbox (topic, payload) VALUES ('t', '\"first\"')")
            await wait_count(hub, "late", 1)
            # The slow writer takes id 2 (a cached sequence value: no
            # transaction id yet) and holds it; a quick one commits id 3.
            cur = await slow.execute("SELECT nextval('outbox_id_seq')")
            row = await cur.fetchone()
            assert row is not None and row[0] == 2
            await db.execute("INSERT INTO outbox (topic, payload) VALUES ('t', '\"quick\"')")
            await wait_count(hub, "late", 2)  # id 3 read while id 2 is not visible
            await slow.execute(
                "INSERT INTO outbox (id, topic, payload) VALUES (2, 't', '\"slow\"')"
            )
            await slow.commit()
            await db.execute("INSERT INTO outbox (topic, payload) VALUES ('t', '\"last\"')")
            await wait_count(hub, "late", 4)
            await wait_until(lambda: bridge.state.pending == 0, "every row settled")
        finally:
            bridge.stop()
            await asyncio.wait_for(task, 10)
        # In transaction order: the slow one's began writing after the quick one.
        assert await history(hub, "late") == ["first", "quick", "slow", "last"]
        assert bridge.state.published == 4


async def test_postgres_outbox_lag_counts_the_rows_waiting_down_to_zero(
    rt_hub_inprocess: InProcessHub, pg: Broker, db: Any
) -> None:
    from rtkit.bridges.postgres import PostgresOutboxSource, outbox_ddl

    for statement in outbox_ddl("outbox"):
        await db.execute(statement)
    await insert_rows(db, range(3000), per_transaction=500)
    topics = TopicMap([("#", "lagging")], flavor="amqp")
    source = PostgresOutboxSource(pg_dsn(pg), topics=topics, table="outbox", batch=100)
    await assert_lag_counts_down(rt_hub_inprocess, source, 3000)


async def test_postgres_outbox_of_the_applications_own_shape_without_a_trigger(
    rt_hub_inprocess: InProcessHub, pg: Broker, db: Any
) -> None:
    """A table with nullable columns and text payloads, and no NOTIFY
    trigger: rows are found by polling; a row without a topic or a payload
    is dropped and counted, not retried forever."""
    from rtkit.bridges.postgres import PostgresOutboxSource

    await db.execute(
        "CREATE TABLE events (id bigserial PRIMARY KEY, topic text, payload text,"
        " txid xid8 NOT NULL DEFAULT pg_current_xact_id())"
    )
    await db.execute(
        "INSERT INTO events (topic, payload) VALUES ('a', '{\"x\": 1}'), (NULL, '\"lost\"'),"
        " ('a', 'plain text'), ('a', NULL), ('a', '2')"
    )
    async with rtkit.aio.Client(rt_hub_inprocess.url) as hub:
        source = PostgresOutboxSource(
            pg_dsn(pg), topics=TopicMap([("#", "evs")], flavor="amqp"), table="events", poll=0.1
        )
        bridge = Bridge(source, client=hub)
        task = asyncio.create_task(bridge.run())
        try:
            await wait_count(hub, "evs", 3)
            await wait_until(lambda: bridge.state.pending == 0, "every row settled")
        finally:
            bridge.stop()
            await asyncio.wait_for(task, 10)
        assert await history(hub, "evs") == [{"x": 1}, "plain text", 2]
        assert bridge.state.dropped == 2
        assert bridge.state.last_position == "events:5"
    cur = await db.execute("SELECT id FROM rtkit_bridge_positions WHERE bridge = 'outbox:events'")
    assert await cur.fetchone() == (5,)


@pytest.mark.slow
async def test_postgres_outbox_killed_mid_stream_and_db_restarted_delivers_each_row_once(
    rt_hub_inprocess: InProcessHub, pg: Broker, db: Any, tmp_path: Path
) -> None:
    dsn = pg_dsn(pg)
    log = tmp_path / "bridge.log"
    args = ["postgres", "--dsn", dsn, "--outbox", "outbox", "--create", "--poll", "0.2"]
    args += ["--map", "orders.*=orders"]
    proc = None
    try:
        async with rtkit.aio.Client(rt_hub_inprocess.url) as hub:
            proc = bridge_process(args, rt_hub_inprocess.url, log)  # it creates the table
            deadline = time.monotonic() + 20
            while not (await (await db.execute("SELECT to_regclass('outbox')")).fetchone())[0]:
                assert time.monotonic() < deadline, log.read_text()
                await asyncio.sleep(0.05)
            await insert_rows(db, range(3000))
            await wait_count(hub, "orders", 500)
            kill_group(proc)  # kill -9 mid-stream: publishes and positions in flight lost
            await insert_rows(db, range(3000, 5000))
            proc = bridge_process(args, rt_hub_inprocess.url, log)
            await wait_count(hub, "orders", 5000)
            # The database restarts under the running bridge.
            await db.close()
            await asyncio.to_thread(pg.restart)
            async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as again:
                await insert_rows(again, range(5000, 6000))
                await wait_count(hub, "orders", 6000)
                deadline = time.monotonic() + 20
                while True:
                    cur = await again.execute(
                        "SELECT p.id = (SELECT max(id) FROM outbox) FROM rtkit_bridge_positions p"
                        " WHERE bridge = 'outbox:outbox'"
                    )
                    row = await cur.fetchone()
                    if row is not None and row[0]:
                        break  # the position of the last row is recorded
                    assert time.monotonic() < deadline, log.read_text()
                    await asyncio.sleep(0.1)
            assert await history(hub, "orders") == [{"i": i} for i in range(6000)]
    finally:
        if proc is not None:
            stop_group(proc, timeout=5)
