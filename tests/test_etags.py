"""Lost updates: ETag on one todo and on /users/me, If-Match (412), If-None-Match (304)."""

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.conftest import (
    Account,
    AppFactory,
    login,
    register,
)
from todoapp.deps import parse_entity_tags

CHANGED = {"detail": "the resource changed since it was read"}


def create(client: TestClient, account: Account, **fields: Any) -> httpx.Response:
    body = {"title": "Buy milk", "priority": 3, **fields}
    response = client.post("/todos", json=body, headers=account.headers)
    assert response.status_code == 201, response.text
    return response


def weak(tag: str) -> str:
    return f"W/{tag}"


# --- ETag on todos ----------------------------------------------------------------
def test_every_answer_carrying_a_todo_has_the_etag_the_next_get_gives(
    client: TestClient, alice: Account
) -> None:
    created = create(client, alice)
    todo_id = created.json()["id"]
    tags = [created.headers["etag"]]
    path = f"/todos/{todo_id}"
    assert client.get(path, headers=alice.headers).headers["etag"] == tags[-1]
    full = {"title": "Buy oat milk", "description": "", "priority": 2, "complete": False}
    for method, body in (("PATCH", {"complete": True}), ("PUT", full), ("PATCH", {"priority": 5})):
        answer = client.request(method, path, json=body, headers=alice.headers)
        assert answer.status_code == 200
        tags.append(answer.headers["etag"])
        assert client.get(path, headers=alice.headers).headers["etag"] == tags[-1]
    assert len(set(tags)) == 4  # every write changed it
    assert all(tag.startswith('"') and tag.endswith('"') for tag in tags)  # strong


def test_a_write_that_changes_nothing_keeps_the_etag(client: TestClient, alice: Account) -> None:
    created = create(client, alice)
    path = f"/todos/{created.json()['id']}"
    answer = client.patch(path, json={}, headers=alice.headers)
    assert answer.status_code == 200
    assert answer.headers["etag"] == created.headers["etag"]


def test_two_todos_at_the_same_version_have_different_etags(
    client: TestClient, alice: Account
) -> None:
    assert create(client, alice).headers["etag"] != create(client, alice).headers["etag"]


# --- If-Match on todos ------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "body"),
    [
        ("PATCH", {"title": "changed"}),
        ("PATCH", {}),
        ("PUT", {"title": "changed", "description": "", "priority": 1, "complete": True}),
        ("DELETE", None),
    ],
)
def test_a_stale_if_match_is_412_and_changes_nothing(
    client: TestClient, alice: Account, method: str, body: Any
) -> None:
    created = create(client, alice)
    path = f"/todos/{created.json()['id']}"
    stale = created.headers["etag"]
    current = client.patch(path, json={"priority": 4}, headers=alice.headers)
    for sent in (
        stale,
        weak(current.headers["etag"]),
        f"{stale}, {weak(stale)}",
        '"x"',
        "nonsense",
    ):
        answer = client.request(
            method, path, json=body, headers={**alice.headers, "If-Match": sent}
        )
        assert answer.status_code == 412, sent
        assert answer.json() == CHANGED
    after = client.get(path, headers=alice.headers)
    assert after.json() == current.json()
    assert after.headers["etag"] == current.headers["etag"]


@pytest.mark.parametrize(
    "if_match",
    [
        lambda tag: tag,
        lambda _tag: "*",
        lambda tag: f'"todo-1-v99", {tag}',
        lambda tag: f"W/{tag},{tag}",
        lambda tag: f' "nonsense" ,  {tag} ',
    ],
)
def test_a_matching_if_match_lets_the_write_go_ahead(
    client: TestClient, alice: Account, if_match: Callable[[str], str]
) -> None:
    created = create(client, alice)
    path = f"/todos/{created.json()['id']}"
    sent = {**alice.headers, "If-Match": if_match(created.headers["etag"])}
    answer = client.patch(path, json={"complete": True}, headers=sent)
    assert answer.status_code == 200
    assert answer.json()["complete"] is True
    assert answer.headers["etag"] != created.headers["etag"]
    # The tag just used is stale now.
    again = client.patch(path, json={"complete": False}, headers=sent)
    assert again.status_code == (200 if if_match("") == "*" else 412)


def test_delete_with_the_current_etag_is_204(client: TestClient, alice: Account) -> None:
    created = create(client, alice)
    path = f"/todos/{created.json()['id']}"
    sent = {**alice.headers, "If-Match": created.headers["etag"]}
    assert client.delete(path, headers=sent).status_code == 204
    assert client.get(path, headers=alice.headers).status_code == 404


