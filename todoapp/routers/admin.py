"""/admin: every user's todos and accounts; role `admin` only."""

from collections.abc import Callable
from dataclasses import replace
from typing import Annotated, TypeVar

from fastapi import APIRouter, Query, Response, status
from sqlalchemy import Connection

from todoapp.deps import (
    AdminUser,
    IdPath,
    SessionDep,
    SessionSource,
    SessionSourceDep,
    TodoQueryDep,
    TokenClaimsDep,
    WindowDep,
)
from todoapp.pages import todo_page_json, user_page_json
from todoapp.routers.responses import AUTHED, BODY, errors
from todoapp.routing import OneHopRoute
from todoapp.schemas import AdminUserUpdate, Page, Role, SearchText, TodoOut, UserOut
from todoapp.security import TokenClaims
from todoapp.services import todos, users

router = APIRouter(prefix="/admin", tags=["admin"], route_class=OneHopRoute)
ADMIN = (*AUTHED, 403)
T = TypeVar("T")


def _read_as_admin(
    sessions: SessionSource, claims: TokenClaims, work: Callable[[Connection], T]
) -> T:
    """An admin route's read as one unit of work on one connection in autocommit (see
    Database.read): the token and the admin role checked in one statement (401, then
    403, as AdminUser does), then `work` (a 404 only for an admin)."""

    def checked(db: Connection) -> T:
        users.admin_id_for_token(db, claims)
        return work(db)

    return sessions.read(checked)


@router.get(
    "/todos",
    summary="List todos across owners",
    operation_id="admin-todos-list",
    response_model=Page[TodoOut],
    responses=errors(*ADMIN),
)
def list_todos(
    claims: TokenClaimsDep,
    sessions: SessionSourceDep,
    query: TodoQueryDep,
    window: WindowDep,
    owner_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> Response:
    # The admin's check and the page (with its total) in one statement; the page goes
    # out as JSON bytes (see pages.py).
    scoped = replace(query, owner_id=owner_id)
    body = todo_page_json(sessions, claims, scoped, window, admin=True)
    return Response(body, media_type="application/json")


@router.delete(
    "/todos/{todo_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete any todo",
    operation_id="admin-todos-delete",
    responses=errors(*ADMIN, 404),
)
def delete_todo(todo_id: IdPath, _admin: AdminUser, db: SessionDep) -> None:
    todos.delete_todo(db, todo_id)


@router.get(
    "/users",
    summary="List users (ordered by id)",
    operation_id="admin-users-list",
    response_model=Page[UserOut],
    responses=errors(*ADMIN),
)
def list_users(
    claims: TokenClaimsDep,
    sessions: SessionSourceDep,
    window: WindowDep,
    role: Role | None = None,
    is_active: bool | None = None,
    q: Annotated[
        SearchText | None,
        Query(description="Case-insensitive substring of username, email or names."),
    ] = None,
) -> Response:
    query = users.UserQuery(role=role, is_active=is_active, q=q)
    body = user_page_json(sessions, claims, query, window)  # as list_todos above
    return Response(body, media_type="application/json")


@router.get(
    "/users/{user_id}",
    summary="Read one user",
    operation_id="admin-users-read",
    responses=errors(*ADMIN, 404),
)
def read_user(user_id: IdPath, claims: TokenClaimsDep, sessions: SessionSourceDep) -> UserOut:
    user = _read_as_admin(sessions, claims, lambda db: users.get_user(db, user_id))
    return UserOut.model_validate(user)


@router.patch(
    "/users/{user_id}",
    summary="Change a user's role or active flag (disabling revokes their tokens)",
    operation_id="admin-users-update",
    responses=errors(*ADMIN, 404, 409, *BODY),
)
def update_user(
    user_id: IdPath, body: AdminUserUpdate, admin: AdminUser, db: SessionDep
) -> UserOut:
    changes = body.model_dump(exclude_unset=True)
    return UserOut.model_validate(users.admin_update_user(db, admin, user_id, changes))


@router.delete(
    "/users/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a user and their todos",
    operation_id="admin-users-delete",
    responses=errors(*ADMIN, 404, 409),
)
def delete_user(user_id: IdPath, admin: AdminUser, db: SessionDep) -> None:
    users.admin_delete_user(db, admin, user_id)
