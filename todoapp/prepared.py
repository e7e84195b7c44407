"""Prepared statements on PostgreSQL: planned once per connection, then only EXECUTEd.

For a statement that reads or writes one row by its key, PostgreSQL spends more of its
time planning it than running it (`GET /todos/{id}`'s read: about 150 of 260 us of the
server's time). A statement marked `PREPARED` (an execution option) is PREPAREd once on
each connection that runs it and EXECUTEd from then on: the server parses and plans it
once (a generic plan: the options `PREPARED_OPTIONS` give the connection), and each run
sends only its values. Only statements whose best plan does not depend on their values
are marked: a row by its key, the token check, a list's page with no filter (read by
the sort's index whatever the values). Pages with filters and searches are planned for
their values every time, as any statement is.

What it keeps to:
- only in autocommit (Database.read and Database.write_one): a PREPARE that fails there
  is harmless, and no transaction of the caller's is touched;
- psycopg2 still writes the values into the EXECUTE (client-side, as for any statement),
  so values, errors and results are the statement's own;
- a statement that cannot be prepared (PostgreSQL cannot type a parameter) runs as it
  is, from then on; one whose result a migration changed ("cached plan must not change
  result type") is prepared again;
- behind a pooler in transaction mode (DB_POOLER=transaction) nothing is prepared: each
  transaction may land on another server session. Should a server session lose track of
  its statements all the same (an unexpected pooler), preparing turns itself off for the
  process, with one warning, and the statement runs as it is: an EXECUTE of an unknown
  statement ran nothing, so running it again is safe.

The fast lane's reads (pg_async) use the same `PreparedStatement`.

`first_row` and `all_rows` run a statement straight through the driver's cursor where
they can (see there), prepared if it is marked: its SQL compiled once, where SQLAlchemy's
Connection.execute spends about 35 us of Python a statement working out a cache key, an
execution context and a result.
"""

import hashlib
import logging
import re
from collections import namedtuple
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import psycopg2.errors
from psycopg2.extensions import connection as PgConnection  # noqa: N812
from psycopg2.extensions import cursor as PgCursor  # noqa: N812
from sqlalchemy import Connection, Engine, Numeric
from sqlalchemy.dialects.postgresql.psycopg2 import PGExecutionContext_psycopg2
from sqlalchemy.engine import Dialect
from sqlalchemy.engine.interfaces import ExecuteStyle
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler

logger = logging.getLogger(__name__)

# The execution option that marks a statement to be prepared: `.execution_options(**PREPARED)`.
_MARK = "todoapp_prepared"
PREPARED = {_MARK: True}
# Given to each connection of an engine that prepares: planned once, not per execution
# (PostgreSQL's default would plan again whenever its estimates favour custom plans).
PREPARED_OPTIONS = "-c plan_cache_mode=force_generic_plan"
# Statements a connection keeps prepared, and the process knows, at most (the lists of
# an If-Match make variants of a statement): past these, statements run unprepared.
MAX_PER_CONNECTION = 100
MAX_STATEMENTS = 1000

# What PostgreSQL answers a PREPARE of a statement it cannot prepare (class 42: it cannot
# type a parameter, say); anything else is the connection's or the server's trouble, and
# is raised as it would be for the statement itself (a dead connection is retried).
_CANNOT_PREPARE = "42"
# EXECUTE of a statement this session never prepared, PREPARE of one it already has.
PREPARED_STATEMENTS_LOST = (
    psycopg2.errors.InvalidSqlStatementName,
    psycopg2.errors.DuplicatePreparedStatement,
)
# A parameter, or an escaped percent sign (which may stand before "(name)s" as text).
_PARAMETER = re.compile(r"%%|%\((\w+)\)s")


