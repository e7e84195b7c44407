"""python -m todoapp create-admin | seed | check-config."""

import argparse
import getpass
import sys
import time
from collections.abc import Sequence

from pydantic import BaseModel, ValidationError

from todoapp.config import ConfigError, get_settings
from todoapp.database import Database, SchemaNotReady, make_engine
from todoapp.errors import DomainError
from todoapp.schemas import Email, Password, Username
from todoapp.services import users


class _AdminInput(BaseModel):
    username: Username
    email: Email


class _PasswordInput(BaseModel):
    password: Password


def _one_line(exc: ValidationError) -> str:
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"])
    return f"{field}: {first['msg']}"


def _read_password() -> str:
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Repeat password: ") != password:
            raise ValueError("the passwords do not match")
        return password
    return sys.stdin.readline().rstrip("\r\n")


def _database() -> Database:
    settings = get_settings()
    database = Database(make_engine(settings.database_url, settings))
    database.ensure_schema_ready()
    return database


def create_admin(username: str, email: str) -> int:
    try:
        given = _AdminInput(username=username, email=email)
    except ValidationError as exc:
        print(f"create-admin: {_one_line(exc)}", file=sys.stderr)
        return 1
    database = _database()
    with database.session_factory() as db:
        existing = users.find_by_login(db, given.username)
        password = None
        if existing is None or existing.username.lower() != given.username.lower():
            try:
                password = _PasswordInput(password=_read_password()).password
            except ValidationError as exc:
                print(f"create-admin: {_one_line(exc)}", file=sys.stderr)
                return 1
            except (ValueError, EOFError) as exc:
                print(f"create-admin: {exc}", file=sys.stderr)
                return 1
        try:
            user, created = users.create_or_promote_admin(
                db, username=given.username, email=given.email, password=password
            )
        except DomainError as exc:
            print(f"create-admin: {exc.detail}", file=sys.stderr)
            return 1
    verb = "created admin" if created else "promoted to admin"
    print(f"{verb}: {user.username} (id {user.id})")
    return 0


def seed(user_count: int, todos_per_user: int) -> int:
    if user_count < 0 or todos_per_user < 0:
        print("seed: --users and --todos must be 0 or more", file=sys.stderr)
        return 1
    database = _database()
    started = time.perf_counter()
    with database.session_factory() as db:
        created_users, created_todos = users.seed_demo_data(
            db, users=user_count, todos_per_user=todos_per_user
        )
    elapsed = time.perf_counter() - started
    print(
        f"seeded {created_users} new demo users and {created_todos} todos "
        f"in {elapsed:.1f}s (password: {users.DEMO_PASSWORD})"
    )
    return 0


def check_config() -> int:
    """What the server checks before it starts, for `make serve` to check before
    starting its workers (uvicorn's supervisor outlives workers that refuse)."""
    try:
        get_settings().check_secret_key()
    except ConfigError as exc:
        print(f"todoapp: refusing to start: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m todoapp")
    commands = parser.add_subparsers(dest="command", required=True)
    admin = commands.add_parser("create-admin", help="create an admin or promote a user")
    admin.add_argument("--username", required=True)
    admin.add_argument("--email", required=True)
    demo = commands.add_parser("seed", help="make demo users demo1..demoN with M todos each")
    demo.add_argument("--users", type=int, required=True)
    demo.add_argument("--todos", type=int, required=True)
    commands.add_parser("check-config", help="exit 1 with the reason if the server would refuse")
    args = parser.parse_args(argv)
    try:
        if args.command == "check-config":
            return check_config()
        if args.command == "create-admin":
            return create_admin(args.username, args.email)
        return seed(args.users, args.todos)
    except SchemaNotReady as exc:
        print(f"{args.command}: {exc}", file=sys.stderr)
        return 1
