"""Deep lists: keyset pages by signed cursors, on every list and under every sort."""

import random
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from tests.conftest import Account, make_account

SORTS = ["id", "-id", "priority", "-priority", "title", "-title", "created_at", "-created_at"]
TITLES = ["apple", "Apple", "banana", "APPLE", "cherry", "Banana", "date", "apple pie"]


def create(client: TestClient, account: Account, **fields: Any) -> dict[str, Any]:
    body = {"title": "Buy milk", "priority": 3, **fields}
    response = client.post("/todos", json=body, headers=account.headers)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def spread_timestamps(db: Session, ids: list[int]) -> None:
    """Give the todos created_at values with ties (three rows share each instant)."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for n, todo_id in enumerate(ids):
        db.execute(
            text("UPDATE todos SET created_at = :at WHERE id = :id"),
            {"at": start + timedelta(seconds=(n * 7 % 11) // 3), "id": todo_id},
        )
    db.commit()


def expected_order(todos: list[dict[str, Any]], sort: str) -> list[int]:
    """The contract's order: the key (titles ignoring case), then id ascending."""
    field = sort.lstrip("-")
    if field == "id":
        return sorted((t["id"] for t in todos), reverse=sort == "-id")

    def key(todo: dict[str, Any]) -> Any:
        value = todo[field]
        if field == "created_at":
            # As instants, not as text: a time on a whole second is written without
            # its fraction ("...:34Z"), which as text sorts after "...:34.5Z".
            return datetime.fromisoformat(value)
        return value.lower() if field == "title" else value

    by_id = sorted(todos, key=lambda t: t["id"])
    return [t["id"] for t in sorted(by_id, key=key, reverse=sort.startswith("-"))]


def walk(
    client: TestClient,
    account: Account,
    path: str,
    *,
    between: Any = None,
    limit: int = 3,
) -> list[dict[str, Any]]:
    """Every item of a listing, page by page through next_cursor."""
    sep = "&" if "?" in path else "?"
    page = client.get(f"{path}{sep}limit={limit}", headers=account.headers).json()
    assert page["total"] is not None  # the first page is an offset page: counted
    seen = list(page["items"])
    while page["next_cursor"] is not None:
        if between is not None:
            between()
        cursor = quote(page["next_cursor"])
        response = client.get(f"{path}{sep}limit={limit}&cursor={cursor}", headers=account.headers)
        assert response.status_code == 200, response.text
        page = response.json()
        assert (page["total"], page["offset"], page["limit"]) == (None, 0, limit)
        seen.extend(page["items"])
    return seen


@pytest.mark.parametrize("sort", SORTS)
def test_a_walk_sees_every_lasting_row_once_while_rows_come_and_go(
    client: TestClient, alice: Account, db: Session, sort: str
) -> None:
    made = [
        create(client, alice, title=TITLES[n % len(TITLES)], priority=n % 3 + 1) for n in range(24)
    ]
    spread_timestamps(db, [todo["id"] for todo in made])
    chance = random.Random(sort)
    doomed = chance.sample([todo["id"] for todo in made], 8)
    deleted: set[int] = set()

    def churn() -> None:
        # Between pages: one row goes (seen already or not yet), one new row comes.
        if doomed:
            gone = doomed.pop()
            assert client.delete(f"/todos/{gone}", headers=alice.headers).status_code == 204
            deleted.add(gone)
        title = chance.choice(TITLES)
        create(client, alice, title=title, priority=chance.randint(1, 5))

    seen = walk(client, alice, f"/todos?sort={sort}", between=churn)
    ids = [todo["id"] for todo in seen]
    assert len(ids) == len(set(ids)), "a row was seen twice"
    lasting = {todo["id"] for todo in made} - deleted
    assert lasting <= set(ids), "a row that existed throughout was skipped"
    assert len(deleted) >= 4  # the walk was long enough to churn
    # What was seen is in the contract's order (rows added later may or may not show).
    final = client.get("/todos?limit=100", headers=alice.headers).json()["items"]
    current = {todo["id"]: todo for todo in final}
    seen_now = [current[i] for i in ids if i in current]
    assert [t["id"] for t in seen_now] == expected_order(seen_now, sort)


