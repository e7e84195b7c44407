"""Pages of todos and users as the API writes them: for the routes and the fast lane.

Written once here, so that the lane (fastlane.py) and the routes (routers/todos.py,
routers/admin.py) give the same answer byte for byte, and neither imports the other.
The statements hand plain rows of the items' columns (on PostgreSQL with their
timestamps already as JSON text), which are written without a validation pass
(page_json_of_rows): the same bytes as the models', at a fraction of the cost.
"""

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, TypeAdapter
from pydantic_core import to_json

from todoapp.deps import SessionSource
from todoapp.schemas import Page, TodoOut, UserOut
from todoapp.security import TokenClaims
from todoapp.services import todos, users
from todoapp.services.paging import Found, Window
from todoapp.services.todos import TodoQuery
from todoapp.services.users import CALLER_COLUMNS, Caller, UserQuery

_PAGE = TypeAdapter(Page[TodoOut])  # writes page_json_of_rows' envelope (see there)


def todo_page_json(
    sessions: SessionSource,
    claims: TokenClaims,
    query: TodoQuery,
    window: Window,
    *,
    verified_only: bool = False,
    admin: bool = False,
) -> bytes:
    """A page of todos as JSON, the caller checked in the same statement (see
    services.todos.list_todos): the caller's own, or with `admin`, anyone's. One unit
    of work, run in a worker thread."""
    caller = Caller(claims, verified_only)
    page = sessions.read(lambda db: todos.list_todos(db, caller, query, window, admin=admin))
    return _rows_page_json(TODO_FIELDS, page, window)


def user_page_json(
    sessions: SessionSource, claims: TokenClaims, query: UserQuery, window: Window
) -> bytes:
    """A page of users as JSON, for an admin checked in the same statement (see
    services.users.list_users). One unit of work, run in a worker thread."""
    page = sessions.read(lambda db: users.list_users(db, Caller(claims), query, window))
    return _rows_page_json(USER_FIELDS, page, window)


def _rows_page_json(fields: tuple[str, ...], page: Found[Any], window: Window) -> bytes:
    # Each row: the caller's columns, then the item's, in its model's order (see there).
    end = CALLER_COLUMNS + len(fields)
    items = [dict(zip(fields, row[CALLER_COLUMNS:end], strict=True)) for row in page.items]
    return page_json_of_rows(items, page.total, window.limit, window.offset, page.next_cursor)


def page_json(
    items: Sequence[Any], total: int | None, limit: int, offset: int, next_cursor: str | None
) -> bytes:
    """A Page[TodoOut] as JSON bytes, its items validated into TodoOut first (the
    envelope of page_json_of_rows, and the lane's empty first page)."""
    page = {
        "items": items,
        "total": total,
        "limit": limit,
        "offset": offset,
        "next_cursor": next_cursor,
    }
    return _PAGE.dump_json(_PAGE.validate_python(page, from_attributes=True))


def page_json_of_rows(
    items: list[dict[str, Any]],
    total: int | None,
    limit: int,
    offset: int,
    next_cursor: str | None,
) -> bytes:
    """A page as JSON whose items are already plain values of their model's fields, in
    its order (as the statements read them, typed by the database's own columns, their
    timestamps as JSON text on PostgreSQL): written by pydantic-core straight away,
    without validating each one into the model first. The same bytes as the model's:
    the envelope is page_json's own (the same for every Page[...]), the items put
    inside. The models are checked for it at import (_written_as_is)."""
    envelope = page_json((), total, limit, offset, next_cursor)
    # "items" is the envelope's first field: its empty list is the first "[]".
    return envelope.replace(_NO_ITEMS, b'"items":' + to_json(items), 1)


_NO_ITEMS = b'"items":[]'


def _written_as_is(model: type[BaseModel]) -> type[BaseModel]:
    """`model`, refused (at import) if pydantic would write its values other than as
    they are: a computed field, a serializer, an alias, an excluded field. Then
    page_json_of_rows would not give the model's bytes."""
    decorators = model.__pydantic_decorators__
    if model.model_computed_fields or decorators.field_serializers or decorators.model_serializers:
        raise TypeError(f"{model.__name__} has computed fields or serializers")
    for name, field in model.model_fields.items():
        if field.alias not in (None, name) or field.serialization_alias or field.exclude:
            raise TypeError(f"{model.__name__}.{name} is written under another name or not at all")
    return model


def _fields_of(model: type[BaseModel], columns: tuple[str, ...]) -> tuple[str, ...]:
    """The model's fields, refused (at import) unless they are the columns a page's
    statement reads for its items, in the same order (_rows_page_json takes them by
    position), and written as they are."""
    fields = tuple(_written_as_is(model).model_fields)
    if fields != columns:
        raise TypeError(f"{model.__name__}'s fields {fields} are not the columns {columns}")
    return fields


TODO_FIELDS = _fields_of(TodoOut, todos.ITEM_COLUMNS)
USER_FIELDS = _fields_of(UserOut, users.ITEM_COLUMNS)
