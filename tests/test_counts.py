"""todo_counts: the counts behind `total`, kept exact by the database through every write."""

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.orm import Session

from tests.conftest import (
    Account,
    Backend,
    login,
    make_account,
    migrate,
    register,
)
from todoapp.database import database_url

KEPT = (
    "SELECT owner_id, complete, priority, todos FROM todo_counts WHERE todos <> 0 ORDER BY 1, 2, 3"
)
COUNTED = (
    "SELECT owner_id, complete, priority, count(*) FROM todos "
    "GROUP BY owner_id, complete, priority ORDER BY 1, 2, 3"
)


# Every owner's, per stripe of owners (migration 0009).
TOTALS_KEPT = (
    "SELECT stripe, complete, priority, todos FROM todo_totals WHERE todos <> 0 ORDER BY 1, 2, 3"
)
TOTALS_COUNTED = (
    "SELECT owner_id % 16, complete, priority, count(*) FROM todos "
    "GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
)


def assert_exact(connection: Connection | Session) -> None:
    """todo_counts and todo_totals hold what counting the todos gives."""
    for kept_query, counted_query, table in (
        (KEPT, COUNTED, "todo_counts"),
        (TOTALS_KEPT, TOTALS_COUNTED, "todo_totals"),
    ):
        kept = [tuple(row) for row in connection.execute(text(kept_query))]
        counted = [tuple(row) for row in connection.execute(text(counted_query))]
        assert [(o, bool(c), p, n) for o, c, p, n in kept] == [
            (o, bool(c), p, n) for o, c, p, n in counted
        ], table
        negative = connection.execute(text(f"SELECT count(*) FROM {table} WHERE todos < 0"))
        assert negative.scalar() == 0, table


# Every user's, per stripe of users, role and is_active (migration 0010).
USER_TOTALS_KEPT = (
    "SELECT stripe, role, is_active, users FROM user_totals WHERE users <> 0 ORDER BY 1, 2, 3"
)
USER_TOTALS_COUNTED = (
    "SELECT id % 16, role, is_active, count(*) FROM users GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
)


def assert_users_exact(connection: Connection | Session) -> None:
    """user_totals holds what counting the users gives."""
    kept = [tuple(row) for row in connection.execute(text(USER_TOTALS_KEPT))]
    counted = [tuple(row) for row in connection.execute(text(USER_TOTALS_COUNTED))]
    assert [(s, r, bool(a), n) for s, r, a, n in kept] == [
        (s, r, bool(a), n) for s, r, a, n in counted
    ]
    negative = connection.execute(text("SELECT count(*) FROM user_totals WHERE users < 0"))
    assert negative.scalar() == 0


def create(client: TestClient, account: Account, **fields: Any) -> dict[str, Any]:
    body = {"title": "t", "priority": 3, **fields}
    response = client.post("/todos", json=body, headers=account.headers)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def test_counts_follow_every_kind_of_write(
    client: TestClient, db: Session, alice: Account, bob: Account, admin: Account
) -> None:
    made = [
        create(client, account, priority=n % 5 + 1, complete=n % 2 == 0)
        for n in range(12)
        for account in (alice, bob)
    ]
    assert_exact(db)
    for todo in made[:6]:
        path = f"/todos/{todo['id']}"
        owner = alice if todo["owner_id"] == alice.id else bob
        client.patch(path, json={"priority": 1, "complete": True}, headers=owner.headers)
    full = {"title": "x", "description": "", "priority": 5, "complete": False}
    owner = alice if made[7]["owner_id"] == alice.id else bob
    assert (
        client.put(f"/todos/{made[7]['id']}", json=full, headers=owner.headers).status_code == 200
    )
    assert_exact(db)
    owner = alice if made[8]["owner_id"] == alice.id else bob
    assert client.delete(f"/todos/{made[8]['id']}", headers=owner.headers).status_code == 204
    assert client.delete(f"/admin/todos/{made[9]['id']}", headers=admin.headers).status_code == 204
    assert_exact(db)
    carol = make_account(client, "carol")
    for n in range(3):
        create(client, carol, priority=n + 1)
    assert client.delete("/users/me", headers=carol.headers).status_code == 204
    assert client.delete(f"/admin/users/{bob.id}", headers=admin.headers).status_code == 204
    assert_exact(db)
    gone = db.execute(
        text("SELECT count(*) FROM todo_counts WHERE owner_id IN (:b, :c)"),
        {"b": bob.id, "c": carol.id},
    )
    assert gone.scalar() == 0


