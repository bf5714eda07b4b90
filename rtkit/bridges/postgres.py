"""The PostgreSQL sources (``pip install 'rtkit[postgres]'``, on psycopg 3).

- :class:`PostgresNotifySource`: ``LISTEN`` on channels, one message per
  ``NOTIFY``. Notifications have no positions and PostgreSQL keeps none for
  a listener that is away: what is notified while the bridge is disconnected
  is lost, and each reconnect counts in :attr:`BridgeState.gaps`.
- :class:`PostgresOutboxSource`: an outbox table the application inserts
  into, in the same transaction as its own changes. The bridge reads rows
  after the last position the hub acked, publishes each with the id
  ``postgres:{table}:{row id}`` and records the position in the table
  ``rtkit_bridge_positions`` once the hub acked the row and every one before
  it; a ``NOTIFY`` from the table's trigger wakes it, and it polls anyway
  every ``poll`` seconds. A bridge killed mid-stream and started again
  delivers every row exactly once, in order.

Row ids come from a sequence when a row is inserted, not when its
transaction commits: a row with a smaller id may become visible after one
with a larger id was read. Reading by id alone would skip it. So each row
also records its transaction id (``txid xid8 DEFAULT pg_current_xact_id()``)
and the bridge reads rows in (transaction id, row id) order, only from
transactions older than every one still running (the snapshot's xmin): that
set never grows behind the bridge's back. With one writer this is the id
order; with several, transactions come in the order they started, each
one's rows in id order. A transaction left open anywhere in the cluster
holds the bridge back until it ends.

The outbox's :attr:`BridgeState.lag` is the number of rows not read yet,
counted at most once a second (up to a million) and counted down as the
bridge reads.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from ..errors import ConfigurationError
from ._core import BridgeState, Position, SourceMessage, TopicMap, decode_payload, short_key

__all__ = ["PostgresNotifySource", "PostgresOutboxSource", "outbox_ddl"]

# Where outbox bridges keep their positions, one row per bridge.
POSITIONS_TABLE = "rtkit_bridge_positions"
# How often an outbox bridge counts the rows waiting (BridgeState.lag), and
# the most it counts: a count is a scan of that many index entries.
_LAG_EVERY = 1.0
_LAG_COUNT_LIMIT = 1_000_000


def _import() -> Any:
    try:
        import psycopg
    except ImportError:
        raise ConfigurationError(
            "the PostgreSQL bridge needs psycopg 3: pip install 'rtkit[postgres]'"
        ) from None
    return psycopg


async def _connect(dsn: str) -> Any:
    psycopg = _import()
    # Keepalives: a database host that vanishes without closing the socket is
    # noticed within about half a minute rather than never.
    return await psycopg.AsyncConnection.connect(
        dsn,
        autocommit=True,
        connect_timeout=10,
        keepalives=1,
        keepalives_idle=10,
        keepalives_interval=5,
        keepalives_count=3,
    )


def outbox_ddl(table: str = "rtkit_outbox", notify: str | None = None) -> list[str]:
    """The statements that create an outbox table the bridge can read.

    ``table`` may be schema-qualified; ``notify`` is the channel its trigger
    notifies after each inserting statement (default: the table's name)."""
    from psycopg import sql

    ident = sql.Identifier(*table.split("."))
    base = table.split(".")[-1]
    channel = notify or base
    function = sql.Identifier(*[*table.split(".")[:-1], f"{base}_notify"])
    index = sql.Identifier(f"{base}_txid_id")
    statements = [
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} ("
            " id bigserial PRIMARY KEY,"
            " topic text NOT NULL,"
            " payload jsonb NOT NULL,"
            " created timestamptz NOT NULL DEFAULT now(),"
            " txid xid8 NOT NULL DEFAULT pg_current_xact_id())"
        ).format(ident),
        sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (txid, id)").format(index, ident),
        sql.SQL(
            "CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS "
            "$$BEGIN PERFORM pg_notify({}, ''); RETURN NULL; END$$"
        ).format(function, sql.Literal(channel)),
        sql.SQL(
            "CREATE OR REPLACE TRIGGER {} AFTER INSERT ON {} "
            "FOR EACH STATEMENT EXECUTE FUNCTION {}()"
        ).format(sql.Identifier(f"{base}_notify"), ident, function),
    ]
    return [s.as_string(None) for s in statements]


