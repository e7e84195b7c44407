"""User and Todo, mirroring the `users` and `todos` tables that the migrations create."""

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    FetchedValue,
    ForeignKey,
    Index,
    Integer,
    String,
    event,
    func,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Mapped, mapped_column, object_session, relationship
from sqlalchemy.sql.expression import FunctionElement
from sqlalchemy.types import TypeDecorator

from todoapp.database import Base


class utcnow(FunctionElement[datetime]):
    """The current UTC time, computed by the database."""

    type = DateTime(timezone=True)
    inherit_cache = True


@compiles(utcnow)
def _utcnow_default(_element: Any, _compiler: Any, **_kw: Any) -> str:
    return "CURRENT_TIMESTAMP"


@compiles(utcnow, "postgresql")
def _utcnow_postgresql(_element: Any, _compiler: Any, **_kw: Any) -> str:
    # Moves with every statement, also inside one transaction (now() does not).
    return "statement_timestamp()"


@compiles(utcnow, "sqlite")
def _utcnow_sqlite(_element: Any, _compiler: Any, **_kw: Any) -> str:
    # Millisecond resolution, so that updated_at moves on two changes in one second.
    return "strftime('%Y-%m-%d %H:%M:%f', 'now')"


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every database.

    PostgreSQL's timestamptz comes back aware already (at no cost); SQLite stores text
    without a zone, read back here as UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def result_processor(self, dialect: Dialect, coltype: object) -> Any:
        parse = self.impl_instance.result_processor(dialect, coltype)
        if dialect.name != "sqlite":
            return parse

        def to_utc(value: Any) -> datetime | None:
            parsed = parse(value) if parse else value
            return parsed.replace(tzinfo=UTC) if parsed is not None else None

        return to_utc


def _sorted_by(name: str, *leading: str, key: str) -> tuple[Index, Index]:
    """The indexes of one sort: (..., key, id) ascending, and (..., key, -id), which read
    backwards is "key descending, id ascending" (see services.todos._order_by)."""

    def part(sql: str) -> Any:
        return text(sql) if "(" in sql else sql  # an expression, or a column's name

    columns = [part(column) for column in (*leading, key)]
    return (
        Index(f"ix_todos_{name}", *columns, "id"),
        Index(f"ix_todos_{name}_desc", *columns, text("(-id)")),
    )


def _trigram(name: str, *columns: str, leading: tuple[str, ...] = ()) -> Index:
    """PostgreSQL only (pg_trgm): case-insensitive substring search (ILIKE) by index;
    `leading` columns first, as plain values (btree_gin), to search within them."""
    return Index(
        name,
        *leading,
        *columns,
        postgresql_using="gin",
        postgresql_ops=dict.fromkeys(columns, "gin_trgm_ops"),
        info={"only_on": "postgresql"},
    ).ddl_if(dialect="postgresql")


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        Index("uq_users_lower_username", func.lower(text("username")), unique=True),
        Index("uq_users_lower_email", func.lower(text("email")), unique=True),
        CheckConstraint("role IN ('user', 'admin')", name="role"),
        _trigram("ix_users_search", "username", "email", "firstname", "lastname"),
        # SQLite would otherwise hand a deleted user's id to the next new user, and a
        # token still held for the old account would then open the new one.
        {"sqlite_autoincrement": True},
    )
    __mapper_args__ = {"eager_defaults": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(200))
    username: Mapped[str] = mapped_column(String(45))
    firstname: Mapped[str | None] = mapped_column(String(45))
    lastname: Mapped[str | None] = mapped_column(String(45))
    hash_password: Mapped[str] = mapped_column(String(200))
    is_active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    role: Mapped[str] = mapped_column(String(45), server_default="user")
    # Bumped by logout, a password change and disabling: older tokens stop working.
    token_version: Mapped[int] = mapped_column(Integer, server_default="0")
    # The ETag's validator: every write to what the User view shows bumps it (see
    # _bump_version); a login's rehash of the password hash does not.
    version: Mapped[int] = mapped_column(Integer, server_default="1")
    # True once the owner proved the address theirs (POST /auth/verify).
    is_verified: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))

    todos: Mapped[list["Todo"]] = relationship(back_populates="owner", passive_deletes=True)


class Todo(Base):
    __tablename__ = "todos"
    # Migration 0006 makes these: one per shape of list query (see its docstring).
    __table_args__ = (
        CheckConstraint("priority BETWEEN 1 AND 5", name="priority"),
        Index("ix_todos_owner_id_id", "owner_id", "id"),
        Index("ix_todos_owner_complete", "owner_id", "complete", "id"),
        *_sorted_by("owner_priority", "owner_id", key="priority"),
        *_sorted_by("owner_title", "owner_id", key="lower(title)"),
        *_sorted_by("owner_created", "owner_id", key="created_at"),
        *_sorted_by("priority", key="priority"),
        *_sorted_by("title", key="lower(title)"),
        *_sorted_by("created", key="created_at"),
        _trigram("ix_todos_owner_search", "title", "description", leading=("owner_id",)),
        {"sqlite_autoincrement": True},
    )
    __mapper_args__ = {"eager_defaults": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(String(200), server_default="")
    priority: Mapped[int] = mapped_column(Integer)
    complete: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, server_default=FetchedValue())
    updated_at: Mapped[datetime] = mapped_column(
        UtcDateTime, server_default=FetchedValue(), onupdate=utcnow()
    )
    version: Mapped[int] = mapped_column(Integer, server_default="1")

    owner: Mapped[User] = relationship(back_populates="todos")


