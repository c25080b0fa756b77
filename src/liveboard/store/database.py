"""The database engine: one async code path for SQLite and PostgreSQL.

``Database.write()`` opens a transaction that may change data; ``Database.read()`` opens a
read-only snapshot. Guarantees:

* A write transaction commits entirely or not at all. On SQLite it starts with ``BEGIN IMMEDIATE``
  (the write lock is taken up front, so two writers never deadlock on a lock upgrade) and writers
  of this process queue on an ``asyncio.Lock`` instead of polling SQLite's busy handler; other
  processes sharing the file wait up to ``busy_timeout``.
* A read snapshot sees one committed state: ``REPEATABLE READ`` on PostgreSQL, a deferred
  transaction in WAL mode on SQLite. That is what makes ``GET /api/projects/{pid}/tasks``
  consistent with the offset it returns.
* On PostgreSQL every table is in the schema ``schema`` (``liveboard`` by default, CONTRACT
  §6.3: an app sharing the database keeps its own ``public.tasks``): the tables of
  ``store.schema`` have no schema of their own, and the engine's ``schema_translate_map`` puts
  them in it, for queries and DDL alike. SQL written as text names tables through
  ``Database.table``. SQLite has one namespace per file: there nothing is translated.
* ``Database.read_one()`` is for one statement, which sees one committed state by itself: on
  PostgreSQL it runs outside a transaction (autocommit), without ``read``'s BEGIN and ROLLBACK
  round trips; on SQLite it is ``read``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from sqlalchemy import event, exc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.util import await_

from liveboard.errors import ConfigError
from liveboard.store.database_url import parse_database_url

#: Connections each process keeps open to PostgreSQL (``LIVEBOARD_DB_POOL_SIZE``).
POOL_SIZE = 10
#: Connections it may open beyond those under load (``LIVEBOARD_DB_MAX_OVERFLOW``).
MAX_OVERFLOW = 10


def async_url(database_url: str) -> str:
    """The SQLAlchemy URL for the contract's URL (``sqlite:///PATH``, ``postgresql://…``).

    For PostgreSQL it names the driver only: where and how to connect is the DSN that asyncpg
    parses itself (``DatabaseUrl.asyncpg_arguments``, passed as ``connect_args``), because
    SQLAlchemy would hand the URL's libpq parameters (``sslmode``…) to asyncpg as keyword
    arguments it does not take."""
    if database_url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + database_url.removeprefix("sqlite:///")
    if database_url.startswith(("postgresql://", "postgres://")):
        return "postgresql+asyncpg://"
    raise ConfigError(f"unsupported database URL {database_url!r}")


DEFAULT_SCHEMA = "liveboard"
"""The PostgreSQL schema of liveboard's tables and functions unless configured otherwise."""

IDLE_PING_SECONDS = 30.0
"""A pooled PostgreSQL connection idle for longer than this is pinged before it is used."""
PING_TIMEOUT_SECONDS = 2.0
"""How long that ping may take before the connection is given up for a new one."""
DRIVER_SPARES = 2
"""``driver`` connections kept checked out between uses, at most (see ``Database.driver``)."""


