"""Sessions, one per login (a device): refresh-token rotation with reuse detection,
listing and ending them, and the bounded purge of dead ones.

A session lives while it has not ended and was refreshed (or started) within
REFRESH_TOKEN_EXPIRE_DAYS. Every check of that is part of a statement that reads or
writes the row anyway, so it is exact: a session ended or a token used up in the same
second (the same millisecond) as a request is already ended or used up for it.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

from sqlalchemy import ColumnElement, delete, insert, or_, select, update
from sqlalchemy.orm import Session

from todoapp import metrics, security
from todoapp.config import get_settings
from todoapp.errors import NotAuthenticated, NotFound
from todoapp.models import User, UserSession, utcnow

logger = logging.getLogger("todoapp.sessions")

INVALID_REFRESH_TOKEN = "invalid or expired refresh token"
SESSION_NOT_FOUND = "session not found"
# Why a session ended (sessions.end_reason).
LOGOUT = "logout"
PASSWORD_CHANGE = "password_change"
PASSWORD_RESET = "password_reset"
DISABLED = "disabled"
SIGNED_OUT = "signed_out"  # DELETE /users/me/sessions/{id}
REUSE = "reuse"  # a used-up refresh token came back: presumed stolen
# Dead sessions deleted per purge: small enough to cost a login nothing noticeable.
PURGE_BATCH = 100
USER_AGENT_LENGTH = 255


@dataclass(frozen=True, slots=True)
class IssuedTokens:
    """What a login or a refresh hands out: an access token and a refresh token."""

    session_id: int
    access: security.IssuedToken
    refresh_token: str
    refresh_expires_in: int


def refresh_lifetime() -> timedelta:
    return timedelta(days=get_settings().refresh_token_expire_days)


def idle_since() -> datetime:
    """Sessions last refreshed at or before this moment have expired."""
    return datetime.now(UTC) - refresh_lifetime()


def live() -> list[ColumnElement[bool]]:
    """A session lives: not ended, and refreshed within REFRESH_TOKEN_EXPIRE_DAYS."""
    return [UserSession.ended_at.is_(None), UserSession.last_used_at > idle_since()]


def clean_user_agent(value: str | None) -> str | None:
    """The User-Agent as stored: control characters dropped, at most 255 characters."""
    if value is None:
        return None
    printable = "".join(c for c in value if c.isprintable())
    return printable[:USER_AGENT_LENGTH]


def _issue(
    user_id: int, token_version: int, session_id: int, secret: security.RefreshSecret
) -> IssuedTokens:
    return IssuedTokens(
        session_id=session_id,
        access=security.issue_access_token(user_id, token_version, session_id),
        refresh_token=security.refresh_token(session_id, secret),
        refresh_expires_in=int(refresh_lifetime().total_seconds()),
    )


def start(db: Session, user: User, *, user_agent: str | None) -> IssuedTokens:
    """A new session for a user who just proved who they are (login); commits.

    Each login also purges a batch of dead sessions, so the table holds the live ones
    and at most a bounded backlog (see purge).
    """
    secret = security.new_refresh_secret()
    session_id: int = db.execute(
        insert(UserSession)
        .values(user_id=user.id, user_agent=clean_user_agent(user_agent), refresh_hash=secret.hash)
        .returning(UserSession.id)
    ).scalar_one()
    purge(db)
    db.commit()
    return _issue(user.id, user.token_version, session_id, secret)


def rotate(db: Session, presented: str) -> IssuedTokens:
    """Swap a refresh token for a new pair; commits. NotAuthenticated when it is not the
    current token of a live session of an active user.

    One conditional UPDATE does the swap: of any number of requests racing with one
    token, only one finds the old hash in place. A used-up token of a live session is
    taken as stolen, and its whole session ends.
    """
    token = security.read_refresh_token(presented)
    if token is None:
        raise NotAuthenticated(INVALID_REFRESH_TOKEN)
    secret = security.new_refresh_secret()
    rotated = db.execute(
        update(UserSession)
        .where(
            UserSession.id == token.session_id,
            UserSession.refresh_hash == token.secret_hash,
            *live(),
            UserSession.user_id.in_(select(User.id).where(User.is_active)),
        )
        .values(
            refresh_hash=secret.hash,
            generation=UserSession.generation + 1,
            last_used_at=utcnow(),
        )
        .returning(UserSession.user_id)
        .execution_options(synchronize_session=False)
    ).first()
    if rotated is None:
        _refuse(db, token)
    user_id: int = rotated.user_id
    version: int = db.execute(select(User.token_version).where(User.id == user_id)).scalar_one()
    db.commit()
    return _issue(user_id, version, token.session_id, secret)


def _refuse(db: Session, token: security.PresentedRefreshToken) -> NoReturn:
    """Answer a refresh that did not rotate; end the session if its token was reused."""
    current = db.execute(
        select(UserSession.user_id, UserSession.refresh_hash, UserSession.generation).where(
            UserSession.id == token.session_id, *live()
        )
    ).first()
    # The MAC proved this server issued the token for this session, so a live session
    # holding another hash means the token was used up already.
    if current is None or security.same_hash(current.refresh_hash, token.secret_hash):
        raise NotAuthenticated(INVALID_REFRESH_TOKEN)
    if _end(db, [UserSession.id == token.session_id], REUSE):
        db.commit()
        metrics.REFRESH_TOKEN_REUSE.inc()
        logger.warning(
            "used-up refresh token presented: session %d of user %d ended "
            "(generation %d); the token may have been stolen",
            token.session_id,
            current.user_id,
            current.generation,
        )
    raise NotAuthenticated(INVALID_REFRESH_TOKEN)


def _end(db: Session, where: list[ColumnElement[bool]], reason: str) -> int:
    result: Any = db.execute(
        update(UserSession)
        .where(*where, UserSession.ended_at.is_(None))
        .values(ended_at=utcnow(), end_reason=reason)
        .execution_options(synchronize_session=False)
    )
    ended: int = result.rowcount
    return ended


def end_all(db: Session, user_id: int, reason: str) -> int:
    """End every session of a user (does not commit); how many were live."""
    return _end(db, [UserSession.user_id == user_id], reason)


def end_one(db: Session, user_id: int, session_id: int) -> None:
    """End one of the user's live sessions; commits. NotFound if it is not one."""
    if not _end(
        db, [UserSession.id == session_id, UserSession.user_id == user_id, *live()], SIGNED_OUT
    ):
        raise NotFound(SESSION_NOT_FOUND)
    db.commit()


def list_live(db: Session, user_id: int) -> Sequence[UserSession]:
    """The user's live sessions, newest first (id breaks ties within a millisecond)."""
    return db.scalars(
        select(UserSession)
        .where(UserSession.user_id == user_id, *live())
        .order_by(UserSession.created_at.desc(), UserSession.id.desc())
    ).all()


def purge(db: Session, batch: int = PURGE_BATCH) -> int:
    """Delete up to `batch` ended or expired sessions (does not commit); how many.

    Run at every login: a login adds one session and removes up to `batch` dead ones,
    so dead rows never pile up. SKIP LOCKED: concurrent logins on PostgreSQL take
    different rows instead of queueing behind each other.
    """
    dead = (
        select(UserSession.id)
        .where(or_(UserSession.ended_at.is_not(None), UserSession.last_used_at <= idle_since()))
        .limit(batch)
        .with_for_update(skip_locked=True)
    )
    result: Any = db.execute(
        delete(UserSession)
        .where(UserSession.id.in_(dead.scalar_subquery()))
        .execution_options(synchronize_session=False)
    )
    purged: int = result.rowcount
    return purged
