"""A version on every user and todo: the validator behind ETag and If-Match.

Each write to a row bumps its `version` in the same statement, so a write made with
`If-Match` can check and bump in one step (see services.todos.update_todo).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("users", "todos")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("version", sa.Integer(), nullable=False, server_default="1"))


def downgrade() -> None:
    # A plain DROP COLUMN, on SQLite too (3.35+): rebuilding the tables in batch mode
    # would lose the expression indexes on users, which SQLite cannot reflect.
    for table in reversed(TABLES):
        op.drop_column(table, "version")
