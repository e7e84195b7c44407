"""Todo totals across owners: /admin/todos' `total` without summing every owner's counts.

0007's `todo_counts` gives one owner's total in at most ten rows, but the total of every
owner's todos (/admin/todos, filtered by `complete` or `priority` or not) summed every
row of it: up to ten per user, 10,000 rows for 1,000 users, about a millisecond of
PostgreSQL's time per page, growing with the users. `todo_totals` keeps the same
counts summed per stripe of owners (owner_id % 16) and (complete, priority): at most
160 rows, however many users and todos. Stripes rather than one row per (complete,
priority), so that writers of different owners seldom wait for the same row.

The triggers that keep `todo_counts` keep it too, in the same statement, after
`todo_counts` (a writer locks counter rows in one order: no deadlock). Unlike an
owner's counts, a deleted owner's todos leave the totals as they go. On PostgreSQL a
TRUNCATE of todos (which fires no DELETE trigger) empties both.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STRIPES = 16

# 0007's statements for todo_counts, then the same changes for todo_totals.
_COUNTS_INSERT = """
        INSERT INTO todo_counts AS c (owner_id, complete, priority, todos)
        SELECT owner_id, complete, priority, count(*) FROM new_rows
        GROUP BY owner_id, complete, priority ORDER BY owner_id, complete, priority
        ON CONFLICT (owner_id, complete, priority) DO UPDATE SET todos = c.todos + excluded.todos;
""".rstrip("\n")
_COUNTS_DELETE = """
        INSERT INTO todo_counts AS c (owner_id, complete, priority, todos)
        SELECT d.owner_id, d.complete, d.priority, -count(*) FROM old_rows d
        WHERE EXISTS (SELECT FROM users u WHERE u.id = d.owner_id)
        GROUP BY d.owner_id, d.complete, d.priority ORDER BY 1, 2, 3
        ON CONFLICT (owner_id, complete, priority) DO UPDATE SET todos = c.todos + excluded.todos;
""".rstrip("\n")
_COUNTS_UPDATE = """
        INSERT INTO todo_counts AS c (owner_id, complete, priority, todos)
        SELECT owner_id, complete, priority, sum(change) FROM (
            SELECT owner_id, complete, priority, 1 AS change FROM new_rows
            UNION ALL
            SELECT owner_id, complete, priority, -1 FROM old_rows
        ) AS changes
        GROUP BY owner_id, complete, priority HAVING sum(change) <> 0
        ORDER BY owner_id, complete, priority
        ON CONFLICT (owner_id, complete, priority) DO UPDATE SET todos = c.todos + excluded.todos;
""".rstrip("\n")
_TOTALS_INSERT = f"""
        INSERT INTO todo_totals AS t (stripe, complete, priority, todos)
        SELECT mod(owner_id, {STRIPES}), complete, priority, count(*) FROM new_rows
        GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (stripe, complete, priority) DO UPDATE SET todos = t.todos + excluded.todos;
""".rstrip("\n")
_TOTALS_DELETE = f"""
        INSERT INTO todo_totals AS t (stripe, complete, priority, todos)
        SELECT mod(owner_id, {STRIPES}), complete, priority, -count(*) FROM old_rows
        GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (stripe, complete, priority) DO UPDATE SET todos = t.todos + excluded.todos;
""".rstrip("\n")
_TOTALS_UPDATE = f"""
        INSERT INTO todo_totals AS t (stripe, complete, priority, todos)
        SELECT mod(owner_id, {STRIPES}), complete, priority, sum(change) FROM (
            SELECT owner_id, complete, priority, 1 AS change FROM new_rows
            UNION ALL
            SELECT owner_id, complete, priority, -1 FROM old_rows
        ) AS changes
        GROUP BY 1, 2, 3 HAVING sum(change) <> 0 ORDER BY 1, 2, 3
        ON CONFLICT (stripe, complete, priority) DO UPDATE SET todos = t.todos + excluded.todos;
""".rstrip("\n")


def _function(with_totals: bool) -> str:
    insert, delete, update = (
        (
            _COUNTS_INSERT + _TOTALS_INSERT,
            _COUNTS_DELETE + _TOTALS_DELETE,
            _COUNTS_UPDATE + _TOTALS_UPDATE,
        )
        if with_totals
        else (_COUNTS_INSERT, _COUNTS_DELETE, _COUNTS_UPDATE)
    )
    totals = (
        f"""
    -- Then the same changes per stripe of owners (owner_id mod {STRIPES}) in todo_totals, also
    -- for a deleted owner: their todos leave the totals as they go."""
        if with_totals
        else ""
    )
    return f"""