@pytest.mark.parametrize("sort", SORTS)
def test_a_walk_gives_what_one_big_page_gives(
    client: TestClient, alice: Account, db: Session, sort: str
) -> None:
    made = [
        create(
            client, alice, title=TITLES[n % len(TITLES)], priority=n % 2 + 2, complete=n % 2 == 0
        )
        for n in range(17)
    ]
    spread_timestamps(db, [todo["id"] for todo in made])
    for query in ("", "&complete=true", "&priority=3", "&q=APP", "&q=an&complete=false"):
        whole = client.get(f"/todos?sort={sort}&limit=100{query}", headers=alice.headers).json()
        walked = walk(client, alice, f"/todos?sort={sort}{query}", limit=2)
        assert walked == whole["items"], query
        assert [t["id"] for t in walked] == expected_order(walked, sort)


def test_offset_pages_give_a_cursor_that_continues_after_them(
    client: TestClient, alice: Account
) -> None:
    ids = [create(client, alice, title=f"t{n}")["id"] for n in range(7)]
    page = client.get("/todos?limit=3&offset=2", headers=alice.headers).json()
    assert (page["total"], page["offset"]) == (7, 2)
    after = client.get(
        f"/todos?limit=3&cursor={quote(page['next_cursor'])}", headers=alice.headers
    ).json()
    assert [t["id"] for t in after["items"]] == ids[5:]
    assert after["next_cursor"] is None
    last = client.get("/todos?limit=3&offset=4", headers=alice.headers).json()
    assert (last["total"], last["next_cursor"]) == (7, None)
    full = client.get("/todos?limit=7", headers=alice.headers).json()
    assert (full["total"], full["next_cursor"]) == (7, None)
    past = client.get("/todos?limit=3&offset=30", headers=alice.headers).json()
    assert (past["items"], past["total"], past["next_cursor"]) == ([], 7, None)


def test_limit_may_change_along_a_walk(client: TestClient, alice: Account) -> None:
    ids = [create(client, alice, title=f"t{n}")["id"] for n in range(6)]
    first = client.get("/todos?limit=2", headers=alice.headers).json()
    rest = client.get(
        f"/todos?limit=10&cursor={quote(first['next_cursor'])}", headers=alice.headers
    ).json()
    assert [t["id"] for t in rest["items"]] == ids[2:]
    assert rest["limit"] == 10


def test_admin_lists_walk_by_cursor_too(
    client: TestClient, admin: Account, alice: Account, bob: Account
) -> None:
    for n in range(5):
        create(client, alice, title=f"a{n}", priority=n % 5 + 1)
        create(client, bob, title=f"b{n}", priority=n % 5 + 1)
    for path in ("/admin/todos?sort=-priority", f"/admin/todos?owner_id={bob.id}&sort=title"):
        whole = client.get(f"{path}&limit=100", headers=admin.headers).json()["items"]
        assert walk(client, admin, path, limit=3) == whole
    for n in range(4):
        make_account(client, f"user{n}")
    for path in ("/admin/users", "/admin/users?role=user&q=USER"):
        sep = "&" if "?" in path else "?"
        whole = client.get(f"{path}{sep}limit=100", headers=admin.headers).json()["items"]
        walked = walk(client, admin, path, limit=2)
        assert walked == whole
        assert [u["id"] for u in walked] == sorted(u["id"] for u in walked)


# --- what a cursor refuses -------------------------------------------------------
@pytest.fixture
def cursor(client: TestClient, alice: Account) -> str:
    for n in range(5):
        create(client, alice, title=f"t{n}", priority=2)
    page = client.get("/todos?limit=2&sort=-priority&complete=false", headers=alice.headers)
    value: str = page.json()["next_cursor"]
    return value


def _flip(text_: str, at: int) -> str:
    swapped = "A" if text_[at] != "A" else "B"
    return text_[:at] + swapped + text_[at + 1 :]


