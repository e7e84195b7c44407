"""/admin: role-gated views and changes across users."""

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tests.conftest import (
    PASSWORD,
    Account,
    Backend,
    RoundTrips,
    StatementCounter,
    login,
    make_account,
    set_role,
)
from tests.test_todos import create
from todoapp import security
from todoapp.models import Todo, User
from todoapp.schemas import Page, TodoOut, UserOut
from todoapp.services import todos, users

ADMIN_ROUTES = [
    ("GET", "/admin/todos", None),
    ("DELETE", "/admin/todos/1", None),
    ("GET", "/admin/users", None),
    ("GET", "/admin/users/1", None),
    ("PATCH", "/admin/users/1", {"role": "user"}),
    ("DELETE", "/admin/users/1", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES)
def test_a_signed_in_non_admin_gets_403_and_nothing_changes(
    client: TestClient, alice: Account, admin: Account, method: str, path: str, body: Any
) -> None:
    path = path.replace("/1", f"/{admin.id}")
    response = client.request(method, path, json=body, headers=alice.headers)
    assert response.status_code == 403
    assert response.json() == {"detail": "admin role required"}
    assert client.get("/users/me", headers=admin.headers).json()["role"] == "admin"


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES)
def test_no_token_on_admin_routes_is_401(
    client: TestClient, method: str, path: str, body: Any
) -> None:
    response = client.request(method, path, json=body)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_admin_lists_todos_across_owners_with_owner_filter(
    client: TestClient, admin: Account, alice: Account, bob: Account
) -> None:
    create(client, alice, title="a1", priority=1)
    create(client, bob, title="b1", priority=2, complete=True)
    create(client, alice, title="A2 milk", priority=2)
    page = client.get("/admin/todos", headers=admin.headers).json()
    assert [(t["title"], t["owner_id"]) for t in page["items"]] == [
        ("a1", alice.id),
        ("b1", bob.id),
        ("A2 milk", alice.id),
    ]
    assert page["total"] == 3

    def titles(query: str) -> list[str]:
        response = client.get(f"/admin/todos?{query}", headers=admin.headers)
        assert response.status_code == 200
        return [t["title"] for t in response.json()["items"]]

    assert titles(f"owner_id={alice.id}") == ["a1", "A2 milk"]
    assert titles(f"owner_id={bob.id}&complete=true") == ["b1"]
    assert titles("priority=2&sort=-title") == ["b1", "A2 milk"]
    assert titles("q=MILK") == ["A2 milk"]
    assert titles("owner_id=999999") == []
    for bad in ("owner_id=0", "owner_id=2147483648", "limit=101", "sort=owner"):
        assert client.get(f"/admin/todos?{bad}", headers=admin.headers).status_code == 422


def test_admin_deletes_any_todo_then_404(
    client: TestClient, admin: Account, alice: Account, db: Session
) -> None:
    todo = create(client, alice)
    assert client.delete(f"/admin/todos/{todo['id']}", headers=admin.headers).status_code == 204
    assert db.get(Todo, todo["id"]) is None
    assert client.delete(f"/admin/todos/{todo['id']}", headers=admin.headers).status_code == 404


def test_admin_lists_users_by_id_with_filters_and_paging(
    client: TestClient, admin: Account, alice: Account, bob: Account, db: Session
) -> None:
    client.patch("/users/me", json={"lastname": "Liddell"}, headers=alice.headers)
    db.get_one(User, bob.id).is_active = False
    db.commit()

    def names(query: str = "") -> list[str]:
        response = client.get(f"/admin/users?{query}", headers=admin.headers)
        assert response.status_code == 200, response.text
        return [u["username"] for u in response.json()["items"]]

    assert names() == ["root", "alice", "bob"]
    assert names("role=admin") == ["root"]
    assert names("role=user") == ["alice", "bob"]
    assert names("is_active=false") == ["bob"]
    assert names("q=LIDD") == ["alice"]
    assert names("q=BOB@example") == ["bob"]
    assert names("q=%25") == []
    page = client.get("/admin/users?limit=2&offset=1", headers=admin.headers).json()
    assert ([u["username"] for u in page["items"]], page["total"], page["limit"]) == (
        ["alice", "bob"],
        3,
        2,
    )
    assert all("hash" not in key for u in page["items"] for key in u)
    for bad in ("role=root", "is_active=perhaps", "limit=0", "offset=-1"):
        assert client.get(f"/admin/users?{bad}", headers=admin.headers).status_code == 422


