"""Todos: owner-scoped CRUD, filtering, search, sorting and paging."""

from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from functools import lru_cache
from typing import Any, Literal, NoReturn, cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    Integer,
    Select,
    String,
    Table,
    and_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    true,
    tuple_,
    type_coerce,
    update,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.sql.selectable import Subquery

from todoapp.errors import RESOURCE_CHANGED, NotFound, PreconditionFailed
from todoapp.models import Todo, TodoCount, TodoTotal, User, UserSession, utcnow
from todoapp.prepared import PREPARED, first_row
from todoapp.services import users
from todoapp.services.paging import (
    ZERO,
    Found,
    Scalar,
    Window,
    found,
    like_pattern,
    make_cursor,
    times_as_json,
)
from todoapp.services.users import Caller, commit, token_holds

SortKey = Literal[
    "id", "-id", "priority", "-priority", "title", "-title", "created_at", "-created_at"
]

# The sort keys. created_at is compared as the database stores it (SQLite keeps text,
# whose digits a bound datetime would not reproduce), so a cursor's key is exact.
_SORT_COLUMNS: dict[str, Any] = {
    "id": Todo.id,
    "priority": Todo.priority,
    "title": func.lower(Todo.title),  # titles sort case-insensitively
    "created_at": type_coerce(Todo.created_at, String),
}
NOT_FOUND = "todo not found"


@dataclass(frozen=True, slots=True)
class TodoQuery:
    complete: bool | None = None
    priority: int | None = None
    q: str | None = None
    sort: str = "id"
    owner_id: int | None = None

    def listing(self) -> tuple[Scalar, ...]:
        """What a cursor is bound to: whose todos, the filters and the sort."""
        return ("todos", self.owner_id, self.complete, self.priority, self.q or None, self.sort)


# Sorting always ends with id ascending. A descending sort (key DESC, id ASC) is written
# as (key, -id) descending, which is the same order: one direction for both columns,
# so that an index on (key, (-id)) yields it and a cursor is one row comparison.
_MINUS_ID = -Todo.id


def _order_by(sort: str) -> list[Any]:
    if sort == "id":
        return [Todo.id.asc()]
    if sort == "-id":
        return [Todo.id.desc()]
    key = _SORT_COLUMNS[sort.lstrip("-")]
    if sort.startswith("-"):
        return [key.desc(), _MINUS_ID.desc()]
    return [key.asc(), Todo.id.asc()]


def _after_cursor(sort: str) -> ColumnElement[bool]:
    """The rows after the cursor's row, in the order of `sort` (keyset paging)."""
    # Typed in the SQL: PostgreSQL cannot PREPARE `-$1` of a parameter it cannot type.
    after_id: ColumnElement[int] = bindparam("after_id").cast(Integer)
    if sort == "id":
        return Todo.id > after_id
    if sort == "-id":
        return Todo.id < after_id
    key = _SORT_COLUMNS[sort.lstrip("-")]
    after_key = bindparam("after_key", type_=key.type)
    if sort.startswith("-"):
        return tuple_(key, _MINUS_ID) < tuple_(after_key, -after_id)
    return tuple_(key, Todo.id) > tuple_(after_key, after_id)


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
ITEM_COLUMNS = tuple(column.key for column in _COLUMNS)  # a page's items' (schemas.TodoOut)


def _page(
    conditions: list[ColumnElement[bool]], sort: str, *, after_cursor: bool = False
) -> Select[*tuple[Any, ...]]:
    """One page of the todos that meet the conditions, plus one row to tell whether
    another page follows (the caller binds limit + 1); each row ends in its sort key."""
    columns: list[Any] = list(_COLUMNS)
    if sort not in ("id", "-id"):
        columns.append(_SORT_COLUMNS[sort.lstrip("-")].label("sort_key"))
    where = [*conditions, _after_cursor(sort)] if after_cursor else conditions
    return (
        select(*columns)
        .where(*where)
        .order_by(*_order_by(sort))
        .limit(bindparam("limit"))
        .offset(bindparam("offset"))
    )


def _filters(
    owner: bool, complete: bool, priority: bool, search: bool
) -> list[ColumnElement[bool]]:
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
    return conditions


