"""The framework-only ceiling for `make bench`.

One `async def` route answering GET /todos with the same shape of page as the real
app (a Page envelope around 20 todos), built once in memory: no database, no auth,
no middleware. Served exactly like the app (one uvicorn worker, uvloop, httptools),
it shows the most that FastAPI, pydantic and uvicorn can give on one core, so each
row of the bench table can be read as a fraction of it.

    uvicorn --app-dir bench ceiling:app --loop uvloop --http httptools --no-access-log
"""

from datetime import UTC, datetime
from typing import Annotated

from fastapi import FastAPI, Query

# The app's own response models, so the ceiling serializes exactly what the app does.
from todoapp.schemas import Page, TodoOut

PAGE_SIZE = 20
TODOS_PER_USER = 50
_STAMP = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
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

app = FastAPI(title="todoapp bench ceiling")


@app.get("/todos")
async def list_todos(
    limit: Annotated[int, Query(ge=1, le=100)] = PAGE_SIZE,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Page[TodoOut]:
    return Page[TodoOut](
        items=_TODOS[offset : offset + limit],
        total=TODOS_PER_USER,
        limit=limit,
        offset=offset,
        next_cursor=None,
    )


@app.get("/readyz")
async def ready() -> dict[str, str]:
    return {"status": "ok"}