def test_totals_are_exact_for_every_filter(
    client: TestClient, alice: Account, bob: Account
) -> None:
    for n in range(30):
        create(client, alice, priority=n % 5 + 1, complete=n % 3 == 0, title=f"task {n}")
    create(client, bob, priority=1)
    todos = client.get("/todos?limit=100", headers=alice.headers).json()["items"]
    for query, keep in (
        ("", lambda t: True),
        ("complete=true", lambda t: t["complete"]),
        ("complete=false&priority=2", lambda t: not t["complete"] and t["priority"] == 2),
        ("priority=5", lambda t: t["priority"] == 5),
        ("q=task 1", lambda t: "task 1" in t["title"]),
    ):
        page = client.get(f"/todos?limit=2&{query}", headers=alice.headers).json()
        assert page["total"] == sum(1 for t in todos if keep(t)), query


def test_admin_totals_are_exact_for_every_filter(
    client: TestClient, alice: Account, bob: Account, admin: Account
) -> None:
    # Every owner's todos (todo_totals, by stripe of owners), with and without an owner.
    for n in range(20):
        create(client, alice, priority=n % 5 + 1, complete=n % 3 == 0)
        create(client, bob, priority=n % 2 + 1, complete=n % 4 == 0)
    everyone = client.get("/admin/todos?limit=100", headers=admin.headers).json()["items"]
    assert len(everyone) == 40
    for query, keep in (
        ("", lambda t: True),
        ("complete=true", lambda t: t["complete"]),
        ("complete=false&priority=2", lambda t: not t["complete"] and t["priority"] == 2),
        ("priority=1", lambda t: t["priority"] == 1),
        (f"owner_id={bob.id}&priority=1", lambda t: t["owner_id"] == bob.id and t["priority"] == 1),
    ):
        page = client.get(f"/admin/todos?limit=2&{query}", headers=admin.headers).json()
        assert page["total"] == sum(1 for t in everyone if keep(t)), query


def test_a_truncate_of_the_todos_takes_their_counts_along(pg_backend: Backend) -> None:
    # TRUNCATE fires no DELETE trigger; a TRUNCATE trigger empties the counts instead,
    # whether the todos go alone or with their users.
    users = text(
        "INSERT INTO users (email, username, hash_password) VALUES "
        "('a@example.com', 'a', 'x'), ('b@example.com', 'b', 'x')"
    )
    todos = text(
        "INSERT INTO todos (title, priority, complete, owner_id) "
        "SELECT 't', n % 5 + 1, n % 2 = 0, u.id FROM users u, generate_series(1, 30) AS n"
    )
    with pg_backend.plain.begin() as connection:
        connection.execute(users)
    for truncate in ("TRUNCATE todos", "TRUNCATE users CASCADE"):
        with pg_backend.plain.begin() as connection:
            connection.execute(todos)
            assert connection.execute(text("SELECT sum(todos) FROM todo_totals")).scalar() == 60
            connection.execute(text(truncate))
            assert_exact(connection)
            for table in ("todo_counts", "todo_totals"):
                left = connection.execute(text(f"SELECT count(*) FROM {table}")).scalar()
                assert left == 0, (truncate, table)


def test_a_statement_writing_many_rows_is_counted_whole(
    backend: Backend, db: Session, alice: Account, bob: Account
) -> None:
    db.execute(
        text(
            "INSERT INTO todos (title, priority, complete, owner_id) "
            "SELECT 'bulk', n % 5 + 1, n % 2 = 0, CASE WHEN n % 3 = 0 THEN :a ELSE :b END "
            "FROM (WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s "
            "WHERE n < 500) SELECT n FROM s) AS numbers"
        ),
        {"a": alice.id, "b": bob.id},
    )
    assert_exact(db)
    db.execute(text("UPDATE todos SET priority = 6 - priority, complete = NOT complete"))
    assert_exact(db)
    db.execute(
        text("UPDATE todos SET owner_id = :a WHERE owner_id = :b"), {"a": alice.id, "b": bob.id}
    )
    assert_exact(db)
    db.execute(text("DELETE FROM todos WHERE priority > 2"))
    assert_exact(db)


