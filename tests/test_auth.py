"""POST /auth/register, /auth/token, /auth/logout: every status of the contract."""

import time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tests.conftest import PASSWORD, Account, login, register
from todoapp import security
from todoapp.models import User


def test_register_returns_201_the_public_user_and_location(client: TestClient) -> None:
    response = client.post(
        "/auth/register",
        json={
            "email": "  Ada@Example.COM ",
            "username": " ada ",
            "password": PASSWORD,
            "firstname": " Ada ",
        },
    )
    assert response.status_code == 201
    assert response.headers["location"] == "/users/me"
    body = response.json()
    assert body == {
        "id": body["id"],
        "email": "ada@example.com",
        "username": "ada",
        "firstname": "Ada",
        "lastname": None,
        "role": "user",
        "is_active": True,
        "is_verified": False,
    }


def test_register_stores_a_bcrypt_hash_never_the_password(client: TestClient, db: Session) -> None:
    register(client, "ada")
    stored = db.scalar(select(User.hash_password).where(User.username == "ada"))
    assert stored is not None
    assert stored.startswith("$2b$")
    assert PASSWORD not in stored


@pytest.mark.parametrize("field", ["role", "is_active", "id", "token_version", "owner_id"])
def test_register_refuses_privileged_or_unknown_fields(client: TestClient, field: str) -> None:
    value = {"role": "admin", "is_active": True, "id": 99}.get(field, 1)
    body = {"email": "m@example.com", "username": "mallory", "password": PASSWORD, field: value}
    response = client.post("/auth/register", json=body)
    assert response.status_code == 422
    assert (
        client.post("/auth/token", data={"username": "mallory", "password": PASSWORD}).status_code
        == 401
    )


@pytest.mark.parametrize(
    ("username", "email"),
    [("ADA", "other@example.com"), ("other", "ADA@example.com")],
    ids=["username", "email"],
)
def test_register_taken_username_or_email_is_409_ignoring_case(
    client: TestClient, username: str, email: str
) -> None:
    register(client, "ada")
    response = client.post(
        "/auth/register", json={"username": username, "email": email, "password": PASSWORD}
    )
    assert response.status_code == 409
    assert "taken" in response.json()["detail"] or "registered" in response.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        {"username": "ab", "email": "a@example.com", "password": PASSWORD},
        {"username": "a" * 46, "email": "a@example.com", "password": PASSWORD},
        {"username": "has space", "email": "a@example.com", "password": PASSWORD},
        {"username": "émile", "email": "a@example.com", "password": PASSWORD},
        {"username": "ada", "email": "not-an-email", "password": PASSWORD},
        {"username": "ada", "email": "a" * 190 + "@example.com", "password": PASSWORD},
        {"username": "ada", "email": "a@example.com", "password": "short"},
        {"username": "ada", "email": "a@example.com", "password": "x" * 73},
        {"username": "ada", "email": "a@example.com", "password": "é" * 37},  # 74 bytes
        {"username": "ada", "email": "a@example.com", "password": "pass\x00word1"},
        {"username": "ada", "email": "a@example.com", "password": PASSWORD, "firstname": "x" * 46},
        {"username": "ada", "email": "a@example.com", "password": PASSWORD, "lastname": "\x00"},
        {"username": "ada", "email": "a@example.com"},
        {"username": None, "email": "a@example.com", "password": PASSWORD},
    ],
)
def test_register_invalid_fields_are_422(client: TestClient, body: dict[str, object]) -> None:
    response = client.post("/auth/register", json=body)
    assert response.status_code == 422
    assert isinstance(response.json()["detail"], list)


def test_password_of_exactly_72_bytes_is_accepted(client: TestClient) -> None:
    password = "é" * 36  # 72 bytes in UTF-8
    register(client, "ada", password=password)
    assert login(client, "ada", password)


