"""Pages of todos as the API writes them: for the routes and for the fast lane.

Written once here, so that the lane (fastlane.py) and the routes (routers/todos.py,
routers/admin.py) give the same answer byte for byte, and neither imports the other.
On PostgreSQL the lane hands plain rows of the todo columns, which are written without
a validation pass (page_json_of_rows): the same bytes, at about half the cost.
"""

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter
from pydantic_core import to_json
from sqlalchemy import Connection

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


def page_json_of_rows(
    items: list[dict[str, Any]],
    total: int | None,
    limit: int,
    offset: int,
    next_cursor: str | None,
) -> bytes:
    """page_json's answer for todos that are already plain values of TodoOut's fields,
    in its order (as the lane reads them: typed by the database's own columns): written
    by pydantic-core straight away, without validating each one into a TodoOut first.
    The envelope is page_json's own, the items put inside."""
    envelope = page_json((), total, limit, offset, next_cursor)
    # "items" is the envelope's first field: its empty list is the first "[]".
    return envelope.replace(_NO_ITEMS, b'"items":' + to_json(items), 1)


_NO_ITEMS = b'"items":[]'


def _written_as_is(model: type[BaseModel]) -> type[BaseModel]:
    """`model`, refused (at import) if pydantic would write its values other than as
    they are: a computed field, a serializer, an alias, an excluded field. Then
    page_json_of_rows would not give page_json's bytes."""
    decorators = model.__pydantic_decorators__
    if model.model_computed_fields or decorators.field_serializers or decorators.model_serializers:
        raise TypeError(f"{model.__name__} has computed fields or serializers")
    for name, field in model.model_fields.items():
        if field.alias not in (None, name) or field.serialization_alias or field.exclude:
            raise TypeError(f"{model.__name__}.{name} is written under another name or not at all")
    return model


TODO_FIELDS = tuple(_written_as_is(TodoOut).model_fields)  # the lane's columns, in order
