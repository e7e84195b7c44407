"""OneHopRoute (todoapp/routing.py): a plain def route and its plain def dependencies
run in one worker thread, in order, each once; `yield` dependencies are left after the
route, in that thread; FastAPI's overrides are not consulted by a planned route (a
stream, served FastAPI's way, follows them). The app's own routes use it:
see test_the_apps_sync_routes_take_one_thread_hop."""

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import anyio
import anyio.to_thread
import pytest
from fastapi import (
    APIRouter,
    Cookie,
    Depends,
    FastAPI,
    Header,
    HTTPException,
    Path,
    Query,
    Request,
    Response,
)
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field

from tests.conftest import make_account
from todoapp import routing
from todoapp.routing import OneHopRoute


def count_hops(patch: pytest.MonkeyPatch) -> list[str]:
    """Every trip to a worker thread from here on: anyio's (FastAPI's own, and
    run_in_threadpool) and OneHopRoute's own executor."""
    hops: list[str] = []
    real_run_sync, real_in_a_thread = anyio.to_thread.run_sync, routing._in_a_thread

    async def through_anyio(func: Any, *args: Any, **kwargs: Any) -> Any:
        hops.append(getattr(func, "__name__", repr(func)))
        return await real_run_sync(func, *args, **kwargs)

    async def through_executor(work: Any, *args: Any) -> Any:
        hops.append(getattr(args[0] if args else work, "__name__", repr(work)))
        return await real_in_a_thread(work, *args)

    patch.setattr(anyio.to_thread, "run_sync", through_anyio)
    patch.setattr(routing, "_in_a_thread", through_executor)
    return hops


class Journal:
    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []

    def note(self, event: str) -> None:
        self.events.append((event, threading.get_ident()))

    @property
    def threads(self) -> set[int]:
        return {ident for _, ident in self.events}

    @property
    def names(self) -> list[str]:
        return [event for event, _ in self.events]


def build(journal: Journal, route_class: type[APIRoute] = OneHopRoute) -> FastAPI:
    def resource() -> Iterator[str]:
        journal.note("resource opened")
        try:
            yield "resource"
        except HTTPException:
            journal.note("resource saw the error")
            raise
        finally:
            journal.note("resource closed")

    def caller(resource: Annotated[str, Depends(resource)]) -> str:
        journal.note("caller")
        return f"caller using {resource}"

    def audit(resource: Annotated[str, Depends(resource)]) -> None:
        journal.note("audit")

    async def on_the_loop(request: Request) -> str:
        journal.note("async dependency")
        return request.method

    router = APIRouter(route_class=route_class)

    @router.get("/thing/{thing_id}", dependencies=[Depends(audit)])
    def read_thing(
        thing_id: int,
        who: Annotated[str, Depends(caller)],
        resource: Annotated[str, Depends(resource)],
        method: Annotated[str, Depends(on_the_loop)],
    ) -> dict[str, Any]:
        journal.note("route")
        if thing_id == 404:
            raise HTTPException(404, "no such thing")
        return {"id": thing_id, "who": who, "resource": resource, "method": method}

    app = FastAPI()
    app.include_router(router)
    app.state.resource = resource
    return app


def test_a_route_and_its_sync_dependencies_run_in_one_thread_in_order() -> None:
    journal = Journal()
    with TestClient(build(journal)) as client:
        response = client.get("/thing/7")
    assert response.status_code == 200
    assert response.json() == {
        "id": 7,
        "who": "caller using resource",
        "resource": "resource",
        "method": "GET",
    }
    sync_events = [(name, ident) for name, ident in journal.events if name != "async dependency"]
    # The resource is made once, though the route, caller and audit all use it.
    assert [name for name, _ in sync_events] == [
        "resource opened",
        "audit",
        "caller",
        "route",
        "resource closed",
    ]
    assert len({ident for _, ident in sync_events}) == 1  # one worker thread for all of them
    loop_thread = dict(journal.events)["async dependency"]
    assert loop_thread not in {ident for _, ident in sync_events}


