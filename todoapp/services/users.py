"""Accounts: registration, login, self-service, administration and demo data."""

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Row,
    Select,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.sql.selectable import Subquery

from todoapp import security
from todoapp.errors import (
    RESOURCE_CHANGED,
    Conflict,
    InvalidInput,
    InvalidQuery,
    NotAuthenticated,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
)
from todoapp.models import Todo, User, UserSession, UserTotal, UtcDateTime
from todoapp.prepared import PREPARED, all_rows, first_row
from todoapp.services import mail, sessions
from todoapp.services.paging import (
    ZERO,
    Found,
    Scalar,
    Window,
    found,
    like_pattern,
    make_cursor,
    read_cursor,
)
from todoapp.throttle import LoginThrottle, account_subject

BAD_CREDENTIALS = "Incorrect username or password"
USERNAME_TAKEN = "username is already taken"
EMAIL_TAKEN = "email is already registered"
LAST_ADMIN = "the last active admin cannot be demoted, disabled or deleted"
INVALID_TOKEN = "Could not validate credentials"
ADMIN_REQUIRED = "admin role required"
ALREADY_VERIFIED = "email is already verified"
WRONG_CURRENT_PASSWORD = "current password is incorrect"


def _conflict_from(exc: IntegrityError) -> Conflict:
    # By index name: the message also holds the clashing value, which may contain
    # the word "email" or "username" itself.
    message = str(exc.orig)
    if "uq_users_lower_username" in message:
        return Conflict(USERNAME_TAKEN)
    if "uq_users_lower_email" in message:
        return Conflict(EMAIL_TAKEN)
    return Conflict("the change conflicts with existing data")


def commit(db: Session) -> None:
    """Commit once; a unique index that says no becomes a Conflict, never a 500."""
    try:
        db.commit()
    except IntegrityError as exc:
        db.rollback()
        raise _conflict_from(exc) from None


def flush(db: Session) -> None:
    """Write what is pending (to learn new ids) with commit()'s Conflict mapping."""
    try:
        db.flush()
    except IntegrityError as exc:
        db.rollback()
        raise _conflict_from(exc) from None


def _end_transaction(db: Session) -> None:
    """End the transaction before bcrypt runs: a slow hash must not hold a database
    connection, nor SQLite's write lock, which every other request would wait for."""
    db.commit()


def _ensure_free(
    db: Session, *, username: str | None, email: str | None, exclude_id: int | None = None
) -> None:
    # A friendly early answer; the unique indexes still decide under a race.
    def taken(column: Any, value: str) -> bool:
        query = select(User.id).where(func.lower(column) == value.lower())
        if exclude_id is not None:
            query = query.where(User.id != exclude_id)
        return db.scalar(query.limit(1)) is not None

    if username is not None and taken(User.username, username):
        raise Conflict(USERNAME_TAKEN)
    if email is not None and taken(User.email, email):
        raise Conflict(EMAIL_TAKEN)


def find_by_login(db: Session, login: str) -> User | None:
    """The user whose username or email is `login`, ignoring case."""
    lowered = login.lower()
    return db.scalar(
        select(User)
        .where(or_(func.lower(User.username) == lowered, func.lower(User.email) == lowered))
        .order_by(User.id)
        .limit(1)
    )


def token_holds() -> list[ColumnElement[bool]]:
    """A token still holds, in SQL over `users` and `sessions`: its user is active and at
    the token's version, and its session is that user's and lives. One statement reads
    the user and checks all of it (the fast lane's included: services.todos).

    Bind parameters: see token_params. Role and is_active come from the database on
    every request, never from the token.
    """
    return [
        User.id == bindparam("user_id"),
        User.is_active.is_(True),
        User.token_version == bindparam("token_version"),
        UserSession.id == bindparam("session_id"),
        UserSession.user_id == User.id,
        UserSession.ended_at.is_(None),
        UserSession.last_used_at > bindparam("idle_since", type_=UtcDateTime()),
    ]


