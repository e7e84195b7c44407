"""Fixtures for real things: databases (SQLite and PostgreSQL), the app, users, tokens.

Every database test runs twice, on SQLite and on PostgreSQL, through the one
parametrized `backend` fixture. Each backend's database is built once per run and per
xdist worker with `alembic upgrade head` (never create_all). The app under test is built
the way `todoapp.main:app` is, `create_app(settings)` with DATABASE_URL naming that
database: its own engine and Database, real admission control, and on PostgreSQL the
fast lane reading through its own connections on the event loop. Everything the app
does is committed for real, so tests are kept apart by emptying every table (but
alembic_version, identities restarted) before each test that uses a database. The `db`
and `connection` fixtures are plain sessions on the same database, in autocommit: each
statement commits at once, so the app sees what a test arranged and the test sees what
the app committed, with no lock held in between.

PostgreSQL is required, never skipped: the server at TEST_DATABASE_URL (default
DEFAULT_PG), or else a throwaway one started for the run (tests/pgserver.py); with
neither, the run stops at once with one line saying what to install or set. A run with
`--sqlite-only` (`make test-sqlite`) deselects every PostgreSQL test instead.
"""

import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Settings come from the environment: fix them before todoapp is imported.
os.environ.update(
    {
        "ENVIRONMENT": "test",
        "SECRET_KEY": secrets.token_urlsafe(48),
        "BCRYPT_ROUNDS": "4",
        "DATABASE_URL": "sqlite:///:memory:",
    }
)
os.environ.pop("REDIS_URL", None)

import pytest
from alembic import command
from alembic.config import Config
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Connection, Engine, MetaData, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from tests import pgserver
from tests.smtp import SmtpServer
from todoapp import fastlane, pg_async
from todoapp.config import Settings, get_settings
from todoapp.database import Database, database_url, make_engine
from todoapp.main import create_app

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PG = pgserver.DEFAULT_PG
PASSWORD = "password123"
SQLITE_ONLY = "--sqlite-only"


# --- PostgreSQL server: the configured one, or a throwaway one, never none ------------
def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        SQLITE_ONLY,
        action="store_true",
        help="run the SQLite half alone: every test that needs PostgreSQL is deselected",
    )


_THROWAWAY = pytest.StashKey[pgserver.ThrowawayPostgres]()


def pytest_configure(config: pytest.Config) -> None:
    """Make sure a PostgreSQL server answers before any test runs (in the xdist
    controller, or the only process: workers inherit TEST_DATABASE_URL from it)."""
    if config.getoption(SQLITE_ONLY) or hasattr(config, "workerinput"):
        return
    wanted = _pg_admin_url()
    try:
        if pgserver.answers(wanted):
            return
    except pgserver.Refused as exc:
        raise pytest.UsageError(f"{exc}: fix TEST_DATABASE_URL") from None
    bindir = pgserver.find_bindir()
    if bindir is None:
        raise pytest.UsageError(pgserver.missing_message(wanted))
    server = pgserver.ThrowawayPostgres(bindir)
    try:
        os.environ["TEST_DATABASE_URL"] = server.start()
    except BaseException:
        server.stop()
        raise
    config.stash[_THROWAWAY] = server


def pytest_unconfigure(config: pytest.Config) -> None:
    server = config.stash.get(_THROWAWAY, None)
    if server is not None:
        server.stop()


def pytest_report_header(config: pytest.Config) -> str:
    if config.getoption(SQLITE_ONLY):
        return "databases: SQLite only (--sqlite-only): PostgreSQL tests deselected"
    server = config.stash.get(_THROWAWAY, None)
    if server is not None:
        return (
            f"databases: SQLite and a throwaway PostgreSQL on 127.0.0.1:{server.port} "
            f"(in {server.folder}), stopped at the end"
        )
    return f"databases: SQLite and PostgreSQL at {pgserver.shown(_pg_admin_url())}"


# Tests that need PostgreSQL by nature: through these fixtures, the mark, or a
# `postgresql` parameter of a parametrized database fixture.
_PG_FIXTURES = {"pg_server", "pg_backend", "empty_pg_url", "committed_client"}
_DATABASE_PARAMS = ("backend", "empty_database_url")


