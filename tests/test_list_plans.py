"""Every shape of list query reads through an index on PostgreSQL: no sequential scan of
todos with 100,000 rows for one owner, whatever the sort, filter, search or depth."""

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, Select, create_engine, text

from tests.conftest import create_pg_database, drop_pg_database, migrate
from todoapp import fastlane
from todoapp.database import database_url
from todoapp.services import todos, users

pytestmark = pytest.mark.postgres_only

SORTS = ["id", "-id", "priority", "-priority", "title", "-title", "created_at", "-created_at"]
FILTERS = {
    "plain": {},
    "complete": {"complete": True},
    "priority": {"priority": 3},
    "q": {"q": "task 99"},
    "complete and q": {"complete": False, "q": "note 12"},
}
# A row in the middle of the big owner's todos, as a cursor would carry it.
AFTER = {
    "id": 50_000,
    "priority": 3,
    "title": "task 50000",
    "created_at": "2026-01-01T13:53:20+00:00",
}


@pytest.fixture(scope="module")
def big_database(pg_server: str) -> Iterator[Engine]:
    """One owner with 100,000 todos, 201 owners with 100 each, analysed."""
    url = create_pg_database(pg_server)
    migrate(url)
    engine = create_engine(database_url(url))
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO users (email, username, hash_password) "
                    "SELECT 'u' || g || '@example.com', 'u' || g, '!' "
                    "FROM generate_series(1, 202) g"
                )
            )
            connection.execute(
                text(
                    "INSERT INTO todos (title, description, priority, complete, owner_id, "
                    "created_at) "
                    "SELECT 'task ' || g, 'note ' || g, g % 5 + 1, g % 3 = 0, "
                    "CASE WHEN g <= 100000 THEN 1 ELSE 2 + (g - 100001) / 100 END, "
                    "timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second' "
                    "FROM generate_series(1, 120100) g"
                )
            )
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE todos"))
            connection.execute(text("ANALYZE users"))
        yield engine
    finally:
        engine.dispose()
        drop_pg_database(pg_server, url)


def plan(engine: Engine, statement: Select[Any], params: dict[str, Any]) -> str:
    compiled = statement.compile(dialect=engine.dialect)
    values = {**compiled.params, **params}
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(f"EXPLAIN {compiled}", values).all()
    return "\n".join(row[0] for row in rows)


def shapes() -> list[tuple[str, bool, str, bool]]:
    return [
        (sort, owner, name, after_cursor)
        for sort in SORTS
        for owner in (True, False)
        for name in FILTERS
        for after_cursor in (False, True)
    ]


@pytest.mark.parametrize(
    ("sort", "owner", "filters", "after_cursor"),
    shapes(),
    ids=[
        f"{'todos' if o else 'admin'}-{s}-{f}-{'cursor' if c else 'offset'}"
        for s, o, f, c in shapes()
    ],
)
def test_each_list_shape_reads_through_an_index(
    big_database: Engine, sort: str, owner: bool, filters: str, after_cursor: bool
) -> None:
    chosen = FILTERS[filters]
    page, count = todos._statements(
        sort, owner, "complete" in chosen, "priority" in chosen, "q" in chosen, after_cursor
    )
    params: dict[str, Any] = {
        "owner_id": 1,
        "complete": chosen.get("complete"),
        "priority": chosen.get("priority"),
        "pattern": todos.like_pattern(chosen["q"]) if "q" in chosen else None,
        "limit": 21,
        "offset": 0,
        "after_id": AFTER["id"],
        "after_key": AFTER.get(sort.lstrip("-")),
    }
    page_plan = plan(big_database, page, params)
    assert "Seq Scan on todos" not in page_plan, page_plan
    assert "Index" in page_plan, page_plan
    if not after_cursor:
        # The count reads todo_counts, or for a search the trigram index (an owner's
        # search may also read the owner's rows through their index).
        count_plan = plan(big_database, count, params)
        assert "Seq Scan on todos" not in count_plan, count_plan


@pytest.mark.parametrize("owner_id", [1, 2])
def test_the_fast_lanes_statement_reads_its_page_through_an_index(
    big_database: Engine, owner_id: int
) -> None:
    statement = fastlane.lane_statement()  # the statement the lane runs
    found = plan(
        big_database,
        statement,
        {
            "user_id": owner_id,
            "token_version": 0,
            "session_id": 1,
            "idle_since": datetime(2026, 1, 1, tzinfo=UTC),
            "limit": 21,
            "offset": 0,
        },
    )
    assert "Index Scan using ix_todos_owner_id_id on todos " in found, found
    assert "Seq Scan on todos" not in found, found


def test_an_owners_search_is_counted_through_the_index_led_by_the_owner(
    big_database: Engine,
) -> None:
    # Migration 0008: the search walks the owner's own entries of the trigram index
    # (btree_gin), not every owner's matches picked out afterwards.
    _page, count = todos._statements("id", True, False, False, True, False)
    params = {"owner_id": 1, "pattern": todos.like_pattern("task 99")}
    found = plan(big_database, count, params)
    assert "ix_todos_owner_search" in found, found
    assert "(owner_id = 1) AND" in found, found  # the owner is in the index condition


@pytest.mark.parametrize(
    ("role", "is_active"), [(False, False), (True, False), (False, True), (True, True)]
)
def test_the_admin_users_total_reads_the_kept_totals_not_the_users(
    big_database: Engine, role: bool, is_active: bool
) -> None:
    # Migration 0010: /admin/users' total sums at most 64 rows of user_totals, however
    # many users there are; only a search counts users. The first page's statement (the
    # caller's check, the page and its total) reads the totals...
    statement, count = users._user_statements(role, is_active, False, False)
    assert count is None  # ...which it carries itself
    params = {
        "user_id": 1,
        "token_version": 0,
        "session_id": 1,
        "idle_since": datetime(2026, 1, 1, tzinfo=UTC),
        "role": "user",
        "is_active": True,
        "limit": 21,
        "offset": 0,
    }
    assert "on user_totals" in plan(big_database, statement, params)
    # ...and the sum it runs never reads users.
    found = plan(big_database, users._user_count(role, is_active), params)
    assert "on user_totals" in found, found
    assert "on users" not in found, found
