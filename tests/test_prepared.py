"""Prepared statements on PostgreSQL (todoapp/prepared.py): a statement marked PREPARED
is planned once per connection and then EXECUTEd, only in autocommit; whatever the
server does with prepared statements, each statement still gives its own answer."""

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, Engine, bindparam, select, text

from tests.conftest import Backend, make_account, settings_for_tests
from todoapp import prepared
from todoapp.database import Database, make_engine
from todoapp.models import User
from todoapp.prepared import PREPARED

MARKED = (
    select(User.id, User.username).where(User.id == bindparam("id")).execution_options(**PREPARED)
)


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> prepared._Preparing:
    """What this process learnt about statements, from nothing (and put back after)."""
    state = prepared._Preparing()
    monkeypatch.setattr(prepared, "_preparing", state)
    return state


@pytest.fixture
def engine(pg_backend: Backend) -> Iterator[Engine]:
    """The app's own engine for the test database, with connections of its own."""
    made = make_engine(pg_backend.url, settings_for_tests())
    yield made
    made.dispose()


def _prepared_here(connection: Connection) -> list[tuple[str, int, int]]:
    return [
        (row.name, row.generic_plans, row.custom_plans)
        for row in connection.exec_driver_sql(
            "SELECT name, generic_plans, custom_plans FROM pg_prepared_statements"
        )
    ]


def _user(pg_backend: Backend) -> int:
    with pg_backend.plain.begin() as connection:
        return int(
            connection.execute(
                text(
                    "INSERT INTO users (email, username, hash_password, role) "
                    "VALUES ('p@example.com', 'pat', 'x', 'user') RETURNING id"
                )
            ).scalar_one()
        )


def test_a_marked_statement_is_prepared_once_and_planned_once(
    pg_backend: Backend, engine: Engine, fresh: prepared._Preparing
) -> None:
    user_id = _user(pg_backend)

    def work(connection: Connection) -> tuple[list[Any], list[tuple[str, int, int]]]:
        rows = [connection.execute(MARKED, {"id": user_id}).one() for _ in range(3)]
        rows.append(connection.execute(MARKED, {"id": user_id + 1000}).first())
        return rows, _prepared_here(connection)

    rows, here = Database(engine).read(work)
    assert rows == [(user_id, "pat")] * 3 + [None]
    (name, generic, custom), *others = here
    assert others == []
    assert name.startswith("todoapp_")
    assert (generic, custom) == (4, 0)  # one generic plan, used by every run
    assert fresh.on
    assert not fresh.unpreparable


def test_in_a_transaction_or_unmarked_a_statement_runs_as_it_is(
    pg_backend: Backend, engine: Engine, fresh: prepared._Preparing
) -> None:
    user_id = _user(pg_backend)
    with engine.begin() as connection:  # a transaction, as a Session's
        assert connection.execute(MARKED, {"id": user_id}).one() == (user_id, "pat")
        assert _prepared_here(connection) == []
    unmarked = MARKED.execution_options(todoapp_prepared=False)
    here = Database(engine).read(
        lambda connection: (
            connection.execute(unmarked, {"id": user_id}).one(),
            _prepared_here(connection),
        )
    )
    assert here == ((user_id, "pat"), [])


def test_a_statement_postgresql_cannot_prepare_runs_as_it_is(
    engine: Engine, fresh: prepared._Preparing, caplog: pytest.LogCaptureFixture
) -> None:
    # A parameter PostgreSQL cannot type on its own: PREPARE refuses it.
    untyped = text("SELECT :value IS NULL").execution_options(**PREPARED)

    def work(connection: Connection) -> list[Any]:
        return [connection.execute(untyped, {"value": n}).scalar_one() for n in ("a", None)]

    assert Database(engine).read(work) == [False, True]
    assert len(fresh.unpreparable) == 1
    assert fresh.on
    assert caplog.text.count("could not be prepared (IndeterminateDatatype)") == 1


