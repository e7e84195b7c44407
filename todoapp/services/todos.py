"""Todos: owner-scoped CRUD, filtering, search, sorting and paging."""

from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import ColumnElement, delete, func, or_, select
from sqlalchemy.orm import Session

from todoapp.errors import NotFound
from todoapp.models import Todo, utcnow
from todoapp.services.users import commit

SortKey = Literal[
    "id", "-id", "priority", "-priority", "title", "-title", "created_at", "-created_at"
]
SORT_KEYS: tuple[str, ...] = SortKey.__args__  # type: ignore[attr-defined]

_SORT_COLUMNS: dict[str, Any] = {
    "id": Todo.id,
    "priority": Todo.priority,
    "title": func.lower(Todo.title),  # titles sort case-insensitively
    "created_at": Todo.created_at,
}
NOT_FOUND = "todo not found"


@dataclass(frozen=True, slots=True)
class TodoQuery:
    complete: bool | None = None
    priority: int | None = None
    q: str | None = None
    sort: str = "id"
    owner_id: int | None = None


def _conditions(query: TodoQuery) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if query.owner_id is not None:
        conditions.append(Todo.owner_id == query.owner_id)
    if query.complete is not None:
        conditions.append(Todo.complete.is_(query.complete))
    if query.priority is not None:
        conditions.append(Todo.priority == query.priority)
    if query.q:
        # autoescape: % and _ in the search text are plain characters.
        conditions.append(
            or_(
                Todo.title.icontains(query.q, autoescape=True),
                Todo.description.icontains(query.q, autoescape=True),
            )
        )
    return conditions


def _order_by(sort: str) -> list[Any]:
    descending = sort.startswith("-")
    column = _SORT_COLUMNS[sort.lstrip("-")]
    first = column.desc() if descending else column.asc()
    # id ascending breaks ties, so pages never overlap or skip rows.
    return [first] if column is Todo.id else [first, Todo.id.asc()]


# Read paths take rows, not ORM objects: no identity map or instance state to build.
_COLUMNS = (
    Todo.id,
    Todo.title,
    Todo.description,
    Todo.priority,
    Todo.complete,
    Todo.owner_id,
    Todo.created_at,
    Todo.updated_at,
)


def list_todos(
    db: Session, query: TodoQuery, *, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    """One page of todos as dicts, and how many match in all.

    The page and its total come from one statement (`count(*) over ()`); only a page
    past the end needs a second one to learn the total.
    """
    conditions = _conditions(query)
    page = (
        select(*_COLUMNS, func.count().over().label("total"))
        .where(*conditions)
        .order_by(*_order_by(query.sort))
        .limit(limit)
        .offset(offset)
    )
    items = [dict(row) for row in db.execute(page).mappings()]
    if items:
        return items, items[0]["total"]
    if offset == 0:
        return items, 0
    total = db.scalar(select(func.count()).select_from(Todo).where(*conditions)) or 0
    return items, total


def get_todo(db: Session, todo_id: int, *, owner_id: int | None, for_update: bool = False) -> Todo:
    """The todo, if it exists and (when owner_id is given) belongs to that owner.

    `for_update` locks the row until commit (PostgreSQL), so that concurrent writes to
    one todo apply one after the other, each whole.
    """
    query = select(Todo).where(Todo.id == todo_id)
    if owner_id is not None:
        query = query.where(Todo.owner_id == owner_id)
    if for_update:
        query = query.with_for_update()
    todo = db.scalar(query)
    if todo is None:
        raise NotFound(NOT_FOUND)
    return todo


def create_todo(db: Session, owner_id: int, fields: dict[str, Any]) -> Todo:
    todo = Todo(owner_id=owner_id, **fields)
    db.add(todo)
    commit(db)
    return todo


def update_todo(db: Session, todo_id: int, *, owner_id: int, changes: dict[str, Any]) -> Todo:
    # Locked: the ORM writes only the columns that differ from what it read, so two
    # unlocked writers could each land half of their change.
    todo = get_todo(db, todo_id, owner_id=owner_id, for_update=bool(changes))
    if not changes:
        return todo
    for field, value in changes.items():
        setattr(todo, field, value)
    todo.updated_at = utcnow()
    commit(db)
    return todo


def delete_todo(db: Session, todo_id: int, *, owner_id: int | None) -> None:
    query = delete(Todo).where(Todo.id == todo_id)
    if owner_id is not None:
        query = query.where(Todo.owner_id == owner_id)
    if db.execute(query).rowcount == 0:  # type: ignore[attr-defined]
        raise NotFound(NOT_FOUND)
    commit(db)
