"""Fixtures for real things: databases (SQLite and PostgreSQL), the app, users, tokens.

Every database test runs twice, on SQLite and on PostgreSQL, through the one
parametrized `backend` fixture. Each backend's database is built once per run with
`alembic upgrade head` (never create_all); each test runs inside a transaction that
is rolled back at its end, and the app's sessions join it through SAVEPOINTs.
"""

import os
import secrets
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

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
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from tests.smtp import SmtpServer
from todoapp import fastlane
from todoapp.config import Settings, get_settings
from todoapp.database import Database, database_url, make_engine
from todoapp.deps import SessionSource, get_session_source
from todoapp.main import create_app

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
PASSWORD = "password123"
T = TypeVar("T")


# --- PostgreSQL server ---------------------------------------------------------
def _pg_admin_url() -> str:
    return os.environ.get("TEST_DATABASE_URL", DEFAULT_PG)


def _pg_unavailable_reason() -> str | None:
    engine = create_engine(database_url(_pg_admin_url()), connect_args={"connect_timeout": 3})
    try:
        with engine.connect():
            return None
    except Exception as exc:
        where = make_url(_pg_admin_url()).render_as_string()
        return f"PostgreSQL at {where} unreachable: {type(exc).__name__}"
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The admin URL of a reachable PostgreSQL server, or a skip (a failure in CI)."""
    reason = _pg_unavailable_reason()
    if reason is not None:
        if os.environ.get("REQUIRE_POSTGRES") == "1":
            pytest.fail(f"REQUIRE_POSTGRES=1 but {reason}")
        pytest.skip(reason)
    return _pg_admin_url()


def create_pg_database(admin_url: str) -> str:
    name = f"todoapp_test_{uuid.uuid4().hex[:12]}"
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
    name: str
    url: str
    engine: Engine
    database: Database

    @property
    def is_postgres(self) -> bool:
        return self.name == "postgresql"


def settings_for_tests(**overrides: Any) -> Settings:
    return get_settings().model_copy(update=overrides)


@pytest.fixture(scope="session")
def backends() -> Iterator[dict[str, Backend]]:
    """The migrated test database of each kind, made on first use, dropped at the end."""
    made: dict[str, Backend] = {}
    yield made
    for made_backend in made.values():
        made_backend.engine.dispose()
        if made_backend.is_postgres:
            drop_pg_database(_pg_admin_url(), made_backend.url)


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
        backends[name] = Backend(name, url, engine, Database(engine))
    return backends[name]


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, backends: dict[str, Backend]) -> Backend:
    """Each database test runs on both: SQLite and PostgreSQL."""
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
    """A connection inside a transaction that is rolled back after the test."""
    with backend.engine.connect() as connection:
        transaction = connection.begin()
        try:
            yield connection
        finally:
            transaction.rollback()


@pytest.fixture
def db(connection: Connection) -> Iterator[Session]:
    """A session for arranging and checking data directly, inside the test's transaction."""
    with Session(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    ) as session:
        yield session


AppFactory = Callable[..., FastAPI]


@pytest.fixture
def app_factory(backend: Backend, connection: Connection) -> AppFactory:
    """Apps with changed settings, whose sessions join the test's transaction."""

    class SessionsInTestTransaction(SessionSource):
        def open(self) -> Session:
            return Session(
                bind=connection,
                join_transaction_mode="create_savepoint",
                expire_on_commit=False,
                autoflush=False,
            )

        def read(self, work: Callable[[Connection], T]) -> T:
            # The test's own connection (inside its transaction) serves reads too.
            return work(connection)

    async def sessions_in_test_transaction() -> SessionSource:
        return SessionsInTestTransaction(backend.database)

    def make(**settings: Any) -> FastAPI:
        app = create_app(settings_for_tests(**settings), database=backend.database)
        app.dependency_overrides[get_session_source] = sessions_in_test_transaction
        return app

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
    """A client whose requests commit for real; the tables are emptied afterwards."""
    app = create_app(settings_for_tests(), database=pg_backend.database)
    try:
        with TestClient(app) as client:
            yield client
    finally:
        with pg_backend.engine.begin() as connection:
            connection.execute(text("TRUNCATE todos, users RESTART IDENTITY CASCADE"))


def empty_tables(backend: Backend) -> None:
    """Remove committed rows (tests on committed data clean up with this)."""
    with backend.engine.begin() as connection:
        if backend.is_postgres:
            connection.execute(text("TRUNCATE todos, sessions, users RESTART IDENTITY CASCADE"))
        else:
            for table in ("todos", "sessions", "users"):
                connection.execute(text(f"DELETE FROM {table}"))


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
    def __init__(self) -> None:
        self.statements: list[str] = []

    def __call__(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not statement.startswith(("SAVEPOINT", "RELEASE", "ROLLBACK")):
            self.statements.append(statement)


@pytest.fixture
def count_statements(connection: Connection) -> Iterator[StatementCounter]:
    counter = StatementCounter()
    event.listen(connection, "before_cursor_execute", counter)
    yield counter
    event.remove(connection, "before_cursor_execute", counter)


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
