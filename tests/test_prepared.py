"""Prepared statements on PostgreSQL (todoapp/prepared.py): a statement marked PREPARED
is planned once per connection and then EXECUTEd, only in autocommit; whatever the
server does with prepared statements, each statement still gives its own answer."""

from collections.abc import Iterator
from typing import Any

import psycopg2.errors
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, Engine, Integer, bindparam, event, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

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
    monkeypatch.setattr(prepared, "_directs", {})
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
    # The lists' plain pages, offset and cursor, in each order (a descending cursor page
    # compares with `-id` of its parameter, which PostgreSQL must be able to type).
    for n in range(3):
        client.post("/todos", json={"title": f"t{n}", "priority": n + 1}, headers=alice.headers)
    for sort in ("id", "-id", "priority", "-priority", "title", "-title", "-created_at"):
        first = client.get(f"/todos?sort={sort}&limit=1&offset=1", headers=alice.headers)
        assert first.status_code == 200, first.text
        cursor = first.json()["next_cursor"]
        after = client.get(f"/todos?sort={sort}&limit=1&cursor={cursor}", headers=alice.headers)
        assert after.status_code == 200, after.text
        assert after.json()["items"][0]["id"] not in {t["id"] for t in first.json()["items"]}
    known = set(fresh.statements)
    assert len(known) >= 20
    current = client.get(f"/todos/{todo}", headers=alice.headers).headers["etag"]
    several = {"If-Match": f'"todo-{todo}-v99", {current}'}
    response = client.delete(f"/todos/{todo}", headers={**alice.headers, **several})
    assert response.status_code == 204, response.text
    assert set(fresh.statements) == known  # the list's statement was not prepared
    assert fresh.on
    assert fresh.unpreparable == set()
    # Each of them went straight through the driver (prepared.first_row): the SQL it
    # compiled for each is the SQL that was prepared.
    direct = {plan.sql for _, _, plan in prepared._directs.values() if plan is not None}
    assert known <= direct


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


