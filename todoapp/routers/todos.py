"""/todos: the signed-in user's own todos."""

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from pydantic import TypeAdapter
from sqlalchemy import Connection

from todoapp.deps import (
    IdPath,
    IfMatch,
    IfNoneMatch,
    SessionDep,
    SessionSource,
    SessionSourceDep,
    TodoQueryDep,
    TodoUser,
    TokenClaimsDep,
    WindowDep,
    etag,
    expected_versions,
)
from todoapp.routers.responses import (
    AUTHED,
    BODY,
    IF_MATCH,
    IF_NONE_MATCH,
    errors,
    links_by_id,
    with_etag,
)
from todoapp.routing import OneHopRoute
from todoapp.schemas import Page, TodoCreate, TodoOut, TodoPatch, TodoReplace
from todoapp.security import TokenClaims
from todoapp.services import todos, users
from todoapp.services.paging import Found, Window
from todoapp.services.todos import TodoQuery

router = APIRouter(prefix="/todos", tags=["todos"], route_class=OneHopRoute)

# What can be done next with the todo just created (the last: by an admin).
CREATED_TODO_LINKS = links_by_id(
    "todo_id",
    {
        "ReadTodo": "todos-read",
        "ReplaceTodo": "todos-replace",
        "UpdateTodo": "todos-update",
        "DeleteTodo": "todos-delete",
        "AdminDeleteTodo": "admin-todos-delete",
    },
)


def page_of_todos(page: Found[Any], window: Window) -> Page[TodoOut]:
    return Page[TodoOut].model_validate(
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


@router.get(
    "",
    summary="List, filter, search and page one's todos",
    operation_id="todos-list",
    response_model=Page[TodoOut],
    responses=errors(*AUTHED, 403),
)
async def list_todos(
    request: Request,
    claims: TokenClaimsDep,
    sessions: SessionSourceDep,
    query: TodoQueryDep,
    window: WindowDep,
) -> Response:
    # The hottest route, so it is built for speed (see README, Performance): the token
    # was checked without a thread; the user check and the page (with its total, in one
    # statement) share one trip to the threadpool; the page goes out as JSON bytes.
    # The plainest requests do not even get here: see todoapp/fastlane.py.
    verified_only = request.app.state.settings.require_verified_email
    body = await run_in_threadpool(
        todo_page_json, sessions, claims, query, window, verified_only=verified_only
    )
    return Response(body, media_type="application/json")


def _tagged(todo: Any, response: Response) -> TodoOut:
    """The todo as the answer's body, its ETag in the answer's header."""
    response.headers["ETag"] = etag("todo", todo.id, todo.version)
    return TodoOut.model_validate(todo)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Create a todo",
    operation_id="todos-create",
    response_description="The new todo; `Location` points at it",
    responses={**errors(*AUTHED, 403, *BODY), **with_etag(201, links=CREATED_TODO_LINKS)},
)
def create_todo(body: TodoCreate, user: TodoUser, db: SessionDep, response: Response) -> TodoOut:
    todo = todos.create_todo(db, user.id, body.model_dump())
    response.headers["Location"] = f"/todos/{todo.id}"
    return _tagged(todo, response)


@router.get(
    "/{todo_id}",
    summary="Read one todo",
    operation_id="todos-read",
    response_model=TodoOut,
    responses={**errors(*AUTHED, 403, 404), **with_etag(200, not_modified=True)},
    openapi_extra=IF_NONE_MATCH,
)
def read_todo(
    todo_id: IdPath,
    user: TodoUser,
    db: SessionDep,
    response: Response,
    if_none_match: IfNoneMatch,
) -> Response | TodoOut:
    todo = todos.get_todo(db, todo_id, owner_id=user.id)
    current = etag("todo", todo.id, todo.version)
    if if_none_match is not None and if_none_match.names(current):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers={"ETag": current})
    return _tagged(todo, response)


@router.put(
    "/{todo_id}",
    summary="Replace a todo (every field required)",
    operation_id="todos-replace",
    responses={**errors(*AUTHED, 403, 404, 412, *BODY), **with_etag(200)},
    openapi_extra=IF_MATCH,
)
def replace_todo(
    todo_id: IdPath,
    body: TodoReplace,
    user: TodoUser,
    db: SessionDep,
    response: Response,
    if_match: IfMatch,
) -> TodoOut:
    todo = todos.update_todo(
        db,
        todo_id,
        owner_id=user.id,
        changes=body.model_dump(),
        expected_versions=expected_versions(if_match, "todo", todo_id),
    )
    return _tagged(todo, response)


@router.patch(
    "/{todo_id}",
    summary="Change some fields of a todo",
    operation_id="todos-update",
    responses={**errors(*AUTHED, 403, 404, 412, *BODY), **with_etag(200)},
    openapi_extra=IF_MATCH,
)
def update_todo(
    todo_id: IdPath,
    body: TodoPatch,
    user: TodoUser,
    db: SessionDep,
    response: Response,
    if_match: IfMatch,
) -> TodoOut:
    todo = todos.update_todo(
        db,
        todo_id,
        owner_id=user.id,
        changes=body.model_dump(exclude_unset=True),
        expected_versions=expected_versions(if_match, "todo", todo_id),
    )
    return _tagged(todo, response)


@router.delete(
    "/{todo_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a todo",
    operation_id="todos-delete",
    responses=errors(*AUTHED, 403, 404, 412),
    openapi_extra=IF_MATCH,
)
def delete_todo(todo_id: IdPath, user: TodoUser, db: SessionDep, if_match: IfMatch) -> None:
    todos.delete_todo(
        db,
        todo_id,
        owner_id=user.id,
        expected_versions=expected_versions(if_match, "todo", todo_id),
    )
