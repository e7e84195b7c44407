"""The framework-only ceiling for `make bench`.

One `async def` route for each shape of request the bench sends to the app, answering
with the same status, the same headers that matter (ETag, Location, Cache-Control, the
refresh cookie) and the same response model as the real route, from objects built once
in memory: no database, no auth, no middleware. Bodies are validated with the app's own
request models and answers serialised with its own response models. Served exactly like
the app (one uvicorn worker, uvloop, httptools) and driven by the same wrk scripts with
the same data, it shows the most that FastAPI, pydantic and uvicorn can give on one core
for that route, so each row of the bench table can be read as a fraction of its own
route's ceiling.

    uvicorn --app-dir bench ceiling:app --loop uvloop --http httptools --no-access-log
"""

from datetime import UTC, datetime
from itertools import count
from typing import Annotated

from fastapi import FastAPI, Path, Query, Response, status

# The app's own request and response models, so the ceiling validates and serializes
# exactly what the app does.
from todoapp.schemas import (
    Page,
    RefreshRequest,
    TodoCreate,
    TodoOut,
    TodoPatch,
    TodoReplace,
    Token,
    UserOut,
)

PAGE_SIZE = 20
TODOS_PER_USER = 50
USERS = 1000
MAX_ID = 2**31 - 1
_STAMP = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
_ETAG = '"todo-1-1"'
# What the seeded demo data looks like (see users.seed_demo_data).
_TODOS = [
    TodoOut(
        id=n,
        title=f"Demo todo {n}",
        description=f"Something to do, number {n}",
        priority=n % 5 + 1,
        complete=n % 3 == 0,
        owner_id=1,
        created_at=_STAMP,
        updated_at=_STAMP,
    )
    for n in range(1, TODOS_PER_USER + 1)
]
_USERS = [
    UserOut(
        id=n,
        email=f"demo{n}@example.com",
        username=f"demo{n}",
        firstname=None,
        lastname=None,
        role="user",
        is_active=True,
        is_verified=True,
    )
    for n in range(1, PAGE_SIZE + 1)
]
_ME = _USERS[0]
_TOKEN = Token(
    access_token="x" * 180,
    expires_in=1800,
    refresh_token="r" * 43,
    refresh_expires_in=30 * 86400,
)
_new_ids = count(TODOS_PER_USER + 1)

TodoId = Annotated[int, Path(ge=1, le=MAX_ID)]
Limit = Annotated[int, Query(ge=1, le=100)]
Offset = Annotated[int, Query(ge=0)]

# FastAPI's native OpenTelemetry off, as in the app (todoapp/main.py).
app = FastAPI(
    title="todoapp bench ceiling",
    telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
)


def _todo(todo_id: int) -> TodoOut:
    return _TODOS[(todo_id - 1) % TODOS_PER_USER].model_copy(update={"id": todo_id})


@app.get("/todos")
async def list_todos(limit: Limit = PAGE_SIZE, offset: Offset = 0) -> Page[TodoOut]:
    return Page[TodoOut](
        items=_TODOS[offset : offset + limit],
        total=TODOS_PER_USER,
        limit=limit,
        offset=offset,
        next_cursor=None,
    )


@app.post("/todos", status_code=status.HTTP_201_CREATED)
async def create_todo(body: TodoCreate, response: Response) -> TodoOut:
    todo = TodoOut(
        id=next(_new_ids),
        owner_id=1,
        created_at=_STAMP,
        updated_at=_STAMP,
        **body.model_dump(),
    )
    response.headers["Location"] = f"/todos/{todo.id}"
    response.headers["ETag"] = _ETAG
    return todo


@app.get("/todos/{todo_id}")
async def read_todo(todo_id: TodoId, response: Response) -> TodoOut:
    response.headers["ETag"] = _ETAG
    return _todo(todo_id)


@app.put("/todos/{todo_id}")
async def replace_todo(todo_id: TodoId, body: TodoReplace, response: Response) -> TodoOut:
    response.headers["ETag"] = _ETAG
    return _todo(todo_id).model_copy(update=body.model_dump())


@app.patch("/todos/{todo_id}")
async def update_todo(todo_id: TodoId, body: TodoPatch, response: Response) -> TodoOut:
    response.headers["ETag"] = _ETAG
    return _todo(todo_id).model_copy(update=body.model_dump(exclude_unset=True))


@app.delete("/todos/{todo_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_todo(todo_id: TodoId) -> None:
    return None


@app.get("/users/me")
async def read_me(response: Response) -> UserOut:
    response.headers["ETag"] = '"user-1-1"'
    return _ME


@app.get("/admin/todos")
async def admin_list_todos(
    limit: Limit = PAGE_SIZE,
    offset: Offset = 0,
    owner_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
) -> Page[TodoOut]:
    return Page[TodoOut](
        items=_TODOS[offset : offset + limit],
        total=USERS * TODOS_PER_USER,
        limit=limit,
        offset=offset,
        next_cursor=None,
    )


@app.get("/admin/users")
async def admin_list_users(limit: Limit = PAGE_SIZE, offset: Offset = 0) -> Page[UserOut]:
    return Page[UserOut](
        items=_USERS[offset : offset + limit],
        total=USERS,
        limit=limit,
        offset=offset,
        next_cursor=None,
    )


@app.post("/auth/refresh")
async def refresh(body: RefreshRequest, response: Response) -> Token:
    response.set_cookie(
        "todoapp_refresh",
        _TOKEN.refresh_token,
        max_age=_TOKEN.refresh_expires_in,
        path="/auth",
        secure=True,
        httponly=True,
        samesite="strict",
    )
    response.headers["Cache-Control"] = "no-store"
    return _TOKEN


@app.get("/readyz")
async def ready() -> dict[str, str]:
    return {"status": "ok"}