def test_admin_reads_one_user_or_404(client: TestClient, admin: Account, alice: Account) -> None:
    response = client.get(f"/admin/users/{alice.id}", headers=admin.headers)
    assert response.status_code == 200
    assert response.json()["username"] == "alice"
    assert client.get("/admin/users/999999", headers=admin.headers).status_code == 404
    assert client.get("/admin/users/0", headers=admin.headers).status_code == 422


def test_promotion_applies_at_once_and_demotion_too(
    client: TestClient, admin: Account, alice: Account
) -> None:
    response = client.patch(
        f"/admin/users/{alice.id}", json={"role": "admin"}, headers=admin.headers
    )
    assert response.status_code == 200
    assert response.json()["role"] == "admin"
    assert client.get("/admin/users", headers=alice.headers).status_code == 200  # same token
    client.patch(f"/admin/users/{alice.id}", json={"role": "user"}, headers=admin.headers)
    assert client.get("/admin/users", headers=alice.headers).status_code == 403


def test_disabling_revokes_tokens_which_stay_revoked_after_reenabling(
    client: TestClient, admin: Account, alice: Account
) -> None:
    response = client.patch(
        f"/admin/users/{alice.id}", json={"is_active": False}, headers=admin.headers
    )
    assert response.status_code == 200
    assert response.json()["is_active"] is False
    assert client.get("/users/me", headers=alice.headers).status_code == 401
    login_attempt = client.post("/auth/token", data={"username": "alice", "password": PASSWORD})
    assert login_attempt.status_code == 403
    client.patch(f"/admin/users/{alice.id}", json={"is_active": True}, headers=admin.headers)
    assert client.get("/users/me", headers=alice.headers).status_code == 401
    fresh = login(client, "alice")
    assert client.get("/users/me", headers={"Authorization": f"Bearer {fresh}"}).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"role": "root"},
        {"role": None},
        {"is_active": None},
        {"is_active": "no"},
        {"username": "x"},
        {"email": "x@example.com"},
    ],
)
def test_admin_patch_with_invalid_body_is_422(
    client: TestClient, admin: Account, alice: Account, body: dict[str, Any]
) -> None:
    response = client.patch(f"/admin/users/{alice.id}", json=body, headers=admin.headers)
    assert response.status_code == 422


def test_admin_patch_of_a_missing_user_is_404(client: TestClient, admin: Account) -> None:
    response = client.patch("/admin/users/999999", json={"role": "user"}, headers=admin.headers)
    assert response.status_code == 404


@pytest.mark.parametrize("body", [{"role": "user"}, {"is_active": False}])
def test_an_admin_cannot_demote_or_disable_themselves(
    client: TestClient, admin: Account, bob: Account, db: Session, body: dict[str, Any]
) -> None:
    set_role(db, bob.id, "admin")  # not the last admin: still refused
    response = client.patch(f"/admin/users/{admin.id}", json=body, headers=admin.headers)
    assert response.status_code == 409
    me = client.get("/users/me", headers=admin.headers).json()
    assert (me["role"], me["is_active"]) == ("admin", True)


def test_an_admin_may_patch_themselves_without_losing_anything(
    client: TestClient, admin: Account
) -> None:
    response = client.patch(
        f"/admin/users/{admin.id}", json={"role": "admin", "is_active": True}, headers=admin.headers
    )
    assert response.status_code == 200


def test_admins_can_demote_each_other_until_one_is_left(
    client: TestClient, admin: Account, bob: Account, db: Session
) -> None:
    set_role(db, bob.id, "admin")
    response = client.patch(f"/admin/users/{bob.id}", json={"role": "user"}, headers=admin.headers)
    assert response.status_code == 200
    admins = db.scalar(select(func.count()).select_from(User).where(User.role == "admin"))
    assert admins == 1


def test_admin_deletes_a_user_with_their_todos(
    client: TestClient, admin: Account, alice: Account, bob: Account, db: Session
) -> None:
    create(client, alice)
    create(client, alice)
    kept = create(client, bob)
    assert client.delete(f"/admin/users/{alice.id}", headers=admin.headers).status_code == 204
    assert db.get(User, alice.id) is None
    assert db.scalars(select(Todo.id)).all() == [kept["id"]]
    assert client.delete(f"/admin/users/{alice.id}", headers=admin.headers).status_code == 404
    assert client.get("/users/me", headers=alice.headers).status_code == 401


def test_an_admin_cannot_delete_themselves_through_admin(
    client: TestClient, admin: Account
) -> None:
    response = client.delete(f"/admin/users/{admin.id}", headers=admin.headers)
    assert response.status_code == 409
    assert client.get("/users/me", headers=admin.headers).status_code == 200


