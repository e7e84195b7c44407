"""FastAPI dependencies as Annotated aliases: SessionDep, CurrentUser, AdminUser, paging."""

import asyncio
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Path, Query, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from todoapp import metrics, security
from todoapp.database import Database
from todoapp.errors import InvalidQuery, NotAuthenticated, PermissionDenied, Unavailable
from todoapp.models import User
from todoapp.schemas import SearchText
from todoapp.security import TokenClaims
from todoapp.services import users
from todoapp.services.paging import CURSOR_WITH_OFFSET, Window
from todoapp.services.todos import SortKey, TodoQuery
from todoapp.throttle import LoginThrottle

MAX_ID = 2**31 - 1  # PostgreSQL's integer
SERVER_BUSY = "server busy: try again shortly"

logger = logging.getLogger("todoapp")
T = TypeVar("T")


class SessionSource:
    """Opens sessions for a request (no I/O until one is used); tests swap it."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def open(self) -> Session:
        # Blocking on the first request only, and always called from a worker thread.
        self.database.ensure_schema_ready()
        return self.database.session_factory()

    def read(self, work: Callable[[Connection], T]) -> T:
        """Run a read-only unit of work (see Database.read); call it from a thread."""
        return self.database.read(work)

    def write_one(self, work: Callable[[Connection], T]) -> T:
        """Run a unit of work that writes with one statement (see Database.write_one);
        call it from a thread."""
        return self.database.write_one(work)


async def admit(admission: asyncio.Semaphore, timeout: float) -> bool:
    """Take a place to use the database, waiting at most `timeout` seconds for one."""
    if not admission.locked():
        await admission.acquire()  # a place is free: no timer, no task
        return True
    started = time.perf_counter()
    try:
        await asyncio.wait_for(admission.acquire(), timeout)
    except TimeoutError:
        metrics.DB_WAITS.labels("timed_out").inc()
        return False
    finally:
        metrics.DB_WAIT_SECONDS.observe(time.perf_counter() - started)
    metrics.DB_WAITS.labels("admitted").inc()
    return True


async def get_session_source(request: Request) -> SessionSource:
    """Admit the request to the database, then hand it the session source.

    At most WORKER_THREADS requests are admitted at once, as many as there are threads
    and pooled connections, so an admitted request always gets both. Without this, a
    burst deadlocks: requests holding a connection wait for a thread while every thread
    waits for a connection. A burst queues here instead, in the event loop, for at most
    DB_POOL_TIMEOUT seconds (then 503). Async, since it does no I/O: a sync dependency
    would cost a threadpool hop.

    The place is given back once the answer is sent, as a `yield` dependency's cleanup
    would be, by a callback on the request's exit stack (FastAPI's, the one its `yield`
    dependencies are left by): a plain call, where a `yield` dependency costs an async
    context manager, a cancel scope and a shielded exit per request.
    """
    state = request.app.state
    stack: AsyncExitStack = request.scope["fastapi_inner_astack"]  # before a place is taken
    if not await admit(state.admission, state.settings.db_pool_timeout):
        raise Unavailable(SERVER_BUSY)
    stack.callback(place_taken(state))
    source: SessionSource = state.session_source
    return source


def place_taken(state: Any) -> Callable[[], None]:
    """After `admit` gave a request its place at the database (the app's state holds
    the places): the place noted in the in-use gauge, kept only with METRICS_ENABLED
    (where /metrics shows it), and the call that gives it back."""
    if not state.settings.metrics_enabled:
        release: Callable[[], None] = state.admission.release
        return release
    metrics.THREADS_IN_USE.inc()
    return partial(_let_go, state.admission)


def _let_go(admission: asyncio.Semaphore) -> None:
    admission.release()
    metrics.THREADS_IN_USE.dec()


SessionSourceDep = Annotated[SessionSource, Depends(get_session_source)]


async def take_hashing_slot(request: Request) -> AsyncIterator[None]:
    """A turn to hash a password, taken before the request is admitted to the database.

    bcrypt is slow on purpose, so a route that hashes holds its thread and connection
    for a long time: at most HASHING_SLOTS such requests run at once, and the others
    wait here, in the event loop, holding nothing, for at most HASHING_WAIT_SECONDS
    (then 503 with Retry-After). A flood of logins or registrations thus slows down
    only logins and registrations; every other request still finds threads and
    connections. Used as `dependencies=[HashingSlot]`, which FastAPI solves first.
    """
    state = request.app.state
    wait = state.settings.hashing_wait_seconds
    if not await admit(state.hashing, wait):
        raise Unavailable(SERVER_BUSY, retry_after=max(1, math.ceil(wait)))
    try:
        yield
    finally:
        state.hashing.release()


HashingSlot = Depends(take_hashing_slot)


async def get_client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


ClientAddress = Annotated[str, Depends(get_client_address)]


async def get_login_throttle(request: Request) -> LoginThrottle:
    throttle: LoginThrottle = request.app.state.login_throttle
    return throttle


LoginThrottleDep = Annotated[LoginThrottle, Depends(get_login_throttle)]


def get_session(source: SessionSourceDep) -> Iterator[Session]:
    """One session per request; whatever a service did not commit is rolled back."""
    session = source.open()
    try:
        yield session
    finally:
        try:
            session.close()
        except DBAPIError as exc:
            # The connection died after the response was made (the database went away);
            # there is nothing left to undo, and the client already has its answer.
            logger.warning("closing a session failed: %s", type(exc).__name__)


SessionDep = Annotated[Session, Depends(get_session)]


class BearerTokenClaims(OAuth2PasswordBearer):
    """The claims of a well-signed, unexpired bearer token, checked without a thread or
    the database; else 401. OpenAPI documents it as OAuth2PasswordBearer's password
    flow, and it reads the header as that does, in one dependency instead of two."""

    async def __call__(self, request: Request) -> TokenClaims:  # type: ignore[override]
        scheme, _, token = (request.headers.get("Authorization") or "").partition(" ")
        claims = security.read_access_token(token) if scheme.lower() == "bearer" else None
        if claims is None:
            raise NotAuthenticated(users.INVALID_TOKEN)
        return claims


get_token_claims = BearerTokenClaims(tokenUrl="auth/token", scheme_name="OAuth2PasswordBearer")
TokenClaimsDep = Annotated[TokenClaims, Depends(get_token_claims)]


# The token first: a bad one is refused before the request waits for the database.
def get_current_user(claims: TokenClaimsDep, db: SessionDep) -> User:
    return users.user_for_token(db, claims)


CurrentUser = Annotated[User, Depends(get_current_user)]


# Plain def, like get_current_user which it uses: the route runs both in its one
# thread hop (see routing.py), at no extra cost.
def require_admin(user: CurrentUser) -> User:
    if user.role != "admin":
        raise PermissionDenied(users.ADMIN_REQUIRED)
    return user


AdminUser = Annotated[User, Depends(require_admin)]


async def get_todo_caller(claims: TokenClaimsDep, request: Request) -> users.Caller:
    """The caller of a /todos route, for its service to check in the statement that does
    the work (one statement instead of two): a well-signed token, and whether the account
    must be verified. Async: no thread, no database."""
    return users.Caller(claims, request.app.state.settings.require_verified_email)


TodoCaller = Annotated[users.Caller, Depends(get_todo_caller)]

IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]
Limit = Annotated[int, Query(ge=1, le=100, description="Page size, 1-100.")]
Offset = Annotated[int, Query(ge=0, le=MAX_ID, description="Rows to skip.")]


# Parsing only, so async: sync dependencies would each cost a threadpool hop.
async def todo_query(
    complete: bool | None = None,
    priority: Annotated[int | None, Query(ge=1, le=5)] = None,
    q: Annotated[
        SearchText | None,
        Query(description="Case-insensitive substring of title or description."),
    ] = None,
    sort: SortKey = "id",
) -> TodoQuery:
    return TodoQuery(complete=complete, priority=priority, q=q, sort=sort)


TodoQueryDep = Annotated[TodoQuery, Depends(todo_query)]

Cursor = Annotated[
    str | None,
    Query(
        max_length=2048,
        description="`next_cursor` of the previous page: continues the same listing "
        "(same filters and sort; no `offset`).",
    ),
]


async def window(
    request: Request, limit: Limit = 20, offset: Offset = 0, cursor: Cursor = None
) -> Window:
    """The rows a list request asks for: after `offset` rows, or after a cursor's row.

    A cursor page takes no `offset` at all, not even 0 (422).
    """
    if cursor is not None and "offset" in request.query_params:
        raise InvalidQuery("offset", CURSOR_WITH_OFFSET)
    return Window(limit=limit, offset=0 if cursor is not None else offset, cursor=cursor)


WindowDep = Annotated[Window, Depends(window)]


# --- conditional requests: ETag, If-Match, If-None-Match -----------------------
# An ETag names the resource and its row's version, e.g. "todo-7-v3": strong, and
# different for two users' /users/me even when their versions are equal.
_ENTITY_TAG = re.compile(r'(W/)?"([\x21\x23-\x7e]*)"')


def etag(kind: str, resource_id: int, version: int) -> str:
    return f'"{kind}-{resource_id}-v{version}"'


@dataclass(frozen=True, slots=True)
class EntityTags:
    """An If-Match or If-None-Match header: `*`, or the entity tags it lists."""

    any: bool = False
    strong: frozenset[str] = frozenset()
    weak: frozenset[str] = frozenset()  # sent as W/"...": they never satisfy If-Match

    def versions_of(self, kind: str, resource_id: int) -> frozenset[int] | None:
        """For If-Match (strong comparison): the versions of this resource the header
        names, or None when it is `*` (any current version will do)."""
        if self.any:
            return None
        prefix = f"{kind}-{resource_id}-v"
        return frozenset(
            int(tag[len(prefix) :])
            for tag in self.strong
            if tag.startswith(prefix)
            and tag[len(prefix) :].isdigit()
            and len(tag) - len(prefix) <= 9
        )

    def names(self, current: str) -> bool:
        """For If-None-Match (weak comparison, as HTTP says): is `current` listed?"""
        opaque = current[1:-1]
        return self.any or opaque in self.strong or opaque in self.weak


def parse_entity_tags(value: str) -> EntityTags:
    """`*`, or a comma-separated list of entity tags; anything unparsable names nothing."""
    if value.strip() == "*":
        return EntityTags(any=True)
    strong: set[str] = set()
    weak: set[str] = set()
    for match in _ENTITY_TAG.finditer(value):
        (weak if match.group(1) else strong).add(match.group(2))
    return EntityTags(strong=frozenset(strong), weak=frozenset(weak))


def _entity_tags(request: Request, header: str) -> EntityTags | None:
    # Several lines of one header are one comma-separated list (RFC 9110, 5.3).
    values = request.headers.getlist(header)
    return parse_entity_tags(", ".join(values)) if values else None


# Read from the request rather than declared as parameters: a header is any text, so
# it can never be a 422, and FastAPI would document one for every declared parameter
# (routers/responses.CONDITIONAL_HEADERS documents them instead). Async: no thread hop.
async def if_match(request: Request) -> EntityTags | None:
    return _entity_tags(request, "if-match")


async def if_none_match(request: Request) -> EntityTags | None:
    return _entity_tags(request, "if-none-match")


IfMatch = Annotated[EntityTags | None, Depends(if_match)]
IfNoneMatch = Annotated[EntityTags | None, Depends(if_none_match)]


def expected_versions(
    preconditions: EntityTags | None, kind: str, resource_id: int
) -> frozenset[int] | None:
    """What a write must find: None for no condition (no If-Match, or `*`)."""
    return None if preconditions is None else preconditions.versions_of(kind, resource_id)