@lru_cache(maxsize=512)
def _statements(
    sort: str, owner: bool, complete: bool, priority: bool, search: bool, after_cursor: bool
) -> tuple[Select[*tuple[Any, ...]], Select[int]]:
    """The page and count statements for one shape of query, built once.

    Values travel as bind parameters, so each of the 256 shapes is constructed (and
    compiled, in SQLAlchemy's cache) once per process instead of once per request.
    The count reads the counts the database keeps, except for a search (`q`).
    """
    conditions = _filters(owner, complete, priority, search)
    if search:  # the matching rows are counted (through the trigram index, on PostgreSQL)
        count = select(func.count()).select_from(Todo).where(*conditions)
    else:
        count = _counted(owner, complete, priority)
    return _page(conditions, sort, after_cursor=after_cursor), count


def _counted(owner: bool, complete: bool, priority: bool) -> Select[int]:
    """How many todos meet the filters, from the counts the database keeps: an owner's
    from todo_counts (at most ten rows an owner, however many todos they hold), every
    owner's from todo_totals (at most 160 rows, however many owners)."""
    counts: type[TodoCount] | type[TodoTotal] = TodoCount if owner else TodoTotal
    conditions: list[ColumnElement[bool]] = []
    if owner:
        conditions.append(TodoCount.owner_id == bindparam("owner_id"))
    if complete:
        conditions.append(counts.complete == bindparam("complete"))
    if priority:
        conditions.append(counts.priority == bindparam("priority"))
    return select(func.coalesce(func.sum(counts.todos), ZERO)).where(*conditions)


def _key_of(sort: str, row: Mapping[Any, Any]) -> list[Scalar]:
    if sort in ("id", "-id"):
        return [row["id"]]
    key = row["sort_key"]
    if isinstance(key, datetime):  # PostgreSQL's timestamptz: exact in ISO 8601
        key = key.isoformat()
    return [key, row["id"]]


def cursor_after(query: TodoQuery, row: Mapping[Any, Any]) -> str:
    """The cursor for the rows that follow `row` (a row of a page) in this listing."""
    return make_cursor(query.listing(), _key_of(query.sort, row))


def _order_of(page: Subquery, sort: str) -> list[Any]:
    """_order_by over a page's own columns (as _page selects them)."""
    if sort == "id":
        return [page.c.id.asc()]
    if sort == "-id":
        return [page.c.id.desc()]
    if sort.startswith("-"):
        return [page.c.sort_key.desc(), (-page.c.id).desc()]
    return [page.c.sort_key.asc(), page.c.id.asc()]


# The timestamps of todos as rows give them (see paging.times_as_json).
TIMESTAMPS = ("created_at", "updated_at")


@lru_cache(maxsize=1024)
def _checked_statements(
    sort: str,
    owner: bool,
    complete: bool,
    priority: bool,
    search: bool,
    after_cursor: bool,
    admin: bool,
    postgresql: bool,
) -> tuple[Select[*tuple[Any, ...]], Select[int] | None]:
    """For one shape of query, built once: the page behind its caller's check (see
    users.behind_token_check), and the count, unless the statement carries the total
    already (users.counted_in_page; a cursor page's is never used). On PostgreSQL the
    page's timestamps come as the JSON text an answer writes (paging.times_as_json)."""
    page, count = _statements(sort, owner, complete, priority, search, after_cursor)
    folded = users.counted_in_page(after_cursor, search)
    statement = users.behind_token_check(
        page, lambda rows: _order_of(rows, sort), admin=admin, total=count if folded else None
    )
    if postgresql:
        statement = times_as_json(statement, TIMESTAMPS)
    if not (complete or priority or search):
        statement = statement.execution_options(**PREPARED)  # planned alike for any values
    return statement, None if folded else count


def list_todos(
    db: Connection,
    caller: Caller,
    query: TodoQuery,
    window: Window,
    *,
    admin: bool = False,
) -> Found[Any]:
    """One page of todos (see paging.found for its total and next cursor), the caller
    checked in the same statement (users.checked_page: each row is led by the caller's
    columns): the caller's own todos, or with `admin`, anyone's (query.owner_id's, if
    given) for an admin.

    A cursor page starts right after the cursor's row (a keyset page): through an
    index, at the same cost whatever its depth.
    """
    if not admin:
        query = replace(query, owner_id=caller.claims.user_id)
    statement, count = _checked_statements(
        query.sort,
        query.owner_id is not None,
        query.complete is not None,
        query.priority is not None,
        bool(query.q),
        window.cursor is not None,
        admin,
        db.dialect.name == "postgresql",
    )
    params: dict[str, Any] = {
        "owner_id": query.owner_id,
        "complete": query.complete,
        "priority": query.priority,
        "pattern": like_pattern(query.q) if query.q else None,
    }
    page_params = {**params, "limit": window.limit + 1, "offset": window.offset}
    if window.cursor is not None:
        size = 1 if query.sort in ("id", "-id") else 2
        key = users.cursor_key(db, caller, window.cursor, query.listing(), size, admin=admin)
        page_params.update(after_key=key[0], after_id=key[-1])
    rows, count_all = users.checked_page(
        db, statement, page_params, caller, admin=admin, count=count, count_params=params
    )
    return found(rows, window, lambda row: cursor_after(query, row._asdict()), count_all)