# --- first_row: marked statements straight through the driver ------------------------
def _sqlalchemy_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Connection.execute fails from here on: what still works went straight through."""

    def refused(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("went through Connection.execute")

    monkeypatch.setattr(Connection, "execute", refused)


def test_first_row_runs_a_marked_statement_on_the_driver_as_sqlalchemy_would(
    pg_backend: Backend,
    engine: Engine,
    fresh: prepared._Preparing,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    user_id = _user(pg_backend)
    database = Database(engine)
    expected = database.read(lambda c: c.execute(MARKED, {"id": user_id}).first())
    sent: list[str] = []
    event_engine = make_engine(pg_backend.url, settings_for_tests())
    try:
        with event_engine.connect() as connection:

            def record(*args: Any) -> None:
                sent.append(args[2])

            event.listen(event_engine, "before_cursor_execute", record)
            connection.execute(MARKED, {"id": user_id})
    finally:
        event_engine.dispose()
    _sqlalchemy_refused(monkeypatch)
    rows = database.read(
        lambda c: [prepared.first_row(c, MARKED, {"id": n}) for n in (user_id, user_id + 1000)]
    )
    assert rows == [expected, None]
    assert (rows[0].id, rows[0].username) == (user_id, "pat")  # by column key, as a Row
    direct = prepared._direct(MARKED, engine.dialect)
    assert direct is not None
    assert [direct.sql] == sent  # the very SQL SQLAlchemy sends
    assert list(fresh.statements) == sent  # and prepared as any marked statement is
    here = database.read(_prepared_here)
    # One statement, planned once: run by SQLAlchemy first, then twice straight through.
    assert [(generic, custom) for _, generic, custom in here] == [(3, 0)]


def test_first_row_leaves_to_sqlalchemy_what_it_cannot_run_itself(
    pg_backend: Backend, engine: Engine, fresh: prepared._Preparing
) -> None:
    user_id = _user(pg_backend)
    a_list = (
        select(User.id)
        .where(User.id.in_(bindparam("ids", expanding=True)))
        .execution_options(**PREPARED)
    )
    assert prepared._direct(a_list, engine.dialect) is None
    a_ratio = select((User.id / 2).label("half")).execution_options(**PREPARED)
    assert prepared._direct(a_ratio, engine.dialect) is None  # a Numeric, read by SQLAlchemy
    with_values = MARKED.params(id=user_id)  # values kept on the statement
    assert prepared._direct(with_values, engine.dialect) is None
    database = Database(engine)
    assert database.read(lambda c: prepared.first_row(c, a_list, {"ids": [user_id]})) == (user_id,)
    # In a transaction, and in a Session: SQLAlchemy's own execution, unprepared.
    engine.dispose()  # a new connection, which prepared nothing yet
    with engine.connect() as connection:
        assert prepared.first_row(connection, MARKED, {"id": user_id}) == (user_id, "pat")
        assert _prepared_here(connection) == []
    with Session(engine) as session:
        assert prepared.first_row(session, MARKED, {"id": user_id}) == (user_id, "pat")
    # An engine with cursor listeners (instrumentation) gives them SQLAlchemy's context.
    seen: list[Any] = []

    def listen(
        _conn: Any, _cursor: Any, statement: str, _params: Any, context: Any, _m: Any
    ) -> None:
        seen.append((statement, context is not None))

    event.listen(engine, "before_cursor_execute", listen)
    try:
        assert database.read(lambda c: prepared.first_row(c, MARKED, {"id": user_id})) == (
            user_id,
            "pat",
        )
    finally:
        event.remove(engine, "before_cursor_execute", listen)
    assert seen[-1][1] is True
    assert "FROM users" in seen[-1][0]


def test_all_rows_runs_any_statement_on_the_driver_and_prepares_only_a_marked_one(
    pg_backend: Backend,
    engine: Engine,
    fresh: prepared._Preparing,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = _user(pg_backend)
    with pg_backend.plain.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO users (email, username, hash_password, role) "
                "VALUES ('q@example.com', 'quinn', 'x', 'user')"
            )
        )
    unmarked = select(User.id, User.username).where(User.id >= bindparam("id")).order_by(User.id)
    marked = unmarked.execution_options(**PREPARED)
    database = Database(engine)
    expected = database.read(lambda c: c.execute(unmarked, {"id": first}).all())
    assert [row.username for row in expected] == ["pat", "quinn"]
    _sqlalchemy_refused(monkeypatch)
    engine.dispose()  # a new connection, which prepared nothing yet

    def read(connection: Connection) -> tuple[list[Any], list[Any], list[Any], list[Any]]:
        plain = prepared.all_rows(connection, unmarked, {"id": first})
        assert _prepared_here(connection) == []  # run as it is: not prepared
        prepared_rows = prepared.all_rows(connection, marked, {"id": first})
        none = prepared.all_rows(connection, marked, {"id": first + 1000})
        return plain, prepared_rows, none, _prepared_here(connection)

    plain, prepared_rows, none, here = database.read(read)
    assert plain == prepared_rows == expected
    assert none == []
    assert [row.username for row in plain] == ["pat", "quinn"]  # by column key
    assert [(generic, custom) for _, generic, custom in here] == [(2, 0)]
    # An unmarked statement by first_row: straight through as well, unprepared.
    assert database.read(lambda c: prepared.first_row(c, unmarked, {"id": first})) == expected[0]


def test_first_row_errors_are_sqlalchemys_and_a_dead_connection_is_read_again(
    pg_backend: Backend,
    engine: Engine,
    fresh: prepared._Preparing,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    user_id = _user(pg_backend)
    database = Database(engine)
    failing = (
        select(User.id, (User.id // bindparam("d", type_=Integer)).label("q"))
        .where(User.id == bindparam("id"))
        .execution_options(**PREPARED)
    )
    database.ensure_schema_ready()  # checked once, by SQLAlchemy
    _sqlalchemy_refused(monkeypatch)
    with pytest.raises(DBAPIError) as raised:
        database.read(lambda c: prepared.first_row(c, failing, {"id": user_id, "d": 0}))
    assert isinstance(raised.value.orig, psycopg2.errors.DivisionByZero)
    assert not raised.value.connection_invalidated
    # The connection that failed went back to the pool alive, and serves the next read.
    row = database.read(lambda c: prepared.first_row(c, failing, {"id": user_id, "d": 1}))
    assert (row.id, row.q) == (user_id, user_id)
    # A connection the server dropped: the read finds it dead and runs again on a new one.
    pid = database.read(lambda c: prepared.first_row(c, _BACKEND, {}).pid)
    with pg_backend.plain.connect() as other:
        other.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
    again = database.read(lambda c: prepared.first_row(c, _BACKEND, {}).pid)
    assert again != pid

    # A connection closed on this side: SQLAlchemy's disconnect, so the read runs again.
    closed: list[bool] = []

    def on_a_closed_connection(connection: Connection) -> Any:
        if not closed:
            closed.append(True)
            driver = connection.connection.dbapi_connection
            assert driver is not None
            driver.close()
        return prepared.first_row(connection, MARKED, {"id": user_id})

    assert database.read(on_a_closed_connection) == (user_id, "pat")
    assert closed == [True]

    # A write is never sent twice: a connection that dies under it is SQLAlchemy's error,
    # the connection invalidated (and the pool's older ones with it).
    def dies_meanwhile(connection: Connection) -> Any:
        pid = prepared.first_row(connection, _BACKEND, {}).pid
        with pg_backend.plain.connect() as other:
            other.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
        return prepared.first_row(connection, _BACKEND, {})

    with pytest.raises(DBAPIError) as lost:
        database.write_one(dies_meanwhile)
    assert lost.value.connection_invalidated
    assert isinstance(lost.value.orig, psycopg2.OperationalError)
    assert database.read(lambda c: prepared.first_row(c, _BACKEND, {}).pid) != again
    assert fresh.unpreparable == set()


_BACKEND = select(func.pg_backend_pid().label("pid")).execution_options(**PREPARED)