class PostgresNotifySource:
    """Notifications on PostgreSQL channels (``LISTEN``), at most once.

    ``topics`` is a ``plain`` :class:`TopicMap` whose patterns are the
    channels to listen on; a notification's payload is its data (JSON if it
    parses).

    >>> source = PostgresNotifySource("postgresql://127.0.0.1/app",
    ...     topics=TopicMap([("orders", "orders.live")], flavor="plain"))
    """

    kind = "postgres"

    def __init__(self, dsn: str = "", *, topics: TopicMap, payload: str = "auto") -> None:
        self.dsn, self.topics, self._payload = dsn, topics, payload
        self._connections = 0

    async def checkpoint(self) -> str | None:
        return None  # no positions

    async def messages(self, state: BridgeState) -> AsyncIterator[SourceMessage]:
        from psycopg import sql

        conn = await _connect(self.dsn)
        try:
            for channel in self.topics.patterns:
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            state.connected = True
            if self._connections:
                state.gaps += 1  # nothing notified while we were away comes again
            self._connections += 1
            async for note in conn.notifies():
                try:
                    data = decode_payload(note.payload.encode(), self._payload)
                except ValueError as exc:
                    state.error(f"{note.channel}: {exc}")
                    continue
                yield SourceMessage(note.channel, data)
        finally:
            await conn.close()


