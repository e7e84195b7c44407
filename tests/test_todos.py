"""/todos: owner-scoped CRUD, filters, search, sorting and paging."""

import time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from tests.conftest import Account, RoundTrips, StatementCounter, login, make_account
from todoapp.models import Todo


def create(client: TestClient, account: Account, **fields: Any) -> dict[str, Any]:
    body = {"title": "Buy milk", "priority": 3, **fields}
    response = client.post("/todos", json=body, headers=account.headers)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def test_create_is_201_with_location_defaults_and_utc_timestamps(
    client: TestClient, alice: Account
) -> None:
    response = client.post(
        "/todos", json={"title": "  Buy milk  ", "priority": 3}, headers=alice.headers
    )
    assert response.status_code == 201
    todo = response.json()
    assert response.headers["location"] == f"/todos/{todo['id']}"
    assert {k: todo[k] for k in ("title", "description", "priority", "complete", "owner_id")} == {
        "title": "Buy milk",
        "description": "",
        "priority": 3,
        "complete": False,
        "owner_id": alice.id,
    }
    assert todo["created_at"].endswith("Z")
    assert todo["created_at"] == todo["updated_at"]
    assert client.get(response.headers["location"], headers=alice.headers).json() == todo


def test_a_whole_number_written_as_a_float_is_an_integer_priority(
    client: TestClient, alice: Account
) -> None:
    # JSON has one number type: 3.0 is the integer 3 (JSON Schema's `integer` agrees).
    assert create(client, alice, priority=3.0)["priority"] == 3


@pytest.mark.parametrize(
    "body",
    [
        {"priority": 3},
        {"title": "", "priority": 3},
        {"title": "   ", "priority": 3},
        {"title": "t" * 201, "priority": 3},
        {"title": "t", "priority": 0},
        {"title": "t", "priority": 6},
        {"title": "t", "priority": "3"},
        {"title": "t", "priority": 3.5},
        {"title": "t", "priority": True},
        {"title": "t", "priority": 2**40},
        {"title": "t"},
        {"title": "t", "priority": 3, "description": "d" * 201},
        {"title": "t", "priority": 3, "description": None},
        {"title": "t", "priority": 3, "complete": "yes"},
        {"title": "t", "priority": 3, "complete": None},
        {"title": "t", "priority": 3, "owner_id": 1},
        {"title": "t", "priority": 3, "id": 1},
        {"title": "nul\x00byte", "priority": 3},
        {"title": "t", "priority": 3, "description": "\x00"},
        [],
        "just a string",
    ],
)
def test_create_invalid_bodies_are_422_and_nothing_is_stored(
    client: TestClient, alice: Account, body: Any
) -> None:
    response = client.post("/todos", json=body, headers=alice.headers)
    assert response.status_code == 422
    assert client.get("/todos", headers=alice.headers).json()["total"] == 0


def test_title_of_200_characters_after_trimming_is_accepted(
    client: TestClient, alice: Account
) -> None:
    todo = create(client, alice, title=f"  {'t' * 200}  ", description="é" * 200)
    assert len(todo["title"]) == 200
    assert todo["description"] == "é" * 200


def test_lone_surrogates_are_422_not_500(client: TestClient, alice: Account) -> None:
    response = client.post(
        "/todos",
        content=b'{"title": "\\ud800", "priority": 1}',
        headers={**alice.headers, "content-type": "application/json"},
    )
    assert response.status_code == 422


def test_read_missing_todo_is_404(client: TestClient, alice: Account) -> None:
    response = client.get("/todos/999999", headers=alice.headers)
    assert response.status_code == 404
    assert response.json() == {"detail": "todo not found"}


@pytest.mark.parametrize("todo_id", ["0", "-1", "2147483648", "99999999999999999999", "abc"])
def test_ids_outside_postgresql_integer_range_are_422(
    client: TestClient, alice: Account, todo_id: str
) -> None:
    for method in ("GET", "PUT", "PATCH", "DELETE"):
        body = {"title": "t", "description": "", "priority": 1, "complete": False}
        response = client.request(method, f"/todos/{todo_id}", json=body, headers=alice.headers)
        assert response.status_code == 422, method