@pytest.mark.parametrize("path", ["/admin/todos?limit=100", "/admin/users?limit=100"])
def test_admin_lists_run_a_fixed_number_of_statements(
    client: TestClient, admin: Account, count_statements: StatementCounter, path: str
) -> None:
    counts = []
    for size in (2, 30):
        for n in range(size):
            account = make_account(client, f"u{size}x{n}") if n < 3 else None
            create(client, account or admin, title=f"t{n}")
        count_statements.statements.clear()
        assert client.get(path, headers=admin.headers).status_code == 200
        counts.append(len(count_statements.statements))
    assert min(counts) >= 1  # the counter sees the app's statements
    assert max(counts) <= 3  # and they do not grow with the data


ADMIN_READS = ["/admin/todos", "/admin/users", "/admin/users/{id}"]


@pytest.mark.parametrize("path", ADMIN_READS)
def test_admin_reads_check_the_caller_then_read_without_ping_or_transaction(
    committed_client: TestClient, round_trips: RoundTrips, pg_backend: Backend, path: str
) -> None:
    # Database.read (autocommit, no pool ping): one statement checks the token and the
    # role, one reads; where AdminUser and a session cost a ping, BEGIN and ROLLBACK more.
    # A list's page (and its total) is read by the statement that checks: one in all.
    client = committed_client
    alice, root = make_account(client, "alice"), make_account(client, "root")
    with Session(pg_backend.plain) as db:
        set_role(db, root.id, "admin")
    create(client, alice)
    reads = 2 if "{id}" in path else 1
    path = path.format(id=alice.id)
    for account, status, sent in ((root, 200, reads), (alice, 403, 1)):
        round_trips.clear()
        assert client.get(path, headers=account.headers).status_code == status
        assert len(round_trips.sent) == sent, round_trips.sent
        assert "users.role" in round_trips.sent[0], round_trips.sent  # the check comes first
        assert not {"SELECT 1", "BEGIN", "ROLLBACK"} & set(round_trips.sent)


@pytest.mark.parametrize("path", ADMIN_READS)
def test_admin_reads_answer_401_then_422_then_403_then_404(
    client: TestClient, alice: Account, admin: Account, path: str
) -> None:
    # A bad token is refused before anything; a well-signed one is checked against the
    # database after the request was validated (so a revoked token's bad query is 422);
    # a non-admin learns nothing, not even what exists.
    missing, bad = path.format(id=999999), path.format(id=0) + "?limit=0"
    revoked = make_account(client, "carol").headers
    client.post("/auth/logout", headers=revoked)
    garbage = {"Authorization": "Bearer not-a-token"}

    def status(url: str, headers: dict[str, str]) -> int:
        return client.get(url, headers=headers).status_code

    assert (status(bad, garbage), status(missing, garbage)) == (401, 401)
    assert (status(bad, revoked), status(missing, revoked)) == (422, 401)
    assert (status(bad, alice.headers), status(missing, alice.headers)) == (422, 403)
    expected = 404 if "{id}" in path else 200
    assert (status(bad, admin.headers), status(missing, admin.headers)) == (422, expected)


def test_an_admin_list_reads_nothing_for_a_caller_who_is_not_an_admin(
    committed_client: TestClient, pg_backend: Backend
) -> None:
    # The check and the page are one statement: for anyone but an admin, PostgreSQL
    # reads neither the page nor its total (nothing to learn, not even from the time it
    # takes). EXPLAIN ANALYZE of the statement itself, as an admin and as a user.
    client = committed_client
    alice, root = make_account(client, "alice"), make_account(client, "root")
    with Session(pg_backend.plain) as db:
        set_role(db, root.id, "admin")
    for n in range(3):
        create(client, alice, title=f"t{n}")
    engine = client.app.state.database.engine  # type: ignore[attr-defined]
    for listing in ("todos", "users"):
        if listing == "todos":
            statement, _ = todos._checked_statements(
                "id", False, False, False, False, False, True, True
            )
            read = {"todos", "todo_totals"}
        else:
            statement, _ = users._user_statements(False, False, False, False)
            read = {"users"}
        compiled = statement.compile(dialect=engine.dialect)
        seen = {}
        for account in (root, alice):
            claims = security.read_access_token(account.token)
            assert claims is not None
            params = {**compiled.params, **users.token_params(claims), "limit": 21, "offset": 0}
            params.update(owner_id=None, complete=None, priority=None, pattern=None)
            params.update(role=None, is_active=None)
            with engine.connect() as connection:
                plan = connection.exec_driver_sql(
                    f"EXPLAIN (ANALYZE, FORMAT JSON) {compiled.string}", params
                ).scalar_one()
            seen[account.username] = sum(
                node.get("Actual Rows", 0) * node.get("Actual Loops", 0)
                for node in _nodes(plan[0]["Plan"])
                if node.get("Relation Name") in read and node.get("Alias") != "caller"
            )
        # An admin's page reads rows of the listing; a user's reads only their own row.
        own_row = 1 if listing == "users" else 0
        assert seen["root"] > own_row + 1, (listing, seen)
        assert seen["alice"] == own_row, (listing, seen)