class TodoCount(Base):
    """How many todos an owner has for each (complete, priority): at most ten rows an
    owner, kept exact by triggers on todos (migration 0007), read for a page's total."""

    __tablename__ = "todo_counts"

    owner_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    complete: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    priority: Mapped[int] = mapped_column(Integer, primary_key=True)
    todos: Mapped[int] = mapped_column(Integer)


class TodoTotal(Base):
    """How many todos every owner has for each (complete, priority), summed per stripe
    of owners (owner_id % 16): at most 160 rows, kept exact by the same
    triggers (migration 0009), read for /admin/todos' total."""

    __tablename__ = "todo_totals"

    stripe: Mapped[int] = mapped_column(Integer, primary_key=True)
    complete: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    priority: Mapped[int] = mapped_column(Integer, primary_key=True)
    todos: Mapped[int] = mapped_column(Integer)


class UserTotal(Base):
    """How many users there are for each (role, is_active), per stripe of users
    (id % 16): at most 64 rows, kept exact by triggers on users (migration 0010), read
    for /admin/users' total."""

    __tablename__ = "user_totals"

    stripe: Mapped[int] = mapped_column(Integer, primary_key=True)
    role: Mapped[str] = mapped_column(String(45), primary_key=True)
    is_active: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    users: Mapped[int] = mapped_column(Integer)


@event.listens_for(User, "before_update")
@event.listens_for(Todo, "before_update")
def _bump_version(_mapper: Any, _connection: Any, target: User | Todo) -> None:
    """Every ORM write to a user or todo bumps its version in the same UPDATE.

    As a SQL expression (version + 1), so that two writers never both write the same
    next version; RETURNING brings the new value back (eager_defaults). Writes made
    with Core statements bump it themselves, except a login's rehash of the password
    hash (users.authenticate), which changes nothing a client sees.
    """
    session = object_session(target)
    if session is not None and session.is_modified(target, include_collections=False):
        target.version = type(target).version + 1


class UserSession(Base):
    """One login (a device): the hash of its current refresh token, and its life.

    Access tokens name it (claim `sid`); they hold only while it lives: not ended, and
    refreshed within REFRESH_TOKEN_EXPIRE_DAYS. Named UserSession, not Session, so it is
    never mistaken for SQLAlchemy's.
    """

    __tablename__ = "sessions"
    __table_args__ = (
        CheckConstraint("(ended_at IS NULL) = (end_reason IS NULL)", name="ended"),
        # A purged session's id is never handed out again (SQLite would reuse it).
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, server_default=FetchedValue())
    # When it was started or last refreshed: the idle clock of REFRESH_TOKEN_EXPIRE_DAYS.
    last_used_at: Mapped[datetime] = mapped_column(
        UtcDateTime, server_default=FetchedValue(), index=True
    )
    user_agent: Mapped[str | None] = mapped_column(String(255))
    # SHA-256 (hex) of the current refresh token's secret; never the token itself.
    refresh_hash: Mapped[str] = mapped_column(String(64))
    # Rotations so far: the first refresh token is generation 0.
    generation: Mapped[int] = mapped_column(Integer, server_default="0")
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)
    end_reason: Mapped[str | None] = mapped_column(String(20))


class MailToken(Base):
    """A single-use token sent by mail; only its SHA-256 is stored.

    `bound_to` is a fingerprint of what the token was made for: the password hash it
    replaces (a reset) or the address it proves (a verification). When that changes,
    the token stops working.
    """

    __tablename__ = "mail_tokens"
    __table_args__ = (
        CheckConstraint("purpose IN ('password_reset', 'verify_email')", name="purpose"),
        Index("ix_mail_tokens_user_id_purpose", "user_id", "purpose"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    purpose: Mapped[str] = mapped_column(String(20))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    bound_to: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class OutboxMail(Base):
    """A mail to deliver, written in the same transaction as what caused it.

    It holds no message and no token: the delivery worker makes the token and writes
    the message when it sends, so no secret ever rests in this table.
    """

    __tablename__ = "mail_outbox"
    __table_args__ = (
        CheckConstraint("kind IN ('password_reset', 'verify_email')", name="kind"),
        CheckConstraint("status IN ('queued', 'sent', 'dropped', 'failed')", name="status"),
        Index(
            "ix_mail_outbox_due",
            "next_attempt_at",
            postgresql_where=text("status = 'queued'"),
            sqlite_where=text("status = 'queued'"),
        ),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    recipient: Mapped[str] = mapped_column(String(200))
    # Set for verification mail; a reset request is matched to an account on delivery.
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(String(10), server_default="queued")
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)
    last_error: Mapped[str | None] = mapped_column(String(200))
