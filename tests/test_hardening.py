"""The attacker's findings of issue #14, one test (or more) each, and the contract's
section "Hardening" (v2): failure budgets, hashing bounded apart from the database,
malformed tokens, production serving, escaped logs, headers, and the small edges."""

import base64
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from jose import jwt
from sqlalchemy import text
from sqlalchemy.orm import Session

from tests.conftest import (
    PASSWORD,
    ROOT,
    Account,
    AppFactory,
    Backend,
    empty_tables,
    login,
    make_account,
    register,
    settings_for_tests,
)
from todoapp.config import get_settings
from todoapp.logs import loggable
from todoapp.main import create_app
from todoapp.middleware import RequestContextMiddleware, security_headers
from todoapp.models import User
from todoapp.throttle import RedisFailureStore

WRONG = "wrong-password"
BUSY = {"detail": "server busy: try again shortly"}


def attempt(client: TestClient, name: str, password: str = WRONG) -> Any:
    return client.post("/auth/token", data={"username": name, "password": password})


# --- apps whose requests commit for real (several threads at once) ----------------
@pytest.fixture
def real_app(backend: Backend) -> Iterator[Callable[..., FastAPI]]:
    """Apps built as production builds them (no overrides: admission, the fast lane
    and the sessions are the real ones) on each database; tables emptied afterwards."""

    def make(**settings: Any) -> FastAPI:
        return create_app(settings_for_tests(database_url=backend.url, **settings))

    try:
        yield make
    finally:
        empty_tables(backend)


def _give_slow_hash(backend: Backend, username: str, rounds: int = 12) -> None:
    """A cost-12 bcrypt hash, as production's: each check of it takes a real while."""
    slow = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds)).decode()
    with backend.engine.begin() as connection:
        connection.execute(
            text("UPDATE users SET hash_password = :h WHERE username = :u"),
            {"h": slow, "u": username},
        )


# --- 1. floods of logins and registrations slow down only themselves ---------------
def test_a_login_flood_never_takes_the_threads_other_requests_need(
    backend: Backend, real_app: Callable[..., FastAPI]
) -> None:
    # Few threads, a short pool wait: before the fix, 12 logins hashing at once held
    # every admission place, and GET /users/me waited them out into 503s.
    app = real_app(
        worker_threads=4,
        db_pool_timeout=0.5,
        hashing_slots=2,
        hashing_wait_seconds=0.2,
        login_max_failures=1000,
        login_max_failures_per_address=1000,
    )
    with TestClient(app) as client:
        reader = make_account(client, "reader")
        register(client, "victim")
        _give_slow_hash(backend, "victim")
        flooding = threading.Event()
        flood_answers: list[tuple[int, dict[str, Any], str | None]] = []

        def flood(_i: int) -> None:
            while flooding.is_set():
                response = attempt(client, "victim")
                flood_answers.append(
                    (response.status_code, response.json(), response.headers.get("retry-after"))
                )

        flooding.set()
        with ThreadPoolExecutor(max_workers=12) as pool:
            for i in range(12):
                pool.submit(flood, i)
            try:
                time.sleep(0.3)  # every flooding connection is in flight
                reads = [client.get("/users/me", headers=reader.headers) for _ in range(20)]
                reads += [client.get("/todos?q=x", headers=reader.headers) for _ in range(5)]
            finally:
                flooding.clear()
    assert [r.status_code for r in reads] == [200] * len(reads)
    statuses = {status for status, _, _ in flood_answers}
    assert statuses <= {401, 503}
    assert 401 in statuses  # logins still happen, HASHING_SLOTS at a time
    busy = [(body, retry) for status, body, retry in flood_answers if status == 503]
    assert busy, "excess hashing work is refused"
    assert all(body == BUSY and retry is not None and int(retry) >= 1 for body, retry in busy)


def test_registration_and_password_changes_share_the_hashing_limit(
    backend: Backend, real_app: Callable[..., FastAPI]
) -> None:
    app = real_app(hashing_slots=1, hashing_wait_seconds=0.1)
    with TestClient(app) as client:
        alice = make_account(client, "alice")
        register(client, "victim")
        # Cost 14 (about a second on a quiet machine): the check must outlast the sleep
        # and both 0.1 s waits below, however fast the machine.
        _give_slow_hash(backend, "victim", rounds=14)
        with ThreadPoolExecutor(max_workers=1) as pool:
            slow = pool.submit(attempt, client, "victim")
            time.sleep(0.15)  # the slow check holds the only slot
            body = {"username": "newbie", "email": "newbie@example.com", "password": PASSWORD}
            registered = client.post("/auth/register", json=body)
            change = {"current_password": PASSWORD, "new_password": "another-password"}
            changed = client.put("/users/me/password", json=change, headers=alice.headers)
            other = client.get("/users/me", headers=alice.headers)
            assert slow.result().status_code == 401
    for refused in (registered, changed):
        assert refused.status_code == 503
        assert refused.json() == BUSY
        assert int(refused.headers["retry-after"]) >= 1
    assert other.status_code == 200
    with TestClient(app) as client:  # nothing was half-done: the refused work can be redone
        assert client.post("/auth/register", json=body).status_code == 201


