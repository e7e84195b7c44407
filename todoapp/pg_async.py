"""Reads on the event loop: psycopg2's asynchronous connections, for the fast lane.

A sync app hands each database call to a worker thread; for the hottest read that
hand-off (waking a thread, the GIL passing back and forth, waking the loop again)
costs more than the query. psycopg2 can instead send a query and let the event loop
wait for the answer on the connection's socket, as aiopg does. `AsyncReader` keeps a
few such connections (autocommit, like all of psycopg2's asynchronous ones) and runs
one read-only statement at a time on each.

It is an accelerator, never the only way in: every failure (the database down or
restarted, a dropped connection, a timeout, no free connection in time) raises
`ReadFailed`, the connection concerned is closed, and the caller answers through the
ordinary, threaded path instead, which has its own retry and its 503. PostgreSQL only.
"""

import asyncio
import logging
from collections import deque
from datetime import datetime
from typing import Any

import psycopg2
import psycopg2.errors
from psycopg2.extensions import POLL_OK, POLL_READ, POLL_WRITE, connection

from todoapp.database import POOLED_CONNECT_ARGS, POSTGRES_CONNECT_ARGS, SET_UTC, Database
from todoapp.prepared import PREPARED_STATEMENTS_LOST, PreparedStatement

logger = logging.getLogger(__name__)


def _timestamptz(value: str | bytes | None, _cursor: Any) -> datetime | None:
    # PostgreSQL writes ISO 8601 ("2026-11-28 20:25:58.962797+00"), which
    # datetime.fromisoformat reads in a third of the time of psycopg2's own parser.
    if value is None:
        return None
    return datetime.fromisoformat(value if isinstance(value, str) else value.decode())


TIMESTAMPTZ = psycopg2.extensions.new_type((1184,), "TIMESTAMPTZ_ISO", _timestamptz)

# After a failed connect, the next attempt waits this long: while the database is
# down, requests go straight to the threaded path instead of each trying again.
RECONNECT_PAUSE_SECONDS = 1.0


class ReadFailed(Exception):
    """The read did not happen; the caller should take the ordinary path."""


def _wake(waiter: "asyncio.Future[None]") -> None:
    if not waiter.done():
        waiter.set_result(None)


async def _settle(conn: connection) -> None:
    """Drive an asynchronous connection until its connect or query is complete."""
    loop = asyncio.get_running_loop()
    while True:
        state = conn.poll()
        if state == POLL_OK:
            return
        fd = conn.fileno()
        waiter = loop.create_future()
        if state == POLL_READ:
            loop.add_reader(fd, _wake, waiter)
            try:
                await waiter
            finally:
                loop.remove_reader(fd)
        elif state == POLL_WRITE:
            loop.add_writer(fd, _wake, waiter)
            try:
                await waiter
            finally:
                loop.remove_writer(fd)
        else:  # pragma: no cover - psycopg2 documents no other state
            raise psycopg2.OperationalError(f"unexpected poll state {state}")


