"""The fast lane for plain `GET /todos` answers exactly what the FastAPI route answers,
and hands everything else to the app. The suite's app is built as production's is, so
the lane is on in every test (conftest); these tests look at it closely."""

import asyncio
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any

import pytest
from fastapi.testclient import TestClient
from pydantic import Field, computed_field
from sqlalchemy import text

from tests.conftest import (
    PASSWORD,
    Account,
    AppFactory,
    Backend,
    login,
    register,
)
from todoapp import fastlane, pages
from todoapp.database import Database
from todoapp.schemas import TodoOut


@pytest.fixture
def real_client(app_factory: AppFactory) -> Iterator[TestClient]:
    with TestClient(app_factory(cors_origins=["https://app.example"])) as client:
        yield client


# --- the suite's app is production's -----------------------------------------------
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_the_suites_app_answers_a_plain_list_from_the_lane_on_the_event_loop(
    client: TestClient, alice: Account, backend: Backend, lane_calls: list[Any]
) -> None:
    app = client.app
    state = app.state  # type: ignore[attr-defined]
    assert app.dependency_overrides == {}  # type: ignore[attr-defined]
    # Its own Database and engine on the test's database, as todoapp.main:app makes them.
    assert isinstance(state.database, Database)
    assert state.database is not backend.database
    assert state.database.engine.url.database == backend.engine.url.database
    created = client.post("/todos", json={"title": "seen", "priority": 2}, headers=alice.headers)
    assert created.status_code == 201
    response = client.get("/todos", headers=alice.headers)
    assert response.status_code == 200
    assert [item["title"] for item in response.json()["items"]] == ["seen"]
    assert lane_calls == [response.content]  # the lane's own answer
    assert state.on_loop_reads is not None
    assert state.on_loop_reads.reader._open == 1  # read on its own connection


def test_the_suites_app_admits_requests_to_the_database(app_factory: AppFactory) -> None:
    """Admission control is in place: with every place taken, a request that needs the
    database waits for DB_POOL_TIMEOUT, then gets 503; once places free up, 200."""
    with TestClient(app_factory(worker_threads=2, db_pool_timeout=0.2)) as client:
        register(client, "ada")
        auth = {"Authorization": f"Bearer {login(client, 'ada')}"}
        admission: asyncio.Semaphore = client.app.state.admission  # type: ignore[attr-defined]
        assert client.portal is not None
        for _ in range(2):
            client.portal.call(admission.acquire)
        try:
            busy = client.get("/users/me", headers=auth)
        finally:
            for _ in range(2):
                client.portal.call(admission.release)
        assert busy.status_code == 503
        assert busy.json() == {"detail": "server busy: try again shortly"}
        assert client.get("/users/me", headers=auth).status_code == 200


@pytest.fixture
def headers(real_client: TestClient) -> dict[str, str]:
    register(real_client, "lane")
    register(real_client, "other")
    token = login(real_client, "lane")
    auth = {"Authorization": f"Bearer {token}"}
    for n in range(25):
        body = {"title": f"todo {n}", "description": "é" * n, "priority": n % 5 + 1}
        assert real_client.post("/todos", json=body, headers=auth).status_code == 201
    other = {"Authorization": f"Bearer {login(real_client, 'other')}"}
    real_client.post("/todos", json={"title": "not yours", "priority": 1}, headers=other)
    return auth


@pytest.mark.parametrize(
    ("fast", "through_the_app"),
    [
        ("/todos", "/todos?sort=id"),
        ("/todos?limit=5&offset=3", "/todos?offset=3&limit=5&sort=id"),
        ("/todos?offset=20", "/todos?offset=20&sort=id"),
        ("/todos?offset=40", "/todos?offset=40&sort=id"),
        ("/todos?limit=100", "/todos?limit=100&sort=id"),
    ],
)
def test_the_fast_lane_answers_byte_for_byte_what_the_route_answers(
    backend: Backend,
    real_client: TestClient,
    headers: dict[str, str],
    lane_calls: list[Any],
    fast: str,
    through_the_app: str,
) -> None:
    quick = real_client.get(fast, headers=headers)
    assert len(lane_calls) == 1
    # Answered by the lane, except a page past the end on PostgreSQL, whose total
    # the lane leaves to the app to count.
    past_the_end = fast == "/todos?offset=40" and backend.is_postgres
    assert (lane_calls[0] is None) == past_the_end
    slow = real_client.get(through_the_app, headers=headers)
    assert len(lane_calls) == 1  # not tried by the lane
    assert (quick.status_code, quick.content) == (slow.status_code, slow.content)
    assert quick.headers["content-type"] == slow.headers["content-type"]
    assert quick.json()["total"] == 25


