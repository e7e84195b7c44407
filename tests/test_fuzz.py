"""Schemathesis against the app in process: anonymous, as a user, as an admin, on both
databases, each against a seeded database. Derandomized and bounded, so the runs are
repeatable and the suite stays fast; zero failures allowed."""

import uuid
from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import update
from sqlalchemy.orm import Session

from todoapp.models import Todo, User
from todoapp.services import sessions, users

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
FUZZ = settings(
    max_examples=12,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
Headers = Callable[[], dict[str, str]]


_accounts: dict[str, int] = {}


def _ensure_account(db: Session, name: str, role: str) -> User:
    """The run's account, re-made if a fuzzed request deleted, disabled or demoted it.

    Found by id: fuzzed requests may rename it or change its email.
    """
    user = db.get(User, _accounts[name]) if name in _accounts else None
    if user is None:
        username = f"{name}{uuid.uuid4().hex[:8]}"
        user = users.register(
            db, email=f"{username}@example.com", username=username, password="password123"
        )
        db.add_all(
            Todo(title=f"seeded {n}", description="seed", priority=n % 5 + 1, owner_id=user.id)
            for n in range(5)
        )
        _accounts[name] = user.id
    db.execute(update(User).where(User.id == user.id).values(role=role, is_active=True))
    db.commit()
    db.refresh(user)
    return user


def _bearer_for(db: Session, name: str, role: str) -> Headers:
    def headers() -> dict[str, str]:
        user = _ensure_account(db, name, role)
        token = sessions.start(db, user, user_agent="fuzz").access.token
        return {"Authorization": f"Bearer {token}"}

    return headers


@pytest.fixture
def fuzz_app(app: FastAPI, db: Session) -> FastAPI:
    # The seeded database: a user, an admin and todos of each, plus a few others.
    _accounts.clear()  # each test has a database of its own (rolled back afterwards)
    for name, role in (("fuzzuser", "user"), ("fuzzadmin", "admin"), ("other", "user")):
        _ensure_account(db, name, role)
    return app


@pytest.fixture
def api_schema(fuzz_app: FastAPI) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@FUZZ
def test_fuzz_anonymous(case: Any) -> None:
    case.call_and_validate(checks=CHECKS)


@schema.parametrize()
@FUZZ
def test_fuzz_as_user(case: Any, db: Session) -> None:
    case.call_and_validate(headers=_bearer_for(db, "fuzzuser", "user")(), checks=CHECKS)


@schema.parametrize()
@FUZZ
def test_fuzz_as_admin(case: Any, db: Session) -> None:
    case.call_and_validate(headers=_bearer_for(db, "fuzzadmin", "admin")(), checks=CHECKS)