def test_largest_integer_id_is_a_plain_404(client: TestClient, alice: Account) -> None:
    assert client.get(f"/todos/{2**31 - 1}", headers=alice.headers).status_code == 404


def test_put_replaces_every_field_and_moves_updated_at(client: TestClient, alice: Account) -> None:
    todo = create(client, alice, description="2 litres")
    time.sleep(0.01)
    body = {"title": " Buy bread ", "description": "", "priority": 5, "complete": True}
    response = client.put(f"/todos/{todo['id']}", json=body, headers=alice.headers)
    assert response.status_code == 200
    updated = response.json()
    assert (updated["title"], updated["description"], updated["priority"], updated["complete"]) == (
        "Buy bread",
        "",
        5,
        True,
    )
    assert updated["created_at"] == todo["created_at"]
    assert updated["updated_at"] > todo["updated_at"]


@pytest.mark.parametrize("missing", ["title", "description", "priority", "complete"])
def test_put_requires_every_field(client: TestClient, alice: Account, missing: str) -> None:
    todo = create(client, alice)
    body = {"title": "x", "description": "y", "priority": 1, "complete": True}
    del body[missing]
    response = client.put(f"/todos/{todo['id']}", json=body, headers=alice.headers)
    assert response.status_code == 422
    assert client.get(f"/todos/{todo['id']}", headers=alice.headers).json() == todo


def test_patch_changes_only_the_given_fields(client: TestClient, alice: Account) -> None:
    todo = create(client, alice, description="2 litres")
    time.sleep(0.01)
    response = client.patch(f"/todos/{todo['id']}", json={"complete": True}, headers=alice.headers)
    assert response.status_code == 200
    patched = response.json()
    assert patched["complete"] is True
    assert {k: patched[k] for k in ("title", "description", "priority")} == {
        k: todo[k] for k in ("title", "description", "priority")
    }
    assert patched["updated_at"] > todo["updated_at"]


def test_patch_with_an_empty_body_changes_nothing(client: TestClient, alice: Account) -> None:
    todo = create(client, alice)
    response = client.patch(f"/todos/{todo['id']}", json={}, headers=alice.headers)
    assert response.status_code == 200
    assert response.json() == todo


@pytest.mark.parametrize(
    "body",
    [
        {"title": None},
        {"description": None},
        {"priority": None},
        {"complete": None},
        {"title": ""},
        {"priority": 9},
        {"owner_id": 2},
        {"created_at": "2020-01-01T00:00:00Z"},
    ],
)
def test_patch_null_or_invalid_is_422_and_changes_nothing(
    client: TestClient, alice: Account, body: dict[str, Any]
) -> None:
    todo = create(client, alice)
    response = client.patch(f"/todos/{todo['id']}", json=body, headers=alice.headers)
    assert response.status_code == 422
    assert client.get(f"/todos/{todo['id']}", headers=alice.headers).json() == todo


def test_delete_is_204_then_404(client: TestClient, alice: Account) -> None:
    todo = create(client, alice)
    response = client.delete(f"/todos/{todo['id']}", headers=alice.headers)
    assert response.status_code == 204
    assert response.content == b""
    assert client.get(f"/todos/{todo['id']}", headers=alice.headers).status_code == 404
    assert client.delete(f"/todos/{todo['id']}", headers=alice.headers).status_code == 404


@pytest.mark.parametrize(
    ("method", "body"),
    [
        ("GET", None),
        ("PUT", {"title": "mine", "description": "", "priority": 1, "complete": True}),
        ("PATCH", {"title": "mine"}),
        ("DELETE", None),
    ],
)
def test_another_users_todo_is_404_like_a_missing_one_and_unchanged(
    client: TestClient, alice: Account, bob: Account, db: Session, method: str, body: Any
) -> None:
    todo = create(client, alice)
    theirs = client.request(method, f"/todos/{todo['id']}", json=body, headers=bob.headers)
    missing = client.request(method, "/todos/999999", json=body, headers=bob.headers)
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json() == missing.json()
    assert client.get(f"/todos/{todo['id']}", headers=alice.headers).json() == todo
    assert db.get(Todo, todo["id"]) is not None


