"""Schemathesis against the app in process, with every default check: anonymous, as a
user, as an admin, on both databases, each against a seeded database. Per operation,
and stateful: scenarios that follow the document's links (create a todo, then read,
replace, change and delete it by the id it returned). Derandomized and bounded, so the
runs are repeatable and the suite stays fast; zero failures allowed.

Where the contract itself requires what a check dislikes, that check is left out for
that route (and those cases) only: see `deliberate` and README, "Fuzzing".
"""

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis
from email_validator import SPECIAL_USE_DOMAIN_NAMES
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, settings
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import positive_data_acceptance
from sqlalchemy import text, update
from sqlalchemy.orm import Session

from todoapp.models import Todo, User
from todoapp.schemas import MAX_PASSWORD_BYTES
from todoapp.services import sessions, users

FUZZ = settings(
    max_examples=12,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
STATEFUL = settings(
    max_examples=10,
    stateful_step_count=6,
    phases=[Phase.generate],
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
CheckFunction = Callable[..., Any]

# Where the contract answers 400 to a well-formed request: a token from a mail (which a
# fuzzer cannot guess) that is unknown, and a wrong current password.
_REFUSED_WITH_400 = {
    ("POST", "/auth/reset-password"),
    ("POST", "/auth/verify"),
    ("PUT", "/users/me/password"),
}
# The lists whose `cursor` is ours alone: any other is 422, as is one with `offset`.
_CURSOR_LISTS = {("GET", "/todos"), ("GET", "/admin/todos"), ("GET", "/admin/users")}
_PASSWORD_FIELDS = ("password", "new_password")
# The writes that honour If-Match: a tag that is not the current one is 412.
_CONDITIONAL = {
    ("PUT", "/todos/{todo_id}"),
    ("PATCH", "/todos/{todo_id}"),
    ("DELETE", "/todos/{todo_id}"),
    ("PATCH", "/users/me"),
}


def _special_use(email: Any) -> bool:
    """An address at a special-use domain (`.test`, `.local`, ...), which the contract's
    email-validator refuses."""
    if not isinstance(email, str) or "@" not in email:
        return False
    domain = email.rsplit("@", 1)[1].lower().rstrip(".")
    return any(domain == name or domain.endswith(f".{name}") for name in SPECIAL_USE_DOMAIN_NAMES)


def deliberate(case: Any) -> list[CheckFunction]:
    """The checks the contract contradicts for this case (README, Fuzzing): each only
    for its route, and only for the cases the contract decides."""
    key = (case.method.upper(), case.operation.path)
    if key in _REFUSED_WITH_400:
        return [positive_data_acceptance]
    if key in _CURSOR_LISTS and "cursor" in (case.query or {}):
        return [positive_data_acceptance]
    if_match = {name.lower(): value for name, value in (case.headers or {}).items()}.get("if-match")
    if key in _CONDITIONAL and if_match is not None and if_match.strip() != "*":
        return [positive_data_acceptance]
    body = case.body if isinstance(case.body, dict) else {}
    if _special_use(body.get("email")):
        return [positive_data_acceptance]
    passwords = [body[name] for name in _PASSWORD_FIELDS if isinstance(body.get(name), str)]
    if any(len(value.encode("utf-8")) > MAX_PASSWORD_BYTES for value in passwords):
        # Bytes, bcrypt's limit: the document's maxLength can only count characters.
        return [positive_data_acceptance]
    return []


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


def _may_revoke(case: Any) -> bool:
    """A write to one's account, sessions or logout, or to accounts by an admin: the
    caller's token may be dead, or its account changed, after it."""
    path = case.operation.path
    writes = case.method.upper() not in ("GET", "HEAD")
    return writes and path.startswith(("/users/me", "/admin/users", "/auth/logout"))


class Caller:
    """A role's headers: for a user or an admin, a bearer token, made again (the account
    checked and re-made, a new session) only after a request that may have revoked it."""

    def __init__(self, db: Session, who: str) -> None:
        self.db = db
        self.who = who
        self._headers: dict[str, str] | None = None

    def headers(self) -> dict[str, str]:
        if self.who == "anonymous":
            return {}
        if self._headers is None:
            user = _ensure_account(self.db, f"fuzz{self.who}", self.who)
            token = sessions.start(self.db, user, user_agent="fuzz").access.token
            self._headers = {"Authorization": f"Bearer {token}"}
        return self._headers

    def after(self, case: Any) -> None:
        if _may_revoke(case):
            self.forget()

    def forget(self) -> None:
        self._headers = None


_callers: dict[str, Caller] = {}


def _caller(db: Session, who: str) -> Caller:
    if who not in _callers:
        _callers[who] = Caller(db, who)
    return _callers[who]


def _seed(db: Session) -> None:
    """The seeded database: a user, an admin and todos of each, plus a few others."""
    _accounts.clear()
    for caller in _callers.values():
        caller.forget()
    for name, role in (("fuzzuser", "user"), ("fuzzadmin", "admin"), ("other", "user")):
        _ensure_account(db, name, role)


def _reseed(db: Session) -> None:
    """Every account gone (their todos, sessions and mail with them: ON DELETE CASCADE),
    then seeded again: each scenario starts from the same state, so the same requests
    get the same answers, which Hypothesis needs to replay and shrink a scenario."""
    db.execute(text("DELETE FROM users"))
    db.commit()
    db.expunge_all()
    _seed(db)


@pytest.fixture
def fuzz_app(app: FastAPI, db: Session) -> Iterator[FastAPI]:
    _callers.clear()  # each test starts on empty tables (conftest)
    _seed(db)
    try:
        yield app
    finally:
        # Schemathesis starts the app's lifespan on first use and keeps it for the
        # process: end it with the test (the mail worker, the lane's and the engine's
        # connections), as a server's shutdown would.
        shutdown_lifespans()


@pytest.fixture
def api_schema(fuzz_app: FastAPI) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)


schema = schemathesis.pytest.from_fixture("api_schema")


def _call_and_validate(case: Any, caller: Caller) -> None:
    try:
        case.call_and_validate(headers=caller.headers(), excluded_checks=deliberate(case))
    finally:
        caller.after(case)


@schema.parametrize()
@FUZZ
def test_fuzz_anonymous(case: Any, db: Session) -> None:
    _call_and_validate(case, _caller(db, "anonymous"))


@schema.parametrize()
@FUZZ
def test_fuzz_as_user(case: Any, db: Session) -> None:
    _call_and_validate(case, _caller(db, "user"))


@schema.parametrize()
@FUZZ
def test_fuzz_as_admin(case: Any, db: Session) -> None:
    _call_and_validate(case, _caller(db, "admin"))


LINKED = {
    ("/todos", "todo_id"): {
        "todos-read",
        "todos-replace",
        "todos-update",
        "todos-delete",
        "admin-todos-delete",
    },
    ("/auth/register", "user_id"): {
        "admin-users-read",
        "admin-users-update",
        "admin-users-delete",
    },
}


@pytest.mark.parametrize(("path", "parameter"), LINKED)
def test_the_document_links_what_is_created_to_the_operations_on_it(
    api_schema: Any, path: str, parameter: str
) -> None:
    links = api_schema.raw_schema["paths"][path]["post"]["responses"]["201"]["links"]
    assert {link["operationId"] for link in links.values()} == LINKED[path, parameter]
    expected = {parameter: "$response.body#/id"}
    assert all(link["parameters"] == expected for link in links.values())


@pytest.mark.parametrize("who", ["anonymous", "user", "admin"])
def test_fuzz_stateful(who: str, api_schema: Any, db: Session) -> None:
    """Scenarios along the links, every default check (use-after-free and the created
    resource's availability among them) on every step."""
    caller = _caller(db, who)
    # The operations the links join; every operation is fuzzed on its own above.
    linked = api_schema.include(
        operation_id=["todos-create", "auth-register", *set().union(*LINKED.values())]
    )

    class Scenarios(linked.as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:
            _reseed(db)

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"headers": caller.headers()}

        def after_call(self, response: Any, case: Any) -> None:
            super().after_call(response, case)
            caller.after(case)

        def validate_response(
            self,
            response: Any,
            case: Any,
            additional_checks: list[CheckFunction] | None = None,
            **kwargs: Any,
        ) -> None:
            case.validate_response(
                response,
                additional_checks=additional_checks,
                excluded_checks=deliberate(case),
                transport_kwargs=kwargs or None,
                recorder=self.recorder,
            )

    Scenarios.run(settings=STATEFUL)
