"""Alembic owns the schema: round trips, drift, adoption of the original SQL, refusals."""

from pathlib import Path

import pytest
from alembic import command
from alembic.util import CommandError
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import IntegrityError

from tests.conftest import ROOT, alembic_config, migrate
from todoapp.database import database_url, head_revision

# A copy of ../shared/original-schema.sql, kept in the repository so a clone tests alone.
ORIGINAL_SQL = (ROOT / "migrations" / "original-schema.sql").read_text()


def _tables(url: str) -> set[str]:
    engine = create_engine(database_url(url))
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade_round_trip(empty_database_url: str) -> None:
    migrate(empty_database_url)
    assert {"users", "todos", "alembic_version"} <= _tables(empty_database_url)
    command.downgrade(alembic_config(empty_database_url), "base")
    assert _tables(empty_database_url) == {"alembic_version"}
    migrate(empty_database_url)
    assert {"users", "todos"} <= _tables(empty_database_url)


def test_alembic_check_finds_no_drift_from_the_models(empty_database_url: str) -> None:
    migrate(empty_database_url)
    command.check(alembic_config(empty_database_url))  # raises on any difference


def test_head_revision_is_the_newest_migration() -> None:
    newest = sorted(Path(ROOT / "migrations" / "versions").glob("[0-9]*.py"))[-1]
    assert newest.name.startswith(head_revision())


def test_0001_creates_exactly_the_original_columns(empty_database_url: str) -> None:
    migrate(empty_database_url, "0001")
    engine = create_engine(database_url(empty_database_url))
    try:
        columns = {c["name"]: c for c in inspect(engine).get_columns("users")}
        assert list(columns) == [
            "id",
            "email",
            "username",
            "firstname",
            "llastname",
            "hash_password",
            "is_active",
            "role",
        ]
        assert all(c["nullable"] for name, c in columns.items() if name != "id")
    finally:
        engine.dispose()


def _run_original_sql(url: str) -> None:
    engine = create_engine(database_url(url))
    with engine.begin() as connection:
        connection.exec_driver_sql(ORIGINAL_SQL)
    engine.dispose()


@pytest.mark.postgres_only
def test_a_database_made_by_the_original_sql_is_adopted(empty_pg_url: str) -> None:
    _run_original_sql(empty_pg_url)
    engine = create_engine(database_url(empty_pg_url))
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO users (email, username, firstname, llastname, hash_password) "
                "VALUES ('Ada@Example.COM', 'ada', 'Ada', 'Lovelace', 'x')"
            )
        )
        connection.execute(
            text("INSERT INTO todos (title, priority, owner_id) VALUES ('Old todo', 2, 1)")
        )
    command.stamp(alembic_config(empty_pg_url), "0001")
    migrate(empty_pg_url)
    with engine.connect() as connection:
        user = connection.execute(text("SELECT * FROM users")).mappings().one()
        todo = connection.execute(text("SELECT * FROM todos")).mappings().one()
    engine.dispose()
    assert user["lastname"] == "Lovelace"
    assert user["email"] == "ada@example.com"
    assert (user["role"], user["is_active"], user["token_version"]) == ("user", True, 0)
    assert (todo["title"], todo["priority"], todo["owner_id"]) == ("Old todo", 2, 1)
    assert (todo["description"], todo["complete"]) == ("", False)
    assert todo["created_at"] is not None
    assert todo["updated_at"] is not None


@pytest.mark.postgres_only
def test_unrepairable_legacy_rows_stop_the_upgrade_and_change_nothing(empty_pg_url: str) -> None:
    _run_original_sql(empty_pg_url)
    engine = create_engine(database_url(empty_pg_url))
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO users (email, username) VALUES "
                "('a@example.com', 'Ada'), ('b@example.com', 'ADA'), ('c@example.com', NULL)"
            )
        )
        connection.execute(text("INSERT INTO todos (title, priority, owner_id) VALUES ('t', 9, 1)"))
    config = alembic_config(empty_pg_url)
    command.stamp(config, "0001")
    with pytest.raises(CommandError) as refused:
        command.upgrade(config, "head")
    message = str(refused.value)
    assert "usernames taken twice ignoring case: ada (2)" in message
    assert "users without a username: 3" in message
    assert "priority is missing or outside 1-5: 1 (9)" in message
    with engine.connect() as connection:
        columns = {c["name"] for c in inspect(connection).get_columns("users")}
        version = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
        usernames = connection.execute(text("SELECT username FROM users ORDER BY id")).scalars()
        assert list(usernames) == ["Ada", "ADA", None]
    engine.dispose()
    assert "llastname" in columns
    assert "token_version" not in columns
    assert version == "0001"


