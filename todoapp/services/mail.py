"""Mail: the outbox, single-use tokens, and the messages (no HTTP and no SMTP here).

A request that causes a mail writes one outbox row in its own transaction. The
delivery worker (todoapp/mailer.py) claims the row, makes the token and the message
(`prepare`), hands them to SMTP, and marks the row. Tokens are made on delivery, so
no secret ever rests in the outbox, and only their SHA-256 digests are stored.
"""

import html
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, delete, func, literal, or_, select, update
from sqlalchemy.orm import Session

from todoapp import metrics, security
from todoapp.config import Settings
from todoapp.database import Database
from todoapp.errors import InvalidInput
from todoapp.models import MailToken, OutboxMail, User

PASSWORD_RESET = "password_reset"
VERIFY_EMAIL = "verify_email"
INVALID_RESET = "invalid or expired reset token"
INVALID_VERIFICATION = "invalid or expired verification token"
MAILS_PER_ACCOUNT_PER_HOUR = 3
MAX_TOKEN_LENGTH = 256


def utcnow() -> datetime:
    return datetime.now(UTC)


# --- what requests do: queue a mail, use a token up -------------------------------
def queue(db: Session, *, kind: str, recipient: str, user_id: int | None = None) -> None:
    """Add a mail to the outbox; it is sent once the caller's transaction commits."""
    now = utcnow()
    metrics.MAIL_QUEUED.inc()
    db.add(
        OutboxMail(
            kind=kind,
            recipient=recipient,
            user_id=user_id,
            status="queued",
            attempts=0,
            created_at=now,
            next_attempt_at=now,
        )
    )


def queue_verification(db: Session, user: User) -> None:
    queue(db, kind=VERIFY_EMAIL, recipient=user.email.lower(), user_id=user.id)


def request_password_reset(db: Session, email: str) -> None:
    """Queue a reset mail for whoever has `email`: the same work for every address.

    The account is looked up by the worker, so neither this transaction nor its
    duration says whether the address is known, disabled or real.
    """
    queue(db, kind=PASSWORD_RESET, recipient=email.lower())
    db.commit()


def _bound_to(purpose: str, user: User) -> str:
    # A reset token is bound to the password hash it replaces (a new hash has a new
    # salt, so any later change voids it, even within the same second); a
    # verification token to the address it proves.
    return security.digest(user.hash_password if purpose == PASSWORD_RESET else user.email.lower())


def check_token(db: Session, *, purpose: str, token: str, valid_for: timedelta) -> None:
    """InvalidInput unless use_token would take this token now; locks no row, changes
    nothing.

    For work that must not run inside the token's transaction (a reset's new password is
    hashed before it starts, see users.reset_password): a bad token costs no more than
    this read, and use_token checks everything again under its locks.
    """
    _usable(db, purpose=purpose, token=token, valid_for=valid_for, lock=False)


def use_token(db: Session, *, purpose: str, token: str, valid_for: timedelta) -> User:
    """Use a token up and return its account, locked; InvalidInput for any bad token.

    Refused: unknown, used, older than `valid_for`, older than a newer token of the
    same purpose for the account, bound to a password or address that has changed
    since, or (a reset) of a disabled account. The caller commits.
    """
    row, user = _usable(db, purpose=purpose, token=token, valid_for=valid_for, lock=True)
    # Conditional, so that of two requests racing with one token only one wins.
    used = db.execute(
        update(MailToken)
        .where(MailToken.id == row.id, MailToken.used_at.is_(None))
        .values(used_at=utcnow())
    )
    if used.rowcount != 1:  # type: ignore[attr-defined]
        raise _refusal(purpose)
    return user


def _refusal(purpose: str) -> InvalidInput:
    return InvalidInput(INVALID_RESET if purpose == PASSWORD_RESET else INVALID_VERIFICATION)