def test_lists_never_show_another_users_todos(
    client: TestClient, alice: Account, bob: Account
) -> None:
    create(client, alice, title="alice's")
    create(client, bob, title="bob's")
    page = client.get("/todos", headers=bob.headers).json()
    assert [t["title"] for t in page["items"]] == ["bob's"]
    assert page["total"] == 1


@pytest.mark.parametrize("path", ["/todos", "/todos/1", "/todos?limit=5"])
def test_todos_without_a_token_are_401(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


# --- filtering, search, sorting, paging ----------------------------------------
def titles(client: TestClient, account: Account, query: str) -> list[str]:
    response = client.get(f"/todos?{query}", headers=account.headers)
    assert response.status_code == 200, response.text
    return [t["title"] for t in response.json()["items"]]


def test_filters_by_complete_and_priority(client: TestClient, alice: Account) -> None:
    create(client, alice, title="a", priority=1, complete=True)
    create(client, alice, title="b", priority=1)
    create(client, alice, title="c", priority=2, complete=True)
    assert titles(client, alice, "complete=true") == ["a", "c"]
    assert titles(client, alice, "complete=false") == ["b"]
    assert titles(client, alice, "priority=1") == ["a", "b"]
    assert titles(client, alice, "priority=1&complete=true") == ["a"]


def test_search_is_case_insensitive_over_title_and_description_with_plain_wildcards(
    client: TestClient, alice: Account
) -> None:
    create(client, alice, title="100% Done")
    create(client, alice, title="1000 Done")
    create(client, alice, title="snake_case")
    create(client, alice, title="snakeXcase")
    create(client, alice, title="other", description="Mentions MILK here")
    assert titles(client, alice, "q=0%25") == ["100% Done"]  # q=0%
    assert titles(client, alice, "q=%25") == ["100% Done"]
    assert titles(client, alice, "q=e_c") == ["snake_case"]
    assert titles(client, alice, "q=_") == ["snake_case"]
    assert titles(client, alice, "q=milk") == ["other"]
    assert titles(client, alice, "q=DONE") == ["100% Done", "1000 Done"]
    assert titles(client, alice, "q=%5C") == []  # a backslash is plain too


@pytest.mark.parametrize(
    "query",
    [
        "q=" + "x" * 201,
        "q=%00",
        "priority=0",
        "priority=6",
        "complete=maybe",
        "sort=owner_id",
        "sort=",
        "limit=0",
        "limit=101",
        "offset=-1",
        "offset=2147483648",
        "limit=abc",
    ],
)
def test_bad_list_parameters_are_422(client: TestClient, alice: Account, query: str) -> None:
    assert client.get(f"/todos?{query}", headers=alice.headers).status_code == 422


SORT_CASES = {
    "id": ["b", "A", "c", "d"],
    "-id": ["d", "c", "A", "b"],
    "priority": ["A", "c", "b", "d"],
    "-priority": ["b", "d", "A", "c"],
    "title": ["A", "b", "c", "d"],
    "-title": ["d", "c", "b", "A"],
    "created_at": ["b", "A", "c", "d"],
    "-created_at": ["d", "c", "A", "b"],
}


@pytest.mark.parametrize(("sort", "expected"), SORT_CASES.items(), ids=SORT_CASES.keys())
def test_every_sort_key_in_both_directions_with_id_as_tie_breaker(
    client: TestClient, alice: Account, db: Session, sort: str, expected: list[str]
) -> None:
    for title, priority in (("b", 3), ("A", 1), ("c", 1), ("d", 3)):
        create(client, alice, title=title, priority=priority)
        time.sleep(0.005)  # distinct created_at even at SQLite's millisecond resolution
    assert titles(client, alice, f"sort={sort}") == expected


def test_paging_25_todos_by_10_returns_each_exactly_once(
    client: TestClient, alice: Account
) -> None:
    for n in range(25):
        create(client, alice, title=f"todo {n:02}", priority=n % 2 + 1)
    for sort in ("id", "-priority", "title", "-created_at"):
        seen: list[int] = []
        for offset in (0, 10, 20):
            page = client.get(
                f"/todos?limit=10&offset={offset}&sort={sort}", headers=alice.headers
            ).json()
            assert (page["total"], page["limit"], page["offset"]) == (25, 10, offset)
            seen += [t["id"] for t in page["items"]]
        assert len(seen) == 25
        assert len(set(seen)) == 25


def test_default_page_size_is_20_and_offset_past_the_end_is_empty(
    client: TestClient, alice: Account
) -> None:
    for n in range(23):
        create(client, alice, title=f"t{n}")
    page = client.get("/todos", headers=alice.headers).json()
    assert (len(page["items"]), page["total"], page["limit"], page["offset"]) == (20, 23, 20, 0)
    past = client.get("/todos?offset=50", headers=alice.headers).json()
    assert (past["items"], past["total"]) == ([], 23)
    tail = client.get("/todos?offset=20&limit=100", headers=alice.headers).json()
    assert (len(tail["items"]), tail["total"]) == (3, 23)


# --- query discipline -------------------------------------------------------------
@pytest.mark.parametrize("path", ["/todos?limit=100", "/todos?limit=5&offset=1&q=o&sort=-title"])
def test_todo_list_runs_a_fixed_number_of_statements(
    client: TestClient, count_statements: StatementCounter, path: str
) -> None:
    counts = []
    for size in (3, 40):
        account = make_account(client, f"user{size}")
        for n in range(size):
            create(client, account, title=f"todo {n}")
        count_statements.statements.clear()
        response = client.get(path, headers=account.headers)
        assert response.status_code == 200
        counts.append(len(count_statements.statements))
    # The user, the page and (unless the page holds the end) its count: the number
    # does not grow with the page size or the data, so there is no N+1. (A plain list
    # on PostgreSQL is the fast lane's one statement, which is counted too.)
    assert min(counts) >= 1
    assert max(counts) <= 3


def _work_statements(statements: list[str]) -> list[str]:
    """The statements that read or write data (no BEGIN, COMMIT, ROLLBACK, SAVEPOINT or
    the pool's ping)."""
    skipped = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "SELECT 1")
    return [s for s in statements if not s.strip().upper().startswith(skipped)]