def test_statements_the_server_lost_turn_preparing_off_and_run_as_they_are(
    pg_backend: Backend,
    engine: Engine,
    fresh: prepared._Preparing,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # As behind a pooler nobody declared: the session no longer has what was prepared.
    user_id = _user(pg_backend)

    def work(connection: Connection) -> list[Any]:
        first = connection.execute(MARKED, {"id": user_id}).one()
        connection.exec_driver_sql("DEALLOCATE ALL")
        then = [connection.execute(MARKED, {"id": user_id}).one() for _ in range(2)]
        return [first, *then, _prepared_here(connection)]

    assert Database(engine).read(work) == [(user_id, "pat")] * 3 + [[]]
    assert not fresh.on
    assert caplog.text.count("prepared statements do not persist") == 1


def test_a_statement_whose_result_a_migration_changed_is_prepared_again(
    engine: Engine, fresh: prepared._Preparing
) -> None:
    # PostgreSQL refuses to run a prepared statement whose result type changed under
    # it ("cached plan must not change result type"); it ran nothing, so it runs again.
    read = text("SELECT value FROM pg_temp.kept").execution_options(**PREPARED)

    def work(connection: Connection) -> list[Any]:
        connection.exec_driver_sql("CREATE TEMP TABLE kept (value integer)")
        connection.exec_driver_sql("INSERT INTO kept VALUES (7)")
        before = connection.execute(read).scalar_one()
        connection.exec_driver_sql("ALTER TABLE kept ALTER COLUMN value TYPE text")
        after = [connection.execute(read).scalar_one() for _ in range(2)]
        return [before, *after, len(_prepared_here(connection))]

    assert Database(engine).read(work) == [7, "7", "7", 1]
    assert fresh.on
    assert not fresh.unpreparable


def test_the_apps_marked_statements_all_run_prepared(
    committed_client: TestClient, fresh: prepared._Preparing
) -> None:
    # Every statement the app marks is one PostgreSQL prepares: none falls back. An
    # If-Match of several tags is a list whose SQL text varies with its length: it runs
    # unprepared, so that no client can make a prepared statement per length.
    client = committed_client
    alice = make_account(client, "alice")
    made = client.post("/todos", json={"title": "a", "priority": 1}, headers=alice.headers)
    assert made.status_code == 201
    todo = made.json()["id"]
    tag = made.headers["etag"]
    replaced = {"title": "b", "description": "", "priority": 3, "complete": True}
    for method, path, body, extra, expected in (
        ("GET", f"/todos/{todo}", None, {}, 200),
        ("PATCH", f"/todos/{todo}", {"priority": 2}, {"If-Match": tag}, 200),
        ("PATCH", f"/todos/{todo}", {"priority": 4}, {"If-Match": tag}, 412),
        ("PATCH", f"/todos/{todo}", {}, {}, 200),
        ("PUT", f"/todos/{todo}", replaced, {}, 200),
        ("GET", "/users/me", None, {}, 200),
        ("GET", f"/todos/{todo + 1000}", None, {}, 404),
    ):
        response = client.request(method, path, json=body, headers={**alice.headers, **extra})
        assert response.status_code == expected, (method, path, response.text)
    known = set(fresh.statements)
    assert len(known) >= 6
    current = client.get(f"/todos/{todo}", headers=alice.headers).headers["etag"]
    several = {"If-Match": f'"todo-{todo}-v99", {current}'}
    response = client.delete(f"/todos/{todo}", headers={**alice.headers, **several})
    assert response.status_code == 204, response.text
    assert set(fresh.statements) == known  # the list's statement was not prepared
    assert fresh.on
    assert fresh.unpreparable == set()


def test_a_statement_is_numbered_and_its_escaped_percent_signs_stay_text(
    engine: Engine, fresh: prepared._Preparing
) -> None:
    # "%%" is a percent sign in psycopg2's text, also before "(name)s".
    statement = prepared.PreparedStatement("p", "SELECT 'a%%(b)s', %(n)s::int %% %(n)s, %(m)s")
    name = statement.name
    assert statement.prepare == f"PREPARE {name} AS SELECT 'a%(b)s', $1::int % $1, $2"
    assert statement.execute == f"EXECUTE {name}(%(n)s, %(m)s)"
    odd = text("SELECT 'a%(b)s' || CAST(:n AS text)").execution_options(**PREPARED)
    answers = Database(engine).read(
        lambda connection: [connection.execute(odd, {"n": n}).scalar_one() for n in (7, 8)]
    )
    assert answers == ["a%(b)s7", "a%(b)s8"]
    assert fresh.unpreparable == set()
    assert len(fresh.statements) == 1


def test_a_connection_lost_before_its_prepare_is_read_again_and_stays_preparable(
    pg_backend: Backend,
    engine: Engine,
    fresh: prepared._Preparing,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A restarted server leaves dead connections in the pool, and Database.read does not
    # ping them: the PREPARE is what finds one dead. That is the connection's trouble,
    # not the statement's: the read is retried on a new connection, and prepared there.
    user_id = _user(pg_backend)
    database = Database(engine)
    pid = database.read(
        lambda connection: int(connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
    )
    with pg_backend.plain.connect() as other:
        other.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
    assert database.read(lambda c: c.execute(MARKED, {"id": user_id}).one()) == (user_id, "pat")
    assert fresh.unpreparable == set()
    assert "could not be prepared" not in caplog.text
    row, here = database.read(
        lambda c: (c.execute(MARKED, {"id": user_id}).one(), _prepared_here(c))
    )
    assert row == (user_id, "pat")
    assert [(generic, custom) for _, generic, custom in here] == [(2, 0)]
