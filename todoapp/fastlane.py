"""A fast lane for the hottest request, `GET /todos` with at most `limit` and `offset`.

It answers exactly what the FastAPI route answers (the same function writes the page,
see routers/todos.py), without FastAPI's routing, dependency solving and per-parameter
validation, which cost more than the database work itself. On PostgreSQL it does not
even take a worker thread: one prepared statement checks the token's user and reads
the page with its total, awaited on the event loop (see pg_async.py). On SQLite it
reads in a thread, as the route does.

It only ever answers 200: any request it cannot serve plainly (other parameters, a
missing or bad token, a revoked user, a page past the end, a busy or unavailable
database) goes on to the app unchanged, which gives the contract's answer. Reads are
idempotent, so a fall-through after a failed attempt is safe.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from types import SimpleNamespace
from typing import Any

from fastapi import FastAPI
from sqlalchemy import Select
from starlette.concurrency import run_in_threadpool

from todoapp import metrics, security
from todoapp.config import Settings
from todoapp.database import Database
from todoapp.deps import MAX_ID, admit, place_taken
from todoapp.pages import TODO_FIELDS, page_json, page_json_of_rows, todo_page_json
from todoapp.pg_async import AsyncReader, ReadFailed, reader_for
from todoapp.prepared import PreparedStatement
from todoapp.services.paging import Window, times_as_json
from todoapp.services.todos import (
    TIMESTAMPS,
    TodoQuery,
    cursor_after,
    first_page_with_token_check,
)
from todoapp.services.users import token_params

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_DEFAULT_QUERY = TodoQuery()
# What the router would have put in the scope: the route's template (logs.route_template).
LANE_ROUTE = SimpleNamespace(path="/todos")
WARN_EVERY_SECONDS = 60.0
logger = logging.getLogger(__name__)


def _plain_int(value: bytes, low: int, high: int) -> int | None:
    """An integer written plainly (ASCII digits, no sign or padding) within bounds."""
    if not value.isdigit() or (len(value) > 1 and value[0] == 48) or len(value) > 10:
        return None
    number = int(value)
    return number if low <= number <= high else None


def _paging(query_string: bytes) -> tuple[int, int] | None:
    """limit and offset from a query string that holds nothing else, written plainly.

    Anything less plain (other names, repeats, percent-escapes, empty pairs) is None:
    the app parses it, and answers it, as it does every other query.
    """
    limit, offset = 20, 0
    if not query_string:
        return limit, offset
    seen: list[bytes] = []
    for pair in query_string.split(b"&"):
        name, equals, value = pair.partition(b"=")
        if not equals or name in seen:
            return None
        seen.append(name)
        if name == b"limit":
            parsed = _plain_int(value, 1, 100)
        elif name == b"offset":
            parsed = _plain_int(value, 0, MAX_ID)
        else:
            return None
        if parsed is None:
            return None
        if name == b"limit":
            limit = parsed
        else:
            offset = parsed
    return limit, offset


def _bearer(headers: list[tuple[bytes, bytes]]) -> str | None:
    found = [value for name, value in headers if name == b"authorization"]
    if len(found) != 1 or not found[0].startswith(b"Bearer ") or len(found[0]) > 4096:
        return None
    return found[0][7:].decode("latin-1")


class TodoListFastLane:
    def __init__(self, app: ASGIApp, fastapi_app: FastAPI) -> None:
        self.app = app
        self.fastapi_app = fastapi_app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"] == "/todos":
            body = await self._page(scope)
            if body is not None:
                if self.fastapi_app.state.settings.metrics_enabled:
                    metrics.FAST_LANE_ANSWERS.inc()
                scope["route"] = LANE_ROUTE  # for the access log and the metrics
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [
                            (b"content-length", str(len(body)).encode()),
                            (b"content-type", b"application/json"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    async def _page(self, scope: Scope) -> bytes | None:
        if self.fastapi_app.state.settings.require_verified_email:
            return None  # the route checks verification (403) as well
        paging = _paging(scope["query_string"])
        token = _bearer(scope["headers"])
        claims = security.read_access_token(token) if paging and token else None
        if paging is None or claims is None:
            return None
        return await self._read(claims, *paging)

    async def _read(self, claims: security.TokenClaims, limit: int, offset: int) -> bytes | None:
        state = self.fastapi_app.state
        reads: OnLoopReads | None = getattr(state, "on_loop_reads", None)
        if reads is not None and state.database.schema_ready:
            return await reads.page(claims, limit, offset)
        return await self._read_in_thread(claims, limit, offset)

    async def _read_in_thread(
        self, claims: security.TokenClaims, limit: int, offset: int
    ) -> bytes | None:
        state = self.fastapi_app.state
        admission: asyncio.Semaphore = state.admission
        if not await admit(admission, state.settings.db_pool_timeout):
            metrics.FAST_LANE_HANDOVERS.labels("read_failed").inc()
            return None
        let_go = place_taken(state)
        try:
            return await run_in_threadpool(
                todo_page_json, state.session_source, claims, _DEFAULT_QUERY, Window(limit, offset)
            )
        except Exception:  # revoked, unavailable, not migrated...: the app will say which
            metrics.FAST_LANE_HANDOVERS.labels("read_failed").inc()
            return None
        finally:
            let_go()


class OnLoopReads:
    """The fast lane's page on PostgreSQL: one statement, awaited on the event loop.

    The token check, the page and its total come in one round trip (see
    services.todos.first_page_with_token_check), on a connection of an AsyncReader.
    """

    def __init__(
        self,
        reader: AsyncReader,
        statement: PreparedStatement,
        columns: list[str],
        *,
        counted: bool = True,
    ) -> None:
        self.reader = reader
        self.statement = statement
        self.counted = counted  # the in-use gauge kept (METRICS_ENABLED: /metrics shows it)
        # The statement's columns are TodoOut's fields, in its order, then the total.
        if tuple(columns[: len(TODO_FIELDS)]) != TODO_FIELDS:
            raise TypeError(f"the lane's columns {columns} are not TodoOut's {TODO_FIELDS}")
        self._warned_at: float | None = None

    async def page(self, claims: security.TokenClaims, limit: int, offset: int) -> bytes | None:
        # One more row than the page tells whether a next page follows.
        params = {**token_params(claims), "limit": limit + 1, "offset": offset}
        if self.counted:
            metrics.LANE_IN_USE.inc()
        try:
            rows = await self.reader.fetch_all(self.statement, params)
        except ReadFailed as exc:
            self._warn(exc)
            metrics.FAST_LANE_HANDOVERS.labels("read_failed").inc()
            return None
        finally:
            if self.counted:
                metrics.LANE_IN_USE.dec()
        if not rows:
            metrics.FAST_LANE_HANDOVERS.labels("token").inc()
            return None  # the token no longer holds: the app answers 401
        if rows[0][0] is None:  # an empty page
            if offset:
                metrics.FAST_LANE_HANDOVERS.labels("past_end").inc()
                return None  # past the end: the app counts the total
            return page_json([], 0, limit, offset, None)
        items = [dict(zip(TODO_FIELDS, row, strict=False)) for row in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            next_cursor = cursor_after(TodoQuery(owner_id=claims.user_id), items[-1])
        return page_json_of_rows(items, rows[0][-1], limit, offset, next_cursor)

    def _warn(self, exc: ReadFailed) -> None:
        # Such requests are still answered (by the app), at twice the database work:
        # worth a line, at most one a minute. Only the kind of failure, never data.
        now = time.monotonic()
        if self._warned_at is None or now - self._warned_at >= WARN_EVERY_SECONDS:
            self._warned_at = now
            logger.warning("fast lane read failed (%s): answered through the app", exc)


def on_loop_reads(database: Database, settings: Settings) -> OnLoopReads | None:
    """The lane's reads on the event loop, or None where it reads in a thread instead.

    None on SQLite, and with FAST_LANE_CONNECTIONS=0.
    """
    engine = database.engine
    if engine.dialect.name != "postgresql" or settings.fast_lane_connections == 0:
        return None
    statement = lane_statement()
    first_page = PreparedStatement(
        "todoapp_first_page", str(statement.compile(dialect=engine.dialect))
    )
    reader = reader_for(
        database,
        size=settings.fast_lane_connections,
        timeout=settings.db_pool_timeout,
        prepared=(first_page,),
        pooler=settings.db_pooler == "transaction",
    )
    columns = [column.name for column in statement.selected_columns]
    return OnLoopReads(reader, first_page, columns, counted=settings.metrics_enabled)


def lane_statement() -> Select[Any]:
    """The statement the lane runs: services.todos.first_page_with_token_check, its
    timestamps written as the answer writes them."""
    return times_as_json(first_page_with_token_check(), TIMESTAMPS)