def test_tampered_or_malformed_cursors_are_422(
    client: TestClient, alice: Account, cursor: str
) -> None:
    payload, _, mac = cursor.partition(".")
    tampered = [
        _flip(cursor, 0),
        _flip(cursor, len(payload) - 1),
        _flip(cursor, len(cursor) - 1),  # the MAC's spare bits count too
        cursor + "A",
        cursor[:-1],
        f"{payload}.",
        payload,
        f"{payload}!.{mac}",
        f"{payload} .{mac}",
        "",
        "nonsense",
        "é." + mac,
        "x" * 2048,
    ]
    for bad in tampered:
        response = client.get(
            f"/todos?limit=2&sort=-priority&complete=false&cursor={quote(bad)}",
            headers=alice.headers,
        )
        assert response.status_code == 422, bad
        assert response.json()["detail"][0]["loc"] == ["query", "cursor"]
    too_long = client.get(f"/todos?cursor={'x' * 2049}", headers=alice.headers)
    assert too_long.status_code == 422


@pytest.mark.parametrize(
    "query",
    [
        "sort=-priority",  # complete dropped
        "sort=-priority&complete=true",
        "sort=priority&complete=false",
        "complete=false",  # a missing sort is sort=id
        "sort=-priority&complete=false&priority=2",
        "sort=-priority&complete=false&q=t",
    ],
)
def test_a_cursor_with_other_filters_or_sort_is_422(
    client: TestClient, alice: Account, cursor: str, query: str
) -> None:
    response = client.get(f"/todos?{query}&cursor={quote(cursor)}", headers=alice.headers)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "cursor"]


@pytest.mark.parametrize("offset", ["0", "2"])
def test_a_cursor_with_any_offset_is_422(
    client: TestClient, alice: Account, cursor: str, offset: str
) -> None:
    response = client.get(
        f"/todos?sort=-priority&complete=false&offset={offset}&cursor={quote(cursor)}",
        headers=alice.headers,
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "offset"]


def test_the_same_filters_spelled_otherwise_are_the_same_listing(
    client: TestClient, alice: Account, cursor: str
) -> None:
    response = client.get(
        f"/todos?complete=0&sort=-priority&limit=50&cursor={quote(cursor)}",
        headers=alice.headers,
    )
    assert response.status_code == 200
    assert len(response.json()["items"]) == 3


def test_a_cursor_is_good_only_for_its_own_list_and_owner(
    client: TestClient, alice: Account, bob: Account, admin: Account
) -> None:
    for n in range(3):
        create(client, alice, title=f"a{n}")
        create(client, bob, title=f"b{n}")
    alices = client.get("/todos?limit=1", headers=alice.headers).json()["next_cursor"]
    assert client.get(f"/todos?cursor={quote(alices)}", headers=bob.headers).status_code == 422
    for path in ("/admin/todos", f"/admin/todos?owner_id={bob.id}", "/admin/users"):
        sep = "&" if "?" in path else "?"
        response = client.get(f"{path}{sep}cursor={quote(alices)}", headers=admin.headers)
        assert response.status_code == 422, path
    users = client.get("/admin/users?limit=1", headers=admin.headers).json()["next_cursor"]
    assert client.get(f"/todos?cursor={quote(users)}", headers=alice.headers).status_code == 422
    assert (
        client.get(f"/admin/users?role=admin&cursor={quote(users)}", headers=admin.headers)
    ).status_code == 422


def test_cursors_on_created_at_ties_at_sub_second_precision(
    client: TestClient, alice: Account, db: Session
) -> None:
    made = [create(client, alice, title=f"t{n}")["id"] for n in range(6)]
    instants = [
        datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=UTC),
        datetime(2026, 5, 1, 12, 0, 0, 123457, tzinfo=UTC),
    ]
    for n, todo_id in enumerate(made):
        db.execute(
            text("UPDATE todos SET created_at = :at WHERE id = :id"),
            {"at": instants[n % 2], "id": todo_id},
        )
    db.commit()
    for sort in ("created_at", "-created_at"):
        whole = client.get(f"/todos?sort={sort}&limit=100", headers=alice.headers).json()
        assert walk(client, alice, f"/todos?sort={sort}", limit=1) == whole["items"]
