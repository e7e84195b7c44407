"""Todo counts kept by the database: an exact `total` without counting rows.

`todo_counts` holds, per owner, how many todos they have for each (complete, priority)
pair: at most ten rows an owner. Triggers on todos keep it exact in the statement that
writes the todos, so a page's total is the sum of at most ten rows (at most 10 x users
rows for /admin/todos) instead of a count of every matching todo. Only `q` still counts
the matching rows (through the trigram index on PostgreSQL).

PostgreSQL: statement-level triggers with transition tables: one upsert per statement
whatever its size (a bulk load included), in key order so that concurrent writers lock
counter rows in one order and never deadlock; decrements never insert, so the counts of
a user being deleted (cascading to their todos and counts) are simply gone. SQLite:
row-level triggers (its writers are serialised anyway).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

POSTGRESQL_FUNCTION = """
CREATE FUNCTION todo_counts_follow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- One change per (owner, complete, priority), applied in key order. A decrement
    -- only ever meets an existing row; for a deleted owner there is none left to meet.
    IF TG_OP = 'INSERT' THEN
        INSERT INTO todo_counts AS c (owner_id, complete, priority, todos)
        SELECT owner_id, complete, priority, count(*) FROM new_rows
        GROUP BY owner_id, complete, priority ORDER BY owner_id, complete, priority
        ON CONFLICT (owner_id, complete, priority) DO UPDATE SET todos = c.todos + excluded.todos;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO todo_counts AS c (owner_id, complete, priority, todos)
        SELECT d.owner_id, d.complete, d.priority, -count(*) FROM old_rows d
        WHERE EXISTS (SELECT FROM users u WHERE u.id = d.owner_id)
        GROUP BY d.owner_id, d.complete, d.priority ORDER BY 1, 2, 3
        ON CONFLICT (owner_id, complete, priority) DO UPDATE SET todos = c.todos + excluded.todos;
    ELSE
        INSERT INTO todo_counts AS c (owner_id, complete, priority, todos)
        SELECT owner_id, complete, priority, sum(change) FROM (
            SELECT owner_id, complete, priority, 1 AS change FROM new_rows
            UNION ALL
            SELECT owner_id, complete, priority, -1 FROM old_rows
        ) AS changes
        GROUP BY owner_id, complete, priority HAVING sum(change) <> 0
        ORDER BY owner_id, complete, priority
        ON CONFLICT (owner_id, complete, priority) DO UPDATE SET todos = c.todos + excluded.todos;
    END IF;
    RETURN NULL;
END
$$
"""
POSTGRESQL_TRIGGERS = [
    "CREATE TRIGGER todo_counts_insert AFTER INSERT ON todos "
    "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION todo_counts_follow()",
    "CREATE TRIGGER todo_counts_update AFTER UPDATE ON todos "
    "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION todo_counts_follow()",
    "CREATE TRIGGER todo_counts_delete AFTER DELETE ON todos "
    "REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION todo_counts_follow()",
]

_SQLITE_ADD = (
    "INSERT INTO todo_counts (owner_id, complete, priority, todos) "
    "VALUES (NEW.owner_id, NEW.complete, NEW.priority, 1) "
    "ON CONFLICT (owner_id, complete, priority) DO UPDATE SET todos = todos + 1;"
)
_SQLITE_REMOVE = (
    "UPDATE todo_counts SET todos = todos - 1 WHERE owner_id = OLD.owner_id "
    "AND complete = OLD.complete AND priority = OLD.priority;"
)
SQLITE_TRIGGERS = [
    f"CREATE TRIGGER todo_counts_insert AFTER INSERT ON todos BEGIN {_SQLITE_ADD} END",
    "CREATE TRIGGER todo_counts_update AFTER UPDATE OF owner_id, complete, priority ON todos "
    f"BEGIN {_SQLITE_REMOVE} {_SQLITE_ADD} END",
    f"CREATE TRIGGER todo_counts_delete AFTER DELETE ON todos BEGIN {_SQLITE_REMOVE} END",
]
TRIGGERS = ("todo_counts_insert", "todo_counts_update", "todo_counts_delete")


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "todo_counts",
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("complete", sa.Boolean(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("todos", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("owner_id", "complete", "priority", name="todo_counts_pkey"),
        sa.ForeignKeyConstraint(
            ["owner_id"],
            ["users.id"],
            name="fk_todo_counts_owner_id_users",
            ondelete="CASCADE",
        ),
    )
    op.execute(
        "INSERT INTO todo_counts (owner_id, complete, priority, todos) "
        "SELECT owner_id, complete, priority, count(*) FROM todos "
        "GROUP BY owner_id, complete, priority"
    )
    if postgresql:
        op.execute(POSTGRESQL_FUNCTION)
    for trigger in POSTGRESQL_TRIGGERS if postgresql else SQLITE_TRIGGERS:
        op.execute(trigger)


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for trigger in TRIGGERS:
        op.execute(f"DROP TRIGGER {trigger}" + (" ON todos" if postgresql else ""))
    if postgresql:
        op.execute("DROP FUNCTION todo_counts_follow()")
    op.drop_table("todo_counts")
