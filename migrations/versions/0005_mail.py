"""Mail: users.is_verified, single-use mail tokens, and the outbox.

`is_verified` is false for every existing account: nobody has proved an address yet
(README, Mail, says how to mark old accounts verified if you trust their addresses).
`mail_tokens` holds only SHA-256 digests of reset and verification tokens;
`mail_outbox` holds the mail waiting for the delivery worker, without any token.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NEVER_REUSE_IDS = {"sqlite_autoincrement": True}
KINDS = "('password_reset', 'verify_email')"


def upgrade() -> None:
    op.add_column(
        "users", sa.Column("is_verified", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    op.create_table(
        "mail_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("purpose", sa.String(20), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("bound_to", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="mail_tokens_pkey"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_mail_tokens_user_id_users", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("token_hash", name="uq_mail_tokens_token_hash"),
        sa.CheckConstraint(f"purpose IN {KINDS}", name=op.f("ck_mail_tokens_purpose")),
        **NEVER_REUSE_IDS,
    )
    op.create_index("ix_mail_tokens_user_id_purpose", "mail_tokens", ["user_id", "purpose"])
    op.create_index("ix_mail_tokens_created_at", "mail_tokens", ["created_at"])

    op.create_table(
        "mail_outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("recipient", sa.String(200), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(10), nullable=False, server_default="queued"),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(200), nullable=True),
        sa.PrimaryKeyConstraint("id", name="mail_outbox_pkey"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_mail_outbox_user_id_users", ondelete="CASCADE"
        ),
        sa.CheckConstraint(f"kind IN {KINDS}", name=op.f("ck_mail_outbox_kind")),
        sa.CheckConstraint(
            "status IN ('queued', 'sent', 'dropped', 'failed')", name=op.f("ck_mail_outbox_status")
        ),
        **NEVER_REUSE_IDS,
    )
    op.create_index(
        "ix_mail_outbox_due",
        "mail_outbox",
        ["next_attempt_at"],
        postgresql_where=sa.text("status = 'queued'"),
        sqlite_where=sa.text("status = 'queued'"),
    )
    op.create_index("ix_mail_outbox_finished_at", "mail_outbox", ["finished_at"])
    op.create_index("ix_mail_outbox_user_id", "mail_outbox", ["user_id"])


def downgrade() -> None:
    op.drop_table("mail_outbox")
    op.drop_table("mail_tokens")
    # SQLite drops a column in place (3.35+), keeping the users table and its indexes.
    op.drop_column("users", "is_verified")
