"""The schema exactly as the project's original SQL created it.

Nullable columns and the `llastname` typo included, so that a database made by
that SQL can be adopted with `alembic stamp 0001` and then `alembic upgrade head`.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), autoincrement=True),
        sa.Column("email", sa.String(200)),
        sa.Column("username", sa.String(45)),
        sa.Column("firstname", sa.String(45)),
        sa.Column("llastname", sa.String(45)),
        sa.Column("hash_password", sa.String(200)),
        sa.Column("is_active", sa.Boolean()),
        sa.Column("role", sa.String(45)),
        sa.PrimaryKeyConstraint("id", name="users_pkey"),
    )
    op.create_table(
        "todos",
        sa.Column("id", sa.Integer(), autoincrement=True),
        sa.Column("title", sa.String(200)),
        sa.Column("description", sa.String(200)),
        sa.Column("priority", sa.Integer()),
        sa.Column("complete", sa.Boolean()),
        sa.Column("owner_id", sa.Integer()),
        sa.PrimaryKeyConstraint("id", name="todos_pkey"),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], name="todos_owner_id_fkey"),
    )


def downgrade() -> None:
    op.drop_table("todos")
    op.drop_table("users")