class PreparedStatement:
    """A statement with %(name)s parameters (psycopg2's style), to be run prepared.

    Each connection PREPAREs it once; each run is then an EXECUTE that sends only the
    parameters and skips PostgreSQL's parsing and planning.
    """

    def __init__(self, name: str, sql: str) -> None:
        self.sql = sql  # what runs instead where statements cannot stay prepared
        # The name carries the statement's digest: behind a pooler, a server session
        # may hold one prepared by another version of the app under the same name.
        name = f"{name}_{hashlib.sha256(sql.encode()).hexdigest()[:12]}"
        names: list[str] = []

        def number(match: re.Match[str]) -> str:
            if match[1] is None:
                # PREPARE goes without parameters, so psycopg2 would leave "%%" as it
                # is: unescaped here.
                return "%"
            if match[1] not in names:
                names.append(match[1])
            return f"${names.index(match[1]) + 1}"

        numbered = _PARAMETER.sub(number, sql)
        self.name = name
        self.prepare = f"PREPARE {name} AS {numbered}"
        arguments = ", ".join(f"%({each})s" for each in names)
        self.execute = f"EXECUTE {name}({arguments})" if names else f"EXECUTE {name}"


class _Preparing:
    """Whether this process prepares, and what it learnt about statements."""

    def __init__(self) -> None:
        self.on = True
        self.statements: dict[str, PreparedStatement] = {}  # by SQL
        self.unpreparable: set[str] = set()  # SQL that PostgreSQL would not prepare

    def statement(self, sql: str) -> PreparedStatement | None:
        found = self.statements.get(sql)
        if found is None and len(self.statements) < MAX_STATEMENTS:
            found = self.statements[sql] = PreparedStatement("todoapp", sql)
        return found


_preparing = _Preparing()


class PreparingConnection(PgConnection):
    """A psycopg2 connection that remembers the statements it prepared."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.prepared: set[str] = set()  # SQL of the statements PREPAREd here


class PreparingCursor(PgCursor):
    """Runs a statement marked PREPARED (told by `prepare_next`) as an EXECUTE."""

    prepare_next = False

    def execute(self, query: Any, vars: Any = None) -> Any:
        if not self.prepare_next:
            return super().execute(query, vars)
        self.prepare_next = False
        conn = self.connection
        if (
            not _preparing.on
            or not conn.autocommit
            or not isinstance(conn, PreparingConnection)
            or not isinstance(query, str)
            or query in _preparing.unpreparable
        ):
            return super().execute(query, vars)
        statement = _preparing.statement(query)
        if statement is None:
            return super().execute(query, vars)
        if query not in conn.prepared:
            if len(conn.prepared) >= MAX_PER_CONNECTION:
                return super().execute(query, vars)
            try:
                super().execute(statement.prepare)
            except PREPARED_STATEMENTS_LOST:
                return self._lost(query, vars)
            except psycopg2.Error as error:
                if not (error.pgcode or "").startswith(_CANNOT_PREPARE):
                    raise  # the connection's or the server's trouble, not the statement's
                _preparing.unpreparable.add(query)
                logger.warning(
                    "a statement could not be prepared (%s): it runs unprepared",
                    type(error).__name__,
                )
                return super().execute(query, vars)
            conn.prepared.add(query)
        try:
            return super().execute(statement.execute, vars)
        except PREPARED_STATEMENTS_LOST:
            return self._lost(query, vars)
        except psycopg2.errors.FeatureNotSupported:
            # "cached plan must not change result type": a migration changed what the
            # statement returns. Nothing ran; prepared again on its next run. (Another
            # error of this class is the statement's own: run plain, it says so again.)
            super().execute(f"DEALLOCATE {statement.name}")
            conn.prepared.discard(query)
            return super().execute(query, vars)

    def _lost(self, query: str, vars: Any) -> Any:
        if _preparing.on:
            _preparing.on = False
            logger.warning(
                "prepared statements do not persist on this database connection "
                "(a pooler in transaction mode? set DB_POOLER=transaction): "
                "statements go unprepared"
            )
        return super().execute(query, vars)


class _PreparingContext(PGExecutionContext_psycopg2):
    """psycopg2's execution context, telling the cursor when its statement is marked."""

    def create_default_cursor(self) -> Any:
        cursor: Any = self._dbapi_connection.cursor()
        if self.execute_style is ExecuteStyle.EXECUTE and self.execution_options.get(_MARK):
            cursor.prepare_next = True
        return cursor


