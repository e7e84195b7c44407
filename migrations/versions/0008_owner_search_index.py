"""Substring search (`q`) of one owner's todos by an index that leads with the owner.

0006's trigram index (title, description) finds every todo whose text matches, of every
owner, and the owner's own are then picked out of them: searching the todos of an owner
with 100,000 costs in proportion to all the matching rows of everyone. With btree_gin
(a contrib extension that ships with PostgreSQL, like pg_trgm) the owner becomes the
GIN index's first column, and a search walks only that owner's entries. A GIN index
serves any subset of its columns, so the same index still serves /admin/todos?q=, which
has no owner. SQLite has neither and is unchanged.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TRIGRAMS = {"title": "gin_trgm_ops", "description": "gin_trgm_ops"}


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("CREATE EXTENSION IF NOT EXISTS btree_gin")
    op.create_index(
        "ix_todos_owner_search",
        "todos",
        ["owner_id", *TRIGRAMS],
        postgresql_using="gin",
        postgresql_ops=TRIGRAMS,
    )
    op.drop_index("ix_todos_search", table_name="todos")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.create_index(
        "ix_todos_search",
        "todos",
        list(TRIGRAMS),
        postgresql_using="gin",
        postgresql_ops=TRIGRAMS,
    )
    op.drop_index("ix_todos_owner_search", table_name="todos")
    # Fails (and changes nothing) if something else has come to use btree_gin.
    op.execute("DROP EXTENSION IF EXISTS btree_gin")
