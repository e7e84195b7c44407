"""python -m todoapp create-admin | seed, run as a user runs them: a real process."""

import os
import subprocess
import sys

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import ROOT, migrate
from todoapp.database import database_url


def run_cli(url: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": url, "BCRYPT_ROUNDS": "4"}
    return subprocess.run(
        [sys.executable, "-m", "todoapp", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
        check=False,
    )


def rows(url: str, query: str) -> list[tuple[object, ...]]:
    engine = create_engine(database_url(url))
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(query))]
    finally:
        engine.dispose()


@pytest.fixture
def migrated_url(empty_database_url: str) -> str:
    migrate(empty_database_url)
    return empty_database_url


def test_create_admin_reads_the_password_from_stdin_and_can_log_in(migrated_url: str) -> None:
    result = run_cli(
        migrated_url,
        "create-admin",
        "--username",
        "Boss",
        "--email",
        "Boss@Example.com",
        stdin="a-long-password\n",
    )
    assert result.returncode == 0, result.stderr
    assert "created admin: Boss" in result.stdout
    assert "a-long-password" not in result.stdout + result.stderr
    assert rows(
        migrated_url, "SELECT username, email, role, is_active, is_verified FROM users"
    ) == [("Boss", "boss@example.com", "admin", True, True)]
    # A verified account: no verification mail is queued for it.
    assert rows(migrated_url, "SELECT count(*) FROM mail_outbox") == [(0,)]
    from fastapi.testclient import TestClient

    from todoapp.config import get_settings
    from todoapp.database import Database, make_engine
    from todoapp.main import create_app

    engine = make_engine(migrated_url, get_settings())
    with TestClient(create_app(database=Database(engine))) as client:
        response = client.post(
            "/auth/token", data={"username": "boss", "password": "a-long-password"}
        )
        assert response.status_code == 200
        token = response.json()["access_token"]
        users = client.get("/admin/users", headers={"Authorization": f"Bearer {token}"})
        assert users.status_code == 200
    engine.dispose()


def test_create_admin_promotes_an_existing_user_keeping_email_and_password(
    migrated_url: str,
) -> None:
    run_cli(
        migrated_url,
        "create-admin",
        "--username",
        "ada",
        "--email",
        "ada@example.com",
        stdin="first-password\n",
    )
    (hash_before,) = rows(migrated_url, "SELECT hash_password FROM users")[0]
    demote = create_engine(database_url(migrated_url))
    with demote.begin() as connection:
        connection.execute(
            text("UPDATE users SET role = 'user', is_active = false, is_verified = false")
        )
    demote.dispose()
    result = run_cli(
        migrated_url, "create-admin", "--username", "ADA", "--email", "new@example.com"
    )
    assert result.returncode == 0, result.stderr
    assert "promoted to admin: ada" in result.stdout
    # Promotion leaves is_verified as it was.
    assert rows(
        migrated_url, "SELECT email, role, is_active, hash_password, is_verified FROM users"
    ) == [("ada@example.com", "admin", True, hash_before, False)]


@pytest.mark.parametrize(
    ("args", "stdin", "reason"),
    [
        (["--username", "x", "--email", "x@example.com"], "a-long-password\n", "username"),
        (["--username", "boss", "--email", "not-an-email"], "a-long-password\n", "email"),
        (["--username", "boss", "--email", "b@example.com"], "short\n", "password"),
        (["--username", "boss", "--email", "b@example.com"], "", "password"),
        (["--username", "boss", "--email", "b@example.com"], "é" * 40 + "\n", "password"),
    ],
)
def test_create_admin_bad_input_exits_1_with_one_line(
    migrated_url: str, args: list[str], stdin: str, reason: str
) -> None:
    result = run_cli(migrated_url, "create-admin", *args, stdin=stdin)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert reason in lines[0]
    assert rows(migrated_url, "SELECT count(*) FROM users") == [(0,)]


def test_create_admin_with_an_email_someone_else_has_exits_1(migrated_url: str) -> None:
    run_cli(
        migrated_url,
        "create-admin",
        "--username",
        "ada",
        "--email",
        "ada@example.com",
        stdin="first-password\n",
    )
    result = run_cli(
        migrated_url,
        "create-admin",
        "--username",
        "boss",
        "--email",
        "ADA@example.com",
        stdin="a-long-password\n",
    )
    assert result.returncode == 1
    assert result.stderr.strip() == "create-admin: email is already registered"


def test_cli_on_an_unmigrated_database_exits_1_saying_what_to_do(
    empty_database_url: str,
) -> None:
    result = run_cli(empty_database_url, "seed", "--users", "1", "--todos", "1")
    assert result.returncode == 1
    assert "alembic upgrade head" in result.stderr
    assert "Traceback" not in result.stderr


def test_seed_creates_demo_users_with_todos_and_is_idempotent(migrated_url: str) -> None:
    result = run_cli(migrated_url, "seed", "--users", "30", "--todos", "4")
    assert result.returncode == 0, result.stderr
    assert "seeded 30 new demo users and 120 todos" in result.stdout
    again = run_cli(migrated_url, "seed", "--users", "35", "--todos", "4")
    assert "seeded 5 new demo users and 20 todos" in again.stdout
    assert rows(
        migrated_url,
        "SELECT count(DISTINCT u.id), count(t.id), min(u.role), max(u.role) "
        "FROM users u JOIN todos t ON t.owner_id = u.id",
    ) == [(35, 140, "user", "user")]
    assert rows(migrated_url, "SELECT username, email FROM users WHERE id = 7") == [
        ("demo7", "demo7@example.com")
    ]
    assert rows(migrated_url, "SELECT count(*) FROM users WHERE NOT is_verified") == [(0,)]
    hashes = rows(migrated_url, "SELECT count(DISTINCT hash_password) FROM users")
    assert hashes in ([(1,)], [(2,)])  # one shared hash per run
