"""The token attack set: every bad token is 401 with `WWW-Authenticate: Bearer`."""

import base64
import json
import time
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from jose import jwt
from sqlalchemy.orm import Session

from tests.conftest import PASSWORD, Account, login
from todoapp.config import get_settings
from todoapp.models import User


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _sign(claims: dict[str, object], key: str | None = None) -> str:
    return jwt.encode(claims, key or get_settings().secret_key, algorithm="HS256")


def _claims(account: Account, **changes: object) -> dict[str, object]:
    """The claims of a good token of the account's session, with `changes` applied."""
    now = int(time.time())
    session_id = jwt.get_unverified_claims(account.token)["sid"]
    claims: dict[str, object] = {
        "sub": str(account.id),
        "iat": now,
        "exp": now + 600,
        "ver": 0,
        "sid": session_id,
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def assert_401(client: TestClient, headers: dict[str, str]) -> None:
    response = client.get("/users/me", headers=headers)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == {"detail": "Could not validate credentials"}


def test_a_good_token_works(client: TestClient, alice: Account) -> None:
    assert client.get("/users/me", headers=alice.headers).json()["username"] == "alice"
    # So each bad token below differs from a good one in exactly what its name says.
    crafted = {"Authorization": f"Bearer {_sign(_claims(alice))}"}
    assert client.get("/users/me", headers=crafted).status_code == 200


BAD_TOKENS: dict[str, Callable[[Account], str]] = {
    "garbage": lambda a: "not.a.jwt",
    "empty-ish": lambda a: "x",
    "wrong-signature": lambda a: _sign(_claims(a), key="another-secret-" + "y" * 40),
    "alg-none": lambda a: f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims(a))}.",
    "alg-none-signed-part-kept": lambda a: (
        f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims(a))}." + a.token.split(".")[2]
    ),
    "hs512": lambda a: jwt.encode(_claims(a), get_settings().secret_key, algorithm="HS512"),
    "expired": lambda a: _sign(
        _claims(a, iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)
    ),
    "no-exp": lambda a: _sign({"sub": str(a.id), "iat": int(time.time()), "ver": 0}),
    "no-sub": lambda a: _sign(_claims(a, sub=None)),
    "sub-not-a-number": lambda a: _sign(_claims(a, sub="alice")),
    "sub-out-of-range": lambda a: _sign(_claims(a, sub=str(2**40))),
    "sub-integer": lambda a: _sign(_claims(a, sub=a.id)),
    "no-version": lambda a: _sign(_claims(a, ver=None)),
    "future-version": lambda a: _sign(_claims(a, ver=1)),
    "unknown-user": lambda a: _sign(_claims(a, sub="999999")),
    "no-session": lambda a: _sign(_claims(a, sid=None)),
    "unknown-session": lambda a: _sign(_claims(a, sid=999999)),
    "session-not-an-integer": lambda a: _sign(_claims(a, sid=str(_claims(a)["sid"]))),
    "session-out-of-range": lambda a: _sign(_claims(a, sid=2**31)),
}


@pytest.mark.parametrize("make_token", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
def test_bad_tokens_are_401(
    client: TestClient, alice: Account, make_token: Callable[[Account], str]
) -> None:
    assert_401(client, {"Authorization": f"Bearer {make_token(alice)}"})


@pytest.mark.parametrize(
    "header", [None, "", "Bearer", "Bearer ", "Basic YWxpY2U6cGFzc3dvcmQ=", "bearer"]
)
def test_missing_or_malformed_authorization_is_401(client: TestClient, header: str | None) -> None:
    assert_401(client, {} if header is None else {"Authorization": header})


def test_token_of_a_deleted_user_is_401(client: TestClient, alice: Account) -> None:
    assert client.delete("/users/me", headers=alice.headers).status_code == 204
    assert_401(client, alice.headers)


def test_a_deleted_users_token_never_opens_the_next_account(
    client: TestClient, alice: Account, bob: Account
) -> None:
    assert client.delete("/users/me", headers=bob.headers).status_code == 204
    carol = client.post(
        "/auth/register",
        json={"username": "carol", "email": "carol@example.com", "password": PASSWORD},
    ).json()
    assert carol["id"] != bob.id  # ids are never reused, on SQLite too
    assert_401(client, bob.headers)
    assert client.get("/todos", headers=bob.headers).status_code == 401


def test_token_of_a_user_disabled_straight_in_the_database_is_401_until_reenabled(
    client: TestClient, alice: Account, db: Session
) -> None:
    user = db.get_one(User, alice.id)
    user.is_active = False  # no session is ended this way
    db.commit()
    assert_401(client, alice.headers)
    assert client.get("/todos", headers=alice.headers).status_code == 401  # the lane too
    user.is_active = True
    db.commit()
    me = client.get("/users/me", headers=alice.headers)
    assert (me.status_code, me.json()["id"]) == (200, alice.id)
    assert client.get("/todos", headers=alice.headers).status_code == 200
    # Disabling through the admin API ends the sessions, so their tokens stay revoked
    # after re-enabling: test_admin.py's test_disabling_revokes_tokens_which_stay_...


def test_token_after_logout_is_401(client: TestClient, alice: Account) -> None:
    client.post("/auth/logout", headers=alice.headers)
    assert_401(client, alice.headers)


def test_token_after_a_password_change_is_401(client: TestClient, alice: Account) -> None:
    response = client.put(
        "/users/me/password",
        json={"current_password": PASSWORD, "new_password": "a-new-password"},
        headers=alice.headers,
    )
    assert response.status_code == 204
    assert_401(client, alice.headers)
    assert login(client, "alice", "a-new-password")


def test_a_token_naming_another_users_session_is_401(
    client: TestClient, alice: Account, bob: Account
) -> None:
    bobs_session = jwt.get_unverified_claims(bob.token)["sid"]
    assert_401(client, {"Authorization": f"Bearer {_sign(_claims(alice, sid=bobs_session))}"})


def test_role_comes_from_the_database_not_the_token(
    client: TestClient, alice: Account, db: Session
) -> None:
    assert client.get("/admin/users", headers=alice.headers).status_code == 403
    db.get_one(User, alice.id).role = "admin"
    db.commit()
    assert client.get("/admin/users", headers=alice.headers).status_code == 200
