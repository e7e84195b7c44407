"""The engine, the session factory and the declarative Base (with a naming convention)."""

import select
from collections.abc import Callable
from contextvars import ContextVar
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, MetaData, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import StaticPool

from todoapp.config import Settings
from todoapp.prepared import (
    PREPARED_OPTIONS,
    PreparingConnection,
    PreparingCursor,
    prepare_marked_statements,
)

T = TypeVar("T")

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    # PostgreSQL's own default, which the original schema's tables already carry.
    "pk": "%(table_name)s_pkey",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _configure_sqlite(engine: Engine, *, wal: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # pysqlite's own transaction handling defers BEGIN and breaks SAVEPOINT; take
        # it over (SQLAlchemy's documented recipe), and enforce foreign keys, which
        # SQLite leaves off unless every connection asks.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=5000")
        if wal:  # readers and one writer at once, instead of one at a time
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # IMMEDIATE takes the write lock up front. A deferred BEGIN that reads and then
        # writes fails at once (SQLITE_BUSY, a 503) when another writer got in between;
        # this way transactions queue on busy_timeout instead. SQLite is for one
        # process; PostgreSQL is the database for concurrency.
        mode = connection.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        connection.exec_driver_sql(f"BEGIN {mode}")


def database_url(url: str) -> URL:
    """The URL with `postgresql://` meaning psycopg2 (SQLAlchemy 2.1 would pick psycopg 3)."""
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg2")
    return parsed


# TCP keepalives: a server that vanished without closing its connections (a host lost,
# a failover, a firewall forgetting the flow) is noticed within about a minute, and the
# kernel then marks the socket readable, so that the pool's check replaces it.
KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}
POSTGRES_CONNECT_ARGS: dict[str, Any] = {
    "connect_timeout": 5,
    "options": "-c timezone=UTC",
    **KEEPALIVES,
}
# The engine's own connections (not behind a pooler) also keep the statements they
# prepared, planned once (see prepared.py).
PREPARING_CONNECT_ARGS: dict[str, Any] = {
    **POSTGRES_CONNECT_ARGS,
    "options": f"{POSTGRES_CONNECT_ARGS['options']} {PREPARED_OPTIONS}",
    "connection_factory": PreparingConnection,
    "cursor_factory": PreparingCursor,
}
# Behind a pooler in transaction mode (DB_POOLER=transaction): PgBouncer refuses startup
# options ("unsupported startup parameter: options"), so the time zone is SET once per
# connection instead; PgBouncer tracks TimeZone per client and sets it again on whichever
# server connection each transaction gets. (A SET of anything it does not track, such
# as statement_timeout, would leak to other clients: none is made.)
POOLED_CONNECT_ARGS: dict[str, Any] = {"connect_timeout": 5, **KEEPALIVES}
SET_UTC = "SET TIME ZONE 'UTC'"


def make_engine(url: str, settings: Settings) -> Engine:
    """One engine per process, built from the settings."""
    parsed = database_url(url)
    if parsed.get_backend_name() == "sqlite":
        in_memory = parsed.database in (None, "", ":memory:")
        # In memory there is one database per connection: share one (StaticPool).
        pool_args: dict[str, Any] = (
            {"poolclass": StaticPool}
            if in_memory
            else {
                "pool_size": settings.worker_threads,
                "max_overflow": 0,
                "pool_timeout": settings.db_pool_timeout,
            }
        )
        engine = create_engine(
            parsed,
            # FastAPI runs sync routes in a threadpool; a connection may be checked
            # out by one thread and returned by another.
            connect_args={"check_same_thread": False},
            **pool_args,
        )
        _configure_sqlite(engine, wal=not in_memory)
        return engine
    pooled = settings.db_pooler == "transaction"
    engine = create_engine(
        parsed,
        pool_size=settings.worker_threads,
        max_overflow=0,
        pool_timeout=settings.db_pool_timeout,
        connect_args=POOLED_CONNECT_ARGS if pooled else PREPARING_CONNECT_ARGS,
    )
    if pooled:
        _utc_on_connect(engine)
    else:  # statements marked PREPARED run prepared (see prepared.py)
        prepare_marked_statements(engine)
    _ping_on_checkout(engine)
    return engine


