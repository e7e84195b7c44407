"""Password recovery and email verification, delivered through the outbox to a real
SMTP server (aiosmtpd, started by the suite), on SQLite and PostgreSQL.

These tests commit for real: each gets a fresh, migrated database, and apps built as
production builds them (create_app, its lifespan starting the delivery worker), with
short worker intervals set through the settings.
"""

import hashlib
import logging
import re
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from pydantic import SecretStr
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from tests.conftest import (
    PASSWORD,
    Account,
    login,
    make_account,
    migrate,
    register,
    settings_for_tests,
)
from tests.smtp import SmtpServer, make_certificate, tls_context
from todoapp import security
from todoapp.config import Settings
from todoapp.database import Database, database_url, make_engine
from todoapp.main import create_app
from todoapp.services import mail

RESET_ACCEPTED = {"detail": "if that address belongs to an account, a reset link is on its way"}
BAD_RESET = {"detail": "invalid or expired reset token"}
BAD_VERIFICATION = {"detail": "invalid or expired verification token"}
NEW_PASSWORD = "a-brand-new-password"
MAIL_FROM = "todoapp <no-reply@todo.test>"


# --- fixtures: a fresh database, apps that commit, the outbox --------------------------
@pytest.fixture
def url(empty_database_url: str) -> str:
    migrate(empty_database_url)
    return empty_database_url


def mail_settings(url: str, smtp: SmtpServer, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": url,
        "smtp_host": "127.0.0.1",
        "smtp_port": smtp.port,
        "smtp_security": "none",
        "mail_from": MAIL_FROM,
        "mail_poll_seconds": 0.05,
        "mail_retry_base_seconds": 0.1,
        "mail_retry_max_seconds": 0.4,
    }
    values.update(overrides)
    return settings_for_tests(**values)


@contextmanager
def serving(settings: Settings) -> Iterator[TestClient]:
    """An app as production builds it (its own engine), started and stopped."""
    app = create_app(settings, database=Database(make_engine(settings.database_url, settings)))
    with TestClient(app) as client:
        yield client


AppRunner = Callable[..., Any]


@pytest.fixture
def app_with_mail(url: str, smtp_server: SmtpServer) -> Iterator[TestClient]:
    with serving(mail_settings(url, smtp_server)) as client:
        yield client