def at_once(count: int, call: Callable[[int], httpx.Response]) -> list[httpx.Response]:
    barrier = threading.Barrier(count)

    def run(i: int) -> httpx.Response:
        barrier.wait(timeout=30)
        return call(i)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


@pytest.fixture
def racing_client(client: TestClient) -> TestClient:
    return client  # the suite's app: committed data and real concurrent connections


def test_concurrent_writers_crossing_counts_neither_deadlock_nor_drift(
    racing_client: TestClient, backend: Backend
) -> None:
    register(racing_client, "racer")
    headers = {"Authorization": f"Bearer {login(racing_client, 'racer')}"}
    ids = [
        racing_client.post(
            "/todos", json={"title": f"t{n}", "priority": n % 2 + 1}, headers=headers
        ).json()["id"]
        for n in range(20)
    ]
    for _round in range(3):
        # Half move priority 1 -> 2, half 2 -> 1: counter rows locked in both orders.
        answers = at_once(
            20,
            lambda i: racing_client.patch(
                f"/todos/{ids[i]}",
                json={"priority": 2 if i % 2 == 0 else 1, "complete": i % 4 < 2},
                headers=headers,
            ),
        )
        assert [answer.status_code for answer in answers] == [200] * 20
        ids.reverse()
    with backend.engine.connect() as connection:
        assert_exact(connection)


def test_the_migration_counts_the_todos_already_there(empty_database_url: str) -> None:
    migrate(empty_database_url, "0006")
    engine = create_engine(database_url(empty_database_url))
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO users (email, username, hash_password) "
                    "VALUES ('a@example.com', 'ada', 'x'), ('b@example.com', 'bob', 'x')"
                )
            )
            connection.execute(
                text(
                    "INSERT INTO todos (title, priority, complete, owner_id) VALUES "
                    "('a', 1, false, 1), ('b', 1, false, 1), ('c', 2, true, 1), ('d', 5, true, 2)"
                )
            )
        migrate(empty_database_url)
        with engine.connect() as connection:
            assert_exact(connection)
            total = connection.execute(text("SELECT sum(todos) FROM todo_counts")).scalar()
            assert total == 4
    finally:
        engine.dispose()


def test_user_totals_follow_every_kind_of_write(
    client: TestClient, db: Session, alice: Account, bob: Account, admin: Account
) -> None:
    assert_users_exact(db)
    others = [make_account(client, f"user{n}") for n in range(5)]
    assert_users_exact(db)
    # An admin's changes of role and active flag move a user between totals.
    for account, change in (
        (alice, {"role": "admin"}),
        (bob, {"is_active": False}),
        (others[0], {"role": "admin", "is_active": False}),
        (alice, {"role": "user"}),
        (bob, {"is_active": True}),
        (others[1], {"role": "user"}),  # already a user: nothing is written
    ):
        path = f"/admin/users/{account.id}"
        assert client.patch(path, json=change, headers=admin.headers).status_code == 200
        assert_users_exact(db)
    # Writes that change neither (a password change, a logout, a profile edit).
    body = {"current_password": others[2].password, "new_password": "another-password-1"}
    changed = client.put("/users/me/password", json=body, headers=others[2].headers)
    assert changed.status_code == 204
    edited = client.patch("/users/me", json={"firstname": "Ada"}, headers=others[3].headers)
    assert edited.status_code == 200
    assert_users_exact(db)
    # Deletions, by the user and by an admin.
    assert client.delete("/users/me", headers=others[4].headers).status_code == 204
    assert client.delete(f"/admin/users/{bob.id}", headers=admin.headers).status_code == 204
    assert_users_exact(db)


def test_admin_user_totals_are_exact_for_every_filter(
    client: TestClient, alice: Account, bob: Account, admin: Account
) -> None:
    for n in range(6):
        account = make_account(client, f"member{n}")
        if n % 2:
            change = {"is_active": False}
            path = f"/admin/users/{account.id}"
            assert client.patch(path, json=change, headers=admin.headers).status_code == 200
    promoted = client.patch(
        f"/admin/users/{alice.id}", json={"role": "admin"}, headers=admin.headers
    )
    assert promoted.status_code == 200
    everyone = client.get("/admin/users?limit=100", headers=admin.headers).json()["items"]
    assert len(everyone) == 9
    for query, keep in (
        ("", lambda u: True),
        ("role=admin", lambda u: u["role"] == "admin"),
        ("is_active=false", lambda u: not u["is_active"]),
        ("role=user&is_active=true", lambda u: u["role"] == "user" and u["is_active"]),
        ("q=member", lambda u: "member" in u["username"]),
    ):
        page = client.get(f"/admin/users?limit=2&{query}", headers=admin.headers).json()
        assert page["total"] == sum(1 for u in everyone if keep(u)), query