def test_each_todo_route_checks_the_caller_in_the_statement_that_does_its_work(
    client: TestClient, count_statements: StatementCounter, alice: Account
) -> None:
    # The token's user and session are checked by the read or write itself: one
    # statement per request where there used to be two (the user, then the work).
    todo = create(client, alice, title="counted")
    path = f"/todos/{todo['id']}"
    body = {"title": "t", "description": "", "priority": 2, "complete": False}
    for method, url, json in (
        ("POST", "/todos", {"title": "new", "priority": 1}),
        ("GET", path, None),
        ("PATCH", path, {"complete": True}),
        ("PUT", path, body),
        ("DELETE", path, None),
    ):
        count_statements.statements.clear()
        response = client.request(method, url, json=json, headers=alice.headers)
        assert response.status_code in (200, 201, 204), (method, response.text)
        work = _work_statements(count_statements.statements)
        assert len(work) == 1, (method, work)
        assert "sessions" in work[0], (method, work)  # the token's check is in it


def test_reading_a_todo_is_one_round_trip_without_ping_or_transaction(
    committed_client: TestClient, round_trips: RoundTrips
) -> None:
    # GET /todos/{id} reads through Database.read: a connection in autocommit (no BEGIN,
    # no ROLLBACK) that retries on a dead connection instead of being pinged. Found,
    # another's, missing or not modified: the one statement that checks the token too.
    client = committed_client
    alice, bob = make_account(client, "alice"), make_account(client, "bob")
    todo = create(client, alice)
    # A write in a session, for comparison: the recorder sees the transaction.
    round_trips.clear()
    assert client.patch("/users/me", json={"firstname": "Al"}, headers=alice.headers).is_success
    assert {"BEGIN", "COMMIT"} <= set(round_trips.sent), round_trips.sent
    path = f"/todos/{todo['id']}"
    etag = client.get(path, headers=alice.headers).headers["ETag"]
    for url, headers, status in (
        (path, alice.headers, 200),
        (path, {**alice.headers, "If-None-Match": etag}, 304),
        (path, bob.headers, 404),
        ("/todos/999999", alice.headers, 404),
    ):
        round_trips.clear()
        assert client.get(url, headers=headers).status_code == status
        (statement,) = round_trips.sent
        assert "FROM users JOIN sessions" in statement, statement


