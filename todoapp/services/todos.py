"""Todos: owner-scoped CRUD, filtering, search, sorting and paging."""

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal, NoReturn

from sqlalchemy import (
    ColumnElement,
    Connection,
    Row,
    Select,
    bindparam,
    delete,
    func,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import BindParameter

from todoapp.errors import RESOURCE_CHANGED, NotFound, PreconditionFailed
from todoapp.models import Todo, User, UserSession, utcnow
from todoapp.services.users import commit, token_holds

SortKey = Literal[
    "id", "-id", "priority", "-priority", "title", "-title", "created_at", "-created_at"
]

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


def like_pattern(text: str) -> str:
    """A LIKE pattern matching `text` anywhere, with %, _ and \\ taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


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


@lru_cache(maxsize=256)
def _statements(
    sort: str, owner: bool, complete: bool, priority: bool, search: bool
) -> tuple[Select[*tuple[Any, ...]], Select[int]]:
    """The page and count statements for one shape of query, built once.

    Values travel as bind parameters, so each of the 128 shapes is constructed (and
    compiled, in SQLAlchemy's cache) once per process instead of once per request.
    """
    conditions: list[ColumnElement[bool]] = []
    if owner:
        conditions.append(Todo.owner_id == bindparam("owner_id"))
    if complete:
        conditions.append(Todo.complete == bindparam("complete"))
    if priority:
        conditions.append(Todo.priority == bindparam("priority"))
    if search:
        pattern: BindParameter[str] = bindparam("pattern")
        conditions.append(
            or_(
                Todo.title.ilike(pattern, escape="\\"),
                Todo.description.ilike(pattern, escape="\\"),
            )
        )
    count = select(func.count()).select_from(Todo).where(*conditions)
    return _page(conditions, sort), count


def _page(conditions: list[ColumnElement[bool]], sort: str) -> Select[*tuple[Any, ...]]:
    """One page of the todos that meet the conditions, each row ending in the total."""
    return (
        select(*_COLUMNS, func.count().over().label("total"))
        .where(*conditions)
        .order_by(*_order_by(sort))
        .limit(bindparam("limit"))
        .offset(bindparam("offset"))
    )


def list_todos(
    db: Session | Connection, query: TodoQuery, *, limit: int, offset: int
) -> tuple[Sequence[Row[*tuple[Any, ...]]], int]:
    """One page of todos as rows, and how many match in all.

    The page and its total come from one statement (`count(*) over ()`); only a page
    past the end needs a second one to learn the total.
    """
    page, count = _statements(
        query.sort,
        query.owner_id is not None,
        query.complete is not None,
        query.priority is not None,
        bool(query.q),
    )
    params: dict[str, Any] = {
        "owner_id": query.owner_id,
        "complete": query.complete,
        "priority": query.priority,
        "pattern": like_pattern(query.q) if query.q else None,
    }
    items = db.execute(page, {**params, "limit": limit, "offset": offset}).all()
    if items:
        return items, items[0].total
    if offset == 0:
        return items, 0
    total: int = db.execute(count, params).scalar_one()
    return items, total


@lru_cache(maxsize=1)
def first_page_with_token_check() -> Select[*tuple[Any, ...]]:
    """A page of todos in id order with its total, and the token check, in one statement.

    PostgreSQL only (LATERAL). Its parameters: users.token_params, limit and offset.
    It gives no row when the token no longer holds (user gone or inactive, the token
    revoked, its session ended or expired); one row with a NULL id when the page is
    empty; else the page's rows, each ending in the total, like list_todos' page.
    """
    page = _page([Todo.owner_id == User.id], "id").lateral("page")
    return (
        select(page)
        .select_from(User)
        .join(UserSession, UserSession.user_id == User.id)
        .outerjoin(page, true())
        .where(*token_holds())  # the same check as every other route's
        .order_by(page.c.id)
    )


def get_todo(db: Session, todo_id: int, *, owner_id: int | None) -> Todo:
    """The todo, if it exists and (when owner_id is given) belongs to that owner."""
    query = select(Todo).where(Todo.id == todo_id)
    if owner_id is not None:
        query = query.where(Todo.owner_id == owner_id)
    todo = db.scalar(query)
    if todo is None:
        raise NotFound(NOT_FOUND)
    return todo


def create_todo(db: Session, owner_id: int, fields: dict[str, Any]) -> Todo:
    todo = Todo(owner_id=owner_id, **fields)
    db.add(todo)
    commit(db)
    return todo


def _refuse(db: Session, todo_id: int, owner_id: int | None) -> NoReturn:
    """Why a conditional write found no row: NotFound, else PreconditionFailed."""
    query = select(Todo.id).where(Todo.id == todo_id)
    if owner_id is not None:
        query = query.where(Todo.owner_id == owner_id)
    if db.execute(query).first() is None:
        raise NotFound(NOT_FOUND)
    raise PreconditionFailed(RESOURCE_CHANGED)


def update_todo(
    db: Session,
    todo_id: int,
    *,
    owner_id: int,
    changes: dict[str, Any],
    expected_versions: Collection[int] | None = None,
) -> Row[*tuple[Any, ...]]:
    """Apply `changes` in one statement, which also bumps the version; the todo's row.

    With `expected_versions`, only while the todo is at one of them (If-Match): two
    writers that read the same version cannot both write, since the second one's
    UPDATE waits for the first one's row lock and then finds the new version.
    """
    where = [Todo.id == todo_id, Todo.owner_id == owner_id]
    if expected_versions is not None:
        where.append(Todo.version.in_(expected_versions))
    if not changes:  # nothing to write; the precondition still applies
        row = db.execute(select(*_COLUMNS, Todo.version).where(*where)).first()
    else:
        row = db.execute(
            update(Todo)
            .where(*where)
            .values(**changes, updated_at=utcnow(), version=Todo.version + 1)
            .returning(*_COLUMNS, Todo.version),
            execution_options={"synchronize_session": False},
        ).first()
    if row is None:
        _refuse(db, todo_id, owner_id)
    commit(db)
    return row


def delete_todo(
    db: Session,
    todo_id: int,
    *,
    owner_id: int | None,
    expected_versions: Collection[int] | None = None,
) -> None:
    query = delete(Todo).where(Todo.id == todo_id)
    if owner_id is not None:
        query = query.where(Todo.owner_id == owner_id)
    if expected_versions is not None:
        query = query.where(Todo.version.in_(expected_versions))
    if db.execute(query).rowcount == 0:  # type: ignore[attr-defined]
        _refuse(db, todo_id, owner_id)
    commit(db)
