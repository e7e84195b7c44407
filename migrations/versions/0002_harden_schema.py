"""Harden the original schema: fix the typo, require what the contract requires.

Renames `llastname` to `lastname`; NOT NULL and defaults where the contract has
them; case-insensitive unique usernames and emails; priority between 1 and 5;
an index on todos.owner_id and ON DELETE CASCADE; created_at / updated_at on
todos; users.token_version for token revocation.

Existing rows survive. NULLs that have a contract default get it, emails are
lower-cased and roles normalised. Rows that cannot be repaired without guessing
stop the upgrade before anything changes, with a listing of them.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from alembic.util import CommandError

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# An unusable password hash (as in /etc/shadow): a legacy user without a hash
# keeps their account and todos but cannot log in with any password.
UNUSABLE_HASH = "!"

# Each query lists rows that no default can repair; the first column identifies the row.
UNREPAIRABLE = {
    "users without a username": (
        "SELECT id FROM users WHERE username IS NULL OR trim(username) = '' ORDER BY id"
    ),
    "users without an email": (
        "SELECT id FROM users WHERE email IS NULL OR trim(email) = '' ORDER BY id"
    ),
    "usernames taken twice ignoring case": (
        "SELECT lower(username), count(*) FROM users WHERE username IS NOT NULL "
        "GROUP BY lower(username) HAVING count(*) > 1 ORDER BY 1"
    ),
    "emails taken twice ignoring case": (
        "SELECT lower(email), count(*) FROM users WHERE email IS NOT NULL "
        "GROUP BY lower(email) HAVING count(*) > 1 ORDER BY 1"
    ),
    "users whose role is neither 'user' nor 'admin'": (
        "SELECT id, role FROM users WHERE role IS NOT NULL "
        "AND lower(trim(role)) NOT IN ('user', 'admin') ORDER BY id"
    ),
    "todos without an owner": (
        "SELECT id FROM todos WHERE owner_id IS NULL "
        "OR owner_id NOT IN (SELECT id FROM users) ORDER BY id"
    ),
    "todos without a title": (
        "SELECT id FROM todos WHERE title IS NULL OR trim(title) = '' ORDER BY id"
    ),
    "todos whose priority is missing or outside 1-5": (
        "SELECT id, priority FROM todos WHERE priority IS NULL "
        "OR priority < 1 OR priority > 5 ORDER BY id"
    ),
}


def _refuse_unrepairable_rows(connection: sa.Connection) -> None:
    problems = []
    for what, query in UNREPAIRABLE.items():
        rows = connection.execute(sa.text(query)).all()
        if rows:
            listed = ", ".join(
                str(row[0]) if len(row) == 1 else f"{row[0]} ({row[1]})" for row in rows[:50]
            )
            more = f" and {len(rows) - 50} more" if len(rows) > 50 else ""
            problems.append(f"  - {what}: {listed}{more}")
    if problems:
        raise CommandError(
            "0002 cannot repair these rows without guessing; fix them, then run "
            "`alembic upgrade head` again (nothing was changed):\n" + "\n".join(problems)
        )


def _now(dialect: str) -> sa.TextClause:
    if dialect == "sqlite":
        return sa.text("(strftime('%Y-%m-%d %H:%M:%f', 'now'))")
    # The statement's start: one value for every column a statement fills, yet it
    # moves from one statement to the next inside a transaction (unlike now()).
    return sa.text("statement_timestamp()")


def upgrade() -> None:
    connection = op.get_bind()
    dialect = connection.dialect.name
    _refuse_unrepairable_rows(connection)

    connection.execute(
        sa.text(
            "UPDATE users SET role = coalesce(lower(trim(role)), 'user'), "
            "is_active = coalesce(is_active, true), email = lower(trim(email)), "
            f"hash_password = coalesce(hash_password, '{UNUSABLE_HASH}')"
        )
    )
    connection.execute(
        sa.text(
            "UPDATE todos SET description = coalesce(description, ''), "
            "complete = coalesce(complete, false)"
        )
    )

    recreate = "always" if dialect == "sqlite" else "auto"
    # SQLite reuses the highest id after a delete unless AUTOINCREMENT is on: a token
    # of a deleted user would then open the account that gets its id next.
    never_reuse_ids = {"sqlite_autoincrement": True}
    with op.batch_alter_table("users", recreate=recreate, table_kwargs=never_reuse_ids) as batch:
        batch.alter_column("llastname", new_column_name="lastname", existing_type=sa.String(45))
        for column, length in (("email", 200), ("username", 45), ("hash_password", 200)):
            batch.alter_column(column, existing_type=sa.String(length), nullable=False)
        batch.alter_column(
            "is_active", existing_type=sa.Boolean(), nullable=False, server_default=sa.true()
        )
        batch.alter_column(
            "role", existing_type=sa.String(45), nullable=False, server_default="user"
        )
        batch.add_column(
            sa.Column("token_version", sa.Integer(), nullable=False, server_default="0")
        )
        batch.create_check_constraint(op.f("ck_users_role"), "role IN ('user', 'admin')")
    op.create_index("uq_users_lower_username", "users", [sa.text("lower(username)")], unique=True)
    op.create_index("uq_users_lower_email", "users", [sa.text("lower(email)")], unique=True)

    with op.batch_alter_table("todos", recreate=recreate, table_kwargs=never_reuse_ids) as batch:
        batch.alter_column("title", existing_type=sa.String(200), nullable=False)
        batch.alter_column(
            "description", existing_type=sa.String(200), nullable=False, server_default=""
        )
        batch.alter_column("priority", existing_type=sa.Integer(), nullable=False)
        batch.alter_column(
            "complete", existing_type=sa.Boolean(), nullable=False, server_default=sa.false()
        )
        batch.alter_column("owner_id", existing_type=sa.Integer(), nullable=False)
        batch.drop_constraint("todos_owner_id_fkey", type_="foreignkey")
        batch.create_foreign_key(
            "fk_todos_owner_id_users", "users", ["owner_id"], ["id"], ondelete="CASCADE"
        )
        batch.create_check_constraint(op.f("ck_todos_priority"), "priority BETWEEN 1 AND 5")
        for column in ("created_at", "updated_at"):
            batch.add_column(
                sa.Column(
                    column,
                    sa.DateTime(timezone=True),
                    nullable=False,
                    server_default=_now(dialect),
                )
            )
    op.create_index("ix_todos_owner_id", "todos", ["owner_id"])


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    recreate = "always" if dialect == "sqlite" else "auto"
    op.drop_index("ix_todos_owner_id", table_name="todos")
    with op.batch_alter_table("todos", recreate=recreate) as batch:
        batch.drop_column("updated_at")
        batch.drop_column("created_at")
        batch.drop_constraint(op.f("ck_todos_priority"), type_="check")
        batch.drop_constraint("fk_todos_owner_id_users", type_="foreignkey")
        batch.create_foreign_key("todos_owner_id_fkey", "users", ["owner_id"], ["id"])
        for column, type_ in (
            ("title", sa.String(200)),
            ("priority", sa.Integer()),
            ("owner_id", sa.Integer()),
        ):
            batch.alter_column(column, existing_type=type_, nullable=True)
        batch.alter_column(
            "description", existing_type=sa.String(200), nullable=True, server_default=None
        )
        batch.alter_column(
            "complete", existing_type=sa.Boolean(), nullable=True, server_default=None
        )

    op.drop_index("uq_users_lower_email", table_name="users")
    op.drop_index("uq_users_lower_username", table_name="users")
    with op.batch_alter_table("users", recreate=recreate) as batch:
        batch.drop_constraint(op.f("ck_users_role"), type_="check")
        batch.drop_column("token_version")
        batch.alter_column("role", existing_type=sa.String(45), nullable=True, server_default=None)
        batch.alter_column(
            "is_active", existing_type=sa.Boolean(), nullable=True, server_default=None
        )
        for column, length in (("email", 200), ("username", 45), ("hash_password", 200)):
            batch.alter_column(column, existing_type=sa.String(length), nullable=True)
        batch.alter_column("lastname", new_column_name="llastname", existing_type=sa.String(45))