@pytest.mark.parametrize(
    ("threads", "slots", "turns"), [(20, 2, 2), (4, 8, 3), (2, 2, 1), (1, 2, 1)]
)
def test_hashing_never_gets_every_thread(threads: int, slots: int, turns: int) -> None:
    settings = settings_for_tests(worker_threads=threads, hashing_slots=slots)
    assert settings.hashing_turns == turns


def test_hashing_runs_on_threads_of_lower_cpu_priority(client: TestClient) -> None:
    register(client, "ada")
    assert login(client, "ada")
    hashing = [t for t in threading.enumerate() if t.name.startswith("todoapp-hashing")]
    assert hashing

    def nice(tid: int | None) -> int:
        stat = Path(f"/proc/self/task/{tid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[16])

    mine = nice(threading.get_native_id())
    assert all(nice(t.native_id) > mine for t in hashing)


def test_one_address_gets_a_budget_across_all_names(app_factory: AppFactory) -> None:
    with TestClient(app_factory(login_max_failures_per_address=3)) as client:
        register(client, "ada")
        assert [attempt(client, name).status_code for name in ("x1", "x2", "x3")] == [401] * 3
        blocked = attempt(client, "ada", PASSWORD)  # a fourth name, the right password
        assert blocked.status_code == 429
        assert 1 <= int(blocked.headers["retry-after"]) <= 15 * 60
        assert attempt(client, "x4").status_code == 429


def test_a_success_does_not_reset_the_address_budget(app_factory: AppFactory) -> None:
    with TestClient(app_factory(login_max_failures_per_address=3)) as client:
        register(client, "ada")
        assert attempt(client, "x1").status_code == 401
        assert attempt(client, "x2").status_code == 401
        assert attempt(client, "ada", PASSWORD).status_code == 200
        assert attempt(client, "x3").status_code == 401
        assert attempt(client, "x4").status_code == 429


# --- 2. a malformed token of any shape is 401, never 500 ----------------------------
def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _nested_header_token() -> str:
    """1,100 nested JSON arrays as the header: under the 4,096-character cap."""
    header = _b64(b"[" * 1100 + b"]" * 1100)
    payload = _b64(json.dumps({"sub": "1", "iat": 0, "exp": 2**31, "ver": 0}).encode())
    token = f"{header}.{payload}.{_b64(b'x' * 32)}"
    assert len(token) < 4096
    return token


def _signed(account: Account, sub: str) -> str:
    """The account's own token, signed with the app's key, with only `sub` changed."""
    claims = jwt.get_unverified_claims(account.token)
    claims["sub"] = sub
    return jwt.encode(claims, get_settings().secret_key, algorithm="HS256")


_ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")
MALFORMED: dict[str, Callable[[Account], str]] = {
    "nested-json-header": lambda a: _nested_header_token(),
    "superscript-digit-sub": lambda a: _signed(a, "²"),
    "arabic-indic-digits-of-a-real-id": lambda a: _signed(a, str(a.id).translate(_ARABIC_INDIC)),
    "fullwidth-digits-of-a-real-id": lambda a: _signed(
        a, "".join(chr(ord(c) + 0xFEE0) for c in str(a.id))
    ),
    "zero-padded-id": lambda a: _signed(a, "0" + str(a.id)),
    "id-with-a-newline": lambda a: _signed(a, f"{a.id}\n"),
}


@pytest.mark.parametrize("make_token", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_tokens_are_401_on_the_routes_and_on_the_fast_lane(
    real_app: Callable[..., FastAPI],
    make_token: Callable[[Account], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    with TestClient(real_app()) as client:
        account = make_account(client, "alice")
        assert client.get("/todos", headers=account.headers).status_code == 200
        # The same claims with the plain sub are a good token: only the sub is wrong.
        assert client.get("/users/me", headers=account.headers).status_code == 200
        resigned = {"Authorization": f"Bearer {_signed(account, str(account.id))}"}
        assert client.get("/users/me", headers=resigned).status_code == 200
        headers = {"Authorization": f"Bearer {make_token(account)}"}
        with caplog.at_level(logging.INFO):
            for path in ("/users/me", "/todos", "/todos?limit=5", "/todos?sort=-id"):
                response = client.get(path, headers=headers)
                assert response.status_code == 401, (path, response.text)
                assert response.headers["www-authenticate"] == "Bearer"
                assert response.json() == {"detail": "Could not validate credentials"}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# --- 3. the production serving target runs outside development ----------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _make_serve(tmp_path: Path, port: int, **env: str) -> subprocess.Popen[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "ENVIRONMENT")}
    # SECRET_KEY set but blank means "not set", whatever a .env file says.
    clean.update({"DATABASE_URL": f"sqlite:///{tmp_path / 'serve.db'}", "SECRET_KEY": ""})
    clean.update(env)
    make = shutil.which("make")
    assert make is not None, "make is not installed"
    return subprocess.Popen(
        [make, "--no-print-directory", "serve", "WORKERS=1", f"PORT={port}"],
        cwd=ROOT,
        env=clean,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def test_make_serve_refuses_the_development_key(tmp_path: Path) -> None:
    process = _make_serve(tmp_path, _free_port())
    output, _ = process.communicate(timeout=120)
    assert process.returncode != 0
    assert "refusing to start: SECRET_KEY is the built-in development key" in output
    assert "ENVIRONMENT=production" in output
    assert "Uvicorn running" not in output


def test_make_serve_refuses_it_even_when_told_development(tmp_path: Path) -> None:
    process = _make_serve(tmp_path, _free_port(), ENVIRONMENT="development")
    output, _ = process.communicate(timeout=120)
    assert process.returncode != 0
    assert "ENVIRONMENT=production refuses" in output


def test_make_serve_serves_with_a_strong_key(tmp_path: Path) -> None:
    port = _free_port()
    process = _make_serve(tmp_path, port, SECRET_KEY="k" * 48)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, process.communicate()[0]
            try:
                url = f"http://127.0.0.1:{port}/healthz"
                with urllib.request.urlopen(url, timeout=2) as response:
                    assert response.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "make serve did not answer within 90 s"
                time.sleep(0.2)
    finally:
        os.killpg(process.pid, 15)
        process.communicate(timeout=60)


# --- 4. text from the request is escaped in the log: one request, one line ---------
FORGED = "/x%0d%0a2026-11-29%2021:06:00,000%20INFO%20todoapp.access:%20POST%20/admin/users/1%20204"


@pytest.mark.parametrize("path", [FORGED, "/%1b[31mred%1b[0m", "/a%e2%80%aeb", "/back%5cslash"])
def test_the_access_log_escapes_the_path(
    client: TestClient, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    with caplog.at_level(logging.INFO, logger="todoapp.access"):
        client.get(path)
    lines = [r.getMessage() for r in caplog.records if r.name == "todoapp.access"]
    assert len(lines) == 1
    line = lines[0]
    assert line.isascii(), repr(line)
    assert line.isprintable(), repr(line)
    assert "\\" in line  # what was there is shown, escaped, not dropped


@pytest.mark.parametrize(
    ("text", "logged"),
    [
        ("/todos", "/todos"),
        ("/x\r\nINFO forged", "/x\\r\\nINFO forged"),
        ("\x1b[31m", "\\x1b[31m"),
        ("caf\u00e9\u202e", "caf\\xe9\\u202e"),
        ("a\\b", "a\\\\b"),
        ("\ud800", "\\ud800"),
    ],
)
def test_loggable_escapes_what_could_break_or_fake_a_line(text: str, logged: str) -> None:
    assert loggable(text) == logged
    assert len(loggable("x" * 5000)) < 1100


# --- 5. a wrong current password is a failed login of the account -------------------
def test_wrong_current_passwords_are_throttled_like_logins(
    client: TestClient, alice: Account
) -> None:
    change = {"current_password": WRONG, "new_password": "another-password"}
    answers = [
        client.put("/users/me/password", json=change, headers=alice.headers) for _ in range(6)
    ]
    assert [a.status_code for a in answers] == [400] * 5 + [429]
    assert int(answers[-1].headers["retry-after"]) >= 1
    right = {"current_password": PASSWORD, "new_password": "another-password"}
    assert client.put("/users/me/password", json=right, headers=alice.headers).status_code == 429
    assert attempt(client, "alice", PASSWORD).status_code == 429  # the same budget


def test_password_changes_and_logins_spend_one_budget(client: TestClient, alice: Account) -> None:
    change = {"current_password": WRONG, "new_password": "another-password"}
    answers = [
        client.put("/users/me/password", json=change, headers=alice.headers) for _ in range(3)
    ]
    assert [a.status_code for a in answers] == [400] * 3
    assert [attempt(client, "alice@example.com").status_code for _ in range(3)] == [401, 401, 429]


def test_a_right_current_password_clears_the_accounts_count(
    client: TestClient, alice: Account
) -> None:
    assert [attempt(client, "alice").status_code for _ in range(4)] == [401] * 4
    right = {"current_password": PASSWORD, "new_password": "another-password"}
    assert client.put("/users/me/password", json=right, headers=alice.headers).status_code == 204
    assert [attempt(client, "alice").status_code for _ in range(4)] == [401] * 4
    assert attempt(client, "alice", "another-password").status_code == 200


# --- 6. the username and the email of one account share one budget ------------------
def test_username_and_email_share_the_accounts_budget(client: TestClient) -> None:
    register(client, "ada")
    names = ["ada", "ADA", "ada@example.com", "Ada@Example.com", "ada"]
    assert [attempt(client, name).status_code for name in names] == [401] * 5
    for name in ("ada", "ada@example.com"):
        blocked = attempt(client, name, PASSWORD)
        assert blocked.status_code == 429
        assert int(blocked.headers["retry-after"]) >= 1


def test_unknown_names_each_have_their_own_budget(client: TestClient) -> None:
    assert [attempt(client, "ghost").status_code for _ in range(6)] == [401] * 5 + [429]
    assert attempt(client, "ghost@example.com").status_code == 401


def test_a_disabled_accounts_failures_count_on_its_account(client: TestClient, db: Session) -> None:
    ada = register(client, "ada")
    db.get_one(User, ada["id"]).is_active = False
    db.commit()
    assert [attempt(client, "ada@example.com").status_code for _ in range(5)] == [401] * 5
    assert attempt(client, "ada", PASSWORD).status_code == 429


# --- 7. headers ------------------------------------------------------------------
def test_token_answers_are_never_stored(client: TestClient) -> None:
    register(client, "ada")
    for response in (attempt(client, "ada", PASSWORD), attempt(client, "ada")):
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["pragma"] == "no-cache"
    assert "no-store" not in client.get("/healthz").headers.get("cache-control", "")


def test_token_answers_are_never_stored_behind_a_path_prefix(app: FastAPI) -> None:
    with TestClient(app, root_path="/api") as client:
        register(client, "ada")
        response = client.post("/api/auth/token", data={"username": "ada", "password": PASSWORD})
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"


def test_every_answer_says_nosniff(client: TestClient, alice: Account) -> None:
    answers = [
        client.get("/healthz"),
        client.get("/users/me", headers=alice.headers),
        client.get("/users/me"),
        client.get("/nowhere"),
        client.delete("/healthz"),
        client.post("/todos", json={}, headers=alice.headers),
        client.post(
            "/todos",
            content=b"\xff",
            headers={**alice.headers, "content-type": "application/json"},
        ),
        client.post("/todos", content=b"x" * (1024 * 1024 + 1), headers=alice.headers),
        client.get("/docs"),
        client.get("/static/docs/swagger-ui/swagger-ui.css"),
        client.get("/openapi.json"),
    ]
    assert [a.headers.get("x-content-type-options") for a in answers] == ["nosniff"] * len(answers)


def test_the_fast_lanes_answer_says_nosniff(real_app: Callable[..., FastAPI]) -> None:
    with TestClient(real_app()) as client:
        account = make_account(client, "alice")
        response = client.get("/todos", headers=account.headers)
    assert response.status_code == 200
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/scalar", "/docs/oauth2-redirect"])
def test_docs_pages_may_not_be_framed(client: TestClient, path: str) -> None:
    response = client.get(path)
    policy = response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in [part.strip() for part in policy.split(";")]
    assert response.headers["x-frame-options"] == "DENY"


def test_an_html_page_without_a_policy_gets_one_with_scripts_from_the_app_only() -> None:
    headers = dict(security_headers("/", [(b"content-type", b"text/html; charset=utf-8")]))
    policy = headers[b"content-security-policy"].decode()
    directives = {part.split()[0]: part.split()[1:] for part in policy.split("; ")}
    assert directives["script-src"] == ["'self'"]
    assert directives["default-src"] == ["'self'"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert headers[b"x-frame-options"] == b"DENY"
    kept = dict(
        security_headers(
            "/", [(b"content-type", b"text/html"), (b"content-security-policy", b"mine")]
        )
    )
    assert kept[b"content-security-policy"] == b"mine"  # a page's own policy stands
    json_answer = dict(security_headers("/x", [(b"content-type", b"application/json")]))
    assert b"content-security-policy" not in json_answer


# --- 8. small edges -----------------------------------------------------------------
def _asgi_request_id(sent: bytes) -> bytes:
    """The X-Request-ID the middleware answers for a request that sent `sent`: called
    at the ASGI level, since HTTP clients refuse a header value ending in a newline."""

    async def inner(_scope: Any, _receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "headers": [(b"x-request-id", sent)],
        "query_string": b"",
    }
    import asyncio

    asyncio.run(RequestContextMiddleware(inner)(scope, receive, send))
    return dict(messages[0]["headers"])[b"x-request-id"]


def test_a_request_id_ending_in_a_newline_is_replaced() -> None:
    assert _asgi_request_id(b"abc-123") == b"abc-123"
    replaced = _asgi_request_id(b"abc-123\n")
    assert replaced != b"abc-123\n"
    assert re.fullmatch(rb"[0-9a-f]{32}", replaced)


def test_head_is_answered_wherever_get_is(real_app: Callable[..., FastAPI]) -> None:
    with TestClient(real_app()) as client:
        account = make_account(client, "alice")
        todo = client.post("/todos", json={"title": "t", "priority": 1}, headers=account.headers)
        paths = [
            "/healthz",
            "/readyz",
            "/users/me",
            "/todos",  # the fast lane
            "/todos?sort=-id",
            f"/todos/{todo.json()['id']}",
            "/docs",
            "/openapi.json",
            "/static/docs/swagger-ui/swagger-ui.css",
        ]
        for path in paths:
            got = client.get(path, headers=account.headers)
            head = client.head(path, headers=account.headers)
            assert (head.status_code, got.status_code) == (200, 200), path
            assert head.content == b"", path
            assert head.headers["content-length"] == got.headers["content-length"], path
            assert head.headers["content-type"] == got.headers["content-type"], path
        assert client.head("/users/me").status_code == 401
        assert client.head("/nowhere").status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/healthz", "GET, HEAD"),
        ("PUT", "/users/me", "GET, HEAD, PATCH, DELETE"),
        ("POST", "/todos/1", "GET, HEAD, PUT, PATCH, DELETE"),
        ("DELETE", "/todos", "GET, HEAD, POST"),
        ("GET", "/auth/token", "POST"),
        ("HEAD", "/auth/token", "POST"),
        ("POST", "/static/docs/swagger-ui/swagger-ui.css", "GET, HEAD"),
    ],
)
def test_a_405_lists_every_method_of_the_path(
    client: TestClient, method: str, path: str, allow: str
) -> None:
    response = client.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == allow


REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def redis_client() -> Iterator[tuple["redis.Redis", str]]:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        if os.environ.get("REQUIRE_POSTGRES") == "1":  # CI: every real service is required
            pytest.fail(f"Redis at {REDIS_URL} unreachable: {exc}")
        pytest.skip(f"Redis at {REDIS_URL} unreachable: {exc}")
    prefix = f"test-{uuid.uuid4().hex}:"
    yield client, prefix
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)


def test_a_release_after_the_window_leaves_no_key_without_expiry(
    redis_client: tuple["redis.Redis", str],
) -> None:
    client, prefix = redis_client
    store = RedisFailureStore(client, window_seconds=1, prefix=prefix)
    key = f"{prefix}login-failures:k"
    assert store.reserve("k", 5) is None  # an attempt in flight...
    time.sleep(1.2)  # ...outlives the window
    store.release("k")  # it was not a failure after all
    assert client.exists(key) == 0  # not re-created at -1 with no expiry
    assert [store.reserve("k", 2) for _ in range(2)] == [None, None]
    assert store.reserve("k", 2) is not None
    assert 0 < client.pttl(key) <= 1000


def test_a_key_found_without_expiry_gets_one(redis_client: tuple["redis.Redis", str]) -> None:
    client, prefix = redis_client
    store = RedisFailureStore(client, window_seconds=60, prefix=prefix)
    key = f"{prefix}login-failures:k"
    client.set(key, 3)  # as the old release() could leave one
    assert store.reserve("k", 5) is None
    assert 0 < client.pttl(key) <= 60_000
