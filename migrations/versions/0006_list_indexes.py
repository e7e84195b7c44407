"""Indexes for every shape of list query, so that a page costs what the page holds.

Each sort of GET /todos has an index per owner (and one over all owners, for
/admin/todos) in its exact order: (key, id) for an ascending sort, and (key, -id)
for a descending one, since "key descending, id ascending" is (key, -id) read
backwards. A keyset page (a cursor) then starts inside the index, and `total` is an
index-only count. On PostgreSQL, substring search (`q`) uses trigram GIN indexes
(pg_trgm, a contrib extension that ships with PostgreSQL); SQLite has no such index
and scans the owner's rows.

The plain index on todos.owner_id gives way to (owner_id, id), which serves the same
look-ups (and the ON DELETE CASCADE) as well as the default order.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# name: the indexed expressions, as SQL (the models say the same).
TODO_INDEXES = {
    "ix_todos_owner_id_id": ("owner_id", "id"),
    "ix_todos_owner_complete": ("owner_id", "complete", "id"),
    "ix_todos_owner_priority": ("owner_id", "priority", "id"),
    "ix_todos_owner_priority_desc": ("owner_id", "priority", "(-id)"),
    "ix_todos_owner_title": ("owner_id", "lower(title)", "id"),
    "ix_todos_owner_title_desc": ("owner_id", "lower(title)", "(-id)"),
    "ix_todos_owner_created": ("owner_id", "created_at", "id"),
    "ix_todos_owner_created_desc": ("owner_id", "created_at", "(-id)"),
    "ix_todos_priority": ("priority", "id"),
    "ix_todos_priority_desc": ("priority", "(-id)"),
    "ix_todos_title": ("lower(title)", "id"),
    "ix_todos_title_desc": ("lower(title)", "(-id)"),
    "ix_todos_created": ("created_at", "id"),
    "ix_todos_created_desc": ("created_at", "(-id)"),
}
# PostgreSQL only: trigram indexes for case-insensitive substring search (ILIKE).
SEARCH_INDEXES = {
    "ix_todos_search": ("todos", ("title", "description")),
    "ix_users_search": ("users", ("username", "email", "firstname", "lastname")),
}


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for name, expressions in TODO_INDEXES.items():
        op.create_index(name, "todos", [sa.text(e) for e in expressions])
    op.drop_index("ix_todos_owner_id", table_name="todos")
    if postgresql:
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        for name, (table, columns) in SEARCH_INDEXES.items():
            op.create_index(
                name,
                table,
                list(columns),
                postgresql_using="gin",
                postgresql_ops=dict.fromkeys(columns, "gin_trgm_ops"),
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name, (table, _columns) in SEARCH_INDEXES.items():
            op.drop_index(name, table_name=table)
        # Fails (and changes nothing) if something else has come to use pg_trgm.
        op.execute("DROP EXTENSION IF EXISTS pg_trgm")
    op.create_index("ix_todos_owner_id", "todos", ["owner_id"])
    for name in reversed(TODO_INDEXES):
        op.drop_index(name, table_name="todos")
