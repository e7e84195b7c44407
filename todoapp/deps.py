"""FastAPI dependencies as Annotated aliases: SessionDep, CurrentUser, AdminUser, paging."""

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Path, Query, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.orm import Session

from todoapp import security
from todoapp.errors import NotAuthenticated, PermissionDenied
from todoapp.models import User
from todoapp.schemas import SearchText
from todoapp.services.todos import SortKey, TodoQuery

MAX_ID = 2**31 - 1  # PostgreSQL's integer

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="auth/token", auto_error=False)


def get_session(request: Request) -> Iterator[Session]:
    """One session per request; whatever a service did not commit is rolled back."""
    database = request.app.state.database
    database.ensure_schema_ready()
    with database.session_factory() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]
TokenDep = Annotated[str | None, Depends(oauth2_scheme)]

INVALID_TOKEN = "Could not validate credentials"


def get_current_user(db: SessionDep, token: TokenDep) -> User:
    claims = security.read_access_token(token) if token else None
    if claims is None:
        raise NotAuthenticated(INVALID_TOKEN)
    user = db.get(User, claims.user_id)
    # Role and is_active come from the database on every request, never the token.
    if user is None or not user.is_active or user.token_version != claims.token_version:
        raise NotAuthenticated(INVALID_TOKEN)
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


async def require_admin(user: CurrentUser) -> User:
    if user.role != "admin":
        raise PermissionDenied("admin role required")
    return user


AdminUser = Annotated[User, Depends(require_admin)]

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