def test_a_truncate_of_the_users_takes_their_totals_along(pg_backend: Backend) -> None:
    users = text(
        "INSERT INTO users (email, username, hash_password, role) "
        "SELECT n || '@example.com', 'u' || n, 'x', CASE WHEN n % 7 = 0 THEN 'admin' "
        "ELSE 'user' END FROM generate_series(1, 40) AS n"
    )
    with pg_backend.plain.begin() as connection:
        connection.execute(users)
        assert_users_exact(connection)
        assert connection.execute(text("SELECT sum(users) FROM user_totals")).scalar() == 40
        connection.execute(text("TRUNCATE users CASCADE"))
        assert connection.execute(text("SELECT count(*) FROM user_totals")).scalar() == 0


def test_user_totals_follow_id_changes_and_raw_sql(backend: Backend) -> None:
    # What an operator might do in SQL: the triggers keep the totals whatever the path.
    with backend.plain.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO users (email, username, hash_password, role, is_active) VALUES "
                "('a@example.com', 'a', 'x', 'user', true), "
                "('b@example.com', 'b', 'x', 'admin', true), "
                "('c@example.com', 'c', 'x', 'user', false)"
            )
        )
    for change in (
        "UPDATE users SET id = id + 16 WHERE username = 'a'",  # the same stripe
        "UPDATE users SET id = id + 101 WHERE username = 'b'",  # another stripe
        "UPDATE users SET role = 'admin', is_active = true WHERE username = 'c'",
        "UPDATE users SET role = CASE role WHEN 'admin' THEN 'user' ELSE 'admin' END",
        "UPDATE users SET is_active = NOT is_active WHERE username <> 'b'",
        "DELETE FROM users WHERE username = 'a'",
    ):
        with backend.plain.begin() as connection:
            connection.execute(text(change))
            assert_users_exact(connection)


def test_an_update_that_keeps_role_and_active_flag_does_not_touch_the_totals(
    pg_backend: Backend,
) -> None:
    # A login's or a password change's UPDATE of users fires no trigger (a column list
    # and a WHEN): user_totals is not written at all, not merely left with equal sums.
    # This backend's row counts for the table, taken within one transaction (they are
    # kept since the last report to the statistics, which never falls inside one).
    written = text(
        "SELECT pg_stat_get_xact_tuples_inserted('user_totals'::regclass) "
        "+ pg_stat_get_xact_tuples_updated('user_totals'::regclass)"
    )
    with pg_backend.plain.connect() as connection:
        connection.exec_driver_sql(
            "INSERT INTO users (email, username, hash_password) VALUES ('a@x.org', 'a', 'x')"
        )
        connection.exec_driver_sql("BEGIN")  # the engine is in autocommit: one by hand
        before = connection.execute(written).scalar_one()
        connection.exec_driver_sql(
            "UPDATE users SET token_version = token_version + 1, hash_password = 'y', "
            "role = role, is_active = is_active"
        )
        assert connection.execute(written).scalar_one() == before
        connection.exec_driver_sql("UPDATE users SET role = 'admin'")
        assert connection.execute(written).scalar_one() == before + 2  # joined one, left one
        assert_users_exact(connection)
        connection.exec_driver_sql("COMMIT")


def test_the_migration_counts_the_users_already_there(empty_database_url: str) -> None:
    migrate(empty_database_url, "0009")
    engine = create_engine(database_url(empty_database_url))
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO users (email, username, hash_password, role, is_active) "
                    "VALUES ('a@example.com', 'ada', 'x', 'admin', true), "
                    "('b@example.com', 'bob', 'x', 'user', false), "
                    "('c@example.com', 'cy', 'x', 'user', true)"
                )
            )
        migrate(empty_database_url)
        with engine.connect() as connection:
            assert_users_exact(connection)
            total = connection.execute(text("SELECT sum(users) FROM user_totals")).scalar()
            assert total == 3
    finally:
        engine.dispose()