def test_unrepairable_rows_stop_the_upgrade_on_sqlite_too(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'legacy.db'}"
    migrate(url, "0001")
    engine = create_engine(database_url(url))
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO users (email, username) VALUES ('a@x.io', 'a')"))
        connection.execute(
            text("INSERT INTO todos (title, priority, owner_id) VALUES (NULL, 1, 1)")
        )
    with pytest.raises(CommandError, match="todos without a title: 1"):
        migrate(url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM todos")).scalar() == 1
    engine.dispose()


def _schema(url: str) -> list[tuple[object, ...]]:
    """Every table, column, index and constraint, as the database itself describes them."""
    engine = create_engine(database_url(url))
    try:
        with engine.connect() as connection:
            if engine.dialect.name == "sqlite":
                query = "SELECT type, name, sql FROM sqlite_master ORDER BY type, name"
            else:
                query = (
                    "SELECT 'column', table_name || '.' || column_name, data_type || ' ' || "
                    "is_nullable || ' ' || coalesce(column_default, '') "
                    "FROM information_schema.columns WHERE table_schema = 'public' "
                    "UNION ALL SELECT 'index', indexname, indexdef FROM pg_indexes "
                    "WHERE schemaname = 'public' "
                    "UNION ALL SELECT 'constraint', conname, pg_get_constraintdef(oid) "
                    "FROM pg_constraint WHERE connamespace = 'public'::regnamespace "
                    "UNION ALL SELECT 'extension', extname, '' FROM pg_extension "
                    "ORDER BY 1, 2"
                )
            return [tuple(row) for row in connection.execute(text(query))]
    finally:
        engine.dispose()


def _revisions() -> list[str]:
    names = sorted(Path(ROOT / "migrations" / "versions").glob("[0-9]*.py"))
    return [name.name.split("_")[0] for name in names]


# Revisions that change nothing on SQLite (PostgreSQL's extensions and indexes only).
POSTGRESQL_ONLY_REVISIONS = {"0008"}


@pytest.mark.parametrize("revision", _revisions()[2:])
def test_each_later_revision_goes_down_and_up_again_to_the_same_schema(
    empty_database_url: str, revision: str
) -> None:
    migrate(empty_database_url)
    at_head = _schema(empty_database_url)
    config = alembic_config(empty_database_url)
    command.downgrade(config, f"{revision}-1")
    if not (revision in POSTGRESQL_ONLY_REVISIONS and empty_database_url.startswith("sqlite")):
        assert _schema(empty_database_url) != at_head
    migrate(empty_database_url)
    assert _schema(empty_database_url) == at_head


SESSIONS_REVISION = "0004"  # migrations/versions/0004_sessions.py


def test_the_sessions_migration_goes_up_and_down_keeping_the_users(
    empty_database_url: str,
) -> None:
    config = alembic_config(empty_database_url)
    migrate(empty_database_url, SESSIONS_REVISION)
    engine = create_engine(database_url(empty_database_url))
    try:
        columns = {c["name"] for c in inspect(engine).get_columns("sessions")}
        assert columns == {
            "id",
            "user_id",
            "created_at",
            "last_used_at",
            "user_agent",
            "refresh_hash",
            "generation",
            "ended_at",
            "end_reason",
        }
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO users (email, username, hash_password) "
                    "VALUES ('a@example.com', 'ada', 'x')"
                )
            )
            connection.execute(
                text("INSERT INTO sessions (user_id, refresh_hash) VALUES (1, :hash)"),
                {"hash": "0" * 64},
            )
            row = connection.execute(text("SELECT * FROM sessions")).mappings().one()
            assert row["created_at"] is not None
            assert row["last_used_at"] is not None
            assert (row["generation"], row["ended_at"], row["end_reason"]) == (0, None, None)
        command.downgrade(config, "0003")
        assert "sessions" not in set(inspect(engine).get_table_names())
        with engine.connect() as connection:
            assert connection.execute(text("SELECT username FROM users")).scalar() == "ada"
        migrate(empty_database_url, SESSIONS_REVISION)
        assert "sessions" in set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_a_session_needs_a_reason_to_end_and_dies_with_its_user(
    empty_database_url: str,
) -> None:
    migrate(empty_database_url, SESSIONS_REVISION)
    engine = create_engine(database_url(empty_database_url))
    try:
        with engine.begin() as connection:
            if engine.dialect.name == "sqlite":
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            connection.execute(
                text(
                    "INSERT INTO users (email, username, hash_password) "
                    "VALUES ('a@example.com', 'ada', 'x')"
                )
            )
            connection.execute(
                text("INSERT INTO sessions (user_id, refresh_hash) VALUES (1, :hash)"),
                {"hash": "0" * 64},
            )
        with pytest.raises(IntegrityError), engine.begin() as connection:
            connection.execute(text("UPDATE sessions SET ended_at = CURRENT_TIMESTAMP"))
        with engine.begin() as connection:
            if engine.dialect.name == "sqlite":
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            connection.execute(text("DELETE FROM users"))
            assert connection.execute(text("SELECT count(*) FROM sessions")).scalar() == 0
    finally:
        engine.dispose()