def query(url: str, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    engine = create_engine(database_url(url))
    try:
        with engine.begin() as connection:
            return [tuple(row) for row in connection.execute(text(sql), params)]
    finally:
        engine.dispose()


def execute(url: str, sql: str, **params: Any) -> None:
    engine = create_engine(database_url(url))
    try:
        with engine.begin() as connection:
            connection.execute(text(sql), params)
    finally:
        engine.dispose()


def wait_until_settled(url: str, timeout: float = 10.0) -> None:
    """Wait until no mail is queued any more (each one sent or dropped)."""
    deadline = time.monotonic() + timeout
    while query(url, "SELECT count(*) FROM mail_outbox WHERE status = 'queued'")[0][0]:
        assert time.monotonic() < deadline, query(url, "SELECT * FROM mail_outbox")
        time.sleep(0.05)


def reset_mail_for(smtp: SmtpServer, address: str, count: int = 1) -> Any:
    """The latest of `count` reset mails to `address`, waiting for it."""
    deadline = time.monotonic() + 10
    while len([m for m in smtp.to(address) if "reset" in m.subject]) < count:
        assert time.monotonic() < deadline, [(m.to, m.subject) for m in smtp.received]
        time.sleep(0.02)
    return [m for m in smtp.to(address) if "reset" in m.subject][-1]


def verify_mail_for(smtp: SmtpServer, address: str, count: int = 1) -> Any:
    deadline = time.monotonic() + 10
    while len([m for m in smtp.to(address) if "Verify" in m.subject]) < count:
        assert time.monotonic() < deadline, [(m.to, m.subject) for m in smtp.received]
        time.sleep(0.02)
    return [m for m in smtp.to(address) if "Verify" in m.subject][-1]


def forgot(client: TestClient, email: str) -> Any:
    response = client.post("/auth/forgot-password", json={"email": email})
    assert response.status_code == 202, response.text
    assert response.json() == RESET_ACCEPTED
    return response


def reset(client: TestClient, token: str, password: str = NEW_PASSWORD) -> Any:
    return client.post("/auth/reset-password", json={"token": token, "new_password": password})


# --- password recovery -------------------------------------------------------------
def test_forgot_and_reset_end_to_end_from_the_received_mail(
    app_with_mail: TestClient, smtp_server: SmtpServer
) -> None:
    client = app_with_mail
    alice = make_account(client, "alice")
    forgot(client, "ALICE@example.com")
    received = reset_mail_for(smtp_server, "alice@example.com")
    assert "reset" in received.subject
    assert received.message["From"] == MAIL_FROM
    assert received.envelope_to == ["alice@example.com"]
    link = f"http://127.0.0.1:8000/#/reset-password?token={received.token}"
    assert link in received.text
    assert link.replace("&", "&amp;") in received.html
    assert len(received.token) >= 43  # 32 random bytes

    response = reset(client, received.token)
    assert response.status_code == 204, response.text
    assert client.get("/users/me", headers=alice.headers).status_code == 401  # tokens ended
    bad = client.post("/auth/token", data={"username": "alice", "password": PASSWORD})
    assert bad.status_code == 401
    assert login(client, "alice", NEW_PASSWORD)
    again = reset(client, received.token, "yet-another-password")
    assert (again.status_code, again.json()) == (400, BAD_RESET)  # used up


def test_a_reset_ends_every_session_of_the_account(
    app_with_mail: TestClient, smtp_server: SmtpServer
) -> None:
    client = app_with_mail
    register(client, "ada")
    devices = [
        client.post("/auth/token", data={"username": "ada", "password": PASSWORD}).json()
        for _ in range(2)
    ]
    forgot(client, "ada@example.com")
    token = reset_mail_for(smtp_server, "ada@example.com").token
    client.cookies.set("todoapp_refresh", devices[0]["refresh_token"], path="/auth")
    answer = reset(client, token)
    assert answer.status_code == 204
    assert "todoapp_refresh=" in answer.headers["set-cookie"]  # the cookie is cleared
    assert "Max-Age=0" in answer.headers["set-cookie"]
    client.cookies.clear()
    for device in devices:
        headers = {"Authorization": f"Bearer {device['access_token']}"}
        assert client.get("/users/me", headers=headers).status_code == 401
        refreshed = client.post("/auth/refresh", json={"refresh_token": device["refresh_token"]})
        assert refreshed.status_code == 401
    fresh = login(client, "ada", NEW_PASSWORD)
    sessions = client.get("/users/me/sessions", headers={"Authorization": f"Bearer {fresh}"})
    assert len(sessions.json()) == 1


def test_unknown_disabled_and_real_addresses_answer_alike_and_only_the_real_one_gets_mail(
    url: str, app_with_mail: TestClient, smtp_server: SmtpServer
) -> None:
    client = app_with_mail
    register(client, "real")
    register(client, "off")
    execute(url, "UPDATE users SET is_active = false WHERE username = 'off'")
    wait_until_settled(url)  # the verification mails
    answers = [
        forgot(client, address)
        for address in ("real@example.com", "off@example.com", "nobody@example.com")
    ]
    shapes = {
        (a.status_code, a.content, a.headers["content-type"], a.headers["content-length"])
        for a in answers
    }
    assert len(shapes) == 1
    wait_until_settled(url)
    resets = [m for m in smtp_server.received if "reset" in m.subject]
    assert [m.to for m in resets] == ["real@example.com"]


def test_forgot_password_with_bad_syntax_is_422(client: TestClient) -> None:
    for body in ({"email": "not-an-address"}, {}, {"email": "a@example.com", "x": 1}):
        assert client.post("/auth/forgot-password", json=body).status_code == 422


def test_forgot_password_takes_the_same_time_for_real_and_unknown_addresses(
    client: TestClient,
) -> None:
    register(client, "timed")
    timings: dict[str, list[float]] = {"timed@example.com": [], "unknown@example.com": []}
    for _ in range(30):
        for address, spent in timings.items():
            started = time.perf_counter()
            response = client.post("/auth/forgot-password", json={"email": address})
            spent.append(time.perf_counter() - started)
            assert response.status_code == 202
    real, unknown = (statistics.median(spent) for spent in timings.values())
    assert abs(real - unknown) < 0.005, (real, unknown)


def test_a_reset_token_works_once_and_a_422_does_not_use_it_up(
    app_with_mail: TestClient, smtp_server: SmtpServer
) -> None:
    client = app_with_mail
    register(client, "ada")
    forgot(client, "ada@example.com")
    token = reset_mail_for(smtp_server, "ada@example.com").token
    assert reset(client, token, "short").status_code == 422
    assert client.post("/auth/reset-password", json={"token": token}).status_code == 422
    assert reset(client, token).status_code == 204
    second = reset(client, token, "another-password")
    assert (second.status_code, second.json()) == (400, BAD_RESET)
    for junk in ("x", "A" * 256, token[:-1]):
        answer = reset(client, junk)
        assert (answer.status_code, answer.json()) == (400, BAD_RESET)


def hash_after(monkeypatch: pytest.MonkeyPatch, first: Callable[[str], None]) -> None:
    """The app's password hashing, with first(password) run just before each hash."""
    real_hash = security.hash_password

    def hash_password(password: str) -> str:
        first(password)
        return real_hash(password)

    monkeypatch.setattr(security, "hash_password", hash_password)


def test_a_bad_reset_token_costs_no_hashing(
    app_with_mail: TestClient, smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # bcrypt is the costly part of a reset: a made-up, used or mistyped token must be
    # turned away before it, or anyone could keep the hashing threads busy.
    client = app_with_mail
    register(client, "ada")
    forgot(client, "ada@example.com")
    token = reset_mail_for(smtp_server, "ada@example.com").token
    hashed: list[str] = []
    hash_after(monkeypatch, hashed.append)
    for junk in ("x", "A" * 256, token[:-1]):
        answer = reset(client, junk)
        assert (answer.status_code, answer.json()) == (400, BAD_RESET)
    assert hashed == []
    assert reset(client, token).status_code == 204
    assert hashed == [NEW_PASSWORD]
    answer = reset(client, token)  # used up now
    assert (answer.status_code, answer.json()) == (400, BAD_RESET)
    assert hashed == [NEW_PASSWORD]


def test_a_reset_hashes_the_new_password_with_no_lock_held(
    url: str, app_with_mail: TestClient, smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # While bcrypt runs (a quarter of a second in production), nothing of the reset's
    # may be locked: not the account's row on PostgreSQL, not the write lock on SQLite,
    # which every other writer would wait for.
    client = app_with_mail
    register(client, "ada")
    forgot(client, "ada@example.com")
    token = reset_mail_for(smtp_server, "ada@example.com").token
    wait_until_settled(url)  # the delivery worker's own writes are over
    others_could_write: list[bool] = []
    hash_after(
        monkeypatch, lambda _: others_could_write.append(_can_lock_the_account_row(url, "ada"))
    )
    assert reset(client, token).status_code == 204
    assert others_could_write == [True]
    assert login(client, "ada", NEW_PASSWORD)


@pytest.mark.parametrize(
    ("meanwhile", "password_then", "active_then"),
    [
        ("UPDATE users SET is_active = false WHERE username = 'ada'", None, False),
        ("UPDATE users SET hash_password = 'changed' WHERE username = 'ada'", "changed", True),
        ("UPDATE mail_tokens SET used_at = created_at", None, True),
    ],
    ids=["account disabled", "password changed", "token used"],
)
def test_a_reset_checks_its_token_again_after_hashing(
    url: str,
    app_with_mail: TestClient,
    smtp_server: SmtpServer,
    monkeypatch: pytest.MonkeyPatch,
    meanwhile: str,
    password_then: str | None,
    active_then: bool,
) -> None:
    # The token is checked before the (unlocked) hashing and again, under its locks,
    # after it: whatever happened to it or its account meanwhile is seen, and the reset
    # changes nothing (None: the password hash is the one from before the reset).
    client = app_with_mail
    register(client, "ada")
    forgot(client, "ada@example.com")
    token = reset_mail_for(smtp_server, "ada@example.com").token
    wait_until_settled(url)
    hash_after(monkeypatch, lambda _: execute(url, meanwhile))
    before = query(url, "SELECT hash_password FROM users WHERE username = 'ada'")[0][0]
    answer = reset(client, token)
    assert (answer.status_code, answer.json()) == (400, BAD_RESET)
    after = query(url, "SELECT hash_password, is_active FROM users WHERE username = 'ada'")
    assert after == [(password_then or before, active_then)]


def _can_lock_the_account_row(url: str, username: str) -> bool:
    """Whether another connection can take a write lock on the user's row within a
    second (a lock the reset held would stay held: its thread is the one waiting here)."""
    sqlite = url.startswith("sqlite")
    engine = create_engine(database_url(url), connect_args={"timeout": 1} if sqlite else {})
    try:
        with engine.connect() as connection:
            if sqlite:  # one writer at a time: the database's write lock
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                connection.exec_driver_sql("SET lock_timeout = '1s'")
                connection.execute(
                    text("SELECT id FROM users WHERE username = :name FOR UPDATE"),
                    {"name": username},
                )
            connection.rollback()
        return True
    except OperationalError:  # busy (SQLite) or the lock timed out (PostgreSQL)
        return False
    finally:
        engine.dispose()


def test_a_reset_token_expires(url: str, smtp_server: SmtpServer) -> None:
    settings = mail_settings(url, smtp_server, password_reset_expire_minutes=0.02)  # 1.2 s
    with serving(settings) as client:
        register(client, "ada")
        forgot(client, "ada@example.com")
        token = reset_mail_for(smtp_server, "ada@example.com").token
        time.sleep(1.5)
        answer = reset(client, token)
        assert (answer.status_code, answer.json()) == (400, BAD_RESET)


def test_a_password_change_voids_an_earlier_reset_token_at_once(
    app_with_mail: TestClient, smtp_server: SmtpServer
) -> None:
    client = app_with_mail
    ada = make_account(client, "ada")
    forgot(client, "ada@example.com")
    token = reset_mail_for(smtp_server, "ada@example.com").token
    changed = client.put(
        "/users/me/password",
        json={"current_password": PASSWORD, "new_password": "changed-password"},
        headers=ada.headers,
    )
    assert changed.status_code == 204
    answer = reset(client, token)  # within the same second, most likely
    assert (answer.status_code, answer.json()) == (400, BAD_RESET)
    assert login(client, "ada", "changed-password")


def test_a_newer_reset_mail_voids_the_older_token(
    app_with_mail: TestClient, smtp_server: SmtpServer
) -> None:
    client = app_with_mail
    register(client, "ada")
    forgot(client, "ada@example.com")
    first = reset_mail_for(smtp_server, "ada@example.com").token
    forgot(client, "ada@example.com")
    second = reset_mail_for(smtp_server, "ada@example.com", count=2).token
    assert first != second
    answer = reset(client, first)
    assert (answer.status_code, answer.json()) == (400, BAD_RESET)
    assert reset(client, second).status_code == 204


def test_a_disabled_accounts_reset_token_is_refused(
    url: str, app_with_mail: TestClient, smtp_server: SmtpServer
) -> None:
    client = app_with_mail
    register(client, "ada")
    forgot(client, "ada@example.com")
    token = reset_mail_for(smtp_server, "ada@example.com").token
    execute(url, "UPDATE users SET is_active = false WHERE username = 'ada'")
    answer = reset(client, token)
    assert (answer.status_code, answer.json()) == (400, BAD_RESET)


def test_at_most_three_reset_mails_per_account_per_hour(
    url: str, app_with_mail: TestClient, smtp_server: SmtpServer
) -> None:
    client = app_with_mail
    register(client, "ada")
    for _ in range(5):
        forgot(client, "ada@example.com")  # still 202 past the limit
    wait_until_settled(url)
    assert len([m for m in smtp_server.to("ada@example.com") if "reset" in m.subject]) == 3
    statuses = query(url, "SELECT status, count(*) FROM mail_outbox GROUP BY status ORDER BY 1")
    assert statuses == [("dropped", 2), ("sent", 4)]  # 3 resets and the verification


def test_tokens_are_stored_only_as_hashes_and_the_outbox_holds_none(
    url: str, app_with_mail: TestClient, smtp_server: SmtpServer
) -> None:
    client = app_with_mail
    register(client, "ada")
    forgot(client, "ada@example.com")
    reset_token = reset_mail_for(smtp_server, "ada@example.com").token
    verify_token = verify_mail_for(smtp_server, "ada@example.com").token
    dump = repr(query(url, "SELECT * FROM mail_tokens")) + repr(
        query(url, "SELECT * FROM mail_outbox")
    )
    for token in (reset_token, verify_token):
        assert token not in dump
        assert hashlib.sha256(token.encode()).hexdigest() in dump


def test_a_reset_clears_the_accounts_failed_login_count(
    app_with_mail: TestClient, smtp_server: SmtpServer
) -> None:
    client = app_with_mail
    register(client, "ada")
    for _ in range(5):
        client.post("/auth/token", data={"username": "ada", "password": "wrong-password"})
    locked = client.post("/auth/token", data={"username": "ada", "password": PASSWORD})
    assert locked.status_code == 429
    forgot(client, "ada@example.com")
    assert reset(client, reset_mail_for(smtp_server, "ada@example.com").token).status_code == 204
    assert login(client, "ada", NEW_PASSWORD)


def test_requests_never_wait_for_a_slow_smtp_server(url: str, smtp_server: SmtpServer) -> None:
    smtp_server.delay = 2.0
    with serving(mail_settings(url, smtp_server)) as client:
        register(client, "ada")  # its verification mail keeps the server busy
        time.sleep(0.2)
        for call in (
            lambda: register(client, "bob"),
            lambda: forgot(client, "ada@example.com"),
        ):
            started = time.perf_counter()
            call()
            assert time.perf_counter() - started < 1.0


def test_the_worker_logs_in_to_the_smtp_server_when_a_username_is_set(
    url: str, smtp_server: SmtpServer
) -> None:
    smtp_server.credentials = ("mailer", "mail-secret")
    smtp_server.stop()
    smtp_server.start()
    settings = mail_settings(
        url, smtp_server, smtp_username="mailer", smtp_password=SecretStr("mail-secret")
    )
    with serving(settings) as client:
        register(client, "ada")
        verify_mail_for(smtp_server, "ada@example.com")
    assert smtp_server.logins == ["mailer"]


@pytest.fixture(scope="session")
def smtp_certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, and its key."""
    return make_certificate(tmp_path_factory.mktemp("smtp-tls"))


@contextmanager
def tls_smtp_server(
    url: str, certificate: tuple[Path, Path], smtp_security: str
) -> Iterator[tuple[SmtpServer, Settings]]:
    """An SMTP server that speaks TLS (after STARTTLS, or from the start with `ssl`) and
    wants a login, and the app's settings for it."""
    server = SmtpServer(tls=tls_context(*certificate), implicit_tls=smtp_security == "ssl")
    server.credentials = ("mailer", "mail-secret")
    server.start()
    settings = mail_settings(
        url,
        server,
        smtp_security=smtp_security,
        smtp_username="mailer",
        smtp_password=SecretStr("mail-secret"),
    )
    try:
        yield server, settings
    finally:
        server.close()


@pytest.mark.parametrize("smtp_security", ["starttls", "ssl"])
def test_the_worker_speaks_tls_to_a_server_whose_certificate_it_trusts(
    url: str,
    smtp_certificate: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    smtp_security: str,
) -> None:
    # SMTP_SECURITY=starttls (the default) upgrades the connection before it logs in;
    # ssl is TLS from the first byte. The certificate is checked against the trusted
    # authorities: here the test's own, through OpenSSL's SSL_CERT_FILE.
    monkeypatch.setenv("SSL_CERT_FILE", str(smtp_certificate[0]))
    with tls_smtp_server(url, smtp_certificate, smtp_security) as (smtp, settings):
        with serving(settings) as client:
            register(client, "ada")
            received = verify_mail_for(smtp, "ada@example.com")
        assert received.over_tls
        assert smtp.logins == ["mailer"]


@pytest.mark.parametrize("smtp_security", ["starttls", "ssl"])
def test_the_worker_sends_nothing_to_a_server_whose_certificate_it_does_not_trust(
    url: str, smtp_certificate: tuple[Path, Path], smtp_security: str
) -> None:
    # A self-signed certificate nobody vouches for (an impostor on the way): no login,
    # no mail; the attempt fails and is retried later, as for a server that is down.
    with tls_smtp_server(url, smtp_certificate, smtp_security) as (smtp, settings):
        with serving(settings) as client:
            register(client, "ada")
            _eventually(lambda: query(url, "SELECT attempts FROM mail_outbox")[0][0] >= 2)
            rows = query(url, "SELECT status, attempts, last_error FROM mail_outbox")
        assert rows[0][0] == "queued"
        assert rows[0][2] == "SSLCertVerificationError"
        assert smtp.received == []
        assert smtp.logins == []


def test_a_mail_not_delivered_within_mail_give_up_hours_is_given_up(
    url: str, smtp_server: SmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    # A server that refuses everything (451) until MAIL_GIVE_UP_HOURS have passed since
    # the mail was queued (here 3 s): the mail is marked failed, said in one error
    # line, never tried again, and no token of it is left.
    smtp_server.refuse = True
    settings = mail_settings(url, smtp_server, mail_give_up_hours=3 / 3600)
    with caplog.at_level(logging.INFO, logger="todoapp.mail"), serving(settings) as client:
        register(client, "ada")
        _eventually(lambda: query(url, "SELECT status FROM mail_outbox") == [("failed",)])
        given_up = query(url, "SELECT attempts, last_error, finished_at FROM mail_outbox")
        time.sleep(0.6)  # more than the longest pause between attempts
        assert query(url, "SELECT attempts, last_error, finished_at FROM mail_outbox") == given_up
    attempts, reason, finished_at = given_up[0]
    assert attempts >= 2
    assert reason == "not delivered within MAIL_GIVE_UP_HOURS"
    assert finished_at is not None
    assert smtp_server.received == []
    assert query(url, "SELECT count(*) FROM mail_tokens") == [(0,)]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [f"mail 1 (verify_email) given up after {attempts - 1} attempts"]


def test_mail_settings_refuse_a_link_without_a_token_slot_and_read_blanks_as_unset() -> None:
    with pytest.raises(ValueError, match="token"):
        Settings(password_reset_url="http://127.0.0.1:8000/#/reset")
    settings = Settings(smtp_host="", smtp_password="", smtp_username="")
    assert (settings.smtp_host, settings.smtp_password, settings.smtp_username) == (None,) * 3


# --- email verification --------------------------------------------------------------
def test_verification_end_to_end(app_with_mail: TestClient, smtp_server: SmtpServer) -> None:
    client = app_with_mail
    created = register(client, "ada")
    assert created["is_verified"] is False
    received = verify_mail_for(smtp_server, "ada@example.com")
    assert not received.over_tls  # SMTP_SECURITY=none, the suite's plain server
    assert received.message["From"] == MAIL_FROM
    assert f"http://127.0.0.1:8000/#/verify-email?token={received.token}" in received.text
    assert received.token in received.html
    answer = client.post("/auth/verify", json={"token": received.token})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {**created, "is_verified": True}
    again = client.post("/auth/verify", json={"token": received.token})
    assert (again.status_code, again.json()) == (400, BAD_VERIFICATION)
    token = login(client, "ada")
    already = client.post("/auth/request-verify", headers={"Authorization": f"Bearer {token}"})
    assert (already.status_code, already.json()) == (409, {"detail": "email is already verified"})


def test_request_verify_sends_a_new_link_that_voids_the_older_one(
    app_with_mail: TestClient, smtp_server: SmtpServer
) -> None:
    client = app_with_mail
    ada = make_account(client, "ada")
    first = verify_mail_for(smtp_server, "ada@example.com").token
    assert client.post("/auth/request-verify").status_code == 401
    answer = client.post("/auth/request-verify", headers=ada.headers)
    assert answer.status_code == 202
    second = verify_mail_for(smtp_server, "ada@example.com", count=2).token
    old = client.post("/auth/verify", json={"token": first})
    assert (old.status_code, old.json()) == (400, BAD_VERIFICATION)
    assert client.post("/auth/verify", json={"token": second}).json()["is_verified"] is True


def test_changing_the_email_makes_the_account_unverified_and_voids_old_links(
    app_with_mail: TestClient, smtp_server: SmtpServer
) -> None:
    client = app_with_mail
    ada = make_account(client, "ada")
    first = verify_mail_for(smtp_server, "ada@example.com").token
    client.post("/auth/request-verify", headers=ada.headers)
    unused = verify_mail_for(smtp_server, "ada@example.com", count=2).token
    assert client.post("/auth/verify", json={"token": unused}).status_code == 200
    assert first != unused

    changed = client.patch("/users/me", json={"email": "ada@new.example"}, headers=ada.headers)
    assert changed.status_code == 200
    assert changed.json()["is_verified"] is False
    assert client.get("/users/me", headers=ada.headers).json()["is_verified"] is False
    # A link for the new address comes; none for the old address works.
    fresh = verify_mail_for(smtp_server, "ada@new.example").token
    assert client.post("/auth/verify", json={"token": fresh}).json()["is_verified"] is True
    # Only the case changes: the same address, still verified.
    same = client.patch("/users/me", json={"email": "ADA@new.example"}, headers=ada.headers)
    assert same.json()["is_verified"] is True


def test_a_verification_link_for_a_former_address_is_refused(
    app_with_mail: TestClient, smtp_server: SmtpServer
) -> None:
    client = app_with_mail
    ada = make_account(client, "ada")
    old = verify_mail_for(smtp_server, "ada@example.com").token
    client.patch("/users/me", json={"email": "ada@new.example"}, headers=ada.headers)
    verify_mail_for(smtp_server, "ada@new.example")
    answer = client.post("/auth/verify", json={"token": old})
    assert (answer.status_code, answer.json()) == (400, BAD_VERIFICATION)


def test_a_verification_token_expires(url: str, smtp_server: SmtpServer) -> None:
    settings = mail_settings(url, smtp_server, email_verify_expire_hours=0.0003)  # ~1 s
    with serving(settings) as client:
        register(client, "ada")
        token = verify_mail_for(smtp_server, "ada@example.com").token
        time.sleep(1.4)
        answer = client.post("/auth/verify", json={"token": token})
        assert (answer.status_code, answer.json()) == (400, BAD_VERIFICATION)


# --- delivery ------------------------------------------------------------------------
def _queue_resets(client: TestClient, names: list[str]) -> None:
    for name in names:
        register(client, name)
        forgot(client, f"{name}@example.com")


def _each_arrived_once(smtp: SmtpServer, names: list[str]) -> None:
    expected = sorted(
        (f"{name}@example.com", kind) for name in names for kind in ("reset", "verify")
    )
    arrived = sorted((m.to, "reset" if "reset" in m.subject else "verify") for m in smtp.received)
    assert arrived == expected


def test_smtp_server_down_for_a_while_then_up_every_mail_arrives_once(
    url: str, smtp_server: SmtpServer
) -> None:
    smtp_server.stop()
    names = ["ann", "ben", "cat"]
    with serving(mail_settings(url, smtp_server)) as client:
        started = time.perf_counter()
        _queue_resets(client, names)  # answered while the server is down
        assert time.perf_counter() - started < 5
        _eventually(lambda: query(url, "SELECT min(attempts) FROM mail_outbox")[0][0] >= 2)
        failed = query(url, "SELECT DISTINCT status, last_error FROM mail_outbox")
        assert failed == [("queued", "ConnectionRefusedError")]
        smtp_server.start()  # the same port
        smtp_server.wait_for(6)
        wait_until_settled(url)
    _each_arrived_once(smtp_server, names)


def test_a_refusing_smtp_server_is_retried_until_it_accepts(
    url: str, smtp_server: SmtpServer
) -> None:
    smtp_server.refuse = True
    with serving(mail_settings(url, smtp_server)) as client:
        _queue_resets(client, ["ann"])
        _eventually(lambda: query(url, "SELECT min(attempts) FROM mail_outbox")[0][0] >= 2)
        assert smtp_server.received == []
        smtp_server.refuse = False
        smtp_server.wait_for(2)
        wait_until_settled(url)
    # A refused attempt leaves no token behind: one for each mail delivered.
    assert query(url, "SELECT count(*) FROM mail_tokens") == [(2,)]
    _each_arrived_once(smtp_server, ["ann"])
    reset_token = reset_mail_for(smtp_server, "ann@example.com").token
    with serving(mail_settings(url, smtp_server)) as client:
        assert reset(client, reset_token).status_code == 204


def test_pauses_between_attempts_grow(url: str, smtp_server: SmtpServer) -> None:
    smtp_server.stop()
    # The cap well above the pauses (mail_settings' 0.4 s would cut the third to 0.4 s,
    # and the test then passed only on a machine slow enough to make up the rest).
    settings = mail_settings(
        url, smtp_server, mail_retry_base_seconds=0.2, mail_retry_max_seconds=10
    )
    with serving(settings) as client:
        register(client, "ann")
        _eventually(lambda: query(url, "SELECT attempts FROM mail_outbox")[0][0] >= 3)
        ((created, due),) = query(url, "SELECT created_at, next_attempt_at FROM mail_outbox")
    # After attempts at about 0, 0.2 and 0.6 s, the next is 0.8 s after the third
    # (1.4 s in all); capped or not doubled, it would be at most 1.0 s.
    assert _as_seconds(due) - _as_seconds(created) > 1.3


def _as_seconds(value: Any) -> float:
    if isinstance(value, str):  # SQLite, read through plain SQL
        from datetime import datetime

        value = datetime.fromisoformat(value)
    return float(value.timestamp())


def test_a_restart_with_mail_queued_loses_none(url: str, smtp_server: SmtpServer) -> None:
    smtp_server.stop()
    names = ["ann", "ben"]
    with serving(mail_settings(url, smtp_server)) as client:
        _queue_resets(client, names)
    assert query(url, "SELECT count(*) FROM mail_outbox WHERE status = 'queued'") == [(4,)]
    smtp_server.start()
    # Due at once on the next start (not after the pause of the last failed attempt).
    execute(url, "UPDATE mail_outbox SET next_attempt_at = created_at")
    with serving(mail_settings(url, smtp_server)) as client:
        smtp_server.wait_for(4)
        wait_until_settled(url)
    _each_arrived_once(smtp_server, names)


def test_a_claim_left_by_a_crashed_worker_is_delivered_when_it_runs_out(
    url: str, smtp_server: SmtpServer
) -> None:
    smtp_server.stop()
    with serving(mail_settings(url, smtp_server)) as client:
        register(client, "ann")
    execute(url, "UPDATE mail_outbox SET next_attempt_at = created_at")
    # A worker claims the mail and dies before sending it.
    settings = mail_settings(url, smtp_server)
    database = Database(make_engine(url, settings))
    with database.session_factory() as db:
        claimed = mail.claim_next(db, mail.utcnow(), timedelta(seconds=1))
    database.engine.dispose()
    assert claimed is not None
    smtp_server.start()
    with serving(mail_settings(url, smtp_server)) as client:
        time.sleep(0.5)
        assert smtp_server.received == []  # still claimed
        smtp_server.wait_for(1)
        wait_until_settled(url)
    assert [m.to for m in smtp_server.received] == ["ann@example.com"]


def test_shutdown_stops_the_worker_and_hands_back_what_it_claimed(
    url: str, smtp_server: SmtpServer
) -> None:
    smtp_server.delay = 0.3
    names = ["ann", "ben", "cat"]
    with serving(mail_settings(url, smtp_server, mail_claim_seconds=60)) as client:
        _queue_resets(client, names)
        smtp_server.wait_for(1)
        stopping = time.perf_counter()
    assert time.perf_counter() - stopping < 3
    # Nothing stays claimed for the claim's 60 s: the rest is due at once.
    assert query(
        url,
        "SELECT count(*) FROM mail_outbox WHERE status = 'queued' AND next_attempt_at > :now",
        now=mail.utcnow() + timedelta(seconds=5),
    ) == [(0,)]
    smtp_server.delay = 0
    with serving(mail_settings(url, smtp_server)):
        smtp_server.wait_for(6)
        wait_until_settled(url)
    _each_arrived_once(smtp_server, names)


def _eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.02)


def test_the_mail_metrics_count_queued_failed_and_sent_and_show_the_wait(
    url: str, smtp_server: SmtpServer
) -> None:
    def sample(name: str) -> float:
        return REGISTRY.get_sample_value(name) or 0.0

    names = ("todoapp_mail_queued_total", "todoapp_mail_failed_total", "todoapp_mail_sent_total")
    before = {name: sample(name) for name in names}
    smtp_server.stop()
    with serving(mail_settings(url, smtp_server)) as client:
        register(client, "ann")
        # Two attempts have failed once the third is claimed.
        _eventually(lambda: query(url, "SELECT attempts FROM mail_outbox")[0][0] >= 3)
        _eventually(lambda: sample("todoapp_mail_oldest_queued_age_seconds") > 0)
        smtp_server.start()
        smtp_server.wait_for(1)
        wait_until_settled(url)
        _eventually(lambda: sample("todoapp_mail_oldest_queued_age_seconds") == 0)
    after = {name: sample(name) - before[name] for name in names}
    assert after["todoapp_mail_queued_total"] == 1
    assert after["todoapp_mail_failed_total"] >= 2
    assert after["todoapp_mail_sent_total"] == 1


@pytest.mark.postgres_only
def test_two_app_instances_on_one_postgresql_database_deliver_each_mail_once(
    pg_server: str, smtp_server: SmtpServer, empty_pg_url: str
) -> None:
    migrate(empty_pg_url)
    settings = mail_settings(empty_pg_url, smtp_server, mail_poll_seconds=0.01)
    names = [f"user{n}" for n in range(15)]
    with serving(settings) as first, serving(settings) as second:
        for n, name in enumerate(names):
            client = first if n % 2 else second
            register(client, name)
            forgot(client, f"{name}@example.com")
        smtp_server.wait_for(30)
        wait_until_settled(empty_pg_url)
        time.sleep(0.3)  # room for a duplicate to show up
    _each_arrived_once(smtp_server, names)


def test_sent_mail_and_spent_tokens_are_purged_after_a_bounded_time(
    url: str, app_with_mail: TestClient, smtp_server: SmtpServer
) -> None:
    register(app_with_mail, "ann")
    verify_mail_for(smtp_server, "ann@example.com")
    wait_until_settled(url)
    settings = mail_settings(url, smtp_server)
    database = Database(make_engine(url, settings))
    try:
        assert mail.purge(database, settings) == 0  # nothing old enough yet
        long_ago = mail.utcnow() - timedelta(days=30)
        execute(url, "UPDATE mail_outbox SET finished_at = :t, created_at = :t", t=long_ago)
        execute(url, "UPDATE mail_tokens SET created_at = :t", t=long_ago)
        assert mail.purge(database, settings) == 2
    finally:
        database.engine.dispose()
    assert query(url, "SELECT count(*) FROM mail_outbox") == [(0,)]
    assert query(url, "SELECT count(*) FROM mail_tokens") == [(0,)]


# --- without an SMTP server; what the log holds ---------------------------------------
def test_in_development_without_smtp_host_each_mail_is_one_log_line_with_a_working_link(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # README, "Seeing the mails locally": no SMTP_HOST in development, and the mail's
    # text goes to the log, link included, on one line like every other record.
    caplog.set_level(logging.INFO, logger="todoapp")
    settings = settings_for_tests(
        database_url=url, environment="development", smtp_host=None, mail_poll_seconds=0.05
    )
    with serving(settings) as client:
        register(client, "ada")
        wait_until_settled(url)
        lines = [r.getMessage() for r in caplog.records if r.name.startswith("todoapp")]
        assert any("mail is written to this log" in line for line in lines), lines
        mails = [line for line in lines if line.startswith("mail (development, not sent)")]
        assert len(mails) == 1, lines
        assert "\n" not in mails[0]
        assert "to ada@example.com, subject 'Verify your email address for todoapp'" in mails[0]
        link = re.search(r"http://127\.0\.0\.1:8000/#/verify-email\?token=(\S+)", mails[0])
        assert link is not None, mails[0]
        answer = client.post("/auth/verify", json={"token": link[1]})
        assert (answer.status_code, answer.json()["is_verified"]) == (200, True), answer.text
    assert query(url, "SELECT is_verified FROM users WHERE username = 'ada'") == [(True,)]


def test_elsewhere_without_smtp_host_nothing_is_sent_and_start_up_says_so_once(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="todoapp")
    settings = settings_for_tests(database_url=url, mail_poll_seconds=0.05)
    with serving(settings) as client:
        register(client, "ann")
        time.sleep(0.3)
    said = [r for r in caplog.records if "SMTP_HOST is not set" in r.getMessage()]
    assert len(said) == 1
    assert query(url, "SELECT status, attempts FROM mail_outbox") == [("queued", 0)]


def test_no_token_in_any_log_line_outside_development(
    url: str, smtp_server: SmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with serving(mail_settings(url, smtp_server, log_level="DEBUG")) as client:
        register(client, "ann")
        forgot(client, "ann@example.com")
        reset_token = reset_mail_for(smtp_server, "ann@example.com").token
        verify_token = verify_mail_for(smtp_server, "ann@example.com").token
        reset(client, reset_token)
        client.post("/auth/verify", json={"token": verify_token})
        reset(client, reset_token)  # refused: also not logged
    ours = [r for r in caplog.records if not r.name.startswith("mail.log")]  # not aiosmtpd's
    assert any(r.name.startswith("todoapp") for r in ours)
    logged = "\n".join(r.getMessage() for r in ours)
    assert reset_token not in logged
    assert verify_token not in logged


# --- REQUIRE_VERIFIED_EMAIL ----------------------------------------------------------
def test_require_verified_email_keeps_unverified_accounts_out_of_todos_only(
    app_factory: Callable[..., Any], db: Any
) -> None:
    with TestClient(app_factory(require_verified_email=True)) as client:
        ada = make_account(client, "ada")
        not_verified = {"detail": "email not verified"}
        for method, path in (("GET", "/todos"), ("GET", "/todos?limit=5"), ("GET", "/todos/1")):
            answer = client.request(method, path, headers=ada.headers)
            assert (answer.status_code, answer.json()) == (403, not_verified), path
        created = client.post("/todos", json={"title": "x", "priority": 1}, headers=ada.headers)
        assert (created.status_code, created.json()) == (403, not_verified)
        assert client.get("/users/me", headers=ada.headers).status_code == 200
        assert client.post("/auth/request-verify", headers=ada.headers).status_code == 202
        assert client.get("/todos").status_code == 401  # no token: still 401 first
        db.execute(text("UPDATE users SET is_verified = true WHERE id = :id"), {"id": ada.id})
        db.commit()
        assert client.get("/todos", headers=ada.headers).status_code == 200
        created = client.post("/todos", json={"title": "x", "priority": 1}, headers=ada.headers)
        assert created.status_code == 201
        # Unverified again (the address changed, say): every route on her todo is 403,
        # and none of them changes it.
        db.execute(text("UPDATE users SET is_verified = false WHERE id = :id"), {"id": ada.id})
        db.commit()
        path = f"/todos/{created.json()['id']}"
        replace = {"title": "y", "description": "", "priority": 2, "complete": True}
        for method, body in (
            ("GET", None),
            ("PATCH", {"complete": True}),
            ("PUT", replace),
            ("DELETE", None),
        ):
            answer = client.request(method, path, json=body, headers=ada.headers)
            assert (answer.status_code, answer.json()) == (403, not_verified), method
        db.execute(text("UPDATE users SET is_verified = true WHERE id = :id"), {"id": ada.id})
        db.commit()
        assert client.get(path, headers=ada.headers).json() == created.json()


def test_require_verified_email_holds_on_the_fast_lane_too(url: str) -> None:
    # A production app (no overrides): plain GET /todos would be the fast lane's.
    settings = settings_for_tests(database_url=url, require_verified_email=True)
    with serving(settings) as client:
        ada = make_account(client, "ada")
        answer = client.get("/todos", headers=ada.headers)
        assert (answer.status_code, answer.json()) == (403, {"detail": "email not verified"})
        execute(url, "UPDATE users SET is_verified = true")
        assert client.get("/todos", headers=ada.headers).json()["total"] == 0


def test_without_require_verified_email_unverified_accounts_use_todos(
    client: TestClient, alice: Account
) -> None:
    assert client.get("/users/me", headers=alice.headers).json()["is_verified"] is False
    assert client.get("/todos", headers=alice.headers).status_code == 200