CREATE OR REPLACE FUNCTION todo_counts_follow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- One change per (owner, complete, priority), applied in key order. A decrement
    -- only ever meets an existing row; for a deleted owner there is none left to meet.{totals}
    IF TG_OP = 'INSERT' THEN{insert}
    ELSIF TG_OP = 'DELETE' THEN{delete}
    ELSE{update}
    END IF;
    RETURN NULL;
END
$$
"""


# TRUNCATE fires no DELETE trigger: the counts and totals go with the todos all the same.
POSTGRESQL_TRUNCATED = """
CREATE FUNCTION todo_counts_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- TRUNCATE todos fires no DELETE trigger: every count goes with the todos.
    DELETE FROM todo_counts;
    DELETE FROM todo_totals;
    RETURN NULL;
END
$$
"""
POSTGRESQL_TRUNCATE_TRIGGER = (
    "CREATE TRIGGER todo_counts_truncate AFTER TRUNCATE ON todos "
    "FOR EACH STATEMENT EXECUTE FUNCTION todo_counts_truncated()"
)

_SQLITE_ADD = (
    "INSERT INTO todo_counts (owner_id, complete, priority, todos) "
    "VALUES (NEW.owner_id, NEW.complete, NEW.priority, 1) "
    "ON CONFLICT (owner_id, complete, priority) DO UPDATE SET todos = todos + 1;"
)
_SQLITE_REMOVE = (
    "UPDATE todo_counts SET todos = todos - 1 WHERE owner_id = OLD.owner_id "
    "AND complete = OLD.complete AND priority = OLD.priority;"
)
_SQLITE_ADD_TOTAL = (
    "INSERT INTO todo_totals (stripe, complete, priority, todos) "
    f"VALUES (NEW.owner_id % {STRIPES}, NEW.complete, NEW.priority, 1) "
    "ON CONFLICT (stripe, complete, priority) DO UPDATE SET todos = todos + 1;"
)
_SQLITE_REMOVE_TOTAL = (
    f"UPDATE todo_totals SET todos = todos - 1 WHERE stripe = OLD.owner_id % {STRIPES} "
    "AND complete = OLD.complete AND priority = OLD.priority;"
)


def _sqlite_triggers(with_totals: bool) -> list[str]:
    add = _SQLITE_ADD + (f" {_SQLITE_ADD_TOTAL}" if with_totals else "")
    remove = _SQLITE_REMOVE + (f" {_SQLITE_REMOVE_TOTAL}" if with_totals else "")
    return [
        f"CREATE TRIGGER todo_counts_insert AFTER INSERT ON todos BEGIN {add} END",
        "CREATE TRIGGER todo_counts_update AFTER UPDATE OF owner_id, complete, priority "
        f"ON todos BEGIN {remove} {add} END",
        f"CREATE TRIGGER todo_counts_delete AFTER DELETE ON todos BEGIN {remove} END",
    ]


def _replace_sqlite_triggers(with_totals: bool) -> None:
    for trigger in ("todo_counts_insert", "todo_counts_update", "todo_counts_delete"):
        op.execute(f"DROP TRIGGER {trigger}")
    for trigger in _sqlite_triggers(with_totals):
        op.execute(trigger)


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "todo_totals",
        sa.Column("stripe", sa.Integer(), nullable=False),
        sa.Column("complete", sa.Boolean(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("todos", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("stripe", "complete", "priority", name="todo_totals_pkey"),
    )
    # Written while the todos cannot change (the table is locked until the triggers keep
    # the totals), so that no write falls between the sums and the triggers.
    if postgresql:
        op.execute("LOCK TABLE todos IN SHARE MODE")
    op.execute(
        "INSERT INTO todo_totals (stripe, complete, priority, todos) "
        f"SELECT owner_id % {STRIPES}, complete, priority, count(*) FROM todos "
        "GROUP BY 1, 2, 3"
    )
    if postgresql:
        op.execute(_function(with_totals=True))
        op.execute(POSTGRESQL_TRUNCATED)
        op.execute(POSTGRESQL_TRUNCATE_TRIGGER)
    else:
        _replace_sqlite_triggers(with_totals=True)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER todo_counts_truncate ON todos")
        op.execute("DROP FUNCTION todo_counts_truncated()")
        op.execute(_function(with_totals=False))
    else:
        _replace_sqlite_triggers(with_totals=False)
    op.drop_table("todo_totals")