@pytest.mark.parametrize("if_match", ["*", '"todo-1-v1"', 'W/"x"', "garbage"])
@pytest.mark.parametrize("method", ["PATCH", "PUT", "DELETE"])
def test_a_missing_or_foreign_todo_is_404_whatever_if_match_says(
    client: TestClient, alice: Account, bob: Account, if_match: str, method: str
) -> None:
    bobs = create(client, bob)
    body = {"title": "t", "description": "", "priority": 1, "complete": False}
    for todo_id, tag in ((bobs.json()["id"], bobs.headers["etag"]), (999_999, None)):
        sent = {**alice.headers, "If-Match": tag if tag and if_match == "*" else if_match}
        answer = client.request(method, f"/todos/{todo_id}", json=body, headers=sent)
        assert answer.status_code == 404
    assert client.get(f"/todos/{bobs.json()['id']}", headers=bob.headers).json() == bobs.json()


# --- If-None-Match on todos -------------------------------------------------------
def test_if_none_match_naming_the_current_etag_is_304_without_a_body(
    client: TestClient, alice: Account
) -> None:
    created = create(client, alice)
    path, tag = f"/todos/{created.json()['id']}", created.headers["etag"]
    for sent in (tag, "*", f'"other", {tag}', weak(tag)):
        answer = client.get(path, headers={**alice.headers, "If-None-Match": sent})
        assert answer.status_code == 304, sent
        assert answer.headers["etag"] == tag
        assert answer.content == b""
    for sent in ('"other"', created.headers["etag"].replace("v1", "v2"), "garbage"):
        answer = client.get(path, headers={**alice.headers, "If-None-Match": sent})
        assert answer.status_code == 200
        assert answer.json() == created.json()
    client.patch(path, json={"title": "new"}, headers=alice.headers)
    after = client.get(path, headers={**alice.headers, "If-None-Match": tag})
    assert after.status_code == 200
    assert after.json()["title"] == "new"


def test_if_none_match_does_not_hide_a_404_or_a_401(
    client: TestClient, alice: Account, bob: Account
) -> None:
    bobs = create(client, bob)
    path = f"/todos/{bobs.json()['id']}"
    assert client.get(path, headers={**alice.headers, "If-None-Match": "*"}).status_code == 404
    assert client.get(path, headers={"If-None-Match": "*"}).status_code == 401


# --- /users/me --------------------------------------------------------------------
def test_users_me_has_an_etag_that_every_change_of_the_account_moves(
    client: TestClient, alice: Account, admin: Account
) -> None:
    tags = [client.get("/users/me", headers=alice.headers).headers["etag"]]
    patched = client.patch("/users/me", json={"firstname": "Alice"}, headers=alice.headers)
    assert patched.status_code == 200
    tags.append(patched.headers["etag"])
    assert client.get("/users/me", headers=alice.headers).headers["etag"] == tags[-1]
    # An admin's change is a change of the resource too.
    assert (
        client.patch(
            f"/admin/users/{alice.id}", json={"role": "admin"}, headers=admin.headers
        ).status_code
        == 200
    )
    tags.append(client.get("/users/me", headers=alice.headers).headers["etag"])
    assert len(set(tags)) == 3


def test_users_me_patch_honours_if_match(client: TestClient, alice: Account) -> None:
    tag = client.get("/users/me", headers=alice.headers).headers["etag"]
    ok = client.patch(
        "/users/me", json={"lastname": "Liddell"}, headers={**alice.headers, "If-Match": tag}
    )
    assert ok.status_code == 200
    stale = client.patch(
        "/users/me", json={"lastname": "Other"}, headers={**alice.headers, "If-Match": tag}
    )
    assert stale.status_code == 412
    assert stale.json() == CHANGED
    assert client.get("/users/me", headers=alice.headers).json()["lastname"] == "Liddell"
    weak_current = {**alice.headers, "If-Match": weak(ok.headers["etag"])}
    assert client.patch("/users/me", json={}, headers=weak_current).status_code == 412
    star = {**alice.headers, "If-Match": "*"}
    assert client.patch("/users/me", json={"lastname": "S"}, headers=star).status_code == 200


def test_users_me_if_none_match(client: TestClient, alice: Account, bob: Account) -> None:
    tag = client.get("/users/me", headers=alice.headers).headers["etag"]
    same = client.get("/users/me", headers={**alice.headers, "If-None-Match": tag})
    assert (same.status_code, same.content, same.headers["etag"]) == (304, b"", tag)
    # Bob's account is at the same version, yet alice's tag does not name it.
    bobs = client.get("/users/me", headers={**bob.headers, "If-None-Match": tag})
    assert bobs.status_code == 200
    assert bobs.headers["etag"] != tag


