"""Sessions and refresh tokens (API v2): a session per login, rotation, reuse ending the
session, devices, the browser cookie, expiry and the purge of dead sessions."""

import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from jose import jwt
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from tests.conftest import (
    PASSWORD,
    Account,
    AppFactory,
    Backend,
    empty_tables,
    register,
    settings_for_tests,
)
from tests.test_races import at_once
from todoapp import security
from todoapp.config import get_settings
from todoapp.main import create_app
from todoapp.models import User, UserSession
from todoapp.services import sessions, users

COOKIE = "todoapp_refresh"
THIRTY_DAYS = 30 * 24 * 3600
WHO = {"detail": "Could not validate credentials"}
BAD_REFRESH = {"detail": "invalid or expired refresh token"}


def sign_in(client: TestClient, name: str, **headers: str) -> httpx.Response:
    response = client.post(
        "/auth/token", data={"username": name, "password": PASSWORD}, headers=headers
    )
    assert response.status_code == 200, response.text
    return response


def pair(client: TestClient, name: str, **headers: str) -> dict[str, Any]:
    body: dict[str, Any] = sign_in(client, name, **headers).json()
    return body


def bearer(tokens: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


def refresh(client: TestClient, refresh_token: str) -> httpx.Response:
    return client.post("/auth/refresh", json={"refresh_token": refresh_token})


def sid(tokens: dict[str, Any]) -> int:
    session_id: int = jwt.get_unverified_claims(tokens["access_token"])["sid"]
    return session_id


def works(client: TestClient, tokens: dict[str, Any]) -> bool:
    status = client.get("/users/me", headers=bearer(tokens)).status_code
    assert status in (200, 401)
    return status == 200


def assert_refresh_refused(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == BAD_REFRESH


def set_cookies(response: httpx.Response) -> list[str]:
    return response.headers.get_list("set-cookie")


def refresh_cookie(response: httpx.Response) -> str:
    (cookie,) = [c for c in set_cookies(response) if c.startswith(f"{COOKIE}=")]
    return cookie


def assert_cookie_cleared(response: httpx.Response) -> None:
    cookie = refresh_cookie(response)
    attributes = [part.strip() for part in cookie.split(";")]
    assert attributes[0] in (f"{COOKIE}=", f'{COOKIE}=""')
    assert "Max-Age=0" in attributes
    assert "Path=/auth" in attributes


@pytest.fixture
def ada(client: TestClient) -> dict[str, Any]:
    register(client, "ada")
    return pair(client, "ada")


# --- login starts a session ------------------------------------------------------
def test_login_answers_a_refresh_token_and_sets_the_cookie(client: TestClient) -> None:
    register(client, "ada")
    response = sign_in(client, "ada")
    body = response.json()
    assert set(body) == {
        "access_token",
        "token_type",
        "expires_in",
        "refresh_token",
        "refresh_expires_in",
    }
    assert (body["token_type"], body["expires_in"]) == ("bearer", 1800)
    assert body["refresh_expires_in"] == THIRTY_DAYS
    token = body["refresh_token"]
    assert len(token) >= 43
    assert token.replace("-", "").replace("_", "").replace(".", "").isalnum()
    assert response.headers["cache-control"] == "no-store"
    attributes = [part.strip() for part in refresh_cookie(response).split(";")]
    assert attributes[0] == f"{COOKIE}={token}"
    assert {"HttpOnly", "SameSite=Strict", "Path=/auth", "Secure"} <= set(attributes)
    assert f"Max-Age={THIRTY_DAYS}" in attributes


def test_the_cookie_is_not_secure_in_development(app_factory: AppFactory) -> None:
    with TestClient(app_factory(environment="development")) as client:
        register(client, "ada")
        attributes = [part.strip() for part in refresh_cookie(sign_in(client, "ada")).split(";")]
    assert "Secure" not in attributes
    assert {"HttpOnly", "SameSite=Strict", "Path=/auth"} <= set(attributes)


def test_access_tokens_carry_their_session_id(client: TestClient, db: Session) -> None:
    register(client, "ada")
    first, second = pair(client, "ada"), pair(client, "ada")
    assert sid(first) != sid(second)
    claims = jwt.get_unverified_claims(first["access_token"])
    assert {"sub", "iat", "exp", "sid"} <= set(claims)
    row = db.get_one(UserSession, sid(first))
    assert str(row.user_id) == claims["sub"]
    assert row.ended_at is None
    assert row.generation == 0


def test_only_a_hash_of_the_refresh_token_is_stored(
    client: TestClient, ada: dict[str, Any], db: Session
) -> None:
    row = db.execute(text("SELECT * FROM sessions")).mappings().one()
    secret = ada["refresh_token"].split(".")[1]
    for value in row.values():
        assert not (isinstance(value, str) and secret in value)
    assert len(row["refresh_hash"]) == 64


# --- rotation ----------------------------------------------------------------------
def test_refresh_rotates_the_pair(client: TestClient, ada: dict[str, Any], db: Session) -> None:
    response = refresh(client, ada["refresh_token"])
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    fresh = response.json()
    assert set(fresh) == set(ada)
    assert fresh["refresh_token"] != ada["refresh_token"]
    assert fresh["refresh_expires_in"] == THIRTY_DAYS
    assert sid(fresh) == sid(ada)  # the same session (device)
    assert refresh_cookie(response).startswith(f"{COOKIE}={fresh['refresh_token']};")
    assert works(client, fresh)
    assert works(client, ada)  # the session lives, so do its earlier access tokens
    assert db.get_one(UserSession, sid(ada)).generation == 1
    again = refresh(client, fresh["refresh_token"])
    assert again.status_code == 200
    assert works(client, again.json())


def test_reuse_ends_the_session_but_not_the_users_other_sessions(
    client: TestClient, ada: dict[str, Any], caplog: pytest.LogCaptureFixture, db: Session
) -> None:
    laptop = pair(client, "ada")
    fresh = refresh(client, ada["refresh_token"]).json()
    with caplog.at_level(logging.WARNING, logger="todoapp"):
        assert_refresh_refused(refresh(client, ada["refresh_token"]))  # used up: theft
    # The whole session ended: its latest refresh token and every access token.
    assert_refresh_refused(refresh(client, fresh["refresh_token"]))
    assert not works(client, fresh)
    assert not works(client, ada)
    # The user's other session is untouched.
    assert works(client, laptop)
    assert refresh(client, laptop["refresh_token"]).status_code == 200
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    message = record.getMessage()
    user_id = int(jwt.get_unverified_claims(ada["access_token"])["sub"])
    assert f"session {sid(ada)} of user {user_id}" in message
    for token in (ada["refresh_token"], fresh["refresh_token"]):
        for part in token.split("."):
            assert part not in message or part == str(sid(ada))
    row = db.get_one(UserSession, sid(ada))
    assert (row.end_reason, row.ended_at is not None) == ("reuse", True)


def test_a_token_used_up_several_rotations_ago_is_reuse_too(
    client: TestClient, ada: dict[str, Any]
) -> None:
    latest = ada
    for _ in range(3):
        latest = refresh(client, latest["refresh_token"]).json()
    assert_refresh_refused(refresh(client, ada["refresh_token"]))
    assert_refresh_refused(refresh(client, latest["refresh_token"]))
    assert not works(client, latest)


def test_reuse_right_after_a_refresh_is_caught_at_once(
    client: TestClient, ada: dict[str, Any]
) -> None:
    # Same second, same millisecond: the check is the token's state, not a timestamp.
    fresh = refresh(client, ada["refresh_token"])
    reused = refresh(client, ada["refresh_token"])
    assert (fresh.status_code, reused.status_code) == (200, 401)
    assert_refresh_refused(refresh(client, fresh.json()["refresh_token"]))


@pytest.mark.parametrize(
    "token",
    [
        "x",
        "not-a-token-at-all",
        "1.2.3",
        "1..",
        "0.abc.def",
        "99999999999.abc.def",
        "é" * 50,
        "a" * 1024,
    ],
)
def test_malformed_refresh_tokens_are_401(
    client: TestClient, ada: dict[str, Any], token: str
) -> None:
    assert_refresh_refused(refresh(client, token))
    assert works(client, ada)


def test_a_made_up_token_naming_a_session_ends_nothing(
    client: TestClient, ada: dict[str, Any]
) -> None:
    session_id, secret, mac = ada["refresh_token"].split(".")
    forged = [
        f"{session_id}.{'A' * len(secret)}.{mac}",  # another secret, the MAC does not fit
        f"{session_id}.{secret}.{'A' * len(mac)}",
        f"{int(session_id) + 1}.{secret}.{mac}",
    ]
    for token in forged:
        assert_refresh_refused(refresh(client, token))
    assert works(client, ada)
    assert refresh(client, ada["refresh_token"]).status_code == 200


@pytest.mark.parametrize(
    "body",
    [{}, {"refresh_token": ""}, {"refresh_token": None}, {"refresh_token": 5}, {"token": "x"}],
)
def test_a_malformed_refresh_body_is_422(
    client: TestClient, ada: dict[str, Any], body: dict[str, Any]
) -> None:
    response = client.post("/auth/refresh", json=body)
    assert response.status_code == 422
    unknown_field = {"refresh_token": ada["refresh_token"], "more": 1}
    assert client.post("/auth/refresh", json=unknown_field).status_code == 422
    assert refresh(client, ada["refresh_token"]).status_code == 200  # not used up


def test_a_refresh_body_over_1_mib_is_413_and_uses_nothing_up(
    client: TestClient, ada: dict[str, Any]
) -> None:
    padding = " " * (1024 * 1024)
    body = f'{{"refresh_token": "{ada["refresh_token"]}"}}{padding}'
    response = client.post(
        "/auth/refresh", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert refresh(client, ada["refresh_token"]).status_code == 200


def test_refresh_with_neither_body_nor_cookie_is_401(client: TestClient) -> None:
    client.cookies.clear()
    response = client.post("/auth/refresh")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_refresh_of_an_expired_session_is_401_and_its_access_tokens_too(
    client: TestClient, ada: dict[str, Any], db: Session
) -> None:
    # Refreshed 30 days ago but a minute: alive. 30 days and a minute: gone.
    def idle_for(age: timedelta) -> None:
        db.execute(
            update(UserSession)
            .where(UserSession.id == sid(ada))
            .values(last_used_at=datetime.now(UTC) - age)
        )
        db.commit()

    idle_for(timedelta(days=30) - timedelta(minutes=1))
    assert works(client, ada)
    idle_for(timedelta(days=30, minutes=1))
    assert_refresh_refused(refresh(client, ada["refresh_token"]))
    assert not works(client, ada)
    assert client.get("/users/me/sessions", headers=bearer(pair(client, "ada"))).json()[0][
        "id"
    ] != sid(ada)


def test_refresh_for_a_disabled_or_deleted_user_is_401(
    client: TestClient, ada: dict[str, Any], db: Session
) -> None:
    user = db.scalars(select(User).where(User.username == "ada")).one()
    user.is_active = False  # straight in the database: no session was ended
    db.commit()
    assert_refresh_refused(refresh(client, ada["refresh_token"]))
    user.is_active = True
    db.commit()
    fresh = refresh(client, ada["refresh_token"])  # not used up by the refusal
    assert fresh.status_code == 200
    assert client.delete("/users/me", headers=bearer(fresh.json())).status_code == 204
    assert_refresh_refused(refresh(client, fresh.json()["refresh_token"]))


def test_a_refresh_token_is_bound_to_the_secret_key(
    client: TestClient, ada: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert security.read_refresh_token(ada["refresh_token"]) is not None
    monkeypatch.setenv("SECRET_KEY", "another-secret-" + "k" * 40)
    get_settings.cache_clear()
    try:
        assert security.read_refresh_token(ada["refresh_token"]) is None
        assert_refresh_refused(refresh(client, ada["refresh_token"]))
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert refresh(client, ada["refresh_token"]).status_code == 200


# --- the browser's cookie ------------------------------------------------------------
@pytest.fixture
def browser(app_factory: AppFactory) -> Iterator[TestClient]:
    """A client that keeps cookies as a browser does (development: no Secure over http)."""
    with TestClient(app_factory(environment="development")) as client:
        register(client, "ada")
        yield client


def test_a_cookie_refresh_needs_the_header(browser: TestClient) -> None:
    tokens = pair(browser, "ada")
    assert browser.cookies[COOKIE] == tokens["refresh_token"]
    for headers in ({}, {"X-Requested-With": "XMLHttpRequest"}, {"X-Requested-With": ""}):
        refused = browser.post("/auth/refresh", headers=headers)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        assert "set-cookie" not in refused.headers
    # Not used up by the refusals: the header makes it work.
    response = browser.post("/auth/refresh", headers={"X-Requested-With": "todoapp"})
    assert response.status_code == 200, response.text
    fresh = response.json()
    assert browser.cookies[COOKIE] == fresh["refresh_token"] != tokens["refresh_token"]
    assert works(browser, fresh)
    again = browser.post("/auth/refresh", headers={"X-Requested-With": "todoapp"})
    assert again.status_code == 200


def test_the_body_wins_over_the_cookie(browser: TestClient) -> None:
    first, second = pair(browser, "ada"), pair(browser, "ada")
    assert browser.cookies[COOKIE] == second["refresh_token"]
    # A body: its token is used, the cookie ignored (and not used up).
    response = browser.post(
        "/auth/refresh",
        json={"refresh_token": first["refresh_token"]},
        headers={"X-Requested-With": "todoapp"},
    )
    assert response.status_code == 200
    assert sid(response.json()) == sid(first)
    browser.cookies.set(COOKIE, second["refresh_token"], path="/auth")
    bad_body = browser.post(
        "/auth/refresh", json={"refresh_token": "nope"}, headers={"X-Requested-With": "todoapp"}
    )
    assert_refresh_refused(bad_body)
    assert refresh(browser, second["refresh_token"]).status_code == 200


def test_logout_clears_the_cookie_and_ends_every_session(browser: TestClient) -> None:
    first, second = pair(browser, "ada"), pair(browser, "ada")
    response = browser.post("/auth/logout", headers=bearer(second))
    assert response.status_code == 204
    assert_cookie_cleared(response)
    assert COOKIE not in browser.cookies
    for tokens in (first, second):
        assert not works(browser, tokens)
        assert_refresh_refused(refresh(browser, tokens["refresh_token"]))


def test_a_password_change_clears_the_cookie(browser: TestClient) -> None:
    tokens = pair(browser, "ada")
    response = browser.put(
        "/users/me/password",
        json={"current_password": PASSWORD, "new_password": "another-password"},
        headers=bearer(tokens),
    )
    assert response.status_code == 204
    assert_cookie_cleared(response)


def test_deleting_the_current_session_clears_the_cookie_and_another_does_not(
    browser: TestClient,
) -> None:
    phone, laptop = pair(browser, "ada"), pair(browser, "ada")
    other = browser.delete(f"/users/me/sessions/{sid(phone)}", headers=bearer(laptop))
    assert other.status_code == 204
    assert "set-cookie" not in other.headers
    own = browser.delete(f"/users/me/sessions/{sid(laptop)}", headers=bearer(laptop))
    assert own.status_code == 204
    assert_cookie_cleared(own)


def test_account_deletion_clears_the_cookie(browser: TestClient) -> None:
    response = browser.delete("/users/me", headers=bearer(pair(browser, "ada")))
    assert response.status_code == 204
    assert_cookie_cleared(response)


def test_cors_origins_may_refresh_with_credentials_and_nobody_else(
    app_factory: AppFactory,
) -> None:
    app = app_factory(cors_origins=["https://app.example"])
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "x-requested-with, content-type",
    }
    with TestClient(app) as client:
        allowed = client.options(
            "/auth/refresh", headers={"Origin": "https://app.example", **preflight}
        )
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        assert allowed.headers["access-control-allow-credentials"] == "true"
        assert "x-requested-with" in allowed.headers["access-control-allow-headers"].lower()
        refused = client.options(
            "/auth/refresh", headers={"Origin": "https://evil.example", **preflight}
        )
        # Without Access-Control-Allow-Origin a browser shows the page nothing (Starlette
        # sends Allow-Credentials to everyone; it means nothing without the origin).
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers
        answer = client.post(
            "/auth/refresh",
            headers={"Origin": "https://evil.example", "X-Requested-With": "todoapp"},
        )
        assert "access-control-allow-origin" not in answer.headers


def test_cors_origins_star_lets_every_origin_call_without_credentials(
    app_factory: AppFactory,
) -> None:
    # CORS_ORIGINS=* opens the API to every site's pages, for bearer tokens only: were
    # credentials allowed too, any page a signed-in user visits could refresh with the
    # user's cookie and read the new access token (Starlette would echo its origin).
    app = app_factory(cors_origins=["*"])
    evil = {"Origin": "https://evil.example"}
    with TestClient(app) as client:
        preflight = client.options(
            "/auth/refresh",
            headers={
                **evil,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "x-requested-with",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in preflight.headers
        answer = client.post("/auth/refresh", headers={**evil, "X-Requested-With": "todoapp"})
        assert answer.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in answer.headers
        register(client, "ada")
        me = client.get("/users/me", headers={**evil, **bearer(pair(client, "ada"))})
        assert me.status_code == 200
        assert me.headers["access-control-allow-origin"] == "*"


# --- devices: GET and DELETE /users/me/sessions ------------------------------------
def test_sessions_are_listed_newest_first_with_the_current_one_marked(
    client: TestClient,
) -> None:
    register(client, "ada")
    oldest = pair(client, "ada", **{"User-Agent": "Firefox/130"})
    middle = pair(client, "ada", **{"User-Agent": "curl/8.0"})
    del client.headers["user-agent"]
    newest = pair(client, "ada")
    response = client.get("/users/me/sessions", headers=bearer(middle))
    assert response.status_code == 200
    listed = response.json()
    assert [s["id"] for s in listed] == [sid(newest), sid(middle), sid(oldest)]
    assert [s["user_agent"] for s in listed] == [None, "curl/8.0", "Firefox/130"]
    assert [s["current"] for s in listed] == [False, True, False]
    for session in listed:
        assert set(session) == {"id", "created_at", "last_used_at", "user_agent", "current"}
        assert session["created_at"].endswith("Z")
        assert session["last_used_at"].endswith("Z")
        assert session["last_used_at"] >= session["created_at"]


def test_sessions_list_only_the_callers_live_sessions(
    client: TestClient, ada: dict[str, Any], bob: Account
) -> None:
    other = pair(client, "ada")
    client.delete(f"/users/me/sessions/{sid(other)}", headers=bearer(ada))
    listed = client.get("/users/me/sessions", headers=bearer(ada)).json()
    assert [s["id"] for s in listed] == [sid(ada)]
    assert len(client.get("/users/me/sessions", headers=bob.headers).json()) == 1


def test_a_refresh_moves_last_used_at(client: TestClient, ada: dict[str, Any]) -> None:
    (before,) = client.get("/users/me/sessions", headers=bearer(ada)).json()
    time.sleep(0.01)  # SQLite's clock has millisecond steps
    fresh = refresh(client, ada["refresh_token"]).json()
    (after,) = client.get("/users/me/sessions", headers=bearer(fresh)).json()
    assert after["created_at"] == before["created_at"]
    moved = datetime.fromisoformat(after["last_used_at"])
    assert moved > datetime.fromisoformat(before["last_used_at"])


def test_deleting_a_session_signs_that_device_out_at_once(
    client: TestClient, ada: dict[str, Any]
) -> None:
    laptop = pair(client, "ada")
    response = client.delete(f"/users/me/sessions/{sid(ada)}", headers=bearer(laptop))
    assert response.status_code == 204
    assert response.content == b""
    assert not works(client, ada)
    assert client.get("/todos/1", headers=bearer(ada)).status_code == 401
    assert_refresh_refused(refresh(client, ada["refresh_token"]))
    assert works(client, laptop)
    # Ended: no longer one of the caller's live sessions.
    again = client.delete(f"/users/me/sessions/{sid(ada)}", headers=bearer(laptop))
    assert again.status_code == 404
    assert again.json() == {"detail": "session not found"}


def test_another_users_or_a_missing_session_is_404(
    client: TestClient, ada: dict[str, Any], bob: Account
) -> None:
    for session_id in (sid(ada), 2**31 - 1):
        response = client.delete(f"/users/me/sessions/{session_id}", headers=bob.headers)
        assert response.status_code == 404
    assert works(client, ada)


def test_session_routes_need_a_token_and_a_bounded_id(
    client: TestClient, ada: dict[str, Any]
) -> None:
    for method, path in (("GET", "/users/me/sessions"), ("DELETE", "/users/me/sessions/1")):
        response = client.request(method, path)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
    for bad in ("0", "-1", str(2**31), "x"):
        assert client.delete(f"/users/me/sessions/{bad}", headers=bearer(ada)).status_code == 422


# --- everything that ends every session ------------------------------------------------
def _all_ended(client: TestClient, sessions_: list[dict[str, Any]]) -> bool:
    for tokens in sessions_:
        if works(client, tokens):
            return False
        if refresh(client, tokens["refresh_token"]).status_code != 401:
            return False
    return True


def test_logout_ends_every_session(client: TestClient, ada: dict[str, Any]) -> None:
    laptop = pair(client, "ada")
    assert client.post("/auth/logout", headers=bearer(laptop)).status_code == 204
    assert _all_ended(client, [ada, laptop])
    assert works(client, pair(client, "ada"))  # a new login works at once


def test_a_password_change_ends_every_session(client: TestClient, ada: dict[str, Any]) -> None:
    laptop = pair(client, "ada")
    response = client.put(
        "/users/me/password",
        json={"current_password": PASSWORD, "new_password": "another-password"},
        headers=bearer(laptop),
    )
    assert response.status_code == 204
    assert _all_ended(client, [ada, laptop])


def test_disabling_ends_every_session_for_good(
    client: TestClient, ada: dict[str, Any], admin: Account
) -> None:
    laptop = pair(client, "ada")
    user_id = int(jwt.get_unverified_claims(ada["access_token"])["sub"])
    disable = client.patch(
        f"/admin/users/{user_id}", json={"is_active": False}, headers=admin.headers
    )
    assert disable.status_code == 200
    client.patch(f"/admin/users/{user_id}", json={"is_active": True}, headers=admin.headers)
    assert _all_ended(client, [ada, laptop])  # also after re-enabling


@pytest.mark.parametrize("by", ["self", "admin"])
def test_deletion_ends_every_session(
    client: TestClient, ada: dict[str, Any], admin: Account, db: Session, by: str
) -> None:
    laptop = pair(client, "ada")
    user_id = int(jwt.get_unverified_claims(ada["access_token"])["sub"])
    if by == "self":
        response = client.delete("/users/me", headers=bearer(laptop))
    else:
        response = client.delete(f"/admin/users/{user_id}", headers=admin.headers)
    assert response.status_code == 204
    assert _all_ended(client, [ada, laptop])
    count = db.execute(text("SELECT count(*) FROM sessions WHERE user_id = :id"), {"id": user_id})
    assert count.scalar() == 0


def test_end_all_sessions_is_the_one_service_for_it(
    client: TestClient, ada: dict[str, Any], db: Session
) -> None:
    # What a password reset calls too: ends them all, with the reason given.
    user = db.scalars(select(User).where(User.username == "ada")).one()
    laptop = pair(client, "ada")
    users.end_all_sessions(db, user, sessions.PASSWORD_RESET)
    db.commit()
    assert _all_ended(client, [ada, laptop])
    reasons = db.scalars(select(UserSession.end_reason).where(UserSession.user_id == user.id))
    assert set(reasons) == {"password_reset"}


# --- the purge of dead sessions --------------------------------------------------------
def test_purge_deletes_ended_and_expired_sessions_in_bounded_batches(
    client: TestClient, db: Session
) -> None:
    register(client, "ada")
    live = [pair(client, "ada") for _ in range(2)]
    ended = [pair(client, "ada") for _ in range(3)]
    expired = [pair(client, "ada") for _ in range(2)]
    for tokens in ended:
        assert (
            client.delete(f"/users/me/sessions/{sid(tokens)}", headers=bearer(live[0])).status_code
            == 204
        )
    db.execute(
        update(UserSession)
        .where(UserSession.id.in_([sid(t) for t in expired]))
        .values(last_used_at=datetime.now(UTC) - timedelta(days=31))
    )
    db.commit()
    assert sessions.purge(db, batch=3) == 3
    assert sessions.purge(db, batch=3) == 2
    assert sessions.purge(db, batch=3) == 0
    db.commit()
    left = db.scalars(select(UserSession.id).order_by(UserSession.id)).all()
    assert left == sorted(sid(t) for t in live)
    assert all(works(client, t) for t in live)


def test_each_login_purges_dead_sessions(client: TestClient, db: Session) -> None:
    register(client, "ada")
    first = pair(client, "ada")
    assert client.post("/auth/logout", headers=bearer(first)).status_code == 204
    assert db.scalar(text("SELECT count(*) FROM sessions")) == 1
    second = pair(client, "ada")
    assert db.scalars(select(UserSession.id)).all() == [sid(second)]


# --- the fast lane and the threaded routes, on committed data ---------------------------
def _committed(backend: Backend) -> Iterator[TestClient]:
    """A client of the app as production builds it, on committed data, emptied after."""
    app = create_app(settings_for_tests(database_url=backend.url))
    try:
        with TestClient(app) as client:
            yield client
    finally:
        empty_tables(backend)


@pytest.fixture
def real_client(backend: Backend) -> Iterator[TestClient]:
    yield from _committed(backend)


@pytest.fixture
def sqlite_client(sqlite_backend: Backend) -> Iterator[TestClient]:
    yield from _committed(sqlite_backend)


def test_a_deleted_sessions_token_is_401_at_once_on_the_lane_and_the_routes(
    real_client: TestClient, lane_calls: list[bytes | None]
) -> None:
    register(real_client, "ada")
    phone, laptop = pair(real_client, "ada"), pair(real_client, "ada")
    todo = real_client.post("/todos", json={"title": "t", "priority": 1}, headers=bearer(phone))
    assert real_client.get("/todos", headers=bearer(phone)).status_code == 200
    assert lane_calls[-1] is not None  # the lane answered it
    ended = real_client.delete(f"/users/me/sessions/{sid(phone)}", headers=bearer(laptop))
    assert ended.status_code == 204
    lane_calls.clear()
    listed = real_client.get("/todos", headers=bearer(phone))
    assert (listed.status_code, listed.json()) == (401, WHO)
    assert lane_calls == [None]  # tried, found the session ended, handed over
    for method, path in (
        ("GET", "/todos?sort=-id"),
        ("GET", f"/todos/{todo.json()['id']}"),
        ("GET", "/users/me"),
        ("GET", "/users/me/sessions"),
        ("POST", "/auth/logout"),
    ):
        response = real_client.request(method, path, headers=bearer(phone))
        assert response.status_code == 401, (method, path)
    assert real_client.get("/todos", headers=bearer(laptop)).status_code == 200


def test_refreshes_racing_with_one_token_on_sqlite_give_at_most_one_200(
    sqlite_client: TestClient,
) -> None:
    register(sqlite_client, "ada")
    token = pair(sqlite_client, "ada")["refresh_token"]
    statuses = [r.status_code for r in at_once(20, lambda _i: refresh(sqlite_client, token))]
    assert statuses.count(200) <= 1
    assert set(statuses) <= {200, 401}


@pytest.mark.postgres_only
def test_20_refreshes_racing_with_one_token_give_exactly_one_200(
    committed_client: TestClient,
) -> None:
    register(committed_client, "ada")
    token = pair(committed_client, "ada")["refresh_token"]
    responses = at_once(20, lambda _i: refresh(committed_client, token))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [401] * 19
    (winner,) = [r.json() for r in responses if r.status_code == 200]
    # The losers presented a used-up token: reuse, so the session ended after all.
    assert_refresh_refused(refresh(committed_client, winner["refresh_token"]))