@lru_cache(maxsize=1)
def first_page_with_token_check() -> Select[*tuple[Any, ...]]:
    """A page of todos in id order with its total, and the token check, in one statement.

    PostgreSQL only (LATERAL). Its parameters: users.token_params, limit (bind the
    page's limit + 1, as for list_todos) and offset. It gives no row when the token
    no longer holds (user gone or inactive, the token revoked, its session ended or
    expired); one row with a NULL id when the page is empty; else the page's rows,
    each ending in the total (counted once: the count does not depend on the row).
    """
    page = _page([Todo.owner_id == User.id], "id").lateral("page")
    total = (
        select(func.coalesce(func.sum(TodoCount.todos), ZERO))
        .where(TodoCount.owner_id == bindparam("user_id"))
        .scalar_subquery()
    )
    return (
        select(page, total.label("total"))
        .select_from(User)
        .join(UserSession, UserSession.user_id == User.id)
        .outerjoin(page, true())
        .where(*token_holds())  # the same check as every other route's
        .order_by(page.c.id)
    )


def read_todo(db: Session | Connection, todo_id: int, *, caller: Caller) -> Any:
    """The caller's todo (its columns and version), checking the caller in the same
    statement: NotAuthenticated, PermissionDenied or NotFound when there is none."""
    found = first_row(db, _READ_OWN, {**caller.params(), "todo_id": todo_id})
    if found is None or (caller.verified_only and not found.is_verified):
        users.refuse_caller(db, caller)  # says why: 401 or 403
    assert found is not None
    if found.id is None:
        raise NotFound(NOT_FOUND)
    return found


# From the caller's user and session (no row: the token does not hold), the todo joined
# when it is theirs (NULL columns: not found).
# A row by its keys: planned once per connection (see prepared.py), as the writes below.
_READ_OWN = (
    select(*_COLUMNS, Todo.version, User.is_verified)
    .select_from(User)
    .join(UserSession, UserSession.user_id == User.id)
    .outerjoin(Todo, and_(Todo.id == bindparam("todo_id"), Todo.owner_id == User.id))
    .where(*token_holds())
    .execution_options(**PREPARED)
)


def create_todo(db: Connection, fields: dict[str, Any], *, caller: Caller) -> Any:
    """A new todo of the caller's, inserted by the statement that checks the caller: one
    statement, so run it with Database.write_one (committed as it runs)."""
    statement = _insert_checked(tuple(fields), caller.verified_only)
    row = first_row(db, statement, {**caller.params(), **_values(fields)})
    if row is None:
        users.refuse_caller(db, caller)
    assert row is not None
    return row


def _values(fields: Mapping[str, Any]) -> dict[str, Any]:
    """A todo's new values, as the write statements below bind them."""
    return {f"new_{name}": value for name, value in fields.items()}


def _new_value(name: str) -> BindParameter[Any]:
    column = cast(Table, Todo.__table__).c[name]
    return bindparam(f"new_{name}", type_=column.type)


@lru_cache(maxsize=64)
def _insert_checked(names: tuple[str, ...], verified_only: bool) -> Any:
    """INSERT ... SELECT of the new todo's values, from the caller's user when the token
    holds; built once per set of fields (its values are bound)."""
    # Core's INSERT ... SELECT on the table (the ORM's insert(Todo) inserts rows it holds).
    table = cast(Table, Todo.__table__)
    values = [_new_value(name) for name in names]
    checked_owner = select(User.id, *values).where(*users.caller_conditions(verified_only))
    return (
        insert(table)
        .from_select(["owner_id", *names], checked_owner)
        .returning(*_COLUMNS, Todo.version)
        .execution_options(**PREPARED)
    )


def _refuse(db: Session | Connection, todo_id: int, owner_id: int | None) -> NoReturn:
    """Why a conditional write found no row: NotFound, else PreconditionFailed."""
    query = select(Todo.id).where(Todo.id == todo_id)
    if owner_id is not None:
        query = query.where(Todo.owner_id == owner_id)
    if db.execute(query).first() is None:
        raise NotFound(NOT_FOUND)
    raise PreconditionFailed(RESOURCE_CHANGED)