def token_params(claims: security.TokenClaims) -> dict[str, Any]:
    return {
        "user_id": claims.user_id,
        "token_version": claims.token_version,
        "session_id": claims.session_id,
        "idle_since": sessions.idle_since(),
    }


_TOKEN_USER = select(User).where(*token_holds())


def user_for_token(db: Session, claims: security.TokenClaims) -> User:
    """The active user a token was issued to, while the token and its session hold."""
    user = db.scalar(_TOKEN_USER, token_params(claims))
    if user is None:
        raise NotAuthenticated(INVALID_TOKEN)
    return user


# An account as the API shows it (schemas.UserOut): read paths select these columns,
# not the ORM entity, so that they run on a Connection too (Database.read).
_USER_COLUMNS = (
    User.id,
    User.email,
    User.username,
    User.firstname,
    User.lastname,
    User.role,
    User.is_active,
    User.is_verified,
)
ITEM_COLUMNS = tuple(column.key for column in _USER_COLUMNS)  # a page's items' (UserOut)
# Rows by their keys: planned once per connection (see prepared.py), as below.
_TOKEN_PROFILE = (
    select(*_USER_COLUMNS, User.version).where(*token_holds()).execution_options(**PREPARED)
)


def profile_for_token(db: Session | Connection, claims: security.TokenClaims) -> Any:
    """user_for_token for GET /users/me: the account's shown columns and its version
    (the ETag's) as one row, from the statement that checks the token."""
    row = first_row(db, _TOKEN_PROFILE, token_params(claims))
    if row is None:
        raise NotAuthenticated(INVALID_TOKEN)
    return row


def admin_id_for_token(db: Session | Connection, claims: security.TokenClaims) -> int:
    """The admin a token was issued to, checked in one statement: NotAuthenticated
    unless the token holds, then PermissionDenied unless its user is an admin."""
    row = _token_user(db, claims)
    if row.role != "admin":
        raise PermissionDenied(ADMIN_REQUIRED)
    admin_id: int = row.id
    return admin_id