def test_the_plain_apiroute_takes_a_hop_per_dependency() -> None:
    # What OneHopRoute saves: with FastAPI's own route the same request takes six
    # trips to the threadpool (resource in and out, audit, caller, the route, and the
    # check of its answer against the response model).
    for route_class, expected in ((APIRoute, 6), (OneHopRoute, 1)):
        with pytest.MonkeyPatch.context() as patch:
            hops = count_hops(patch)
            with TestClient(build(Journal(), route_class)) as client:
                assert client.get("/thing/1").status_code == 200
        assert len(hops) == expected, (route_class.__name__, hops)


def test_an_error_in_the_route_reaches_the_yield_dependency_in_the_same_thread() -> None:
    journal = Journal()
    with TestClient(build(journal)) as client:
        response = client.get("/thing/404")
    assert response.status_code == 404
    assert response.json() == {"detail": "no such thing"}
    assert journal.names[-3:] == ["route", "resource saw the error", "resource closed"]
    assert len(journal.threads - {dict(journal.events)["async dependency"]}) == 1


def test_a_planned_route_runs_what_it_declares_whatever_is_overridden(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Nothing is looked up per request to replace a dependency (FastAPI's overrides are
    # for tests, and a branch only tests take is what this route class avoids): the
    # declared plan answers, in one hop. A route FastAPI serves its own way (a stream)
    # still follows them, as FastAPI does.
    journal = Journal()
    app = build(journal)
    hops = count_hops(monkeypatch)
    with TestClient(app) as client:
        app.dependency_overrides[app.state.resource] = lambda: "fake"
        body = client.get("/thing/3").json()
    assert (body["resource"], body["who"]) == ("resource", "caller using resource")
    assert journal.names.count("resource opened") == 1
    assert hops == ["read_thing"]

    async def declared() -> str:
        return "declared"

    router = APIRouter(route_class=OneHopRoute)

    @router.get("/stream")
    async def stream(value: Annotated[str, Depends(declared)]) -> AsyncIterator[str]:
        yield value

    streamed = FastAPI()
    streamed.include_router(router)
    streamed.dependency_overrides[declared] = lambda: "replaced"
    with TestClient(streamed) as client:
        assert "replaced" in client.get("/stream").text


def test_an_async_dependency_on_a_sync_one_is_refused_when_declared() -> None:
    def sync_part() -> int:
        return 1

    async def async_part(value: Annotated[int, Depends(sync_part)]) -> int:
        return value

    def mixed(value: Annotated[int, Depends(async_part)]) -> int:
        return value

    router = APIRouter(route_class=OneHopRoute)
    with pytest.raises(TypeError, match="async dependency async_part uses a plain def"):
        router.add_api_route("/mixed", mixed)


def test_async_routes_and_their_yield_dependencies_run_on_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An async route is solved by the plan too: no thread at all. Its async `yield`
    # dependency is left after the answer, and sees the route's error, as in FastAPI.
    events: list[str] = []

    async def guard() -> AsyncIterator[str]:
        events.append("entered")
        try:
            yield "guard"
        except HTTPException:
            events.append("saw the error")
            raise
        finally:
            events.append("left")

    router = APIRouter(route_class=OneHopRoute)

    @router.get("/async/{n}")
    async def on_the_loop(n: int, guard: Annotated[str, Depends(guard)]) -> dict[str, Any]:
        events.append("route")
        if n == 404:
            raise HTTPException(404, "no such thing")
        return {"n": n, "guard": guard}

    hops = count_hops(monkeypatch)
    app = FastAPI()
    app.include_router(router)
    with TestClient(app) as client:
        assert client.get("/async/1").json() == {"n": 1, "guard": "guard"}
        assert events == ["entered", "route", "left"]
        events.clear()
        assert client.get("/async/404").status_code == 404
        assert events == ["entered", "route", "saw the error", "left"]
    assert hops == []


class Item(BaseModel):
    name: str = Field(min_length=1)
    size: int = Field(ge=1)


def build_parity(route_class: type[APIRoute], *, as_the_app: bool = False) -> FastAPI:
    """The same routes, for FastAPI's own route class and for OneHopRoute; included as
    FastAPI includes a router, or `as_the_app` includes its own (routing.include_routes)."""
    router = APIRouter(route_class=route_class)

    def shelf(shelf_id: Annotated[int, Path(ge=1)], x_tenant: Annotated[str, Header()]) -> str:
        return f"{x_tenant}/{shelf_id}"

    async def page(
        limit: Annotated[int, Query(ge=1, le=10)] = 5,
        tags: Annotated[list[str] | None, Query()] = None,
    ) -> dict[str, Any]:
        return {"limit": limit, "tags": tags or []}

    @router.post("/shelves/{shelf_id}/items", status_code=201)
    def put_item(
        item: Item, where: Annotated[str, Depends(shelf)], response: Response
    ) -> dict[str, Any]:
        response.headers["Location"] = f"/{where}/{item.name}"
        return {"where": where, "item": item.model_dump()}

    @router.get("/shelves/{shelf_id}/items", response_model=list[Item])
    def list_items(
        where: Annotated[str, Depends(shelf)],
        paging: Annotated[dict[str, Any], Depends(page)],
        session: Annotated[str | None, Cookie()] = None,
    ) -> Any:
        return [{"name": where, "size": paging["limit"], "secret": session}]

    @router.delete("/shelves/{shelf_id}", status_code=204)
    def drop(where: Annotated[str, Depends(shelf)]) -> None:
        return None

    app = FastAPI()
    if as_the_app:
        routing.include_routes(app, router)
    else:
        app.include_router(router)
    return app


PARITY_REQUESTS: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/shelves/1/items", {"json": {"name": "a", "size": 2}}),
    ("POST", "/shelves/0/items", {"json": {"name": "", "size": 0}}),
    ("POST", "/shelves/x/items", {"json": {"name": "a", "size": 2}}),
    (
        "POST",
        "/shelves/1/items",
        {"content": b"{bad json", "headers": {"content-type": "application/json"}},
    ),
    ("POST", "/shelves/1/items", {"content": b"name=a", "headers": {"content-type": "text/plain"}}),
    *(
        (
            "POST",
            "/shelves/1/items",
            {"content": b'{"name": "a", "size": 2}', "headers": {"content-type": kind}},
        )
        for kind in ("Application/JSON; charset=utf-8", "application/merge-patch+json", "text/json")
    ),
    ("POST", "/shelves/1/items", {}),
    ("GET", "/shelves/1/items?limit=3&tags=a&tags=b", {"cookies": {"session": "s"}}),
    ("GET", "/shelves/1/items", {}),  # every default: the limit's, the cookie's
    ("GET", "/shelves/1/items?limit=0&limit=11", {}),
    ("GET", "/shelves/2/items?limit=zz", {}),
    ("DELETE", "/shelves/3", {}),
    ("DELETE", "/shelves/-3", {}),
]


@pytest.mark.parametrize(("method", "path", "extra"), PARITY_REQUESTS)
def test_answers_are_fastapis_own(method: str, path: str, extra: dict[str, Any]) -> None:
    # Status, body and headers (bar the date) as FastAPI's own route class gives them,
    # for good requests and for every kind of 422 (path, query, header, body, JSON).
    answers = []
    for route_class in (APIRoute, OneHopRoute):
        with TestClient(build_parity(route_class)) as client:
            headers = {"x-tenant": "t1", **extra.get("headers", {})}
            if path == "/shelves/1/items" and method == "POST" and not extra:
                headers = {}  # no header, no body: both missing
            client.cookies.update(extra.get("cookies", {}))
            arguments = {k: v for k, v in extra.items() if k not in ("headers", "cookies")}
            response = client.request(method, path, headers=headers, **arguments)
            answers.append(
                (response.status_code, response.content, sorted(response.headers.items()))
            )
    assert answers[0] == answers[1]


def test_routes_match_the_paths_fastapis_routes_match() -> None:
    # OneHopRoute turns a path away by the text before its first parameter, before its
    # regular expression: for every path, the same match as FastAPI's own route class.
    apps = [build_parity(kind, as_the_app=True) for kind in (APIRoute, OneHopRoute)]
    paths = ["/shelves/1/items", "/shelves/1", "/shelves/", "/shelves", "/shelf/1", "/", "/x"]
    for path in paths:
        for root_path in ("", "/api"):
            for method in ("GET", "POST", "DELETE"):
                scope = {
                    "type": "http",
                    "method": method,
                    "path": root_path + path,
                    "root_path": root_path,
                    "headers": [],
                }
                found = [[route.matches(scope)[0] for route in app.routes] for app in apps]
                assert found[0] == found[1], (method, root_path, path)
    planned = [route for route in apps[1].routes if isinstance(route, OneHopRoute)]
    assert {route.head for route in planned} == {"/shelves/"}


def test_the_apps_sync_routes_take_one_thread_hop(
    committed_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The app's routes, built as todoapp.main builds them.
    client = committed_client
    alice = make_account(client, "alice")
    created = client.post("/todos", json={"title": "one hop", "priority": 3}, headers=alice.headers)
    assert created.status_code == 201
    hops = count_hops(monkeypatch)
    todo_id = created.json()["id"]
    for method, path, body in (
        ("GET", f"/todos/{todo_id}", None),
        ("PATCH", f"/todos/{todo_id}", {"complete": True}),
        (
            "PUT",
            f"/todos/{todo_id}",
            {"title": "t", "description": "", "priority": 2, "complete": False},
        ),
        ("GET", "/users/me", None),
        ("DELETE", f"/todos/{todo_id}", None),
    ):
        hops.clear()
        response = client.request(method, path, json=body, headers=alice.headers)
        assert response.status_code in (200, 204), (method, path, response.text)
        assert len(hops) == 1, (method, path, hops)


def test_a_cancelled_request_waits_for_its_thread_before_letting_go() -> None:
    # The thread cannot be stopped; what it holds (a connection, the request's place
    # at the database) must not be let go while it still runs.
    finished = threading.Event()

    def slow() -> str:
        time.sleep(0.3)
        finished.set()
        return "done"

    async def scenario() -> tuple[bool, float]:
        started = time.monotonic()
        task = asyncio.ensure_future(routing._in_a_thread(slow))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return finished.is_set(), time.monotonic() - started

    was_finished, waited = asyncio.run(scenario())
    assert was_finished
    assert waited >= 0.3


def test_the_worker_pool_runs_no_more_threads_than_its_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Six jobs at once on a pool of two: every job's answer or error reaches its own
    # request, with its context variables, on two threads, reused for later jobs.
    import contextvars

    monkeypatch.setattr(routing, "_threads", routing._Workers(2))
    who: contextvars.ContextVar[str] = contextvars.ContextVar("who")
    threads: set[str] = set()
    running = 0
    most = 0
    lock = threading.Lock()

    def job(n: int) -> str:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
            threads.add(threading.current_thread().name)
        time.sleep(0.05)
        with lock:
            running -= 1
        if n == 3:
            raise ValueError("three")
        return f"{who.get()} {n}"

    async def one(n: int) -> str:
        who.set(f"request {n}")
        try:
            return str(await routing._in_a_thread(job, n))
        except ValueError as error:
            return f"raised {error}"

    async def scenario() -> list[str]:
        first = await asyncio.gather(*(one(n) for n in range(6)))
        return [*first, await one(7)]

    answers = asyncio.run(scenario())
    assert answers == [
        "request 0 0",
        "request 1 1",
        "request 2 2",
        "raised three",
        "request 4 4",
        "request 5 5",
        "request 7 7",
    ]
    assert most == 2
    assert threads == {"route-1", "route-2"}


def test_work_that_raises_stop_iteration_fails_its_request_instead_of_hanging_it() -> None:
    # An asyncio future cannot carry StopIteration: the request gets a RuntimeError
    # (a 500 through the app) rather than waiting for ever.
    def stops() -> None:
        raise StopIteration

    async def scenario() -> BaseException:
        with pytest.raises(RuntimeError) as raised:
            await asyncio.wait_for(routing._in_a_thread(stops), timeout=5)
        return raised.value

    error = asyncio.run(scenario())
    assert isinstance(error.__cause__, StopIteration)


def test_a_thread_that_cannot_start_fails_the_request_and_leaves_no_work_queued(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    workers = routing._Workers(1)
    monkeypatch.setattr(routing, "_threads", workers)
    ran: list[str] = []

    def refuse(_thread: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    async def scenario() -> str:
        with monkeypatch.context() as patch:
            patch.setattr(threading.Thread, "start", refuse)
            with pytest.raises(RuntimeError, match="start new thread"):
                await routing._in_a_thread(ran.append, "refused")
        assert (workers.threads, workers.jobs.qsize()) == (0, 0)
        return str(await routing._in_a_thread(lambda: "served"))

    assert asyncio.run(scenario()) == "served"
    assert ran == []
    assert workers.threads == 1


@pytest.mark.parametrize("route_class", [APIRoute, OneHopRoute])
def test_async_yield_dependencies_may_hold_cancel_scopes_and_task_groups(
    route_class: type[APIRoute],
) -> None:
    # A dependency that keeps an anyio scope open across its yield is left cleanly, as
    # FastAPI leaves it (its cleanup scope is entered before the dependency's own).
    events: list[str] = []

    async def timed() -> AsyncIterator[int]:
        with anyio.move_on_after(30):
            yield 1
        events.append("timed left")

    async def grouped() -> AsyncIterator[int]:
        async with anyio.create_task_group():
            yield 2
        events.append("grouped left")

    router = APIRouter(route_class=route_class)

    @router.get("/scoped")
    def scoped(
        a: Annotated[int, Depends(timed)], b: Annotated[int, Depends(grouped)]
    ) -> dict[str, int]:
        return {"sum": a + b}

    app = FastAPI()
    app.include_router(router)
    with TestClient(app) as client:
        for _ in range(2):  # and the server still answers afterwards
            assert client.get("/scoped").json() == {"sum": 3}
    assert events == ["grouped left", "timed left"] * 2


def test_include_routes_is_include_router_matched_once() -> None:
    # routing.include_routes declares a router's routes on the app itself: the same
    # OpenAPI document and answers as include_router, overrides included, and no
    # included-router entry left to be matched twice.
    def tenant(x_tenant: Annotated[str, Header()] = "main") -> str:
        return x_tenant

    def audit() -> None:
        return None

    class Item(BaseModel):
        id: int
        tenant: str

    router = APIRouter(
        prefix="/items",
        tags=["items"],
        dependencies=[Depends(audit)],
        responses={404: {"description": "No such item"}},
        route_class=OneHopRoute,
    )

    @router.get("/{item_id}", summary="One item")
    def read_item(
        item_id: Annotated[int, Path(ge=1)], who: Annotated[str, Depends(tenant)]
    ) -> Item:
        """Read one item."""
        if item_id == 404:
            raise HTTPException(404, "no such item")
        return Item(id=item_id, tenant=who)

    @router.post("", status_code=201, response_model=Item)
    def create_item(item: Item) -> Any:
        return item

    included, flat = FastAPI(), FastAPI()
    included.include_router(router)
    routing.include_routes(flat, router)
    assert flat.openapi() == included.openapi()
    assert not any(type(route).__name__ == "_IncludedRouter" for route in flat.routes)
    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/items/3", {"headers": {"x-tenant": "blue"}}),
        ("GET", "/items/404", {}),
        ("GET", "/items/0", {}),
        ("POST", "/items", {"json": {"id": 5, "tenant": "x"}}),
        ("POST", "/items", {"json": {"id": "five"}}),
        ("DELETE", "/items/3", {}),
    ]
    with TestClient(included) as slow, TestClient(flat) as quick:
        for method, path, extra in requests:
            expected = slow.request(method, path, **extra)
            answer = quick.request(method, path, **extra)
            assert (answer.status_code, answer.json()) == (expected.status_code, expected.json())
            assert answer.headers.get("allow") == expected.headers.get("allow")


def test_include_routes_refuses_what_it_cannot_carry_over() -> None:
    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        yield

    with_lifespan = APIRouter(lifespan=lifespan)
    with_lifespan.add_api_route("/x", lambda: None)
    with pytest.raises(ValueError, match="lifespan"):
        routing.include_routes(FastAPI(), with_lifespan)

    streaming = APIRouter()

    async def stream() -> AsyncIterator[int]:
        yield 1

    streaming.add_api_route("/s", stream)
    with pytest.raises(ValueError, match="streams"):
        routing.include_routes(FastAPI(), streaming)


def test_the_apps_statements_are_built_once(
    client: TestClient, admin: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue #17: statements built once. The second time a request of each shape is
    # served, no SQL statement is built again: SQLAlchemy works out a statement's cache
    # key once per statement object, so a key worked out means a statement built anew.
    from sqlalchemy.sql.cache_key import HasCacheKey

    alice = make_account(client, "alice")
    made = client.post("/todos", json={"title": "kept", "priority": 1}, headers=alice.headers)
    kept = made.json()["id"]
    cursor = client.get("/admin/users?limit=1", headers=admin.headers).json()["next_cursor"]

    # An If-Match of several tags (a list), whichever the todo's version is.
    several = ", ".join(f'"todo-{kept}-v{n}"' for n in range(1, 40))

    def requests() -> list[tuple[str, str, Any, dict[str, str]]]:
        gone = {"title": "gone", "priority": 1}
        fresh = client.post("/todos", json=gone, headers=alice.headers).json()["id"]
        return [
            ("GET", "/todos?limit=5", None, alice.headers),
            ("GET", "/todos?complete=false&sort=-priority", None, alice.headers),
            ("GET", f"/todos/{kept}", None, alice.headers),
            ("POST", "/todos", {"title": "new", "description": "d", "priority": 2}, alice.headers),
            ("PATCH", f"/todos/{kept}", {"priority": 4}, alice.headers),
            ("PATCH", f"/todos/{kept}", {"title": "t", "complete": True}, alice.headers),
            ("PATCH", f"/todos/{kept}", {}, {**alice.headers, "If-Match": "*"}),
            ("PATCH", f"/todos/{kept}", {}, {**alice.headers, "If-Match": several}),
            (
                "PUT",
                f"/todos/{kept}",
                {"title": "t", "description": "", "priority": 2, "complete": False},
                alice.headers,
            ),
            ("DELETE", f"/todos/{fresh}", None, alice.headers),
            ("GET", "/users/me", None, alice.headers),
            ("GET", "/admin/users?limit=5", None, admin.headers),
            ("GET", "/admin/users?role=user&is_active=true&q=ali", None, admin.headers),
            ("GET", f"/admin/users?limit=1&cursor={cursor}", None, admin.headers),
            ("GET", "/admin/todos?limit=5", None, admin.headers),
        ]

    keys: list[str] = []
    real = HasCacheKey._generate_cache_key

    def counted(self: Any) -> Any:
        keys.append(type(self).__name__)
        return real(self)

    monkeypatch.setattr(HasCacheKey, "_generate_cache_key", counted)
    built: dict[str, list[str]] = {}
    for round_ in (1, 2):
        for method, path, body, headers in requests():
            keys.clear()
            response = client.request(method, path, json=body, headers=headers)
            assert response.status_code in (200, 201, 204), (method, path, response.text)
            if round_ == 2 and keys:
                built[f"{method} {path}"] = list(keys)
    assert built == {}
