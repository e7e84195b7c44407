"""/todos: the signed-in user's own todos."""

from typing import Any

from fastapi import APIRouter, Request, Response, status
from fastapi.concurrency import run_in_threadpool

from todoapp.deps import (
    EntityTags,
    IdPath,
    IfMatch,
    IfNoneMatch,
    SessionSource,
    SessionSourceDep,
    TodoCaller,
    TodoQueryDep,
    TokenClaimsDep,
    WindowDep,
    etag,
    expected_versions,
)
from todoapp.pages import todo_page_json
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
from todoapp.services import todos
from todoapp.services.users import Caller

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
def create_todo(
    body: TodoCreate, caller: TodoCaller, sessions: SessionSourceDep, response: Response
) -> TodoOut:
    fields = body.model_dump()
    todo = sessions.write_one(lambda db: todos.create_todo(db, fields, caller=caller))
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
    caller: TodoCaller,
    sessions: SessionSourceDep,
    response: Response,
    if_none_match: IfNoneMatch,
) -> Response | TodoOut:
    # A read: one statement on a connection in autocommit (see Database.read).
    todo = sessions.read(lambda db: todos.read_todo(db, todo_id, caller=caller))
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
    caller: TodoCaller,
    sessions: SessionSourceDep,
    response: Response,
    if_match: IfMatch,
) -> TodoOut:
    return _tagged(_update(sessions, todo_id, caller, body.model_dump(), if_match), response)


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
    caller: TodoCaller,
    sessions: SessionSourceDep,
    response: Response,
    if_match: IfMatch,
) -> TodoOut:
    changes = body.model_dump(exclude_unset=True)
    return _tagged(_update(sessions, todo_id, caller, changes, if_match), response)


def _update(
    sessions: SessionSource,
    todo_id: int,
    caller: Caller,
    changes: dict[str, Any],
    if_match: EntityTags | None,
) -> Any:
    expected = expected_versions(if_match, "todo", todo_id)
    return sessions.write_one(
        lambda db: todos.update_todo(
            db, todo_id, caller=caller, changes=changes, expected_versions=expected
        )
    )


@router.delete(
    "/{todo_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a todo",
    operation_id="todos-delete",
    responses=errors(*AUTHED, 403, 404, 412),
    openapi_extra=IF_MATCH,
)
def delete_todo(
    todo_id: IdPath, caller: TodoCaller, sessions: SessionSourceDep, if_match: IfMatch
) -> None:
    expected = expected_versions(if_match, "todo", todo_id)
    sessions.write_one(
        lambda db: todos.delete_own_todo(db, todo_id, caller=caller, expected_versions=expected)
    )