def _nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(found for child in node.get("Plans", []) for found in _nodes(child))]


@pytest.mark.parametrize(("who", "status"), [("revoked", 401), ("alice", 403), ("admin", 422)])
@pytest.mark.parametrize("path", ["/admin/todos", "/admin/users", "/todos"])
def test_a_bad_cursor_is_422_only_once_the_caller_is_checked(
    client: TestClient, alice: Account, admin: Account, path: str, who: str, status: int
) -> None:
    # As when the check was a statement of its own: 401, then 403, then the cursor.
    revoked = make_account(client, "carol")
    client.post("/auth/logout", headers=revoked.headers)
    headers = {"revoked": revoked.headers, "alice": alice.headers, "admin": admin.headers}[who]
    if path == "/todos" and who == "alice":
        status = 422  # her own list: she may read it
    response = client.get(f"{path}?cursor=not-a-cursor", headers=headers)
    assert response.status_code == status, response.text


ADMIN_PAGES = [
    "/admin/todos?limit=2",
    "/admin/todos?limit=2&offset=2",
    "/admin/todos?offset=50",  # past the end: no row, and still the total
    "/admin/todos?owner_id={bob}&sort=-created_at&limit=1",
    "/admin/todos?sort=-title&complete=false&limit=3",
    "/admin/todos?q=MILK",  # a search: counted apart from the page
    "/admin/todos?owner_id=999999",  # an owner with nothing
    "/admin/users?limit=2",
    "/admin/users?offset=50",
    "/admin/users?role=user&is_active=true&limit=1",
    "/admin/users?q=BO",
]


@pytest.mark.parametrize("path", ADMIN_PAGES)
def test_admin_pages_are_what_the_page_models_write_with_their_totals(
    client: TestClient, db: Session, admin: Account, alice: Account, bob: Account, path: str
) -> None:
    # The admin's check, the page and its total come from one statement, and the page is
    # written from its rows without the models (pages.py): the same bytes as the models
    # write, the same items and totals as reading the tables says.
    create(client, alice, title="a1", priority=1)
    create(client, bob, title="b1 milk", priority=2, complete=True)
    create(client, alice, title="A2 Milk", priority=2)
    create(client, bob, title="b2", priority=5)
    create(client, alice, title="B2", priority=3)  # a tie with bob's "b2" in title order
    response = client.get(path.format(bob=bob.id), headers=admin.headers)
    assert response.status_code == 200
    model = Page[TodoOut] if path.startswith("/admin/todos") else Page[UserOut]
    written = model.model_validate_json(response.content).model_dump_json().encode()
    assert response.content == written
    page = response.json()
    db.commit()  # what follows reads the tables as they are now
    if path.startswith("/admin/todos"):
        every = [
            TodoOut.model_validate(todo).model_dump(mode="json")
            for todo in db.scalars(select(Todo).order_by(Todo.id))
        ]
        mine = {
            "/admin/todos?owner_id={bob}&sort=-created_at&limit=1": [
                t for t in reversed(every) if t["owner_id"] == bob.id
            ],
            # Descending titles, ties by id ascending (a stable sort keeps the id order).
            "/admin/todos?sort=-title&complete=false&limit=3": sorted(
                (t for t in every if not t["complete"]),
                key=lambda t: t["title"].lower(),
                reverse=True,
            ),
            "/admin/todos?q=MILK": [t for t in every if "milk" in t["title"].lower()],
            "/admin/todos?owner_id=999999": [],
        }.get(path, every)
    else:
        every = [
            UserOut.model_validate(user).model_dump(mode="json")
            for user in db.scalars(select(User).order_by(User.id))
        ]
        mine = {
            "/admin/users?role=user&is_active=true&limit=1": [
                u for u in every if u["role"] == "user" and u["is_active"]
            ],
            "/admin/users?q=BO": [
                u
                for u in every
                if any(
                    "bo" in (u[name] or "").lower()
                    for name in ("username", "email", "firstname", "lastname")
                )
            ],
        }.get(path, every)
    assert page["total"] == len(mine)
    start = page["offset"]
    assert page["items"] == mine[start : start + page["limit"]]