@pytest.mark.parametrize(
    ("path", "auth", "status"),
    [
        ("/todos", None, 401),
        ("/todos", "Bearer not-a-token", 401),
        ("/todos", "Basic abc", 401),
        ("/todos?limit=0", "good", 422),
        ("/todos?limit=101", "good", 422),
        ("/todos?offset=-1", "good", 422),
        ("/todos?limit=", "good", 422),
        ("/todos?limit=007", "good", 200),
        ("/todos?limit=%32%30", "good", 200),
        ("/todos?limit=20&", "good", 200),
        ("/todos?limit=20&limit=30", "good", 200),
        ("/todos?limit", "good", 422),
        ("/todos?limit=99999999999999999999", "good", 422),
        ("/todos?complete=true", "good", 200),
        ("/todos?q=todo", "good", 200),
    ],
)
def test_everything_else_goes_to_the_app(
    real_client: TestClient,
    headers: dict[str, str],
    lane_calls: list[Any],
    path: str,
    auth: str | None,
    status: int,
) -> None:
    sent = {} if auth is None else {"Authorization": auth}
    if auth == "good":
        sent = headers
    response = real_client.get(path, headers=sent)
    assert response.status_code == status
    assert lane_calls == []
    if status == 401:
        assert response.headers["www-authenticate"] == "Bearer"


def test_a_revoked_token_is_401_through_the_app(
    real_client: TestClient, headers: dict[str, str], lane_calls: list[Any]
) -> None:
    assert real_client.post("/auth/logout", headers=headers).status_code == 204
    response = real_client.get("/todos", headers=headers)
    assert response.status_code == 401
    assert lane_calls == [None]  # tried, found the token revoked, handed over


@pytest.mark.parametrize(
    "change",
    [
        "UPDATE users SET is_active = false WHERE username = 'lane'",
        "DELETE FROM users WHERE username = 'lane'",
    ],
)
def test_a_disabled_or_deleted_user_is_401_through_the_app(
    real_client: TestClient,
    headers: dict[str, str],
    lane_calls: list[Any],
    backend: Backend,
    change: str,
) -> None:
    with backend.engine.begin() as connection:
        connection.execute(text(change))
    response = real_client.get("/todos", headers=headers)
    assert response.status_code == 401
    assert response.json() == {"detail": "Could not validate credentials"}
    assert lane_calls == [None]