def _usable(
    db: Session, *, purpose: str, token: str, valid_for: timedelta, lock: bool
) -> tuple[MailToken, User]:
    """The token's row and its account, read afresh (and locked, with `lock`), when the
    token may be used (see use_token); else InvalidInput."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise _refusal(purpose)
    query = select(MailToken).where(
        MailToken.token_hash == security.digest(token), MailToken.purpose == purpose
    )
    if lock:
        query = query.with_for_update()
    row = db.scalar(query.execution_options(populate_existing=True))
    if row is None or row.used_at is not None or row.created_at <= utcnow() - valid_for:
        raise _refusal(purpose)
    newer = db.scalar(
        select(MailToken.id)
        .where(
            MailToken.user_id == row.user_id,
            MailToken.purpose == purpose,
            MailToken.id > row.id,
        )
        .limit(1)
    )
    user = db.get(User, row.user_id, with_for_update=lock or None, populate_existing=True)
    if newer is not None or user is None or _bound_to(purpose, user) != row.bound_to:
        raise _refusal(purpose)
    if purpose == PASSWORD_RESET and not user.is_active:
        raise _refusal(purpose)
    return row, user


# --- what the delivery worker does --------------------------------------------------
@dataclass(frozen=True, slots=True)
class ClaimedMail:
    id: int
    kind: str
    recipient: str
    user_id: int | None
    attempts: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class PreparedMail:
    message: EmailMessage
    token_id: int


def _due(now: datetime) -> list[ColumnElement[bool]]:
    return [OutboxMail.status == "queued", OutboxMail.next_attempt_at <= now]


@dataclass(frozen=True, slots=True)
class QueueState:
    oldest: datetime | None  # when the oldest mail still waiting was queued
    next_due: datetime | None  # when the next one is due


def queue_state(connection: Connection) -> QueueState:
    """A cheap read over the waiting mail (the partial index on queued rows): is any
    due, and how long has the oldest waited? The claim itself needs a write."""
    oldest, next_due = connection.execute(
        select(func.min(OutboxMail.created_at), func.min(OutboxMail.next_attempt_at)).where(
            OutboxMail.status == "queued"
        )
    ).one()
    return QueueState(_aware(oldest), _aware(next_due))


def _aware(value: datetime | str | None) -> datetime | None:
    # An aggregate loses the column's type: SQLite gives text, PostgreSQL a datetime.
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value is not None and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


def claim_next(db: Session, now: datetime, claim_for: timedelta) -> ClaimedMail | None:
    """Claim the mail due longest, for `claim_for`: one conditional UPDATE.

    The claimed row is not due again until the claim runs out, so no other worker
    takes it meanwhile (on PostgreSQL the inner SELECT skips rows another worker is
    claiming at this moment: FOR UPDATE SKIP LOCKED; SQLite serialises writers).
    A worker that dies holding a claim leaves the row to be retried when it runs out:
    a mail may then go out twice, but is never lost.
    """
    oldest = (
        select(OutboxMail.id)
        .where(*_due(now))
        .order_by(OutboxMail.next_attempt_at, OutboxMail.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    row = db.execute(
        update(OutboxMail)
        .where(OutboxMail.id == oldest, *_due(now))
        .values(next_attempt_at=now + claim_for, attempts=OutboxMail.attempts + 1)
        .returning(
            OutboxMail.id,
            OutboxMail.kind,
            OutboxMail.recipient,
            OutboxMail.user_id,
            OutboxMail.attempts,
            OutboxMail.created_at,
        )
    ).first()
    db.commit()
    if row is None:
        return None
    return ClaimedMail(row.id, row.kind, row.recipient, row.user_id, row.attempts, row.created_at)


def _finish(db: Session, mail_id: int, status: str, reason: str | None = None) -> None:
    db.execute(
        update(OutboxMail)
        .where(OutboxMail.id == mail_id)
        .values(status=status, finished_at=utcnow(), last_error=reason)
    )


def _recipient_account(db: Session, mail: ClaimedMail) -> User | None:
    """The account the mail is for, locked, if it should still get the mail."""
    if mail.kind == PASSWORD_RESET:
        user = db.scalar(
            select(User).where(func.lower(User.email) == mail.recipient).with_for_update()
        )
        return user if user is not None and user.is_active else None
    user = db.get(User, mail.user_id, with_for_update=True) if mail.user_id else None
    if user is None or not user.is_active or user.is_verified:
        return None
    return user if user.email.lower() == mail.recipient else None


def prepare(db: Session, mail: ClaimedMail, settings: Settings) -> PreparedMail | None:
    """Make the token and the message of a claimed mail, or drop the mail (None).

    Dropped: no active account has the address (or the account is verified already,
    or has another address now), or the account had its 3 mails of this kind within
    the hour. Commits either way.
    """
    now = utcnow()
    user = _recipient_account(db, mail)
    if user is None:
        _finish(db, mail.id, "dropped", "no account to send it to")
        db.commit()
        return None
    recent = db.scalar(
        select(func.count())
        .select_from(MailToken)
        .where(
            MailToken.user_id == user.id,
            MailToken.purpose == mail.kind,
            MailToken.created_at > now - timedelta(hours=1),
        )
    )
    if (recent or 0) >= MAILS_PER_ACCOUNT_PER_HOUR:
        _finish(db, mail.id, "dropped", "the account had its mails of this kind for the hour")
        db.commit()
        return None
    token = security.new_mail_token()
    row = MailToken(
        user_id=user.id,
        purpose=mail.kind,
        token_hash=security.digest(token),
        bound_to=_bound_to(mail.kind, user),
        created_at=now,
    )
    db.add(row)
    db.commit()
    return PreparedMail(compose(mail.kind, mail.recipient, token, settings), row.id)


def mark_sent(db: Session, mail_id: int) -> None:
    _finish(db, mail_id, "sent")
    db.commit()


def retry_later(
    db: Session, mail: ClaimedMail, token_id: int | None, reason: str, pause: timedelta
) -> None:
    """A failed attempt: the mail is due again after `pause`; its unsent token goes."""
    if token_id is not None:
        db.execute(delete(MailToken).where(MailToken.id == token_id))
    db.execute(
        update(OutboxMail)
        .where(OutboxMail.id == mail.id)
        .values(next_attempt_at=utcnow() + pause, last_error=reason[:200])
    )
    db.commit()


def give_up(db: Session, mail_id: int, reason: str) -> None:
    _finish(db, mail_id, "failed", reason[:200])
    db.commit()


def release(db: Session, mail_id: int) -> None:
    """Hand a claimed, unsent mail back (shutting down): due at once, for any worker."""
    db.execute(
        update(OutboxMail)
        .where(OutboxMail.id == mail_id, OutboxMail.status == "queued")
        .values(next_attempt_at=utcnow(), attempts=OutboxMail.attempts - 1)
    )
    db.commit()


def _purgeable(now: datetime, settings: Settings) -> list[tuple[Any, ColumnElement[bool]]]:
    keep = timedelta(hours=settings.mail_keep_hours)
    give_up_after = timedelta(hours=settings.mail_give_up_hours)
    # Tokens stay an hour at least: they count towards the hourly limit.
    hour = timedelta(hours=1)
    reset_for = max(timedelta(minutes=settings.password_reset_expire_minutes), hour)
    verify_for = max(timedelta(hours=settings.email_verify_expire_hours), hour)
    return [
        (
            OutboxMail,
            or_(
                OutboxMail.finished_at < now - keep,
                # Never delivered (no SMTP server configured, say): gone as well.
                OutboxMail.created_at < now - give_up_after - keep,
            ),
        ),
        (
            MailToken,
            or_(
                and_(MailToken.purpose == PASSWORD_RESET, MailToken.created_at < now - reset_for),
                and_(MailToken.purpose == VERIFY_EMAIL, MailToken.created_at < now - verify_for),
            ),
        ),
    ]


def purge(database: Database, settings: Settings) -> int:
    """Delete finished mail older than MAIL_KEEP_HOURS and tokens past their use.

    Looks with a read first, so that an idle database is never write-locked for it.
    Returns how many rows went.
    """
    deleted = 0
    for model, condition in _purgeable(utcnow(), settings):
        probe = select(literal(1)).select_from(model).where(condition).limit(1)

        def found(connection: Connection, probe: Any = probe) -> bool:
            return connection.execute(probe).first() is not None

        if database.read(found):
            with database.session_factory() as db:
                deleted += db.execute(delete(model).where(condition)).rowcount  # type: ignore[attr-defined]
                db.commit()
    return deleted


# --- the messages -------------------------------------------------------------------
def _duration(minutes: float) -> str:
    if minutes >= 120 and minutes % 60 == 0:
        return f"{int(minutes // 60)} hours"
    return f"{minutes:g} minutes"


def compose(kind: str, recipient: str, token: str, settings: Settings) -> EmailMessage:
    """The mail: a subject that says what it is, plain text and a simple HTML part."""
    if kind == PASSWORD_RESET:
        link = settings.password_reset_url.replace("{token}", token)
        subject = "Password reset for your todoapp account"
        intro = "Someone, hopefully you, asked to reset the password of your todoapp account."
        action = "Choose a new password"
        lifetime = _duration(settings.password_reset_expire_minutes)
        outro = (
            f"The link works once, for {lifetime}. If you did not ask for it, ignore this "
            "mail: your password stays as it is."
        )
    else:
        link = settings.email_verify_url.replace("{token}", token)
        subject = "Verify your email address for todoapp"
        intro = "Please confirm that this address belongs to your todoapp account."
        action = "Verify this address"
        lifetime = _duration(settings.email_verify_expire_hours * 60)
        outro = (
            f"The link works once, for {lifetime}. If you have no todoapp account, ignore "
            "this mail."
        )
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = settings.mail_from
    message["To"] = recipient
    message["Date"] = formatdate(localtime=False)
    domain = parseaddr(settings.mail_from)[1].rpartition("@")[2] or "localhost"
    message["Message-ID"] = make_msgid(domain=domain)
    message.set_content(f"{intro}\n\n{action}:\n{link}\n\n{outro}\n")
    message.add_alternative(
        "<!doctype html>\n<html><body>\n"
        f"<p>{html.escape(intro)}</p>\n"
        f'<p><a href="{html.escape(link)}">{html.escape(action)}</a></p>\n'
        f"<p>{html.escape(outro)}</p>\n"
        "</body></html>\n",
        subtype="html",
    )
    return message