def needs_postgres(item: pytest.Item) -> bool:
    if item.get_closest_marker("postgres_only") is not None:
        return True
    if _PG_FIXTURES & set(getattr(item, "fixturenames", ())):
        return True
    callspec = getattr(item, "callspec", None)
    params = callspec.params if callspec is not None else {}
    return any(params.get(name) == "postgresql" for name in _DATABASE_PARAMS)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption(SQLITE_ONLY):
        return
    deselected = [item for item in items if needs_postgres(item)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not needs_postgres(item)]


def _pg_admin_url() -> str:
    return pgserver.admin_url()


@pytest.fixture(scope="session")
def pg_server(pytestconfig: pytest.Config) -> str:
    """The admin URL of the run's PostgreSQL server (see pytest_configure)."""
    if pytestconfig.getoption(SQLITE_ONLY):
        pytest.fail("this test needs PostgreSQL, and the run is --sqlite-only")
    return _pg_admin_url()


def create_pg_database(admin_url: str) -> str:
    name = f"todoapp_test_{secrets.token_hex(6)}"
    engine = create_engine(database_url(admin_url), isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    engine.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_pg_database(admin_url: str, url: str) -> None:
    name = make_url(url).database
    engine = create_engine(database_url(admin_url), isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    engine.dispose()


# --- fresh, empty databases (migration tests) ----------------------------------
@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a new, empty database of each kind; dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    admin_url = request.getfixturevalue("pg_server")
    url = create_pg_database(admin_url)
    try:
        yield url
    finally:
        drop_pg_database(admin_url, url)


@pytest.fixture
def empty_pg_url(pg_server: str) -> Iterator[str]:
    url = create_pg_database(pg_server)
    try:
        yield url
    finally:
        drop_pg_database(pg_server, url)


def alembic_config(url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["database_url"] = url
    config.attributes["configure_logger"] = False
    return config


def migrate(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


# --- the migrated test database of each backend --------------------------------
@dataclass
class Backend:
    """One migrated database; `engine` and `database` are the tests' own (made as the
    app makes its), `plain` an engine in autocommit for looking at and arranging data."""

    name: str
    url: str
    engine: Engine
    database: Database
    plain: Engine
    emptying: list[str]

    @property
    def is_postgres(self) -> bool:
        return self.name == "postgresql"

    def empty(self) -> None:
        """Every table emptied (but alembic_version), identities restarted."""
        with self.plain.connect() as connection:
            for statement in self.emptying:
                connection.exec_driver_sql(statement)


def settings_for_tests(**overrides: Any) -> Settings:
    return get_settings().model_copy(update=overrides)


def _plain_engine(url: str) -> Engine:
    """An engine in autocommit: each statement commits at once, nothing stays locked."""
    parsed = database_url(url)
    # Pinged on checkout: some tests kill every connection to the database.
    engine = create_engine(parsed, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    if parsed.get_backend_name() != "sqlite":
        return engine

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")  # as the app's connections
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.close()

    return engine


def _emptying(plain: Engine) -> list[str]:
    """DELETEs, dependent tables first, then the identities restarted. (TRUNCATE, which
    makes new files for every table, takes 20 times as long on these small tables.)"""
    tables = MetaData()
    tables.reflect(plain)
    names = [table.name for table in tables.sorted_tables if table.name != "alembic_version"]
    deletes = [f'DELETE FROM "{name}"' for name in reversed(names)]
    if plain.dialect.name != "postgresql":
        return [*deletes, "DELETE FROM sqlite_sequence"]
    with plain.connect() as connection:
        sequences = connection.exec_driver_sql(
            "SELECT quote_ident(schemaname) || '.' || quote_ident(sequencename) "
            "FROM pg_sequences ORDER BY 1"
        ).scalars()
        restarts = ", ".join(f"setval('{name}', 1, false)" for name in sequences)
    # One round trip: psycopg2 sends the statements together.
    return [";\n".join([*deletes, f"SELECT {restarts}"])]


@pytest.fixture(scope="session")
def backends() -> Iterator[dict[str, Backend]]:
    """The migrated test database of each kind, made on first use, dropped at the end."""
    made: dict[str, Backend] = {}
    yield made
    for made_backend in made.values():
        made_backend.engine.dispose()
        made_backend.plain.dispose()
        if made_backend.is_postgres:
            drop_pg_database(_pg_admin_url(), made_backend.url)


_EMPTIED = pytest.StashKey[set[str]]()


def _get_backend(
    name: str, backends: dict[str, Backend], request: pytest.FixtureRequest
) -> Backend:
    if name not in backends:
        if name == "sqlite":
            path = request.getfixturevalue("tmp_path_factory").mktemp("db") / "test.db"
            url = f"sqlite:///{path}"
        else:
            url = create_pg_database(request.getfixturevalue("pg_server"))
        migrate(url)
        engine = make_engine(url, settings_for_tests())
        plain = _plain_engine(url)
        backends[name] = Backend(name, url, engine, Database(engine), plain, _emptying(plain))
    backend = backends[name]
    # Once per test and database, before anything of the test touches it.
    emptied = request.node.stash.setdefault(_EMPTIED, set())
    if name not in emptied:
        backend.empty()
        emptied.add(name)
    return backend


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, backends: dict[str, Backend]) -> Backend:
    """Each database test runs on both: SQLite and PostgreSQL, on empty tables."""
    return _get_backend(request.param, backends, request)


@pytest.fixture
def pg_backend(request: pytest.FixtureRequest, backends: dict[str, Backend]) -> Backend:
    """For tests that only mean something on PostgreSQL (races between connections)."""
    return _get_backend("postgresql", backends, request)


@pytest.fixture
def sqlite_backend(request: pytest.FixtureRequest, backends: dict[str, Backend]) -> Backend:
    """For the embedded default's own behaviour under concurrent writers."""
    return _get_backend("sqlite", backends, request)


@pytest.fixture
def connection(backend: Backend) -> Iterator[Connection]:
    """A plain connection to the test's database, in autocommit."""
    with backend.plain.connect() as connection:
        yield connection


@pytest.fixture
def db(backend: Backend) -> Iterator[Session]:
    """A plain session for arranging and checking data directly, in autocommit: what it
    writes is committed at once (commit() is harmless), and it reads what the app
    committed."""
    with Session(bind=backend.plain) as session:
        yield session


AppFactory = Callable[..., FastAPI]


@pytest.fixture
def app_factory(backend: Backend) -> AppFactory:
    """Apps with changed settings, built as `todoapp.main:app` is: `create_app(settings)`
    with DATABASE_URL naming the test's database (their own engine and Database)."""

    def make(**settings: Any) -> FastAPI:
        return create_app(settings_for_tests(database_url=backend.url, **settings))

    return make


@pytest.fixture
def app(app_factory: AppFactory) -> FastAPI:
    return app_factory()


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client


# --- committed data: several connections at once (PostgreSQL races) ------------
@pytest.fixture
def committed_client(pg_backend: Backend) -> Iterator[TestClient]:
    """A client of an app on the PostgreSQL database (for tests that are about
    PostgreSQL alone, whatever the `backend` parameter)."""
    app = create_app(settings_for_tests(database_url=pg_backend.url))
    with TestClient(app) as client:
        yield client


def empty_tables(backend: Backend) -> None:
    """Remove committed rows now (each test starts on empty tables anyway)."""
    backend.empty()


# --- the fast lane ---------------------------------------------------------------
@pytest.fixture
def lane_calls(monkeypatch: pytest.MonkeyPatch) -> list[bytes | None]:
    """What each read the lane attempts gives: the page it answered, or None when it
    handed the request on to the app."""
    calls: list[bytes | None] = []
    real = fastlane.TodoListFastLane._read

    async def counting(self: fastlane.TodoListFastLane, *args: Any) -> bytes | None:
        answer = await real(self, *args)
        calls.append(answer)
        return answer

    monkeypatch.setattr(fastlane.TodoListFastLane, "_read", counting)
    return calls


# --- users and tokens ----------------------------------------------------------
@dataclass
class Account:
    id: int
    username: str
    email: str
    password: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def register(client: TestClient, username: str, password: str = PASSWORD, **extra: Any) -> Any:
    body = {"username": username, "email": f"{username}@example.com", "password": password}
    body.update(extra)
    response = client.post("/auth/register", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def login(client: TestClient, login_name: str, password: str = PASSWORD) -> str:
    response = client.post("/auth/token", data={"username": login_name, "password": password})
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def make_account(client: TestClient, username: str) -> Account:
    user = register(client, username)
    return Account(user["id"], username, user["email"], PASSWORD, login(client, username))


def set_role(session: Session, user_id: int, role: str) -> None:
    """Change a role the way an operator would: straight in the database."""
    session.execute(
        text("UPDATE users SET role = :role WHERE id = :id"), {"role": role, "id": user_id}
    )
    session.commit()


@pytest.fixture
def alice(client: TestClient) -> Account:
    return make_account(client, "alice")


@pytest.fixture
def bob(client: TestClient) -> Account:
    return make_account(client, "bob")


@pytest.fixture
def admin(client: TestClient, db: Session) -> Account:
    account = make_account(client, "root")
    set_role(db, account.id, "admin")
    return account


# --- counting SQL statements -----------------------------------------------------
class StatementCounter:
    """Every statement the app sends: through its engine, and (on PostgreSQL) the fast
    lane's reads on the event loop."""

    def __init__(self) -> None:
        self.statements: list[str] = []

    def __call__(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        # Transaction control is no query (SQLite's BEGIN is sent as a statement).
        if not statement.startswith(("BEGIN", "SAVEPOINT", "RELEASE", "ROLLBACK")):
            self.statements.append(statement)


@pytest.fixture
def count_statements(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> Iterator[StatementCounter]:
    counter = StatementCounter()
    engine = app.state.database.engine
    real_fetch_all = pg_async.AsyncReader.fetch_all

    async def fetch_all(
        reader: pg_async.AsyncReader,
        statement: pg_async.PreparedStatement | str,
        params: dict[str, Any],
    ) -> list[tuple[Any, ...]]:
        counter.statements.append(getattr(statement, "sql", statement))
        return await real_fetch_all(reader, statement, params)

    monkeypatch.setattr(pg_async.AsyncReader, "fetch_all", fetch_all)
    event.listen(engine, "before_cursor_execute", counter)
    yield counter
    event.remove(engine, "before_cursor_execute", counter)


class RoundTrips:
    """Every message psycopg2 sends PostgreSQL through an engine's pool, in order: the
    statements, and what StatementCounter cannot see: the pool's ping (`SELECT 1`, sent
    on a raw cursor), and the BEGIN, COMMIT and ROLLBACK psycopg2 sends by itself (BEGIN
    before the first statement outside autocommit, COMMIT and ROLLBACK only inside a
    transaction it began)."""

    def __init__(self, dialect: Any) -> None:
        import psycopg2.extensions

        self.sent: list[str] = []
        self._in_transaction = psycopg2.extensions.STATUS_BEGIN
        self._ping, self._commit, self._rollback = (
            dialect.do_ping,
            dialect.do_commit,
            dialect.do_rollback,
        )

    def clear(self) -> None:
        self.sent.clear()

    def _ends(self, connection: Any, what: str) -> None:
        # The pool hands its proxy; a Connection's own end hands the DBAPI connection.
        driver = getattr(connection, "dbapi_connection", connection)
        if driver.status == self._in_transaction:
            self.sent.append(what)

    def statement(self, _conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
        driver = cursor.connection
        if not driver.autocommit and driver.status != self._in_transaction:
            self.sent.append("BEGIN")
        self.sent.append(statement)

    def do_ping(self, connection: Any) -> bool:
        self.sent.append("SELECT 1")
        return bool(self._ping(connection))

    def do_commit(self, connection: Any) -> None:
        self._ends(connection, "COMMIT")
        self._commit(connection)

    def do_rollback(self, connection: Any) -> None:
        self._ends(connection, "ROLLBACK")
        self._rollback(connection)


@pytest.fixture
def round_trips(
    committed_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> Iterator[RoundTrips]:
    """What the app of `committed_client` (on PostgreSQL) sends its database."""
    app: Any = committed_client.app
    engine: Engine = app.state.database.engine
    recorder = RoundTrips(engine.dialect)
    for name in ("do_ping", "do_commit", "do_rollback"):
        monkeypatch.setattr(engine.dialect, name, getattr(recorder, name))
    event.listen(engine, "before_cursor_execute", recorder.statement)
    yield recorder
    event.remove(engine, "before_cursor_execute", recorder.statement)


# --- a real SMTP server ------------------------------------------------------------
@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """aiosmtpd listening on a free port of 127.0.0.1, for this test alone."""
    server = SmtpServer()
    server.start()
    try:
        yield server
    finally:
        server.close()
