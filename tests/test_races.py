"""Races on PostgreSQL, with committed data and real concurrent connections."""

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from tests.conftest import PASSWORD, Backend, login, register, settings_for_tests
from todoapp import metrics
from todoapp.database import Database, make_engine
from todoapp.deps import admit
from todoapp.main import create_app

pytestmark = pytest.mark.postgres_only


def at_once(count: int, call: Callable[[int], httpx.Response]) -> list[httpx.Response]:
    """Run `call(i)` for i in range(count) in threads released together."""
    barrier = threading.Barrier(count)

    def run(i: int) -> httpx.Response:
        barrier.wait(timeout=30)
        return call(i)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_concurrent_registrations_of_one_username_give_one_201(
    committed_client: TestClient, pg_backend: Backend
) -> None:
    def register_variant(i: int) -> httpx.Response:
        name = "".join(c.upper() if (i >> k) & 1 else c for k, c in enumerate("racer"))
        body = {"username": name, "email": f"racer{i}@example.com", "password": PASSWORD}
        return committed_client.post("/auth/register", json=body)

    statuses = sorted(r.status_code for r in at_once(20, register_variant))
    assert statuses == [201] + [409] * 19
    with pg_backend.engine.connect() as connection:
        count = connection.execute(
            text("SELECT count(*) FROM users WHERE lower(username) = 'racer'")
        ).scalar()
    assert count == 1


def test_concurrent_patches_of_one_todo_leave_one_of_the_writes(
    committed_client: TestClient,
) -> None:
    register(committed_client, "ada")
    token = login(committed_client, "ada")
    todo = committed_client.post(
        "/todos", json={"title": "start", "priority": 1}, headers=bearer(token)
    ).json()
    for round_ in range(5):  # a torn write shows up in about one round of three
        writes = [{"title": f"write {round_}.{i}", "priority": i % 5 + 1} for i in range(10)]
        responses = at_once(
            10,
            lambda i, writes=writes: committed_client.patch(
                f"/todos/{todo['id']}", json=writes[i], headers=bearer(token)
            ),
        )
        assert [r.status_code for r in responses] == [200] * 10
        final = committed_client.get(f"/todos/{todo['id']}", headers=bearer(token)).json()
        assert {"title": final["title"], "priority": final["priority"]} in writes


def test_concurrent_deletes_of_one_todo_give_one_204(committed_client: TestClient) -> None:
    register(committed_client, "ada")
    token = login(committed_client, "ada")
    todo = committed_client.post(
        "/todos", json={"title": "doomed", "priority": 1}, headers=bearer(token)
    ).json()
    responses = at_once(
        8, lambda _i: committed_client.delete(f"/todos/{todo['id']}", headers=bearer(token))
    )
    assert sorted(r.status_code for r in responses) == [204] + [404] * 7


@pytest.mark.parametrize("change", [{"role": "user"}, {"is_active": False}])
def test_two_admins_demoting_each_other_at_once_leave_one_admin(
    committed_client: TestClient, pg_backend: Backend, change: dict[str, Any]
) -> None:
    first, second = register(committed_client, "first"), register(committed_client, "second")
    with pg_backend.engine.begin() as connection:
        connection.execute(text("UPDATE users SET role = 'admin'"))
    tokens = [login(committed_client, "first"), login(committed_client, "second")]
    targets = [second["id"], first["id"]]
    for _round in range(3):
        responses = at_once(
            2,
            lambda i, tokens=tokens: committed_client.patch(  # type: ignore[misc]
                f"/admin/users/{targets[i]}", json=change, headers=bearer(tokens[i])
            ),
        )
        statuses = sorted(r.status_code for r in responses)
        with pg_backend.engine.connect() as connection:
            admins = connection.execute(
                text("SELECT count(*) FROM users WHERE role = 'admin' AND is_active")
            ).scalar()
        assert admins == 1
        assert statuses in ([200, 409], [200, 401], [200, 403])
        # Restore both admins for the next round.
        with pg_backend.engine.begin() as connection:
            connection.execute(text("UPDATE users SET role = 'admin', is_active = true"))
        tokens = [login(committed_client, "first"), login(committed_client, "second")]