class AsyncReader:
    """At most `size` asynchronous connections, opened when first needed."""

    def __init__(
        self,
        connect_kwargs: dict[str, Any],
        size: int,
        timeout: float,
        prepared: tuple[PreparedStatement, ...] = (),
        setup: tuple[str, ...] = (),
    ) -> None:
        self.connect_kwargs = connect_kwargs
        self.size = size
        self.timeout = timeout
        self.prepared = prepared
        self.setup = setup  # statements run once on each new connection
        self._idle: list[connection] = []
        self._open = 0
        # Requests waiting for a connection; each is handed one, or None meaning
        # "a slot came free: open your own".
        self._waiters: deque[asyncio.Future[connection | None]] = deque()
        self._reconnect_at = 0.0
        self._closed = False
        # Off for good once the server loses track of them, as behind PgBouncer in
        # transaction mode, where each transaction may land on another server session.
        self.preparing = bool(prepared)

    async def fetch_all(
        self, statement: "PreparedStatement | str", params: dict[str, Any]
    ) -> list[tuple[Any, ...]]:
        """The rows of one read-only statement, or ReadFailed."""
        if self._closed:
            raise ReadFailed("closed")
        if isinstance(statement, str):
            sql = statement
        else:
            sql = statement.execute if self.preparing else statement.sql
        try:
            async with asyncio.timeout(self.timeout):
                conn = await self._acquire()
                try:
                    cursor = conn.cursor()
                    cursor.execute(sql, params)
                    await _settle(conn)
                    rows: list[tuple[Any, ...]] = cursor.fetchall()
                except BaseException:
                    self._discard(conn)  # its state is unknown: never reuse it
                    raise
                self._release(conn)
                return rows
        except Exception as exc:  # the database's errors, timeouts, a value it cannot read
            if self.preparing and isinstance(exc, PREPARED_STATEMENTS_LOST):
                self.preparing = False
                logger.warning(
                    "prepared statements do not persist on this database connection "
                    "(a pooler in transaction mode?): fast-lane reads go unprepared"
                )
            raise ReadFailed(type(exc).__name__) from exc

    async def _acquire(self) -> connection:
        if self._idle:
            return self._idle.pop()
        if self._open >= self.size:
            waiter: asyncio.Future[connection | None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                handed = await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                    # Served just as we gave up: hand on what we were given.
                    late = waiter.result()
                    if late is not None:
                        self._release(late)
                    else:
                        self._open -= 1  # a slot was passed to us: pass it on
                        self._pass_slot()
                raise
            if handed is not None:
                return handed
        else:
            self._open += 1
        # This request holds a slot (self._open counts it) and opens its connection.
        try:
            return await self._connect()
        except BaseException:
            self._open -= 1
            self._pass_slot()
            raise

    async def _connect(self) -> connection:
        loop = asyncio.get_running_loop()
        if self._closed:
            raise ReadFailed("closed")
        if loop.time() < self._reconnect_at:
            raise psycopg2.OperationalError("database recently unreachable")
        started = loop.time()
        try:
            # In a thread: libpq resolves the host name before it returns, and a slow
            # DNS answer must not stall the event loop. Rare: connections are kept.
            conn: connection = await asyncio.to_thread(
                psycopg2.connect, **self.connect_kwargs, async_=True
            )
            try:
                await _settle(conn)
                psycopg2.extensions.register_type(TIMESTAMPTZ, conn)
                cursor = conn.cursor()  # held: psycopg2 fails a poll whose cursor is gone
                for sql in self.setup:
                    cursor.execute(sql)
                    await _settle(conn)
                for statement in self.prepared if self.preparing else ():
                    cursor.execute(statement.prepare)
                    await _settle(conn)
            except BaseException:
                conn.close()
                raise
        except psycopg2.Error as exc:  # refused, unreachable, or refusing us
            if not isinstance(exc, PREPARED_STATEMENTS_LOST):
                self._reconnect_at = loop.time() + RECONNECT_PAUSE_SECONDS
            raise
        except asyncio.CancelledError:
            # Given up on (the read's timeout). A database that stayed silent this long
            # would make every request wait as long: let them take the ordinary path.
            if loop.time() - started >= min(1.0, self.timeout / 2):
                self._reconnect_at = loop.time() + RECONNECT_PAUSE_SECONDS
            raise
        return conn

    def _release(self, conn: connection) -> None:
        if self._closed:
            self._discard(conn)
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._idle.append(conn)

    def _discard(self, conn: connection) -> None:
        try:
            conn.close()
        finally:
            self._open -= 1
            self._pass_slot()

    def _pass_slot(self) -> None:
        """A slot came free: let the first waiter open a connection in it."""
        while self._waiters and self._open < self.size:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._open += 1
                waiter.set_result(None)
                return

    def close(self) -> None:
        """Close the idle connections, refuse new reads and fail those still waiting."""
        self._closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ReadFailed("closed"))
        while self._idle:
            self._discard(self._idle.pop())


def reader_for(
    database: Database,
    size: int,
    timeout: float,
    prepared: tuple[PreparedStatement, ...] = (),
    *,
    pooler: bool = False,
) -> AsyncReader:
    """An AsyncReader on the database's PostgreSQL, connecting as its engine does.

    Behind a pooler in transaction mode (`pooler`), nothing is prepared (a statement
    prepared on one server connection is unknown on the next) and the time zone is
    SET (see database.POOLED_CONNECT_ARGS); reads given up on are cancelled by the pooler.
    """
    engine = database.engine
    _args, params = engine.dialect.create_connect_args(engine.url)
    if pooler:
        return AsyncReader(
            {**params, **POOLED_CONNECT_ARGS}, size=size, timeout=timeout, setup=(SET_UTC,)
        )
    # A read given up on after `timeout` is stopped by the server too. The prepared
    # statements are planned once (a generic plan): PostgreSQL would otherwise plan the
    # lane's statement again on every execution when its estimates favour custom plans,
    # which cost the server about three times the read itself (193 against 70 us).
    options = (
        f"{POSTGRES_CONNECT_ARGS['options']} -c statement_timeout={int(timeout * 1000)}"
        " -c plan_cache_mode=force_generic_plan"
    )
    return AsyncReader(
        {**params, **POSTGRES_CONNECT_ARGS, "options": options},
        size=size,
        timeout=timeout,
        prepared=prepared,
    )