def test_fast_lane_responses_keep_request_id_access_log_and_cors(
    real_client: TestClient,
    headers: dict[str, str],
    lane_calls: list[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="todoapp.access"):
        response = real_client.get(
            "/todos",
            headers={**headers, "X-Request-ID": "lane-1", "Origin": "https://app.example"},
        )
    assert lane_calls == [response.content]  # the lane's own answer
    assert response.headers["x-request-id"] == "lane-1"
    assert response.headers["access-control-allow-origin"] == "https://app.example"
    lines = [r.getMessage() for r in caplog.records if r.name == "todoapp.access"]
    assert any(line.startswith("GET /todos 200 ") and line.endswith("lane-1") for line in lines)


def test_login_is_left_to_the_app(
    real_client: TestClient, headers: dict[str, str], lane_calls: list[Any]
) -> None:
    assert login(real_client, "lane", PASSWORD)
    assert lane_calls == []


# --- PostgreSQL: the lane reads on the event loop ----------------------------------
@pytest.fixture
def no_thread_reads(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Each page the lane reads in a worker thread (the SQLite way)."""
    calls: list[Any] = []
    real = fastlane.todo_page_json

    def counting(*args: Any) -> bytes:
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(fastlane, "todo_page_json", counting)
    return calls


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_on_postgresql_the_lane_reads_on_the_event_loop(
    real_client: TestClient,
    headers: dict[str, str],
    lane_calls: list[Any],
    no_thread_reads: list[Any],
) -> None:
    response = real_client.get("/todos?limit=3", headers=headers)
    assert response.status_code == 200
    assert [item["title"] for item in response.json()["items"]] == ["todo 0", "todo 1", "todo 2"]
    assert lane_calls == [response.content]
    assert no_thread_reads == []
    reads = real_client.app.state.on_loop_reads  # type: ignore[attr-defined]
    assert reads.reader._open == 1
    assert reads.reader.preparing


def test_a_user_without_todos_gets_the_same_empty_page_from_the_lane(
    real_client: TestClient, lane_calls: list[Any]
) -> None:
    register(real_client, "empty")
    auth = {"Authorization": f"Bearer {login(real_client, 'empty')}"}
    quick = real_client.get("/todos", headers=auth)
    slow = real_client.get("/todos?sort=id", headers=auth)
    assert len(lane_calls) == 1
    assert lane_calls[0] == quick.content  # the lane's own answer
    assert quick.status_code == 200
    assert quick.content == slow.content
    assert quick.json() == {
        "items": [],
        "total": 0,
        "limit": 20,
        "offset": 0,
        "next_cursor": None,
    }


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_lane_connections_killed_by_the_server_never_show(
    real_client: TestClient,
    headers: dict[str, str],
    lane_calls: list[Any],
    backend: Backend,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert real_client.get("/todos", headers=headers).status_code == 200
    with backend.engine.connect() as connection:
        killed = connection.exec_driver_sql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).scalar_one()
    assert killed >= 1
    with caplog.at_level(logging.WARNING, logger="todoapp.fastlane"):
        for _ in range(3):
            response = real_client.get("/todos", headers=headers)
            assert response.status_code == 200
            assert response.json()["total"] == 25
    # The first read met the killed connection and handed over; the next ones did not.
    assert [answer is None for answer in lane_calls] == [False, True, False, False]
    warnings = [r.getMessage() for r in caplog.records if r.name == "todoapp.fastlane"]
    assert warnings == ["fast lane read failed (OperationalError): answered through the app"]
    reads = real_client.app.state.on_loop_reads  # type: ignore[attr-defined]
    assert reads.reader._open == 1  # the dead one was replaced


def test_whole_second_and_far_timestamps_read_the_same_in_the_lane(
    real_client: TestClient, headers: dict[str, str], lane_calls: list[Any], backend: Backend
) -> None:
    with backend.engine.begin() as connection:
        connection.execute(
            text("UPDATE todos SET created_at = :whole, updated_at = :far WHERE title = 'todo 1'"),
            {
                "whole": datetime(2026, 1, 1, tzinfo=UTC),
                "far": datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
            },
        )
    quick = real_client.get("/todos?limit=3", headers=headers)
    slow = real_client.get("/todos?limit=3&sort=id", headers=headers)
    assert lane_calls == [quick.content]  # the lane's own answer
    assert quick.content == slow.content
    item = quick.json()["items"][1]
    assert (item["created_at"], item["updated_at"]) == (
        "2026-01-01T00:00:00Z",
        "9999-12-31T23:59:59.999999Z",
    )


# Text that JSON writers are apt to write differently: quotes, backslashes, every kind
# of control character, DEL, non-ASCII, a character outside the BMP, U+2028, a slash.
AWKWARD = 'say "hi" \\ back\b\t\n\f\r\x01\x1f\x7f é€😀\u2028 </script>'


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_the_lanes_rows_are_written_as_the_route_writes_them(
    real_client: TestClient,
    headers: dict[str, str],
    lane_calls: list[Any],
    no_thread_reads: list[Any],
    backend: Backend,
) -> None:
    # The lane writes its rows without validating them into TodoOut first
    # (pages.page_json_of_rows): the same bytes as the route's, for awkward text, both
    # booleans and every shape of timestamp.
    stamps = [
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),  # no fraction
        datetime(2026, 1, 2, 3, 4, 5, 466500, tzinfo=UTC),  # trailing zeros kept
        datetime(2026, 1, 2, 3, 4, 5, 1, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ]
    with backend.engine.begin() as connection:
        for n, stamp in enumerate(stamps):
            connection.execute(
                text(
                    "UPDATE todos SET title = :title, description = :description,"
                    " created_at = :stamp, updated_at = :stamp, complete = :complete"
                    " WHERE title = :which"
                ),
                {
                    "title": AWKWARD[n:],
                    "description": AWKWARD[: -n - 1],
                    "stamp": stamp,
                    "complete": n % 2 == 0,
                    "which": f"todo {n}",
                },
            )
    quick = real_client.get("/todos?limit=6", headers=headers)
    slow = real_client.get("/todos?limit=6&sort=id", headers=headers)
    assert lane_calls == [quick.content]  # the lane's own answer, read on the loop
    assert no_thread_reads == []
    assert quick.content == slow.content
    items = quick.json()["items"]
    assert items[0]["title"] == AWKWARD
    assert [item["created_at"] for item in items[:5]] == [
        "2026-01-02T03:04:05Z",
        "2026-01-02T03:04:05.466500Z",
        "2026-01-02T03:04:05.000001Z",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59.999999Z",
    ]
    assert [item["complete"] for item in items[:5]] == [True, False, True, False, True]


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_with_no_fast_lane_connections_the_lane_reads_in_a_thread(
    app_factory: AppFactory, lane_calls: list[Any], no_thread_reads: list[Any]
) -> None:
    app = app_factory(fast_lane_connections=0)
    with TestClient(app) as client:
        register(client, "threaded")
        auth = {"Authorization": f"Bearer {login(client, 'threaded')}"}
        response = client.get("/todos", headers=auth)
        assert response.status_code == 200
        assert response.json()["total"] == 0
        assert app.state.on_loop_reads is None
        assert (len(lane_calls), len(no_thread_reads)) == (1, 1)


def test_the_lanes_next_cursor_continues_the_listing(
    real_client: TestClient, headers: dict[str, str], lane_calls: list[Any]
) -> None:
    first = real_client.get("/todos?limit=10", headers=headers)
    assert lane_calls == [first.content]  # the lane's own answer
    cursor = first.json()["next_cursor"]
    assert cursor is not None
    titles = [item["title"] for item in first.json()["items"]]
    while cursor is not None:
        page = real_client.get(f"/todos?limit=10&cursor={cursor}", headers=headers).json()
        assert (page["total"], page["offset"]) == (None, 0)
        titles += [item["title"] for item in page["items"]]
        cursor = page["next_cursor"]
    assert titles == [f"todo {n}" for n in range(25)]
    assert len(lane_calls) == 1  # cursor pages go to the app


@pytest.mark.parametrize(
    "field",
    [
        Annotated[str, Field(alias="name")],  # written under another key
        Annotated[str, Field(serialization_alias="name")],
        Annotated[str, Field(exclude=True)],  # not written at all
    ],
)
def test_the_lane_refuses_a_todo_model_pydantic_would_write_otherwise(field: Any) -> None:
    # pages.page_json_of_rows writes the lane's values as they are: a TodoOut that
    # pydantic would write otherwise must fail when the app is imported.
    class Changed(TodoOut):
        title: field  # type: ignore[valid-type]

    with pytest.raises(TypeError, match="title"):
        pages._written_as_is(Changed)

    class Computed(TodoOut):
        @computed_field  # type: ignore[prop-decorator]
        @property
        def shout(self) -> str:
            return self.title.upper()

    with pytest.raises(TypeError, match="computed"):
        pages._written_as_is(Computed)
    assert pages._written_as_is(TodoOut) is TodoOut
