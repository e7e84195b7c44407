"""Pages of any list: limit, offset or cursor, and the signed cursors themselves."""

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Select, func, literal_column

from todoapp import security
from todoapp.errors import InvalidQuery

BAD_CURSOR = "invalid cursor: not one this listing gave, or the filters or sort have changed"
CURSOR_WITH_OFFSET = "a cursor page takes no offset"

Scalar = int | str | bool | None
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Window:
    """Which rows a request asks for: `limit` of them, after `offset` rows or after
    the row a `cursor` stands for (then offset is 0)."""

    limit: int = 20
    offset: int = 0
    cursor: str | None = None


def _listing(listing: Sequence[Scalar]) -> bytes:
    return _listing_bytes(tuple(listing))


@lru_cache(maxsize=1024)
def _listing_bytes(listing: tuple[Scalar, ...]) -> bytes:
    # The same listing is signed for every page of it: written once.
    return json.dumps(list(listing), separators=(",", ":")).encode()


def make_cursor(listing: Sequence[Scalar], key: Sequence[Scalar]) -> str:
    """The cursor for the rows after the one whose sort key is `key`, in `listing`."""
    payload = json.dumps(list(key), separators=(",", ":"), ensure_ascii=False).encode()
    return security.sign_cursor(payload, _listing(listing))


def read_cursor(cursor: str, listing: Sequence[Scalar], size: int) -> list[Any]:
    """The sort key a cursor carries (`size` values); InvalidQuery when the cursor was
    not made by make_cursor for this very listing."""
    payload = security.read_cursor(cursor, _listing(listing))
    try:
        key = json.loads(payload) if payload is not None else None
    except ValueError:
        key = None
    if not isinstance(key, list) or len(key) != size:
        raise InvalidQuery("cursor", BAD_CURSOR)
    return key


def like_pattern(text: str) -> str:
    """A LIKE pattern matching `text` anywhere, with %, _ and \\ taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


@dataclass(frozen=True, slots=True)
class Found(Generic[T]):
    """A page as the services give it: its items, how many match in all (None on a
    cursor page: not counted), and the cursor of the next page (None on the last)."""

    items: Sequence[T]
    total: int | None
    next_cursor: str | None


def found(
    rows: Sequence[T],
    window: Window,
    cursor_after: Callable[[T], str],
    count: Callable[[], int],
) -> Found[T]:
    """The page from up to limit + 1 rows read for `window` (the extra row only says
    that another page follows). Counted only when needed: a cursor page never is, and
    an offset page that ends the listing knows its total already."""
    items = rows[: window.limit]
    next_cursor = cursor_after(items[-1]) if len(rows) > window.limit else None
    if window.cursor is not None:
        return Found(items, None, next_cursor)
    if next_cursor is None and (items or window.offset == 0):
        return Found(items, window.offset + len(items), None)
    return Found(items, count(), next_cursor)


# A total's 0 when no kept count row matches (todo and user totals), written into the
# SQL, not bound: the fast lane binds only the parameters it names.
ZERO: ColumnElement[int] = literal_column("0")


# Timestamps written by PostgreSQL as pydantic writes them in JSON: UTC as "Z", the
# fraction of a second in six digits, none when it is zero ("2026-01-02T03:04:05.466500Z",
# "2026-01-02T03:04:05Z"). Read as text, they go into an answer as they are: no datetime
# made from each and written back (about 40 a page of todos).
_FORMAT: ColumnElement[str] = literal_column("""'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'""")
_NO_FRACTION: ColumnElement[str] = literal_column("'.000000Z'")
_Z: ColumnElement[str] = literal_column("'Z'")
_UTC: ColumnElement[str] = literal_column("'UTC'")  # literals: the statement binds none


def _json_time(column: ColumnElement[Any], name: str) -> ColumnElement[Any]:
    written = func.to_char(func.timezone(_UTC, column), _FORMAT)
    return func.replace(written, _NO_FRACTION, _Z).label(name)


def times_as_json(statement: Select[Any], names: Sequence[str]) -> Select[Any]:
    """`statement` with its columns called `names` (timestamps) read as JSON text (see
    above): PostgreSQL only."""
    return statement.with_only_columns(
        *(
            _json_time(column, column.name) if column.name in names else column
            for column in statement.selected_columns
        )
    )