class Database:
    """An engine plus the transaction discipline above. Start with ``connect``; ``aclose`` ends."""

    def __init__(
        self,
        database_url: str,
        *,
        schema: str = DEFAULT_SCHEMA,
        echo: bool = False,
        pool_size: int = POOL_SIZE,
        max_overflow: int = MAX_OVERFLOW,
        pgbouncer: bool = False,
    ) -> None:
        """``pool_size`` connections are kept open, ``max_overflow`` more are opened under load
        (PostgreSQL; SQLite has no pool). ``pgbouncer``: the URL points at a PgBouncer in
        transaction pooling mode, where consecutive transactions of one connection may run on
        different server connections, so no prepared statement may outlive its statement:
        asyncpg's statement cache and SQLAlchemy's are off, so every statement is prepared
        unnamed (asyncpg's choice without a cache), and asyncpg ends its Parse and Describe
        with Flush, not Sync, so PgBouncer keeps the server connection for the Bind and
        Execute that follow. ``schema``: liveboard's PostgreSQL schema (``LIVEBOARD_DB_SCHEMA``)."""
        self.url = database_url
        parsed = parse_database_url(database_url)  # raises ConfigError on a bad parameter
        url = make_url(async_url(database_url))
        self.is_sqlite = not parsed.is_postgres
        #: liveboard's PostgreSQL schema; None on SQLite (one namespace per file).
        self.schema: str | None = None if self.is_sqlite else schema
        kwargs: dict[str, Any] = {"echo": echo}
        if parsed.is_postgres:
            connect_args = parsed.asyncpg_arguments()
            if pgbouncer:
                connect_args.update(statement_cache_size=0, prepared_statement_cache_size=0)
            # LIFO: the connection used last is used next, so under light traffic the pool keeps
            # reusing a warm connection instead of cycling through idle ones (and pinging them).
            kwargs.update(
                pool_size=pool_size,
                max_overflow=max_overflow,
                pool_use_lifo=True,
                connect_args=connect_args,
            )
            kwargs["execution_options"] = {"schema_translate_map": {None: schema}}
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        self._write_lock = asyncio.Lock() if self.is_sqlite else None
        if self.is_sqlite:
            _install_sqlite_hooks(self.engine)
        else:
            _install_postgres_checkout_check(self.engine)
        self._closed = False
        #: ``driver`` checkouts kept for the next one: (connection, its asyncpg connection,
        #: when it was last given back), the last given back at the end.
        self._spares: list[tuple[AsyncConnection, Any, float]] = []
        self._max_checkouts = pool_size + max_overflow
        #: Connections kept open (PostgreSQL; 1 on SQLite, which has no pool).
        self.pool_size = 1 if self.is_sqlite else pool_size
        #: Connections held through this object now, and callers waiting for one (metrics).
        self.in_use = 0
        self.waiting = 0

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[AsyncConnection]:
        """A pooled connection, counted in ``waiting`` until the pool hands it out and in
        ``in_use`` until it goes back."""
        if self._spares and self._pool_exhausted():
            await self._drop_spares()  # kept for ``driver``, not needed more than this caller
        conn = self.engine.connect()
        self.waiting += 1
        try:
            await conn.start()
        finally:
            self.waiting -= 1
        self.in_use += 1
        try:
            yield conn
        finally:
            self.in_use -= 1
            await conn.close()

    def table(self, name: str) -> str:
        """``name`` as SQL text names liveboard's table of that name (schema-qualified on
        PostgreSQL). Schema names are checked identifiers (``config``): no quoting needed."""
        return name if self.schema is None else f"{self.schema}.{name}"

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A transaction that may write; committed when the block exits without an exception."""
        if self._write_lock is None:
            async with self._connection() as conn, conn.begin():
                yield conn
            return
        async with self._write_lock, self._connection() as conn:
            await conn.execution_options(liveboard_write=True)
            async with conn.begin():
                yield conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A consistent read-only snapshot."""
        async with self._connection() as conn:
            if not self.is_sqlite:
                await conn.execution_options(isolation_level="REPEATABLE READ")
            async with conn.begin():
                yield conn

    @asynccontextmanager
    async def read_one(self) -> AsyncIterator[AsyncConnection]:
        """A connection for one read-only statement, outside any transaction.

        One statement sees one consistent snapshot by itself, so it needs no transaction: on
        PostgreSQL this runs it in autocommit, without the BEGIN and ROLLBACK that ``read``
        costs (two of its three round trips; about 0.2 ms of CPU each time). Use ``read`` for
        several statements that must agree. SQLite has no round trips to save: there it is
        ``read``.
        """
        if self.is_sqlite:
            async with self.read() as conn:
                yield conn
            return
        async with self._connection() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            yield conn

    @asynccontextmanager
    async def driver(self) -> AsyncIterator[Any]:
        """PostgreSQL only: a pooled connection's asyncpg connection itself, outside any
        transaction, for a statement that SQLAlchemy's compile and result layers would cost more
        CPU than it does (a reconnect's recovery read). Its statements are prepared once per
        connection and kept by asyncpg (unnamed each time under PgBouncer).

        A connection given back cleanly (no exception, no transaction open) stays checked out of
        the pool for the next ``driver`` call, up to ``DRIVER_SPARES`` of them: a checkout and
        a check-in through SQLAlchemy's pool cost three greenlet switches, a new greenlet each,
        about 90 µs of CPU, 4-5 % of a ``PATCH``'s (``bench.patch_parts``). What the pool
        guarantees holds for them too: a kept connection counts against ``pool_size +
        max_overflow`` (it is checked out), is not kept while another caller waits for a
        connection, is given back to the pool as soon as one would have to, and is handed out
        again only if it is still open and was used within ``IDLE_PING_SECONDS`` (else it goes
        back to the pool, whose checkout pings it). ``in_use`` does not count it while it is
        kept."""
        if self.is_sqlite:
            raise RuntimeError("driver() is for PostgreSQL")
        spare = await self._take_spare()
        if spare is None:
            conn = self.engine.connect()
            self.waiting += 1
            try:
                await conn.start()
            finally:
                self.waiting -= 1
            try:
                driver: Any = (await conn.get_raw_connection()).driver_connection
            except BaseException:
                await conn.close()
                raise
        else:
            conn, driver = spare
        self.in_use += 1
        clean = False
        try:
            yield driver
            clean = True
        finally:
            self.in_use -= 1
            if (
                clean
                and len(self._spares) < DRIVER_SPARES
                and not self._closed
                and not driver.is_closed()
                and not driver.is_in_transaction()
                and not self.waiting  # nobody waits for a connection it could have
            ):
                self._spares.append((conn, driver, time.monotonic()))
            else:
                await conn.close()

    async def _take_spare(self) -> tuple[AsyncConnection, Any] | None:
        """The connection kept last, if it may be used as is; the others stay kept."""
        while self._spares:
            conn, driver, since = self._spares.pop()
            if not driver.is_closed() and time.monotonic() - since <= IDLE_PING_SECONDS:
                return conn, driver
            await conn.close()  # the pool's checkout check replaces or pings it
        return None

    def _pool_exhausted(self) -> bool:
        """Whether every connection the pool may open is checked out (a kept one included)."""
        checked_out: int = self.engine.sync_engine.pool.checkedout()  # type: ignore[attr-defined]
        return checked_out >= self._max_checkouts

    async def _drop_spares(self) -> None:
        """Give every kept ``driver`` connection back to the pool."""
        spares, self._spares = self._spares, []
        for conn, _driver, _since in spares:
            await conn.close()

    @asynccontextmanager
    async def driver_write(self) -> AsyncIterator[Any]:
        """PostgreSQL only: ``driver``'s asyncpg connection in a write transaction, committed
        when the block exits without an exception (rolled back otherwise), for a write whose
        statements are prepared once per connection (``tasks.publish_batch``)."""
        async with self.driver() as conn, conn.transaction():
            yield conn

    def write_driver(self) -> AbstractAsyncContextManager[Any]:
        """PostgreSQL only: ``driver`` for writes that are each one autocommitted statement
        (``tasks.single_write``): what tracing shows as a write transaction. ``driver``'s own
        context manager here (no layer of its own)."""
        return self.driver()

    async def warm(self) -> int:
        """Open the pool's ``pool_size`` connections now (PostgreSQL; SQLite has no pool), so a
        burst right after start (a restarted server's reconnect storm) does not pay for the
        connects; the number opened. A failure here is left to the first real use."""
        if self.is_sqlite:
            return 0
        size = self.pool_size
        stack = contextlib.AsyncExitStack()
        opened = 0
        async with stack:
            for _ in range(size):
                try:
                    await stack.enter_async_context(self._connection())
                except Exception:
                    break
                opened += 1
        return opened

    async def aclose(self) -> None:
        """Dispose of the pool. Idempotent."""
        if not self._closed:
            self._closed = True
            await self._drop_spares()
            await self.engine.dispose()