def test_cors_exposes_etag_and_allows_the_conditional_headers(app_factory: AppFactory) -> None:
    with TestClient(app_factory(cors_origins=["https://app.example"])) as client:
        preflight = client.options(
            "/todos/1",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "PATCH",
                "Access-Control-Request-Headers": "if-match, if-none-match, authorization",
            },
        )
        assert preflight.status_code == 200
        allowed = preflight.headers["access-control-allow-headers"].lower()
        assert "if-match" in allowed
        assert "if-none-match" in allowed
        answer = client.get("/healthz", headers={"Origin": "https://app.example"})
        assert "etag" in answer.headers["access-control-expose-headers"].lower()


def test_entity_tag_lists_are_parsed_strictly() -> None:
    tags = parse_entity_tags('"todo-3-v2", W/"todo-3-v5" ,"todo-4-v1", "todo-3-v07x", bare')
    assert tags.versions_of("todo", 3) == {2}
    assert tags.versions_of("todo", 4) == {1}
    assert tags.versions_of("user", 3) == frozenset()
    assert tags.names('"todo-3-v5"')  # If-None-Match compares weakly
    assert not tags.names('"todo-3-v6"')
    assert parse_entity_tags(" * ").versions_of("todo", 3) is None
    assert parse_entity_tags('"todo-3-v99999999999"').versions_of("todo", 3) == frozenset()


# --- races: exactly one writer wins, on both databases ----------------------------
def at_once(count: int, call: Callable[[int], httpx.Response]) -> list[httpx.Response]:
    barrier = threading.Barrier(count)

    def run(i: int) -> httpx.Response:
        barrier.wait(timeout=30)
        return call(i)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


@pytest.fixture
def racing_client(client: TestClient) -> TestClient:
    """The suite's app: committed data and real concurrent connections (SQLite: one
    file, WAL)."""
    return client


RACERS = 20


def test_racing_if_match_writers_give_exactly_one_success(racing_client: TestClient) -> None:
    register(racing_client, "racer")
    headers = {"Authorization": f"Bearer {login(racing_client, 'racer')}"}
    for _round in range(3):
        created = racing_client.post(
            "/todos", json={"title": "start", "priority": 1}, headers=headers
        )
        path, tag = f"/todos/{created.json()['id']}", created.headers["etag"]
        answers = at_once(
            RACERS,
            lambda i, path=path, tag=tag: racing_client.patch(  # type: ignore[misc]
                path,
                json={"title": f"write {i}"},
                headers={**headers, "If-Match": tag},
            ),
        )
        statuses = sorted(answer.status_code for answer in answers)
        assert statuses == [200] + [412] * (RACERS - 1)
        winner = next(answer for answer in answers if answer.status_code == 200)
        final = racing_client.get(path, headers=headers)
        assert final.json() == winner.json()
        assert final.headers["etag"] == winner.headers["etag"]


def test_racing_if_match_deletes_give_exactly_one_204(racing_client: TestClient) -> None:
    register(racing_client, "racer")
    headers = {"Authorization": f"Bearer {login(racing_client, 'racer')}"}
    created = racing_client.post("/todos", json={"title": "doomed", "priority": 1}, headers=headers)
    path, tag = f"/todos/{created.json()['id']}", created.headers["etag"]
    answers = at_once(
        RACERS, lambda _i: racing_client.delete(path, headers={**headers, "If-Match": tag})
    )
    # The losers find the todo gone: 404, whatever If-Match says.
    assert sorted(answer.status_code for answer in answers) == [204] + [404] * (RACERS - 1)


def test_racing_if_match_profile_changes_give_exactly_one_success(
    racing_client: TestClient,
) -> None:
    register(racing_client, "racer")
    headers = {"Authorization": f"Bearer {login(racing_client, 'racer')}"}
    tag = racing_client.get("/users/me", headers=headers).headers["etag"]
    answers = at_once(
        RACERS,
        lambda i: racing_client.patch(
            "/users/me", json={"firstname": f"n{i}"}, headers={**headers, "If-Match": tag}
        ),
    )
    assert sorted(answer.status_code for answer in answers) == [200] + [412] * (RACERS - 1)
    winner = next(answer for answer in answers if answer.status_code == 200)
    assert racing_client.get("/users/me", headers=headers).json() == winner.json()
