"""User totals: /admin/users' `total` without counting every user.

The first page of /admin/users (filtered by `role` or `is_active` or not) counted the
users on every request: at 1,000 users about half of the page's time in PostgreSQL,
and growing with the users. `user_totals` keeps how many users there are per stripe
of users (id % 16), `role` and `is_active`: at most 64 rows, however many users. Only
`q` still counts the matching rows (through the trigram index on PostgreSQL).

Row-level triggers on both databases: users are written one at a time (a registration,
an admin's change, a deletion), and an UPDATE trigger with a column list and a WHEN
condition costs nothing to the many updates of a user that change neither `role` nor
`is_active` (a login, a password change, a verification). Stripes, as for
`todo_totals`, so that concurrent registrations seldom wait for the same row. A
change of role or active flag moves a user between two rows (one increment, one
decrement), taken in key order on PostgreSQL, so that two users moving in opposite
directions never deadlock (an admin's changes are serialised anyway: see
users.admin_update_user; the CLI's promote is not). On PostgreSQL a TRUNCATE of users
(which fires no DELETE trigger) empties the totals. On SQLite, as for todo_counts, a
REPLACE that deletes a user row fires no DELETE trigger: the app never writes one.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STRIPES = 16

POSTGRESQL_FUNCTIONS = [
    """
CREATE FUNCTION user_totals_follow() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    -- Whether the user joins its new (stripe, role, is_active) before it leaves its old
    -- one: the row with the lower key first, as every writer takes them, so that two
    -- users moving between the same two rows in opposite directions never wait for each
    -- other in a circle. A decrement only ever meets an existing row.
    join_first boolean := TG_OP = 'INSERT';
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF ROW(mod(NEW.id, 16), NEW.role, NEW.is_active)
                = ROW(mod(OLD.id, 16), OLD.role, OLD.is_active) THEN
            RETURN NULL;  -- a new id in the same stripe: the same row
        END IF;
        join_first := ROW(mod(NEW.id, 16), NEW.role, NEW.is_active)
            < ROW(mod(OLD.id, 16), OLD.role, OLD.is_active);
    END IF;
    IF join_first THEN
        INSERT INTO user_totals AS t (stripe, role, is_active, users)
        VALUES (mod(NEW.id, 16), NEW.role, NEW.is_active, 1)
        ON CONFLICT (stripe, role, is_active) DO UPDATE SET users = t.users + 1;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        UPDATE user_totals SET users = users - 1
        WHERE stripe = mod(OLD.id, 16) AND role = OLD.role AND is_active = OLD.is_active;
    END IF;
    IF TG_OP = 'UPDATE' AND NOT join_first THEN
        INSERT INTO user_totals AS t (stripe, role, is_active, users)
        VALUES (mod(NEW.id, 16), NEW.role, NEW.is_active, 1)
        ON CONFLICT (stripe, role, is_active) DO UPDATE SET users = t.users + 1;
    END IF;
    RETURN NULL;
END
$$
""",
    """
CREATE FUNCTION user_totals_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- TRUNCATE users fires no DELETE trigger: every total goes with the users.
    DELETE FROM user_totals;
    RETURN NULL;
END
$$
""",
]
_CHANGED = (
    "OLD.id IS DISTINCT FROM NEW.id OR OLD.role IS DISTINCT FROM NEW.role "
    "OR OLD.is_active IS DISTINCT FROM NEW.is_active"
)
POSTGRESQL_TRIGGERS = [
    "CREATE TRIGGER user_totals_insert AFTER INSERT ON users "
    "FOR EACH ROW EXECUTE FUNCTION user_totals_follow()",
    "CREATE TRIGGER user_totals_update AFTER UPDATE OF id, role, is_active ON users "
    f"FOR EACH ROW WHEN ({_CHANGED}) EXECUTE FUNCTION user_totals_follow()",
    "CREATE TRIGGER user_totals_delete AFTER DELETE ON users "
    "FOR EACH ROW EXECUTE FUNCTION user_totals_follow()",
    "CREATE TRIGGER user_totals_truncate AFTER TRUNCATE ON users "
    "FOR EACH STATEMENT EXECUTE FUNCTION user_totals_truncated()",
]

_SQLITE_ADD = (
    "INSERT INTO user_totals (stripe, role, is_active, users) "
    f"VALUES (NEW.id % {STRIPES}, NEW.role, NEW.is_active, 1) "
    "ON CONFLICT (stripe, role, is_active) DO UPDATE SET users = users + 1;"
)
_SQLITE_REMOVE = (
    f"UPDATE user_totals SET users = users - 1 WHERE stripe = OLD.id % {STRIPES} "
    "AND role = OLD.role AND is_active = OLD.is_active;"
)
SQLITE_TRIGGERS = [
    f"CREATE TRIGGER user_totals_insert AFTER INSERT ON users BEGIN {_SQLITE_ADD} END",
    "CREATE TRIGGER user_totals_update AFTER UPDATE OF id, role, is_active ON users "
    "WHEN OLD.id IS NOT NEW.id OR OLD.role IS NOT NEW.role "
    f"OR OLD.is_active IS NOT NEW.is_active BEGIN {_SQLITE_REMOVE} {_SQLITE_ADD} END",
    f"CREATE TRIGGER user_totals_delete AFTER DELETE ON users BEGIN {_SQLITE_REMOVE} END",
]


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "user_totals",
        sa.Column("stripe", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(45), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("users", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("stripe", "role", "is_active", name="user_totals_pkey"),
    )
    # Written while the users cannot change (the table is locked until the triggers
    # keep the totals), so that no write falls between the sums and the triggers.
    if postgresql:
        op.execute("LOCK TABLE users IN SHARE MODE")
    op.execute(
        "INSERT INTO user_totals (stripe, role, is_active, users) "
        f"SELECT id % {STRIPES}, role, is_active, count(*) FROM users GROUP BY 1, 2, 3"
    )
    if postgresql:
        for statement in (*POSTGRESQL_FUNCTIONS, *POSTGRESQL_TRIGGERS):
            op.execute(statement)
    else:
        for statement in SQLITE_TRIGGERS:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for trigger in ("insert", "update", "delete", "truncate"):
            op.execute(f"DROP TRIGGER user_totals_{trigger} ON users")
        op.execute("DROP FUNCTION user_totals_truncated()")
        op.execute("DROP FUNCTION user_totals_follow()")
    else:
        for trigger in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER user_totals_{trigger}")
    op.drop_table("user_totals")