def test_register_malformed_json_is_422(client: TestClient) -> None:
    response = client.post(
        "/auth/register", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422


def test_login_by_username_or_email_in_any_case(client: TestClient) -> None:
    register(client, "Ada")
    for name in ("ada", "ADA", "Ada@Example.com", "ada@example.com"):
        response = client.post("/auth/token", data={"username": name, "password": PASSWORD})
        assert response.status_code == 200, name
        body = response.json()
        assert body["token_type"] == "bearer"
        assert body["expires_in"] == 30 * 60


@pytest.mark.parametrize(
    ("grant_type", "status"),
    [(None, 200), ("", 200), ("password", 200), ("client_credentials", 422)],
)
def test_login_grant_type_may_be_left_out_or_empty_else_must_be_password(
    client: TestClient, grant_type: str | None, status: int
) -> None:
    register(client, "ada")
    form = {"username": "ada", "password": PASSWORD}
    if grant_type is not None:
        form["grant_type"] = grant_type
    assert client.post("/auth/token", data=form).status_code == status


def test_token_claims_hold_sub_iat_exp_and_exp_minus_iat_is_expires_in(
    client: TestClient, alice: Account
) -> None:
    from jose import jwt

    claims = jwt.get_unverified_claims(alice.token)
    assert claims["sub"] == str(alice.id)
    assert claims["exp"] - claims["iat"] == 30 * 60
    assert abs(claims["iat"] - time.time()) < 60


def test_wrong_password_and_unknown_user_give_the_same_401(client: TestClient) -> None:
    register(client, "ada")
    wrong = client.post("/auth/token", data={"username": "ada", "password": "wrong-password"})
    unknown = client.post("/auth/token", data={"username": "nobody", "password": "wrong-password"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert wrong.headers["www-authenticate"] == unknown.headers["www-authenticate"] == "Bearer"


def test_unknown_user_login_still_runs_a_password_verify(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str | None] = []
    real = security.verify_password

    def spy(password: str, password_hash: str | None) -> tuple[bool, str | None]:
        calls.append(password_hash)
        return real(password, password_hash)

    monkeypatch.setattr(security, "verify_password", spy)
    response = client.post("/auth/token", data={"username": "nobody", "password": PASSWORD})
    assert response.status_code == 401
    assert calls == [None]  # verified against the dummy hash, not skipped


@pytest.mark.parametrize("password", ["x" * 73, "é" * 40, "x" * 5000, "pass\x00word"])
def test_impossible_passwords_at_login_are_401_not_500(client: TestClient, password: str) -> None:
    register(client, "ada")
    response = client.post("/auth/token", data={"username": "ada", "password": password})
    assert response.status_code == 401


@pytest.mark.parametrize("name", ["ada\x00", "x" * 10_000, "a%", "a_a", "%"])
def test_odd_login_names_are_401_not_500(client: TestClient, name: str) -> None:
    register(client, "ada")
    response = client.post("/auth/token", data={"username": name, "password": PASSWORD})
    assert response.status_code == 401


@pytest.mark.parametrize(
    "form", [b"username=%ED%A0%80&password=password123", b"username=ada&password=%FF%FE%ED%A0%80xx"]
)
def test_invalid_utf8_in_the_login_form_is_not_a_500(client: TestClient, form: bytes) -> None:
    register(client, "ada")
    response = client.post(
        "/auth/token",
        content=form,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code in (401, 422)


def test_login_missing_fields_is_422(client: TestClient) -> None:
    assert client.post("/auth/token", data={"username": "ada"}).status_code == 422
    assert client.post("/auth/token", json={"username": "a", "password": "b"}).status_code == 422


def test_disabled_account_right_password_is_403_wrong_password_is_401(
    client: TestClient, db: Session
) -> None:
    user = register(client, "ada")
    db.get_one(User, user["id"]).is_active = False
    db.commit()
    right = client.post("/auth/token", data={"username": "ada", "password": PASSWORD})
    wrong = client.post("/auth/token", data={"username": "ada", "password": "not-it-at-all"})
    assert right.status_code == 403
    assert wrong.status_code == 401


def test_login_rehashes_a_hash_with_outdated_parameters(client: TestClient, db: Session) -> None:
    from passlib.hash import bcrypt

    user = register(client, "ada")
    old_hash = bcrypt.using(rounds=5).hash(PASSWORD)
    db.get_one(User, user["id"]).hash_password = old_hash
    db.commit()
    login(client, "ada")
    db.expire_all()
    new_hash = db.get_one(User, user["id"]).hash_password
    assert new_hash != old_hash
    assert new_hash.startswith("$2b$04$")  # the configured rounds (4 in tests)
    assert login(client, "ada")


def _set_hash_elsewhere(db: Session, username: str, password_hash: str) -> None:
    """The account's hash changed by another connection, committed (another request's)."""
    with db.bind.connect() as other:  # type: ignore[union-attr]
        other.execute(
            update(User).where(User.username == username).values(hash_password=password_hash)
        )
        other.commit()


def _change_alices_password(client: TestClient, alice: Account) -> Any:
    return client.put(
        "/users/me/password",
        json={"current_password": PASSWORD, "new_password": "a-third-password"},
        headers=alice.headers,
    )


def test_a_login_rehash_never_undoes_a_password_changed_while_it_verified(
    client: TestClient, db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A login that verifies an outdated hash writes the new one; should the password
    # change while bcrypt runs (the login read the account before), the change stands:
    # the login must not put back a hash of the old password.
    from passlib.hash import bcrypt

    user = register(client, "ada")
    db.get_one(User, user["id"]).hash_password = bcrypt.using(rounds=5).hash(PASSWORD)
    db.commit()
    changed = bcrypt.using(rounds=4).hash("changed-meanwhile")
    real_verify = security.verify_password

    def verify_while_the_password_changes(password: str, password_hash: str | None) -> Any:
        verified = real_verify(password, password_hash)
        assert verified[0]
        assert verified[1] is not None  # due for a rehash
        _set_hash_elsewhere(db, "ada", changed)
        return verified

    monkeypatch.setattr(security, "verify_password", verify_while_the_password_changes)
    assert login(client, "ada")  # it verified the password of the time it read
    monkeypatch.undo()
    db.expire_all()
    assert db.get_one(User, user["id"]).hash_password == changed
    assert login(client, "ada", "changed-meanwhile")


def test_a_password_change_refuses_when_the_password_changed_while_it_verified(
    client: TestClient, db: Session, alice: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PUT /users/me/password checks the current password with bcrypt outside any
    # transaction; should the password change meanwhile (another session, a reset), the
    # password it checked is no longer the current one: 400, and the other change stands.
    from passlib.hash import bcrypt

    changed = bcrypt.using(rounds=4).hash("changed-meanwhile")
    real_verify = security.verify_password

    def verify_while_the_password_changes(password: str, password_hash: str | None) -> Any:
        verified = real_verify(password, password_hash)
        _set_hash_elsewhere(db, "alice", changed)
        return verified

    monkeypatch.setattr(security, "verify_password", verify_while_the_password_changes)
    answer = _change_alices_password(client, alice)
    assert (answer.status_code, answer.json()) == (
        400,
        {"detail": "current password is incorrect"},
    )
    monkeypatch.undo()
    db.expire_all()
    assert db.scalars(select(User.hash_password).where(User.username == "alice")).one() == changed


def test_a_password_change_goes_ahead_when_only_a_rehash_moved_the_hash_meanwhile(
    client: TestClient, db: Session, alice: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another device's login may rehash the same password while this change verifies
    # it (a BCRYPT_ROUNDS change rolling out): the hash moved, the password did not.
    from passlib.hash import bcrypt

    rehashed = bcrypt.using(rounds=5).hash(PASSWORD)
    real_verify = security.verify_password
    calls: list[str | None] = []

    def verify_while_another_login_rehashes(password: str, password_hash: str | None) -> Any:
        calls.append(password_hash)
        if len(calls) == 1:
            _set_hash_elsewhere(db, "alice", rehashed)
        return real_verify(password, password_hash)

    monkeypatch.setattr(security, "verify_password", verify_while_another_login_rehashes)
    answer = _change_alices_password(client, alice)
    assert answer.status_code == 204, answer.text
    assert calls[1] == rehashed  # checked once more, against the hash it found
    monkeypatch.undo()
    assert login(client, "alice", "a-third-password")


def test_logout_is_204_and_revokes_every_earlier_token(client: TestClient, alice: Account) -> None:
    second = login(client, "alice")
    response = client.post("/auth/logout", headers=alice.headers)
    assert response.status_code == 204
    assert response.content == b""
    for token in (alice.token, second):
        me = client.get("/users/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 401
        assert me.headers["www-authenticate"] == "Bearer"


def test_login_right_after_logout_works_in_the_same_second(
    client: TestClient, alice: Account
) -> None:
    client.post("/auth/logout", headers=alice.headers)
    fresh = login(client, "alice")
    assert client.get("/users/me", headers={"Authorization": f"Bearer {fresh}"}).status_code == 200


def test_logout_without_token_is_401(client: TestClient) -> None:
    response = client.post("/auth/logout")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