def _utc_on_connect(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _set_utc(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(SET_UTC)
        cursor.close()
        dbapi_connection.commit()


# Set while a read that retries by itself holds its connection (Database.read).
_retrying_read: ContextVar[bool] = ContextVar("retrying_read", default=False)


def _ping_on_checkout(engine: Engine) -> None:
    """pool_pre_ping without the round trip, and not at all for reads that retry.

    A restarted database (or pooler) leaves dead connections in the pool. Each checkout
    tests its connection first (SQLAlchemy's pessimistic recipe: DisconnectionError
    makes the pool replace it), so the restart is invisible to requests. The test is
    whether the connection's socket has anything to read: between two statements an
    idle connection's server says nothing, so a readable socket means the server hung
    up (a terminated backend sends its FATAL notice and closes) or spoke unasked, and
    only then is the usual `SELECT 1` sent to make sure. So a healthy connection costs a
    system call, not a round trip.
    Database.read skips even that: it retries once on a dead connection instead.
    """

    @event.listens_for(engine, "checkout")
    def _ping(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        if _retrying_read.get():
            return
        if not server_hung_up(dbapi_connection):
            return
        try:  # most likely dead; the round trip makes sure (and reads what was said)
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            raise DisconnectionError from exc


def server_hung_up(dbapi_connection: Any) -> bool:
    """True when an idle psycopg2 connection is closed, or its server has closed it or
    sent something unasked (its socket is readable); no round trip."""
    if dbapi_connection.closed:
        return True
    poller = select.poll()  # not select(): it fails for descriptors above 1023
    try:
        poller.register(dbapi_connection.fileno(), select.POLLIN)
    except (OSError, ValueError):  # the socket is gone already
        return True
    return bool(poller.poll(0))


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    # Objects stay readable after commit: responses are built from them without
    # another round trip (server-filled columns come back through RETURNING).
    return sessionmaker(bind=engine, expire_on_commit=False, autoflush=False)


# The repository's migrations/; an installed wheel carries them as todoapp/migrations
# (see pyproject.toml), so that the app knows the head revision wherever it runs.
_PACKAGED_MIGRATIONS = Path(__file__).resolve().parent / "migrations"
MIGRATIONS_DIR = (
    _PACKAGED_MIGRATIONS
    if _PACKAGED_MIGRATIONS.is_dir()
    else Path(__file__).resolve().parent.parent / "migrations"
)


class SchemaNotReady(Exception):
    """The database is reachable but not at the head revision; the message says why."""


@lru_cache
def head_revision() -> str:
    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    if head is None:  # pragma: no cover - the repository always has migrations
        raise RuntimeError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


def _in_autocommit(connection: Connection, work: Callable[[Connection], T]) -> T:
    """work(connection) with psycopg2's autocommit on, and off again after.

    Set on the driver's connection, not as SQLAlchemy's isolation_level option: that
    one is reset when the connection goes back to the pool, and a reset that meets a
    connection the database just dropped raises the driver's own error from inside the
    pool (unwrapped, so a 500) and loses the pool its slot. psycopg2's flag is local:
    setting it never touches the network.
    """
    driver = connection.connection.dbapi_connection
    assert driver is not None
    driver.autocommit = True
    try:
        return work(connection)
    finally:
        try:
            driver.autocommit = False
        except connection.dialect.loaded_dbapi.Error:
            connection.invalidate()  # closed under us: the pool makes a new one


class Database:
    """The engine and session factory, plus what /readyz and start-up need to know."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.session_factory = make_session_factory(engine)
        # Reads on PostgreSQL run in autocommit: no BEGIN and ROLLBACK round trips; on
        # SQLite they skip the write lock that other transactions take up front.
        self._autocommit_reads = engine.dialect.name == "postgresql"
        self.read_engine = (
            engine if self._autocommit_reads else engine.execution_options(sqlite_begin="DEFERRED")
        )
        self.head = head_revision()
        self._schema_ready = False

    def read(self, work: Callable[[Connection], T]) -> T:
        """Run a read-only unit of work, once more if its connection turned out dead.

        Nothing was written, so the retry is safe; the dead connection made the pool
        drop every connection opened before it, so the retry gets a fresh one.
        """
        self.ensure_schema_ready()
        token = _retrying_read.set(True)
        try:
            for attempt in (1, 2):
                try:
                    with self.read_engine.connect() as connection:
                        if self._autocommit_reads:
                            return _in_autocommit(connection, work)
                        return work(connection)
                except DBAPIError as exc:
                    if attempt == 2 or not exc.connection_invalidated:
                        raise
            raise AssertionError("unreachable")  # pragma: no cover
        finally:
            _retrying_read.reset(token)

    def write_one(self, work: Callable[[Connection], T]) -> T:
        """Run a unit of work whose only write is ONE statement, committed as it runs.

        On PostgreSQL in autocommit: a single statement is a transaction of its own, so
        there is no BEGIN and no COMMIT to wait for, and nothing can be half-written; the
        reads that may follow (why the statement found no row) see it committed. Never
        retried: a statement that may have run is not sent twice. On SQLite, in a
        transaction that takes the write lock up front (BEGIN IMMEDIATE) and commits.
        Work that writes more than once takes a Session and commits once instead.
        """
        self.ensure_schema_ready()
        with self.engine.connect() as connection:
            if self._autocommit_reads:
                return _in_autocommit(connection, work)
            with connection.begin():
                return work(connection)

    @property
    def schema_ready(self) -> bool:
        """True once the schema was found at the head revision (see ensure_schema_ready)."""
        return self._schema_ready

    def current_revision(self) -> str | None:
        with self.read_engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    def schema_problem(self) -> str | None:
        """None at the head revision, else why not (raises if the database is down)."""
        current = self.current_revision()
        if current == self.head:
            return None
        if current is None:
            return f"database has no schema: run `alembic upgrade head` (head is {self.head})"
        return (
            f"database is at revision {current}, not the head {self.head}: "
            "run `alembic upgrade head`"
        )

    def ensure_schema_ready(self) -> None:
        # Checked until it first holds, then never again: free on the hot path.
        if self._schema_ready:
            return
        problem = self.schema_problem()
        if problem is not None:
            raise SchemaNotReady(problem)
        self._schema_ready = True
