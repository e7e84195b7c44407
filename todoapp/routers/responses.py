"""The error responses each route documents, so that the OpenAPI document tells the truth."""

from typing import Any

from todoapp.schemas import ErrorOut

_DESCRIPTIONS = {
    400: "The request is well-formed but wrong",
    401: "Missing, invalid, expired or revoked token (or bad credentials)",
    403: "Signed in, but not allowed",
    404: "Not found (or not yours)",
    409: "Conflicts with the current state",
    412: "`If-Match` names none of the resource's current ETags: it changed since it was read",
    413: "Request body over 1 MiB",
    429: "Too many failed logins (or password checks); retry after `Retry-After` seconds",
    503: "The database is unavailable or not migrated, or the server is busy (routes that "
    "hash a password then send `Retry-After`)",
}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}},
    429: {
        "Retry-After": {
            "description": "Seconds until the next attempt is allowed",
            "schema": {"type": "integer"},
        }
    },
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries for these status codes, each with the error body's schema."""
    result: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        entry: dict[str, Any] = {"model": ErrorOut, "description": _DESCRIPTIONS[code]}
        if code in _HEADERS:
            entry["headers"] = _HEADERS[code]
        result[code] = entry
    return result


# Every route that reads the database can answer 503 while it is down.
DB = (503,)
# Every route behind a token.
AUTHED = (401, 503)
# Every route with a request body.
BODY = (413,)


_ETAG_HEADER = {
    "ETag": {"description": "The resource's current entity tag", "schema": {"type": "string"}}
}


def with_etag(
    success: int, *, not_modified: bool = False, links: dict[str, Any] | None = None
) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries for an answer carrying one resource and its ETag, plus the
    304 of `If-None-Match` (no body); `links`, what can be done next with it."""
    result: dict[int | str, dict[str, Any]] = {success: {"headers": _ETAG_HEADER}}
    if links:
        result[success]["links"] = links
    if not_modified:
        result[304] = {
            "description": "Not modified: `If-None-Match` names the current ETag",
            "headers": _ETAG_HEADER,
        }
    return result


def _header(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": False,
        "description": description,
        "schema": {"type": "string"},
    }


# `openapi_extra=` for the routes that honour If-Match / If-None-Match (see deps.if_match).
IF_MATCH = {
    "parameters": [
        _header(
            "If-Match",
            "Write only while the resource's current ETag is one of these tags (comma-"
            "separated, strong comparison) or `*`; else 412 and nothing changes.",
        )
    ]
}
IF_NONE_MATCH = {
    "parameters": [
        _header(
            "If-None-Match",
            "Answer 304 (the ETag, no body) when the current ETag is one of these tags "
            "(comma-separated) or `*`.",
        )
    ]
}


def links_by_id(parameter: str, operations: dict[str, str]) -> dict[str, Any]:
    """OpenAPI links from a created resource to the operations on it, by the `id` of the
    answer's body (clients, and stateful fuzzing, follow them)."""
    return {
        name: {
            "operationId": operation_id,
            "parameters": {parameter: "$response.body#/id"},
            "description": f"`{parameter}` is the `id` of this answer's body",
        }
        for name, operation_id in operations.items()
    }
