"""/users/me: read, change, change password, delete."""

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tests.conftest import (
    PASSWORD,
    Account,
    RoundTrips,
    login,
    make_account,
    register,
    set_role,
)
from todoapp.models import Todo, User


def test_read_me_is_the_public_view(client: TestClient, alice: Account) -> None:
    response = client.get("/users/me", headers=alice.headers)
    assert response.status_code == 200
    assert response.json() == {
        "id": alice.id,
        "email": "alice@example.com",
        "username": "alice",
        "firstname": None,
        "lastname": None,
        "role": "user",
        "is_active": True,
        "is_verified": False,
    }
    assert "hash" not in response.text
    assert PASSWORD not in response.text


def test_read_me_without_token_is_401(client: TestClient) -> None:
    response = client.get("/users/me")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_read_me_is_one_round_trip_without_ping_or_transaction(
    committed_client: TestClient, round_trips: RoundTrips
) -> None:
    # The statement that checks the token reads the account (Database.read: autocommit,
    # no pool ping), where CurrentUser would cost a ping, BEGIN, the user and ROLLBACK.
    alice = make_account(committed_client, "alice")
    etag = committed_client.get("/users/me", headers=alice.headers).headers["ETag"]
    for headers, status in ((alice.headers, 200), ({**alice.headers, "If-None-Match": etag}, 304)):
        round_trips.clear()
        assert committed_client.get("/users/me", headers=headers).status_code == status
        (statement,) = round_trips.sent
        assert "FROM users, sessions" in statement, statement


def test_patch_me_changes_only_what_is_given(client: TestClient, alice: Account) -> None:
    response = client.patch(
        "/users/me",
        json={"firstname": " Alice ", "email": "ALICE@Example.org"},
        headers=alice.headers,
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["firstname"], body["email"], body["username"]) == (
        "Alice",
        "alice@example.org",
        "alice",
    )
    assert client.get("/users/me", headers=alice.headers).json() == body  # token still valid


def test_patch_me_to_own_username_in_another_case_is_not_a_conflict(
    client: TestClient, alice: Account
) -> None:
    response = client.patch("/users/me", json={"username": "ALICE"}, headers=alice.headers)
    assert response.status_code == 200
    assert response.json()["username"] == "ALICE"
    assert login(client, "alice")


@pytest.mark.parametrize(
    "body", [{"username": "BOB"}, {"email": "Bob@example.com"}], ids=["username", "email"]
)
def test_patch_me_to_someone_elses_name_or_email_is_409(
    client: TestClient, alice: Account, bob: Account, body: dict[str, str]
) -> None:
    response = client.patch("/users/me", json=body, headers=alice.headers)
    assert response.status_code == 409
    assert client.get("/users/me", headers=alice.headers).json()["username"] == "alice"


@pytest.mark.parametrize(
    "body",
    [
        {"role": "admin"},
        {"is_active": False},
        {"id": 5},
        {"password": "new-password-1"},
        {"username": None},
        {"email": None},
        {"firstname": None},
        {"username": "x"},
        {"email": "nope"},
        {"lastname": "l" * 46},
    ],
)
def test_patch_me_refuses_privileged_null_or_invalid_fields(
    client: TestClient, alice: Account, body: dict[str, object]
) -> None:
    response = client.patch("/users/me", json=body, headers=alice.headers)
    assert response.status_code == 422
    me = client.get("/users/me", headers=alice.headers).json()
    assert (me["role"], me["is_active"], me["id"], me["username"]) == (
        "user",
        True,
        alice.id,
        "alice",
    )


def test_change_password_with_wrong_current_is_400(client: TestClient, alice: Account) -> None:
    response = client.put(
        "/users/me/password",
        json={"current_password": "not-my-password", "new_password": "a-new-password"},
        headers=alice.headers,
    )
    assert response.status_code == 400
    assert client.get("/users/me", headers=alice.headers).status_code == 200  # not revoked
    assert login(client, "alice")


@pytest.mark.parametrize("new_password", ["short", "x" * 73, "é" * 37])
def test_change_password_to_an_invalid_one_is_422(
    client: TestClient, alice: Account, new_password: str
) -> None:
    response = client.put(
        "/users/me/password",
        json={"current_password": PASSWORD, "new_password": new_password},
        headers=alice.headers,
    )
    assert response.status_code == 422
    assert login(client, "alice")


def test_change_password_without_token_is_401(client: TestClient) -> None:
    response = client.put(
        "/users/me/password", json={"current_password": PASSWORD, "new_password": "abcdefghij"}
    )
    assert response.status_code == 401


def test_delete_me_removes_the_user_and_their_todos(
    client: TestClient, alice: Account, bob: Account, db: Session
) -> None:
    client.post("/todos", json={"title": "a", "priority": 1}, headers=alice.headers)
    client.post("/todos", json={"title": "b", "priority": 1}, headers=bob.headers)
    assert client.delete("/users/me", headers=alice.headers).status_code == 204
    assert db.get(User, alice.id) is None
    owners = db.scalars(select(Todo.owner_id)).all()
    assert owners == [bob.id]
    assert (
        client.post("/auth/token", data={"username": "alice", "password": PASSWORD}).status_code
        == 401
    )


def test_the_last_active_admin_cannot_delete_themselves(
    client: TestClient, admin: Account, db: Session
) -> None:
    response = client.delete("/users/me", headers=admin.headers)
    assert response.status_code == 409
    assert db.get(User, admin.id) is not None


def test_an_admin_may_delete_themselves_when_another_admin_remains(
    client: TestClient, admin: Account, bob: Account, db: Session
) -> None:
    set_role(db, bob.id, "admin")
    assert client.delete("/users/me", headers=admin.headers).status_code == 204
    assert db.scalar(select(func.count()).select_from(User).where(User.role == "admin")) == 1


def test_delete_me_without_token_is_401(client: TestClient) -> None:
    assert client.delete("/users/me").status_code == 401


def test_registration_then_login_round_trip_keeps_names_null(client: TestClient) -> None:
    user = register(client, "carol")
    assert user["firstname"] is None
    assert user["lastname"] is None
