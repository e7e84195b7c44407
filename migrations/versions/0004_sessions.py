"""Sessions: one row per login (device), holding the hash of its current refresh token.

Access tokens name their session (claim `sid`); a request is authenticated only while
that session lives. `refresh_hash` is the SHA-256 of the current refresh token's secret
(never the token), `generation` counts rotations, `ended_at` / `end_reason` say whether
and why the session ended. Ended and idle sessions are purged in small batches.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _now(dialect: str) -> sa.TextClause:
    if dialect == "sqlite":
        return sa.text("(strftime('%Y-%m-%d %H:%M:%f', 'now'))")
    return sa.text("statement_timestamp()")


def upgrade() -> None:
    now = _now(op.get_bind().dialect.name)
    op.create_table(
        "sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=now),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=False, server_default=now),
        sa.Column("user_agent", sa.String(255), nullable=True),
        sa.Column("refresh_hash", sa.String(64), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_reason", sa.String(20), nullable=True),
        sa.PrimaryKeyConstraint("id", name="sessions_pkey"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_sessions_user_id_users", ondelete="CASCADE"
        ),
        sa.CheckConstraint(
            "(ended_at IS NULL) = (end_reason IS NULL)", name=op.f("ck_sessions_ended")
        ),
        # A purged session's id is never handed out again (SQLite would reuse it).
        sqlite_autoincrement=True,
    )
    op.create_index("ix_sessions_user_id", "sessions", ["user_id"])
    op.create_index("ix_sessions_last_used_at", "sessions", ["last_used_at"])
    op.create_index("ix_sessions_ended_at", "sessions", ["ended_at"])


def downgrade() -> None:
    op.drop_index("ix_sessions_ended_at", table_name="sessions")
    op.drop_index("ix_sessions_last_used_at", table_name="sessions")
    op.drop_index("ix_sessions_user_id", table_name="sessions")
    op.drop_table("sessions")
