"""The error responses each route documents, so that the OpenAPI document tells the truth."""

from typing import Any

from todoapp.schemas import ErrorOut

_DESCRIPTIONS = {
    400: "The request is well-formed but wrong",
    401: "Missing, invalid, expired or revoked token (or bad credentials)",
    403: "Signed in, but not allowed",
    404: "Not found (or not yours)",
    409: "Conflicts with the current state",
    413: "Request body over 1 MiB",
    429: "Too many failed logins; retry after `Retry-After` seconds",
    503: "The database is unavailable or not migrated",
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