@pytest.mark.parametrize("path", ["/users/me", "/todos", "/todos?sort=id", "/admin/users"])
def test_a_burst_beyond_the_threads_and_pool_queues_instead_of_deadlocking(
    pg_backend: Backend, path: str
) -> None:
    # Two threads and two pooled connections, 24 requests at once on routes with
    # several dependencies: without admission control they deadlock until the pool
    # times out (503s); with it they queue and all succeed.
    settings = settings_for_tests(worker_threads=2, db_pool_timeout=3)
    engine = make_engine(pg_backend.url, settings)
    try:
        with TestClient(create_app(settings, database=Database(engine))) as client:
            user = register(client, "burst")
            with engine.begin() as connection:
                connection.execute(
                    text("UPDATE users SET role = 'admin' WHERE id = :id"), {"id": user["id"]}
                )
            token = login(client, "burst")
            responses = at_once(24, lambda _i: client.get(path, headers=bearer(token)))
            assert [r.status_code for r in responses] == [200] * 24
    finally:
        engine.dispose()
        with pg_backend.engine.begin() as connection:
            connection.execute(text("TRUNCATE todos, users RESTART IDENTITY CASCADE"))


def test_concurrent_writers_on_sqlite_queue_instead_of_failing(
    sqlite_backend: Backend,
) -> None:
    # A deferred BEGIN that reads, then writes, fails at once when another writer got
    # in between ("database is locked", a 503); BEGIN IMMEDIATE makes them queue.
    app = create_app(settings_for_tests(database_url=sqlite_backend.url))
    try:
        with TestClient(app) as client:
            tokens = []
            for n in range(4):
                register(client, f"writer{n}")
                tokens.append(login(client, f"writer{n}"))
            creates = at_once(
                12,
                lambda i: client.post(
                    "/todos", json={"title": f"t{i}", "priority": 1}, headers=bearer(tokens[i % 4])
                ),
            )
            assert [r.status_code for r in creates] == [201] * 12
            registrations = at_once(
                6,
                lambda i: client.post(
                    "/auth/register",
                    json={
                        "username": f"new{i}",
                        "email": f"new{i}@example.com",
                        "password": PASSWORD,
                    },
                ),
            )
            assert [r.status_code for r in registrations] == [201] * 6
    finally:
        with sqlite_backend.engine.begin() as connection:
            connection.execute(text("DELETE FROM todos"))
            connection.execute(text("DELETE FROM users"))


def test_admission_waits_at_most_its_timeout_for_a_place() -> None:
    async def scenario() -> tuple[bool, bool, float, bool]:
        admission = asyncio.Semaphore(1)
        first = await admit(admission, 1.0)  # free: taken at once
        started = time.monotonic()
        second = await admit(admission, 0.1)  # full: gives up after 0.1 s
        waited = time.monotonic() - started
        admission.release()
        third = await admit(admission, 0.1)
        return first, second, waited, third

    first, second, waited, third = asyncio.run(scenario())
    assert (first, second, third) == (True, False, True)
    assert 0.09 < waited < 1.0


def test_every_admitted_request_gives_its_place_back(app_factory: Any) -> None:
    # The place a request took at the database (deps.get_session_source) is given back
    # once it is answered: a success, or a refusal after admission (404, 412, 422 from
    # the body, 401 for a token revoked meanwhile). The places are a BoundedSemaphore,
    # so a place given back twice would fail the request instead of passing unseen.
    # With METRICS_ENABLED, so that the in-use gauge (kept only then) is checked too.
    app = app_factory(worker_threads=3, fast_lane_connections=0, metrics_enabled=True)
    with TestClient(app) as client:
        register(client, "placeholder")
        auth = {"Authorization": f"Bearer {login(client, 'placeholder')}"}
        admission: asyncio.Semaphore = app.state.admission
        threads_in_use = metrics.THREADS_IN_USE._value.get()
        assert admission._value == 3
        made = client.post("/todos", json={"title": "t", "priority": 1}, headers=auth)
        assert made.status_code == 201
        todo = f"/todos/{made.json()['id']}"
        answers = [
            client.get(todo, headers=auth).status_code,
            client.get("/todos/999999", headers=auth).status_code,
            client.patch(todo, json={"priority": 9}, headers=auth).status_code,
            client.patch(
                todo, json={"title": "x"}, headers={**auth, "If-Match": '"x"'}
            ).status_code,
            client.get("/todos", headers=auth).status_code,
            client.get("/users/me", headers=auth).status_code,
            client.post("/auth/register", json={"username": "placeholder"}).status_code,
            client.delete(todo, headers=auth).status_code,
        ]
        client.post("/auth/logout", headers=auth)
        answers.append(client.get("/users/me", headers=auth).status_code)
        assert answers == [200, 404, 422, 412, 200, 200, 422, 204, 401]
        assert admission._value == 3
        assert isinstance(admission, asyncio.BoundedSemaphore)
        assert metrics.THREADS_IN_USE._value.get() == threads_in_use