def test_todo_writes_are_one_autocommitted_statement_without_ping(
    committed_client: TestClient, round_trips: RoundTrips
) -> None:
    # A todo write is one statement, so it is its own transaction: psycopg2 sends it
    # in autocommit (no BEGIN before it, no COMMIT after: one round trip), and the
    # pool hands the connection out without a SELECT 1 (its socket said it was alive).
    client = committed_client
    alice = make_account(client, "alice")
    todo = create(client, alice, title="counted")
    path = f"/todos/{todo['id']}"
    body = {"title": "t", "description": "", "priority": 2, "complete": False}
    for method, url, json, verb in (
        ("POST", "/todos", {"title": "new", "priority": 1}, "INSERT"),
        ("PATCH", path, {"complete": True}, "UPDATE"),
        ("PUT", path, body, "UPDATE"),
        ("DELETE", path, None, "DELETE"),
    ):
        round_trips.clear()
        response = client.request(method, url, json=json, headers=alice.headers)
        assert response.status_code in (200, 201, 204), (method, response.text)
        (statement,) = round_trips.sent
        assert statement.startswith(verb), (method, statement)
    # And what they wrote is there for everyone (committed).
    assert client.get(path, headers=alice.headers).status_code == 404
    assert [t["title"] for t in client.get("/todos", headers=alice.headers).json()["items"]] == [
        "new"
    ]


@pytest.mark.parametrize("method", ["GET", "PATCH", "PUT", "DELETE", "POST"])
def test_a_revoked_token_is_401_on_every_todo_route_and_changes_nothing(
    client: TestClient, alice: Account, bob: Account, method: str
) -> None:
    todo = create(client, alice, title="kept")
    client.post("/auth/logout", headers=alice.headers)  # the token still has a good signature
    url = "/todos" if method == "POST" else f"/todos/{todo['id']}"
    body = {"title": "t", "description": "", "priority": 2, "complete": True}
    response = client.request(
        method, url, json=None if method in ("GET", "DELETE") else body, headers=alice.headers
    )
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"] == "Bearer"
    fresh = login(client, alice.username)
    mine = client.get("/todos", headers={"Authorization": f"Bearer {fresh}"}).json()
    assert [(t["id"], t["title"], t["complete"]) for t in mine["items"]] == [
        (todo["id"], "kept", False)
    ]
    # Someone else's todo is 404 to a valid caller, whichever the route.
    other = client.request(
        method,
        f"/todos/{todo['id']}",
        json=None if method in ("GET", "DELETE") else body,
        headers=bob.headers,
    )
    assert other.status_code == (405 if method == "POST" else 404)


def test_a_json_body_that_is_not_utf8_is_422(client: TestClient, alice: Account) -> None:
    response = client.post(
        "/todos",
        content=b'{"title": "\xff\xfe", "priority": 1}',
        headers={**alice.headers, "content-type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"


@pytest.mark.parametrize(
    "body",
    [b'{"title": "a", "priority": ' + b"9" * 5000 + b"}", b"[" * 100_000],
    ids=["5000-digit-integer", "deep-nesting"],
)
def test_json_the_parser_gives_up_on_is_422_not_400(
    client: TestClient, alice: Account, body: bytes
) -> None:
    response = client.post(
        "/todos", content=body, headers={**alice.headers, "content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"
