"""Pages of todos as the API writes them: for the routes and for the fast lane.

Written once here, so that the lane (fastlane.py) and the routes (routers/todos.py,
routers/admin.py) give the same answer byte for byte, and neither imports the other.
On PostgreSQL the lane has the database write each todo's JSON (todo_json_sql), the
same bytes pydantic writes, and puts the page around them (page_json_around).
"""

import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar

from pydantic import AwareDatetime, BaseModel, TypeAdapter
from sqlalchemy import ColumnElement, Connection, Text, case, cast, func, literal_column
from sqlalchemy.sql.expression import ColumnClause

from todoapp.deps import SessionSource
from todoapp.schemas import Page, TodoOut
from todoapp.security import TokenClaims
from todoapp.services import todos, users
from todoapp.services.paging import Found, Window
from todoapp.services.todos import TodoQuery

M = TypeVar("M", bound=BaseModel)


def page_of(model: type[M], page: Found[Any], window: Window) -> Page[M]:
    """A list route's answer: the page's rows as `model`s, in the Page envelope."""
    return Page[model].model_validate(  # type: ignore[valid-type]  # a class from a variable
        {
            "items": page.items,
            "total": page.total,
            "limit": window.limit,
            "offset": window.offset,
            "next_cursor": page.next_cursor,
        },
        from_attributes=True,
    )


_TODO_PAGE = TypeAdapter(Page[TodoOut])


def todo_page_json(
    sessions: SessionSource,
    claims: TokenClaims,
    query: TodoQuery,
    window: Window,
    *,
    verified_only: bool = False,
) -> bytes:
    """The caller's page of todos as JSON: one unit of work, run in a worker thread."""

    def read_page(db: Connection) -> Found[Any]:
        owner_id = users.user_id_for_token(db, claims, verified_only=verified_only)
        scoped = replace(query, owner_id=owner_id)
        return todos.list_todos(db, scoped, window)

    page = sessions.read(read_page)
    return page_json(page.items, page.total, window.limit, window.offset, page.next_cursor)


def page_json(
    items: Sequence[Any], total: int | None, limit: int, offset: int, next_cursor: str | None
) -> bytes:
    """A Page[TodoOut] as JSON bytes, from rows or mappings of the todo columns."""
    page = {
        "items": items,
        "total": total,
        "limit": limit,
        "offset": offset,
        "next_cursor": next_cursor,
    }
    return _TODO_PAGE.dump_json(_TODO_PAGE.validate_python(page, from_attributes=True))


def page_json_around(
    items: Sequence[str], total: int | None, limit: int, offset: int, next_cursor: str | None
) -> bytes:
    """page_json's answer for items already written as JSON (by todo_json_sql): the
    envelope written by pydantic as page_json writes it, the items put inside."""
    envelope = page_json((), total, limit, offset, next_cursor)
    written = ",".join(items).encode()
    # "items" is the envelope's first field: its empty list is the first "[]".
    return envelope.replace(_NO_ITEMS, b'"items":[' + written + b"]", 1)


_NO_ITEMS = b'"items":[]'


def _sql_text(text: str) -> ColumnElement[str]:
    """A constant string written into the statement (no parameter to bind)."""
    return literal_column("'" + text.replace("'", "''") + "'", Text)


def _utc_json(column: ColumnClause[Any]) -> ColumnElement[str]:
    # As pydantic writes an aware datetime in UTC: "2026-11-30T06:33:22.466503Z", the
    # fraction only when there is one (".000000" can only be the fraction).
    utc = func.timezone(_sql_text("UTC"), column)
    written = func.to_char(utc, _sql_text('YYYY-MM-DD"T"HH24:MI:SS.US'))
    return func.concat(
        _sql_text('"'), func.replace(written, _sql_text(".000000"), _sql_text("")), _sql_text('Z"')
    )


def _value_json(column: ColumnClause[Any], annotation: Any) -> ColumnElement[str]:
    if annotation in (AwareDatetime, datetime):
        return _utc_json(column)
    if annotation is bool:
        return case((column, _sql_text("true")), else_=_sql_text("false"))
    if annotation is int:
        return cast(column, Text)
    if annotation is str:  # to_json escapes as pydantic does (quotes, \\, controls)
        return cast(func.to_json(column), Text)
    # Not written here yet (None among them: every TodoOut field is required).
    raise TypeError(f"todo_json_sql cannot write a {annotation!r} field")


def todo_json_sql(columns: Any) -> ColumnElement[str]:
    """Each row's TodoOut as JSON text, written by PostgreSQL byte for byte as pydantic
    writes it: compact, fields in the model's order, strings escaped alike, times as
    above. `columns` is a row source's `.c` holding the todo's columns. PostgreSQL
    only; tests/test_fastlane.py holds it to pydantic's own answer."""
    decorators = TodoOut.__pydantic_decorators__
    if (
        TodoOut.model_computed_fields
        or decorators.field_serializers
        or decorators.model_serializers
    ):
        raise TypeError("todo_json_sql cannot write TodoOut's computed fields or serializers")
    parts: list[ColumnElement[str]] = []
    for index, (name, field) in enumerate(TodoOut.model_fields.items()):
        if field.metadata or field.alias not in (None, name) or field.exclude:
            raise TypeError(f"todo_json_sql cannot write {name}: it has constraints or an alias")
        parts.append(_sql_text(("{" if index == 0 else ",") + json.dumps(name) + ":"))
        parts.append(_value_json(columns[name], field.annotation))
    parts.append(_sql_text("}"))
    return func.concat(*parts)