def _install_postgres_checkout_check(engine: AsyncEngine) -> None:
    """Hand out only connections that are still open.

    Not ``pool_pre_ping``: on asyncpg its ping is BEGIN, a query and ROLLBACK, three round
    trips before every transaction, which measured 1.8 ms of CPU and 2.5 ms of latency on a
    6.7 ms ``PATCH``. asyncpg keeps reading an idle pooled connection's socket, so a connection
    the server closed (a restart, ``pg_terminate_backend``, ``idle_session_timeout``) is
    already marked closed when it is checked out, for free. A connection idle for longer than
    ``IDLE_PING_SECONDS`` is pinged as well (one empty query, one round trip, at most
    ``PING_TIMEOUT_SECONDS``), for the middleboxes that drop a connection without closing it.
    A connection found dead is replaced: the pool retries the checkout with a new one.

    Not covered, as with any check made before the work: a connection the server closes while
    the server's goodbye is still on its way (a request that takes it in that instant fails
    with a 500, like one in flight when the database goes away).
    """

    @event.listens_for(engine.sync_engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        driver = dbapi_connection.driver_connection
        if driver.is_closed():
            raise exc.DisconnectionError("the database closed this connection")
        idle_since = record.info.get("idle_since")
        if idle_since is not None and time.monotonic() - idle_since > IDLE_PING_SECONDS:
            try:
                # Checkout runs in SQLAlchemy's greenlet, so the driver can be awaited here.
                await_(driver.execute(";", timeout=PING_TIMEOUT_SECONDS))
            except Exception as error:
                raise exc.DisconnectionError("the database did not answer a ping") from error


def _install_sqlite_hooks(engine: AsyncEngine) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so BEGIN is ours (SQLAlchemy's recipe).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        write = conn.get_execution_options().get("liveboard_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
