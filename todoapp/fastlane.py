"""A fast lane for the hottest request, `GET /todos` with at most `limit` and `offset`.

It answers exactly what the FastAPI route answers (the same function makes the page,
see routers/todos.py), without FastAPI's routing, dependency solving and per-parameter
validation, which cost more than the database work itself. It only ever answers 200:
any request it cannot serve plainly (other parameters, a missing or bad token, a
revoked user, a busy or unavailable database, a test's dependency overrides) goes on
to the app unchanged, which gives the contract's answer. Reads are idempotent, so a
fall-through after a failed attempt is safe.
"""

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from todoapp import security
from todoapp.deps import MAX_ID, get_session_source
from todoapp.routers.todos import todo_page_json
from todoapp.services.todos import TodoQuery

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_DEFAULT_QUERY = TodoQuery()


def _plain_int(value: str, low: int, high: int) -> int | None:
    """An integer written plainly (digits only, no sign or padding) within bounds."""
    if not value.isascii() or not value.isdigit() or (len(value) > 1 and value[0] == "0"):
        return None
    number = int(value)
    return number if low <= number <= high else None


def _paging(query_string: bytes) -> tuple[int, int] | None:
    limit, offset = 20, 0
    seen: set[str] = set()
    for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if name in seen:
            return None
        seen.add(name)
        if name == "limit":
            parsed = _plain_int(value, 1, 100)
        elif name == "offset":
            parsed = _plain_int(value, 0, MAX_ID)
        else:
            return None
        if parsed is None:
            return None
        if name == "limit":
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
        state = self.fastapi_app.state
        if get_session_source in self.fastapi_app.dependency_overrides:
            return None
        paging = _paging(scope["query_string"])
        token = _bearer(scope["headers"])
        claims = security.read_access_token(token) if paging and token else None
        if paging is None or claims is None:
            return None
        try:
            await asyncio.wait_for(state.admission.acquire(), state.settings.db_pool_timeout)
        except TimeoutError:
            return None
        try:
            limit, offset = paging
            return await run_in_threadpool(
                todo_page_json, state.session_source, claims, _DEFAULT_QUERY, limit, offset
            )
        except Exception:  # revoked, unavailable, not migrated...: the app will say which
            return None
        finally:
            state.admission.release()