# The user a token holds for, with what the read paths check of it (see _token_user).
_TOKEN_USER_ID = (
    select(User.id, User.is_verified, User.role).where(*token_holds()).execution_options(**PREPARED)
)
EMAIL_NOT_VERIFIED = "email not verified"


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a request says it is, not yet checked: its token's claims, and whether the
    account must be verified (REQUIRE_VERIFIED_EMAIL). A service checks it in the same
    statement that does the work (see token_holds), instead of a statement of its own."""

    claims: security.TokenClaims
    verified_only: bool = False

    def params(self) -> dict[str, Any]:
        return token_params(self.claims)


def caller_conditions(verified_only: bool) -> list[ColumnElement[bool]]:
    """A caller's check in SQL over `users` and `sessions`: the token holds (see
    token_holds), and with `verified_only` the account is verified."""
    conditions = token_holds()
    if verified_only:
        conditions.append(User.is_verified.is_(True))
    return conditions


@lru_cache(maxsize=2)
def caller_holds(verified_only: bool) -> ColumnElement[bool]:
    """EXISTS (caller_conditions), for a statement on other tables."""
    return exists(select(User.id).where(*caller_conditions(verified_only)))


def refuse_caller(db: Session | Connection, caller: Caller) -> None:
    """NotAuthenticated (401) or PermissionDenied (403, unverified) when the caller's
    check does not hold; returns when it does (the statement failed for another reason)."""
    user_id_for_token(db, caller.claims, verified_only=caller.verified_only)


def user_id_for_token(
    db: Session | Connection, claims: security.TokenClaims, *, verified_only: bool = False
) -> int:
    """user_for_token for read paths: one row, no ORM object. With `verified_only`, an
    unverified account is PermissionDenied (REQUIRE_VERIFIED_EMAIL)."""
    row = _token_user(db, claims)
    if verified_only and not row.is_verified:
        raise PermissionDenied(EMAIL_NOT_VERIFIED)
    user_id: int = row.id
    return user_id


def _token_user(db: Session | Connection, claims: security.TokenClaims) -> Any:
    """The id, verification and role of the user a token holds for; NotAuthenticated
    when it does not hold (one statement: token_holds)."""
    row = first_row(db, _TOKEN_USER_ID, token_params(claims))
    if row is None:
        raise NotAuthenticated(INVALID_TOKEN)
    return row


# --- a list behind its caller's check: one statement ----------------------------------
def behind_token_check(
    page: Select[*tuple[Any, ...]],
    order: Callable[[Subquery], list[Any]],
    *,
    admin: bool,
    total: Select[Any] | None,
) -> Select[Any]:
    """A list's `page` statement (every value in it bound) and its caller's check in one
    statement, with the list's `total` when it is given (counted once, not per row).

    It gives no row when the token does not hold (token_holds); else the page's rows in
    the page's own order (`order`, over the page's columns), each led by the caller's id,
    role and verification (caller_id, caller_role, caller_verified) and ending in the
    total. An empty page is one row whose page columns are NULL. With `admin`, neither
    the page nor the total is read for a caller who is not an admin (the page's rows
    need the caller's admin role, checked once before any is read; the total is NULL):
    they learn nothing of anyone's data, not even from how long the answer takes. See
    checked_page.
    """
    if admin:
        page = page.where(_ADMIN_CALLER)
    rows = page.correlate(None).subquery("page")
    columns: list[Any] = [
        User.id.label("caller_id"),
        User.role.label("caller_role"),
        User.is_verified.label("caller_verified"),
        *rows.c,
    ]
    if total is not None:
        counted = total.correlate(None).scalar_subquery()
        columns.append((case((User.role == "admin", counted)) if admin else counted).label("total"))
    return (
        select(*columns)
        .select_from(User)
        .join(UserSession, UserSession.user_id == User.id)
        .outerjoin(rows, true())
        .where(*token_holds())
        .order_by(*order(rows))
    )


# The caller (the token's user) is an admin: a condition of its own (one look-up by key,
# made once per statement), so that a page is not read for anyone else.
_CALLER_USER = aliased(User, name="caller")
_ADMIN_CALLER = exists(
    select(_CALLER_USER.id).where(
        _CALLER_USER.id == bindparam("user_id"), _CALLER_USER.role == "admin"
    )
)


def checked_page(
    db: Session | Connection,
    statement: Select[Any],
    params: Mapping[str, Any],
    caller: Caller,
    *,
    admin: bool,
    count: Select[Any] | None,
    count_params: Mapping[str, Any],
) -> tuple[Sequence[Any], Callable[[], int]]:
    """Run a behind_token_check statement for `caller`, once the caller is checked:
    NotAuthenticated unless the token holds, then PermissionDenied unless the caller is
    an admin (with `admin`) and verified (if the caller must be). Gives the page's rows
    (with limit + 1 bound, one more than the page), led by the caller's columns, and how
    to count the list (paging.found's `count`): the total the statement carries, else
    `count` run with `count_params` (a search's, counted apart)."""
    rows = all_rows(db, statement, {**caller.params(), **params})
    if not rows:
        raise NotAuthenticated(INVALID_TOKEN)
    first = rows[0]
    if admin and first.caller_role != "admin":
        raise PermissionDenied(ADMIN_REQUIRED)
    if caller.verified_only and not first.caller_verified:
        raise PermissionDenied(EMAIL_NOT_VERIFIED)

    def count_all() -> int:
        if "total" in first._fields:
            total: int = first.total
            return total
        assert count is not None  # a list that is counted carries its total or a count
        return int(db.execute(count, count_params).scalar_one())

    return (() if first.id is None else rows), count_all


CALLER_COLUMNS = 3  # how many of a checked page's columns lead each row: the caller's


def cursor_key(
    db: Session | Connection,
    caller: Caller,
    cursor: str,
    listing: Sequence[Scalar],
    size: int,
    *,
    admin: bool = False,
) -> list[Any]:
    """paging.read_cursor for a list read behind its caller's check: a cursor this
    listing did not give is InvalidQuery (422), but only once the caller is checked
    (401, then 403, as the list's statement would have said first)."""
    try:
        return read_cursor(cursor, listing, size)
    except InvalidQuery:
        if admin:
            admin_id_for_token(db, caller.claims)
        else:
            refuse_caller(db, caller)
        raise


def counted_in_page(after_cursor: bool, search: bool) -> bool:
    """Whether a list's statement carries its total (behind_token_check's `total`): not
    on a cursor page, which is never counted, nor for a search, counted row by row and
    only when the page does not tell the total itself (paging.found)."""
    return not (after_cursor or search)


def register(
    db: Session,
    *,
    email: str,
    username: str,
    password: str,
    firstname: str | None = None,
    lastname: str | None = None,
    role: str = "user",
    verified: bool = False,
) -> User:
    """A new active account; unless `verified`, it starts unverified and a verification
    mail is queued in the same transaction."""
    _ensure_free(db, username=username, email=email)
    _end_transaction(db)
    user = User(
        email=email,
        username=username,
        hash_password=security.hash_password(password),
        firstname=firstname,
        lastname=lastname,
        role=role,
        is_active=True,
        token_version=0,
        is_verified=verified,
    )
    db.add(user)
    if not verified:
        flush(db)
        mail.queue_verification(db, user)
    commit(db)
    return user


def authenticate(
    db: Session, *, login: str, password: str, throttle: LoginThrottle, address: str
) -> User:
    """The user these credentials belong to; NotAuthenticated, PermissionDenied, or
    TooManyAttempts once the account's or the address's failure budget is spent."""
    user = None
    if "\x00" not in login and login.isprintable() and len(login) <= 320:
        try:
            login.encode("utf-8")
        except UnicodeEncodeError:
            pass
        else:
            user = find_by_login(db, login)
    # The account's budget whether its username or its email was typed.
    subject = account_subject(user.id if user else None, login)
    _end_transaction(db)
    with throttle.attempt(subject, address, failure=NotAuthenticated):
        # Always one bcrypt verify, so an unknown user costs what a wrong password costs.
        ok, new_hash = security.verify_password(password, user.hash_password if user else None)
        if user is None or not ok:
            raise NotAuthenticated(BAD_CREDENTIALS)
        if not user.is_active:
            raise PermissionDenied("account is disabled")  # not a failure: taken back
    if new_hash is not None:
        # Over the hash just verified only: a password changed while bcrypt ran (the
        # login read the account before) stays changed, never reverts to this one.
        db.execute(
            update(User)
            .where(User.id == user.id, User.hash_password == user.hash_password)
            .values(hash_password=new_hash)
            .execution_options(synchronize_session=False)
        )
        commit(db)
        db.expire(user, ["hash_password"])
    return user


def end_all_sessions(db: Session, user: User, reason: str) -> None:
    """End every session of the user, with every access and refresh token issued so far
    (logout, a password change or reset, disabling). Does not commit: it belongs to the
    caller's change. `reason` is one of the constants in services.sessions."""
    # The user's row before its sessions, as every path that locks both: never a deadlock.
    db.execute(
        update(User)
        .where(User.id == user.id)
        .values(token_version=User.token_version + 1, version=User.version + 1)
    )
    sessions.end_all(db, user.id, reason)
    db.refresh(user, ["token_version", "version"])


def logout(db: Session, user: User) -> None:
    end_all_sessions(db, user, sessions.LOGOUT)
    commit(db)


def update_profile(
    db: Session,
    user: User,
    changes: dict[str, Any],
    *,
    expected_versions: Collection[int] | None = None,
) -> User:
    """Change one's own profile; with `expected_versions` (If-Match) only while the
    account is still at one of them."""
    # Re-read under a row lock, so that concurrent changes apply whole, one at a time,
    # and the version checked is the one the write bumps.
    db.refresh(user, with_for_update=True)
    if expected_versions is not None and user.version not in expected_versions:
        db.rollback()
        raise PreconditionFailed(RESOURCE_CHANGED)
    _ensure_free(
        db, username=changes.get("username"), email=changes.get("email"), exclude_id=user.id
    )
    new_email = changes.get("email")
    if new_email is not None and new_email.lower() != user.email.lower():
        # A new address is unproven: the account is unverified until it is confirmed.
        user.is_verified = False
        user.email = new_email
        mail.queue_verification(db, user)
    for field, value in changes.items():
        setattr(user, field, value)
    commit(db)
    return user


def _replace_password(db: Session, user: User, new_hash: str, reason: str) -> None:
    """Set a new password's hash (made outside any transaction: see _end_transaction)
    and end every session and token of the account: the one path of a password change
    and a password reset. The caller commits."""
    user.hash_password = new_hash
    end_all_sessions(db, user, reason)


def change_password(
    db: Session, user: User, *, current: str, new: str, throttle: LoginThrottle, address: str
) -> None:
    # A wrong current password is a failed login of the account: a stolen token must
    # not become an unthrottled way of guessing the password.
    _end_transaction(db)
    verified = user.hash_password
    with throttle.attempt(account_subject(user.id, ""), address, failure=InvalidInput):
        ok, _ = security.verify_password(current, verified)
        if not ok:
            raise InvalidInput(WRONG_CURRENT_PASSWORD)
    new_hash = security.hash_password(new)
    # bcrypt ran outside any transaction: the hash it checked must still be the one.
    if _locked_hash(db, user) != verified:
        # Changed meanwhile; only a login's rehash keeps the password: checked once more.
        moved = user.hash_password
        _end_transaction(db)
        if not security.verify_password(current, moved)[0] or _locked_hash(db, user) != moved:
            db.rollback()
            raise InvalidInput(WRONG_CURRENT_PASSWORD)
    _replace_password(db, user, new_hash, sessions.PASSWORD_CHANGE)
    commit(db)


def _locked_hash(db: Session, user: User) -> str:
    """The account's password hash as it is now, its row locked as an UPDATE that keeps
    the key (logins may still add sessions meanwhile) until the transaction ends."""
    db.refresh(user, ["hash_password"], with_for_update={"key_share": True})
    return user.hash_password


def reset_password(db: Session, *, token: str, new: str, valid_for: timedelta) -> User:
    """Set the password of the account a reset token was mailed to; the token is used
    up. InvalidInput (400) for any token that does not hold.

    The token is checked first, so that a bad one costs no hashing; the new password is
    hashed between two transactions, so that no lock (the account's row, SQLite's
    write lock) waits for bcrypt; then the token is used up, checked again under its
    locks, and the hash set, in one transaction.
    """
    mail.check_token(db, purpose=mail.PASSWORD_RESET, token=token, valid_for=valid_for)
    _end_transaction(db)
    new_hash = security.hash_password(new)
    user = mail.use_token(db, purpose=mail.PASSWORD_RESET, token=token, valid_for=valid_for)
    _replace_password(db, user, new_hash, sessions.PASSWORD_RESET)
    commit(db)
    return user


def verify_email(db: Session, *, token: str, valid_for: timedelta) -> User:
    """Mark the account a verification token was mailed to as verified."""
    user = mail.use_token(db, purpose=mail.VERIFY_EMAIL, token=token, valid_for=valid_for)
    user.is_verified = True
    commit(db)
    return user


def request_verification(db: Session, user: User) -> None:
    """Queue a verification mail for the caller; Conflict when already verified."""
    db.refresh(user, with_for_update=True)
    if user.is_verified:
        raise Conflict(ALREADY_VERIFIED)
    mail.queue_verification(db, user)
    commit(db)


def _lock_active_admins(db: Session) -> Sequence[int]:
    # FOR UPDATE on PostgreSQL: two admins acting at once are serialised here, and
    # the second sees the first one's change. SQLite serialises writers anyway.
    return db.scalars(
        select(User.id)
        .where(User.role == "admin", User.is_active.is_(True))
        .order_by(User.id)
        .with_for_update()
    ).all()


def _refuse_losing_last_admin(db: Session, target_id: int) -> None:
    admins = _lock_active_admins(db)
    if list(admins) == [target_id]:
        raise Conflict(LAST_ADMIN)


def delete_account(db: Session, user: User) -> None:
    _refuse_losing_last_admin(db, user.id)
    db.execute(delete(User).where(User.id == user.id))
    commit(db)


# --- administration ------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class UserQuery:
    role: str | None = None
    is_active: bool | None = None
    q: str | None = None

    def listing(self) -> tuple[Scalar, ...]:
        """What a cursor is bound to: the filters (the order is always by id)."""
        return ("users", self.role, self.is_active, self.q or None)


def _user_filters(role: bool, is_active: bool, search: bool) -> list[Any]:
    conditions: list[Any] = []
    if role:
        conditions.append(User.role == bindparam("role"))
    if is_active:
        conditions.append(User.is_active == bindparam("is_active"))
    if search:
        pattern: BindParameter[str] = bindparam("pattern")
        conditions.append(
            or_(
                *(
                    column.ilike(pattern, escape="\\")
                    for column in (User.username, User.email, User.firstname, User.lastname)
                )
            )
        )
    return conditions


@lru_cache(maxsize=16)
def _user_statements(
    role: bool, is_active: bool, search: bool, after_cursor: bool
) -> tuple[Select[*tuple[Any, ...]], Select[int] | None]:
    """For one shape of user listing, built once (values are bound: limit, offset,
    after_id and the filters'): the page behind its admin's check (behind_token_check),
    and the count, unless the statement carries the total already (counted_in_page)."""
    conditions = _user_filters(role, is_active, search)
    page = select(*_USER_COLUMNS).where(*conditions)
    if after_cursor:
        page = page.where(User.id > bindparam("after_id"))
    page = page.order_by(User.id).limit(bindparam("limit")).offset(bindparam("offset"))
    count = (  # a search counts the matching users; else the totals kept say how many
        select(func.count()).select_from(User).where(*conditions)
        if search
        else _user_count(role, is_active)
    )
    folded = counted_in_page(after_cursor, search)
    statement = behind_token_check(
        page, lambda rows: [rows.c.id], admin=True, total=count if folded else None
    )
    if not (role or is_active or search):
        statement = statement.execution_options(**PREPARED)  # planned alike for any values
    return statement, None if folded else count


def _user_count(role: bool, is_active: bool) -> Select[Any]:
    """How many users meet the filters, from the totals the database keeps (user_totals:
    at most 64 rows, however many users)."""
    conditions: list[Any] = []
    if role:
        conditions.append(UserTotal.role == bindparam("role"))
    if is_active:
        conditions.append(UserTotal.is_active == bindparam("is_active"))
    return select(func.coalesce(func.sum(UserTotal.users), ZERO)).where(*conditions)


def list_users(db: Connection, caller: Caller, query: UserQuery, window: Window) -> Found[Any]:
    """A page of users (their shown columns, led by the caller's: see checked_page) in id
    order, for an admin: the caller is checked in the same statement. A cursor page
    continues after the cursor's id."""
    statement, count = _user_statements(
        query.role is not None,
        query.is_active is not None,
        bool(query.q),
        window.cursor is not None,
    )
    params: dict[str, Any] = {
        "role": query.role,
        "is_active": query.is_active,
        "pattern": like_pattern(query.q) if query.q else None,
    }
    page_params = {**params, "limit": window.limit + 1, "offset": window.offset}
    if window.cursor is not None:
        (page_params["after_id"],) = cursor_key(
            db, caller, window.cursor, query.listing(), 1, admin=True
        )
    rows, count_all = checked_page(
        db, statement, page_params, caller, admin=True, count=count, count_params=params
    )
    return found(rows, window, lambda user: make_cursor(query.listing(), [user.id]), count_all)


def get_user(db: Session | Connection, user_id: int) -> Row[*tuple[Any, ...]]:
    """A user's shown columns; NotFound when there is no such user."""
    user = db.execute(select(*_USER_COLUMNS).where(User.id == user_id)).first()
    if user is None:
        raise NotFound("user not found")
    return user


def admin_update_user(db: Session, actor: User, user_id: int, changes: dict[str, Any]) -> User:
    # Lock the target and every active admin in one statement, in id order, so that two
    # admins acting on each other at once queue up instead of deadlocking, and the
    # second one sees the first one's change.
    locked = db.execute(
        select(User.id, User.role, User.is_active)
        .where(or_(User.id == user_id, and_(User.role == "admin", User.is_active.is_(True))))
        .order_by(User.id)
        .with_for_update()
    ).all()
    current = next((row for row in locked if row.id == user_id), None)
    if current is None:
        raise NotFound("user not found")
    demoting = changes.get("role", current.role) != "admin"
    disabling = changes.get("is_active", current.is_active) is False
    if user_id == actor.id and (demoting or disabling):
        raise Conflict("an admin may not demote or disable themselves")
    active_admins = [row.id for row in locked if row.role == "admin" and row.is_active]
    if (demoting or disabling) and active_admins == [user_id]:
        raise Conflict(LAST_ADMIN)
    # One read, overwriting any earlier copy: the state as it is under the lock.
    target = db.get_one(User, user_id, populate_existing=True)
    for field, value in changes.items():
        setattr(target, field, value)
    if current.is_active and changes.get("is_active") is False:
        db.flush()
        end_all_sessions(db, target, sessions.DISABLED)
    commit(db)
    return target


def admin_delete_user(db: Session, actor: User, user_id: int) -> None:
    target = get_user(db, user_id)
    if target.id == actor.id:
        raise Conflict("an admin may not delete themselves")
    if target.role == "admin" and target.is_active:
        _refuse_losing_last_admin(db, target.id)
    db.execute(delete(User).where(User.id == target.id))
    commit(db)


def create_or_promote_admin(
    db: Session, *, username: str, email: str, password: str | None
) -> tuple[User, bool]:
    """Promote the existing user `username`, or create an admin; (user, created)."""
    existing = db.scalar(select(User).where(func.lower(User.username) == username.lower()))
    if existing is not None:
        existing.role = "admin"
        existing.is_active = True
        commit(db)
        return existing, False
    if password is None:
        raise InvalidInput("a password is needed to create a new admin")
    user = register(
        db, email=email, username=username, password=password, role="admin", verified=True
    )
    return user, True


# --- demo data -----------------------------------------------------------------
DEMO_PASSWORD = "password123"


def seed_demo_data(db: Session, *, users: int, todos_per_user: int) -> tuple[int, int]:
    """Make sure demo1..demoN exist; give each one created here M todos.

    One shared hash and bulk inserts, so 10,000 users take seconds. Returns
    (users created, todos created).
    """
    password_hash = security.hash_password(DEMO_PASSWORD)
    wanted = [f"demo{k}" for k in range(1, users + 1)]
    created_ids: list[int] = []
    for start in range(0, len(wanted), 5000):
        chunk = wanted[start : start + 5000]
        existing = set(
            db.scalars(
                select(func.lower(User.username)).where(func.lower(User.username).in_(chunk))
            )
        )
        taken_emails = set(
            db.scalars(
                select(func.lower(User.email)).where(
                    func.lower(User.email).in_([f"{name}@example.com" for name in chunk])
                )
            )
        )
        rows = [
            {
                "username": name,
                "email": f"{name}@example.com",
                "hash_password": password_hash,
                "role": "user",
                "is_active": True,
                "token_version": 0,
                "is_verified": True,
            }
            for name in chunk
            if name not in existing and f"{name}@example.com" not in taken_emails
        ]
        if rows:
            created_ids.extend(db.scalars(insert(User).returning(User.id), rows).all())
    todo_rows = [
        {
            "owner_id": owner_id,
            "title": f"Demo todo {n}",
            "description": f"Something to do, number {n}",
            "priority": n % 5 + 1,
            "complete": n % 3 == 0,
        }
        for owner_id in created_ids
        for n in range(1, todos_per_user + 1)
    ]
    for start in range(0, len(todo_rows), 10_000):
        db.execute(insert(Todo), todo_rows[start : start + 10_000])
    commit(db)
    return len(created_ids), len(todo_rows)