def _refuse_caller(db: Session | Connection, todo_id: int, caller: Caller) -> NoReturn:
    """Why a caller's write found no row: 401 or 403 (the caller), else 404 or 412."""
    users.refuse_caller(db, caller)
    _refuse(db, todo_id, caller.claims.user_id)


def update_todo(
    db: Connection,
    todo_id: int,
    *,
    caller: Caller,
    changes: dict[str, Any],
    expected_versions: Collection[int] | None = None,
) -> Any:
    """Apply `changes` in one statement, which also bumps the version and checks the
    caller (their token holds and the todo is theirs); the todo's row. One statement:
    run it with Database.write_one.

    With `expected_versions`, only while the todo is at one of them (If-Match): two
    writers that read the same version cannot both write, since the second one's
    UPDATE waits for the first one's row lock and then finds the new version.
    """
    versions, versions_params = _versions(expected_versions)
    statement = _update_checked(tuple(changes), caller.verified_only, versions)
    params = {**caller.params(), **_values(changes), "todo_id": todo_id, **versions_params}
    row = first_row(db, statement, params)
    if row is None:
        _refuse_caller(db, todo_id, caller)
    return row


# The shapes of an If-Match's versions: none asked, exactly one (what a frontend sends:
# the ETag it read), or any other number (a list; its SQL text varies with its length,
# so it is not prepared: a client could otherwise make one prepared statement per length).
_ANY_VERSION, _ONE_VERSION, _VERSIONS = "any", "one", "list"


def _versions(expected_versions: Collection[int] | None) -> tuple[str, dict[str, Any]]:
    """The shape of an If-Match's versions, and the values a statement of it binds."""
    if expected_versions is None:
        return _ANY_VERSION, {}
    if len(expected_versions) == 1:
        return _ONE_VERSION, {"version": next(iter(expected_versions))}
    return _VERSIONS, {"versions": list(expected_versions)}


def _own_todo(verified_only: bool, versions: str) -> list[ColumnElement[bool]]:
    """The caller's todo (bound: todo_id, the token's parameters), at the version or
    versions asked (bound: version, or versions, a list; see _versions)."""
    where = [
        Todo.id == bindparam("todo_id"),
        Todo.owner_id == bindparam("user_id"),
        users.caller_holds(verified_only),
    ]
    if versions == _ONE_VERSION:
        where.append(Todo.version == bindparam("version"))
    elif versions == _VERSIONS:
        where.append(Todo.version.in_(bindparam("versions", expanding=True)))
    return where


def _prepared_unless_a_list(statement: Any, versions: str) -> Any:
    return statement if versions == _VERSIONS else statement.execution_options(**PREPARED)


@lru_cache(maxsize=128)
def _update_checked(names: tuple[str, ...], verified_only: bool, versions: str) -> Any:
    """The UPDATE of the caller's todo that sets `names` (bound), built once per shape;
    with no names, the SELECT that reads it under the same conditions."""
    where = _own_todo(verified_only, versions)
    if not names:  # nothing to write; the precondition still applies
        return _prepared_unless_a_list(select(*_COLUMNS, Todo.version).where(*where), versions)
    statement = (
        update(Todo)
        .where(*where)
        .values(
            {
                **{name: _new_value(name) for name in names},
                "updated_at": utcnow(),
                "version": Todo.version + 1,
            }
        )
        .returning(*_COLUMNS, Todo.version)
    )
    return _prepared_unless_a_list(statement, versions)


def delete_own_todo(
    db: Connection,
    todo_id: int,
    *,
    caller: Caller,
    expected_versions: Collection[int] | None = None,
) -> None:
    """Delete the caller's todo, checking the caller in the same statement (one
    statement: run it with Database.write_one)."""
    versions, versions_params = _versions(expected_versions)
    statement = _delete_checked(caller.verified_only, versions)
    params = {**caller.params(), "todo_id": todo_id, **versions_params}
    if first_row(db, statement, params) is None:
        _refuse_caller(db, todo_id, caller)


@lru_cache(maxsize=8)
def _delete_checked(verified_only: bool, versions: str) -> Any:
    # RETURNING: whether a row went, as for the other writes (see prepared.first_row).
    return _prepared_unless_a_list(
        delete(Todo).where(*_own_todo(verified_only, versions)).returning(Todo.id), versions
    )


def delete_todo(db: Session, todo_id: int) -> None:
    """Delete any todo (administration)."""
    if db.execute(delete(Todo).where(Todo.id == todo_id)).rowcount == 0:  # type: ignore[attr-defined]
        raise NotFound(NOT_FOUND)
    commit(db)
