"""The OpenAPI document tells the truth: statuses, error schemas, security, bounds."""

from typing import Any

import pytest
from fastapi.testclient import TestClient

from todoapp.main import create_app

# Every status each operation can answer besides 503 (database down), per the contract.
EXPECTED = {
    ("POST", "/auth/register"): {201, 409, 413, 422},
    ("POST", "/auth/token"): {200, 401, 403, 413, 422, 429},
    ("POST", "/auth/refresh"): {200, 401, 413, 422},
    ("POST", "/auth/logout"): {204, 401},
    ("POST", "/auth/forgot-password"): {202, 413, 422},
    ("POST", "/auth/reset-password"): {204, 400, 413, 422},
    ("POST", "/auth/request-verify"): {202, 401, 409},
    ("POST", "/auth/verify"): {200, 400, 413, 422},
    ("GET", "/users/me"): {200, 304, 401},
    ("PATCH", "/users/me"): {200, 401, 409, 412, 413, 422},
    ("PUT", "/users/me/password"): {204, 400, 401, 413, 422, 429},
    ("DELETE", "/users/me"): {204, 401, 409},
    ("GET", "/users/me/sessions"): {200, 401},
    ("DELETE", "/users/me/sessions/{session_id}"): {204, 401, 404, 422},
    ("GET", "/todos"): {200, 401, 403, 422},
    ("POST", "/todos"): {201, 401, 403, 413, 422},
    ("GET", "/todos/{todo_id}"): {200, 304, 401, 403, 404, 422},
    ("PUT", "/todos/{todo_id}"): {200, 401, 403, 404, 412, 413, 422},
    ("PATCH", "/todos/{todo_id}"): {200, 401, 403, 404, 412, 413, 422},
    ("DELETE", "/todos/{todo_id}"): {204, 401, 403, 404, 412, 422},
    ("GET", "/admin/todos"): {200, 401, 403, 422},
    ("DELETE", "/admin/todos/{todo_id}"): {204, 401, 403, 404, 422},
    ("GET", "/admin/users"): {200, 401, 403, 422},
    ("GET", "/admin/users/{user_id}"): {200, 401, 403, 404, 422},
    ("PATCH", "/admin/users/{user_id}"): {200, 401, 403, 404, 409, 413, 422},
    ("DELETE", "/admin/users/{user_id}"): {204, 401, 403, 404, 409, 422},
    ("GET", "/healthz"): {200},
    ("GET", "/readyz"): {200, 503},
}
PUBLIC = {
    ("POST", "/auth/register"),
    ("POST", "/auth/token"),
    ("POST", "/auth/refresh"),
    ("POST", "/auth/forgot-password"),
    ("POST", "/auth/reset-password"),
    ("POST", "/auth/verify"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    with TestClient(create_app()) as client:
        response = client.get("/openapi.json")
    assert response.status_code == 200
    result: dict[str, Any] = response.json()
    return result


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }


def test_the_document_lists_exactly_the_contracts_operations(document: dict[str, Any]) -> None:
    assert set(operations(document)) == set(EXPECTED)


@pytest.mark.parametrize("key", EXPECTED, ids=[f"{m} {p}" for m, p in EXPECTED])
def test_each_operation_documents_its_statuses_with_the_error_schema(
    document: dict[str, Any], key: tuple[str, str]
) -> None:
    operation = operations(document)[key]
    documented = {int(code) for code in operation["responses"]}
    expected = EXPECTED[key] | ({503} if key != ("GET", "/healthz") else set())
    assert documented == expected
    for code, response in operation["responses"].items():
        if int(code) >= 400:
            schema = response["content"]["application/json"]["schema"]["$ref"]
            wanted = "HTTPValidationError" if code == "422" else "ErrorOut"
            assert schema == f"#/components/schemas/{wanted}"
    if 401 in documented:
        assert "WWW-Authenticate" in operation["responses"]["401"]["headers"]
    if 429 in documented:
        assert "Retry-After" in operation["responses"]["429"]["headers"]


@pytest.mark.parametrize("key", EXPECTED, ids=[f"{m} {p}" for m, p in EXPECTED])
def test_each_operation_has_a_tag_summary_id_and_the_right_security(
    document: dict[str, Any], key: tuple[str, str]
) -> None:
    operation = operations(document)[key]
    assert operation["summary"]
    tag = operation["tags"][0]
    assert operation["tags"] == [tag]
    assert tag in {"auth", "users", "todos", "admin", "operations"}
    assert operation["operationId"].startswith(tag + "-")
    if key in PUBLIC:
        assert "security" not in operation
    else:
        assert operation["security"] == [{"OAuth2PasswordBearer": []}]


def test_readable_operation_ids(document: dict[str, Any]) -> None:
    ids = {op["operationId"] for op in operations(document).values()}
    assert {"todos-list", "admin-users-update", "auth-token"} <= ids
    assert len(ids) == len(EXPECTED)


def test_one_oauth2_password_scheme_logging_in_at_auth_token(document: dict[str, Any]) -> None:
    assert document["components"]["securitySchemes"] == {
        "OAuth2PasswordBearer": {
            "type": "oauth2",
            "flows": {"password": {"scopes": {}, "tokenUrl": "auth/token"}},
        }
    }


def test_ids_in_paths_are_bounded_to_postgresql_integers(document: dict[str, Any]) -> None:
    seen = 0
    for (_, path), operation in operations(document).items():
        for parameter in operation.get("parameters", []):
            if parameter["in"] == "path":
                seen += 1
                schema = parameter["schema"]
                assert (schema["type"], schema["minimum"], schema["maximum"]) == (
                    "integer",
                    1,
                    2**31 - 1,
                ), path
    assert seen == 9


def test_every_request_body_has_an_example(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    bodies = 0
    for key, operation in operations(document).items():
        if "requestBody" not in operation:
            continue
        bodies += 1
        (media,) = operation["requestBody"]["content"].values()
        ref = media["schema"].get("$ref", "").rsplit("/", 1)[-1]
        assert media.get("example") or schemas.get(ref, {}).get("examples"), key
    assert bodies == 12


def test_responses_never_document_a_password_or_hash(document: dict[str, Any]) -> None:
    for name in ("UserOut", "TodoOut", "Token"):
        properties = document["components"]["schemas"][name]["properties"]
        assert not any("password" in p or "hash" in p for p in properties)


ALL_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def test_every_405_lists_exactly_the_methods_of_its_path() -> None:
    # Each documented path, with each method it does not answer: 405 whose Allow
    # names exactly the path's methods (not just those of the first route matched).
    app = create_app()
    paths: dict[str, set[str]] = {}
    for method, path in EXPECTED:
        paths.setdefault(path, set()).add(method)
        if method == "GET":  # HEAD is answered wherever GET is
            paths[path].add("HEAD")
    client = TestClient(app)
    checked = 0
    for template, methods in paths.items():
        path = template.replace("{todo_id}", "1").replace("{user_id}", "1")
        for method in ALL_METHODS:
            if method in methods:
                continue
            response = client.request(method, path)
            assert response.status_code == 405, (method, path)
            allowed = [m for m in ALL_METHODS if m in methods]
            assert response.headers["allow"] == ", ".join(allowed), (method, path)
            checked += 1
    assert checked > 50
    assert client.options("/todos").headers["allow"] == "GET, HEAD, POST"
    assert client.options("/admin/users/7").headers["allow"] == "GET, HEAD, PATCH, DELETE"