def prepare_marked_statements(engine: Engine) -> None:
    """Make the engine's cursors run statements marked PREPARED prepared (its
    connections must be PreparingConnection with PreparingCursor: see database.py).

    Told through the dialect's execution context, not an engine event: with any event
    listened to, SQLAlchemy dispatches every kind of event on every execution (about
    30 us of each).
    """
    assert isinstance(engine.dialect.execution_ctx_cls, type)
    assert issubclass(engine.dialect.execution_ctx_cls, PGExecutionContext_psycopg2)
    engine.dialect.execution_ctx_cls = _PreparingContext


# --- statements straight through the driver -----------------------------------------
_NO_VALUE = object()  # a bound parameter that takes its value from the call


@dataclass(frozen=True, slots=True)
class _Direct:
    """A statement compiled once for the driver: its SQL, whether it is marked PREPARED,
    how each of its parameters gets its value, and the class of its rows."""

    sql: str
    prepared: bool
    # (name in the SQL, key in the call's values, fixed value or _NO_VALUE, processor)
    binds: tuple[tuple[str, str, Any, Callable[[Any], Any] | None], ...]
    row: Callable[..., Any]
    processors: tuple[Callable[[Any], Any] | None, ...] | None  # None: none at all

    def values(self, params: Mapping[str, Any]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, key, fixed, process in self.binds:
            value = params[key] if fixed is _NO_VALUE else params.get(key, fixed)
            values[name] = value if process is None else process(value)
        return values

    def make_row(self, values: tuple[Any, ...]) -> Any:
        if self.processors is not None:
            values = tuple(
                value if process is None else process(value)
                for value, process in zip(values, self.processors, strict=True)
            )
        return self.row(*values)


def _compile_direct(statement: Any, dialect: Dialect) -> _Direct | None:
    """The statement as `first_row` and `all_rows` run it, or None where only SQLAlchemy's
    own execution does it justice: values made in Python (a column default), parameters
    expanded or rendered at execution (IN lists), numbers whose conversion depends on the
    type the server sends, or rows whose keys are no plain names."""
    compiled = statement.compile(dialect=dialect)
    assert isinstance(compiled, SQLCompiler)
    if (
        compiled.positional
        or compiled.insert_prefetch
        or compiled.update_prefetch
        or compiled.literal_execute_params
        or compiled.post_compile_params
        or getattr(compiled, "_collected_params", None)  # values given by .params()
        or not compiled._result_columns
    ):
        return None
    processors = compiled._bind_processors
    binds = []
    for bind, name in compiled.bind_names.items():
        if bind.expanding or bind.callable is not None:
            return None
        escaped = compiled.escaped_bind_names.get(name, name)
        fixed = _NO_VALUE if bind.required else bind.value
        process = cast(Callable[[Any], Any] | None, processors.get(name))
        binds.append((escaped, bind.key, fixed, process))
    keys = [column.keyname for column in compiled._result_columns]
    try:
        row = namedtuple("Row", keys)  # type: ignore[misc]
    except ValueError:  # duplicate or unusable names
        return None
    if any(_numeric(column.type) for column in compiled._result_columns):
        return None  # its processor depends on the type the server sends, known only then
    results = tuple(
        column.type._cached_result_processor(dialect, None) for column in compiled._result_columns
    )
    return _Direct(
        sql=compiled.string,
        prepared=bool(statement.get_execution_options().get(_MARK)),
        binds=tuple(binds),
        row=row,
        processors=results if any(results) else None,
    )


def _numeric(type_: Any) -> bool:
    affinity = type_._type_affinity  # a TypeDecorator's is its implementation's
    return affinity is not None and issubclass(affinity, Numeric)


_directs: dict[tuple[int, int], tuple[Any, Dialect, _Direct | None]] = {}


def _direct(statement: Any, dialect: Dialect) -> _Direct | None:
    key = (id(statement), id(dialect))
    found = _directs.get(key)
    if found is None or found[0] is not statement or found[1] is not dialect:
        if len(_directs) >= MAX_STATEMENTS:
            return None
        # Kept with its plan, the statement and dialect, so that their ids are never
        # another's while the plan is here.
        found = _directs[key] = (statement, dialect, _compile_direct(statement, dialect))
    return found[2]


def first_row(db: Session | Connection, statement: Any, params: Mapping[str, Any]) -> Any:
    """`db.execute(statement, params).first()`: the statement's first row (attributes by
    column key, as SQLAlchemy's Row), or None.

    On a Connection of an engine that prepares, in autocommit (Database.read and
    Database.write_one), the statement goes straight to the driver's cursor, compiled
    once (no execution context, no cache key, no Result), and if it is marked PREPARED,
    prepared as PreparingCursor does. Errors are SQLAlchemy's as ever: a driver error is
    wrapped as Connection.execute wraps it (DBAPIError), and a dead connection is
    invalidated with the pool's older ones, so Database.read retries it the same way.
    Anywhere else (SQLite, a Session, a transaction, an engine or dialect with event
    listeners, which expect SQLAlchemy's execution context), SQLAlchemy runs it.
    """
    on = _direct_on(db, statement)
    if on is None:
        return db.execute(statement, params).first()
    found = _run(*on, params, _fetch_one)
    return None if found is None else on[2].make_row(found)


def all_rows(db: Session | Connection, statement: Any, params: Mapping[str, Any]) -> list[Any]:
    """`db.execute(statement, params).all()`, straight through the driver where
    first_row's is (see there)."""
    on = _direct_on(db, statement)
    if on is None:
        return list(db.execute(statement, params).all())
    make_row = on[2].make_row
    return [make_row(row) for row in _run(*on, params, _fetch_all)]


def _direct_on(db: Session | Connection, statement: Any) -> tuple[Connection, Any, _Direct] | None:
    """The connection, its driver's connection and the statement as it runs straight
    through them, or None where it cannot."""
    if (
        isinstance(db, Connection)  # for the type checker; exactly a Connection below
        and type(db) is Connection
        and db.dialect.execution_ctx_cls is _PreparingContext
        and not (db._has_events or db.engine._has_events or db.dialect._has_events)
    ):
        driver = db.connection.dbapi_connection
        if driver is not None and driver.autocommit:
            direct = _direct(statement, db.dialect)
            if direct is not None:
                return db, driver, direct
    return None


def _fetch_one(cursor: Any) -> Any:
    return cursor.fetchone()


def _fetch_all(cursor: Any) -> Any:
    return cursor.fetchall()


def _run(
    db: Connection,
    driver: Any,
    direct: _Direct,
    params: Mapping[str, Any],
    fetch: Callable[[Any], Any],
) -> Any:
    values = direct.values(params)
    cursor = None
    try:
        cursor = driver.cursor()
        cursor.prepare_next = direct.prepared
        cursor.execute(direct.sql, values)
        return fetch(cursor)
    except BaseException as error:
        # As Connection.execute does: a driver's error wrapped, the connection (and the
        # pool's older ones) invalidated when it is dead or the thread is being stopped;
        # anything else raised as it is.
        if isinstance(error, db.dialect.loaded_dbapi.Error) or not isinstance(error, Exception):
            db._handle_dbapi_exception(error, direct.sql, values, cursor, None)
        raise
    finally:
        if cursor is not None:
            cursor.close()  # client-side: no round trip, not even on a dead connection