class PostgresOutboxSource:
    """Rows of an outbox table, exactly once and in order into the hub.

    ``topics`` is an ``amqp`` :class:`TopicMap` over the rows' ``topic``
    (``#`` maps every topic to itself); ``name`` keys this bridge's position
    in ``rtkit_bridge_positions`` (one per bridge); ``create`` creates the
    table, its index and its NOTIFY trigger when missing
    (:func:`outbox_ddl`).

    >>> source = PostgresOutboxSource("postgresql://127.0.0.1/app", table="outbox",
    ...     topics=TopicMap([("#", "{topic}")], flavor="amqp"))
    """

    kind = "postgres"

    def __init__(
        self,
        dsn: str = "",
        *,
        topics: TopicMap,
        table: str = "rtkit_outbox",
        name: str | None = None,
        notify: str | None = None,
        create: bool = False,
        poll: float = 1.0,
        batch: int = 500,
    ) -> None:
        if poll <= 0 or batch < 1:
            raise ConfigurationError("poll must be positive and batch at least 1")
        self.dsn, self.topics, self.table = dsn, topics, table
        self.name = name or f"outbox:{table}"
        self._notify = notify or table.split(".")[-1]
        self._create = create
        self._poll, self._batch = poll, batch
        # Positions are (transaction id, row id); None until read from the table.
        self._committed: tuple[int, int] | None = None
        self._saved: tuple[int, int] | None = None
        self._read: tuple[int, int] | None = None
        self._positions_conn: Any = None  # open while messages() runs

    async def checkpoint(self) -> str | None:
        position = self._committed
        if position is not None and position != self._saved:
            conn = self._positions_conn
            if conn is not None and not conn.closed:
                await self._save(conn, position)
            else:  # the reader has stopped (bridge stopping): a connection of its own
                conn = await _connect(self.dsn)
                try:
                    await self._save(conn, position)
                finally:
                    await conn.close()
            self._saved = position
        return f"{self.table}:{position[1]}" if position is not None else None

    async def _save(self, conn: Any, position: tuple[int, int]) -> None:
        await conn.execute(
            f"INSERT INTO {POSITIONS_TABLE} (bridge, txid, id) VALUES (%s, %s::text::xid8, %s)"
            " ON CONFLICT (bridge) DO UPDATE SET txid = excluded.txid, id = excluded.id,"
            " updated = now()",
            (self.name, str(position[0]), position[1]),
        )

    def _committer(self, position: tuple[int, int]) -> Any:
        def commit() -> None:
            self._committed = position

        return commit

    async def _prepare(self, conn: Any) -> None:
        cur = await conn.execute("SELECT to_regclass(%s) IS NULL", (POSITIONS_TABLE,))
        missing = await cur.fetchone()
        if missing is not None and missing[0]:
            # Only when missing: creating needs a privilege that reading and
            # writing an existing table does not.
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {POSITIONS_TABLE} ("
                " bridge text PRIMARY KEY, txid xid8 NOT NULL, id bigint NOT NULL,"
                " updated timestamptz NOT NULL DEFAULT now())"
            )
        if self._create:
            for statement in outbox_ddl(self.table, self._notify):
                await conn.execute(statement)
        if self._read is None:
            cur = await conn.execute(
                f"SELECT txid::text, id FROM {POSITIONS_TABLE} WHERE bridge = %s", (self.name,)
            )
            row = await cur.fetchone()
            self._committed = self._saved = (int(row[0]), row[1]) if row else None
            self._read = self._committed or (0, 0)

    async def messages(self, state: BridgeState) -> AsyncIterator[SourceMessage]:
        from psycopg import errors, sql

        conn = await _connect(self.dsn)
        try:
            self._positions_conn = await _connect(self.dsn)
            await self._prepare(conn)
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._notify)))
            table = sql.Identifier(*self.table.split("."))
            query = sql.SQL(
                "SELECT txid::text, id, topic, payload::text FROM {}"
                " WHERE (txid, id) > (%s::text::xid8, %s)"
                " AND txid < pg_snapshot_xmin(pg_current_snapshot())"
                " ORDER BY txid, id LIMIT %s"
            ).format(table)
            count_waiting = sql.SQL(
                "SELECT count(*) FROM (SELECT 1 FROM {}"
                " WHERE (txid, id) > (%s::text::xid8, %s) LIMIT %s) AS waiting"
            ).format(table)
            lag_at = 0.0
            state.connected = True
            while True:
                assert self._read is not None
                try:
                    cur = await conn.execute(
                        query, (str(self._read[0]), self._read[1], self._batch)
                    )
                except errors.UndefinedColumn as exc:
                    raise ConfigurationError(
                        f"{self.table} is not an outbox the bridge can read ({exc}); "
                        "create it with outbox_ddl() or --create"
                    ) from None
                rows = await cur.fetchall()
                if time.monotonic() >= lag_at:
                    after = (rows[-1][0], rows[-1][1]) if rows else self._read
                    cur = await conn.execute(
                        count_waiting, (str(after[0]), after[1], _LAG_COUNT_LIMIT)
                    )
                    waiting = await cur.fetchone()
                    state.lag = len(rows) + (waiting[0] if waiting else 0)
                    lag_at = time.monotonic() + _LAG_EVERY
                for txid, row_id, topic, payload in rows:
                    position = (int(txid), row_id)
                    self._read = position
                    if state.lag:  # counted down between counts
                        state.lag -= 1
                    # A table of the application's own may allow NULLs or
                    # text payloads: such a row is dropped (no topic, no
                    # data) or read as text, never retried forever.
                    data = None
                    if topic is not None and payload is not None:
                        data = decode_payload(payload.encode())
                    yield SourceMessage(
                        topic or "",
                        data,
                        Position(short_key(self.table, 96), str(row_id)),
                        self._committer(position),
                    )
                if len(rows) == self._batch:
                    continue
                # Wait for the trigger's NOTIFY, or poll: a row whose
                # transaction was not yet older than every running one when
                # it was notified becomes readable without another NOTIFY.
                async for _ in conn.notifies(timeout=self._poll, stop_after=1):
                    pass
        finally:
            positions_conn, self._positions_conn = self._positions_conn, None
            if positions_conn is not None:
                await positions_conn.close()
            await conn.close()
