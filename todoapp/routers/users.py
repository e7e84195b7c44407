"""/users/me: the signed-in user's own account."""

from typing import Any

from fastapi import APIRouter, Request, Response, status

from todoapp.deps import (
    ClientAddress,
    CurrentUser,
    HashingSlot,
    IdPath,
    IfMatch,
    IfNoneMatch,
    LoginThrottleDep,
    SessionDep,
    SessionSourceDep,
    TokenClaimsDep,
    etag,
    expected_versions,
)
from todoapp.routers.refresh_cookie import clear_refresh_cookie
from todoapp.routers.responses import AUTHED, BODY, IF_MATCH, IF_NONE_MATCH, errors, with_etag
from todoapp.routing import OneHopRoute
from todoapp.schemas import PasswordChange, SessionOut, UserOut, UserUpdate
from todoapp.services import sessions, users

router = APIRouter(prefix="/users", tags=["users"], route_class=OneHopRoute)


def _tagged(user: Any, response: Response) -> UserOut:
    """The account (a User, or a row of its shown columns and version) as the answer's
    body, its ETag in the answer's header."""
    response.headers["ETag"] = etag("user", user.id, user.version)
    return UserOut.model_validate(user)


@router.get(
    "/me",
    summary="Read one's own account",
    operation_id="users-me-read",
    response_model=UserOut,
    responses={**errors(*AUTHED), **with_etag(200, not_modified=True)},
    openapi_extra=IF_NONE_MATCH,
)
def read_me(
    claims: TokenClaimsDep,
    source: SessionSourceDep,
    response: Response,
    if_none_match: IfNoneMatch,
) -> Response | UserOut:
    # A read: the statement that checks the token reads the account, on a connection in
    # autocommit (see Database.read); CurrentUser would cost a ping, BEGIN and ROLLBACK.
    user = source.read(lambda db: users.profile_for_token(db, claims))
    current = etag("user", user.id, user.version)
    if if_none_match is not None and if_none_match.names(current):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers={"ETag": current})
    return _tagged(user, response)


@router.patch(
    "/me",
    summary="Change one's own email, username or names",
    operation_id="users-me-update",
    responses={**errors(*AUTHED, 409, 412, *BODY), **with_etag(200)},
    openapi_extra=IF_MATCH,
)
def update_me(
    body: UserUpdate, user: CurrentUser, db: SessionDep, response: Response, if_match: IfMatch
) -> UserOut:
    changed = users.update_profile(
        db,
        user,
        body.model_dump(exclude_unset=True),
        expected_versions=expected_versions(if_match, "user", user.id),
    )
    return _tagged(changed, response)


@router.put(
    "/me/password",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Change one's own password (ends every session)",
    operation_id="users-me-password",
    response_description="Changed; every session ended, the cookie `todoapp_refresh` cleared",
    responses=errors(400, *AUTHED, 429, *BODY),
    dependencies=[HashingSlot],
)
def change_password(
    body: PasswordChange,
    user: CurrentUser,
    db: SessionDep,
    request: Request,
    response: Response,
    throttle: LoginThrottleDep,
    address: ClientAddress,
) -> None:
    users.change_password(
        db,
        user,
        current=body.current_password,
        new=body.new_password,
        throttle=throttle,
        address=address,
    )
    clear_refresh_cookie(request, response)


@router.delete(
    "/me",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete one's own account and all its todos",
    operation_id="users-me-delete",
    responses=errors(*AUTHED, 409),
)
def delete_me(user: CurrentUser, db: SessionDep, request: Request, response: Response) -> None:
    users.delete_account(db, user)
    clear_refresh_cookie(request, response)


@router.get(
    "/me/sessions",
    summary="List one's live sessions (devices), newest first",
    operation_id="users-me-sessions-list",
    responses=errors(*AUTHED),
)
def list_sessions(user: CurrentUser, claims: TokenClaimsDep, db: SessionDep) -> list[SessionOut]:
    return [
        SessionOut(
            id=session.id,
            created_at=session.created_at,
            last_used_at=session.last_used_at,
            user_agent=session.user_agent,
            current=session.id == claims.session_id,
        )
        for session in sessions.list_live(db, user.id)
    ]


@router.delete(
    "/me/sessions/{session_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="End one of one's sessions (sign a device out)",
    operation_id="users-me-sessions-delete",
    response_description="Ended: its tokens stop working; when it is the caller's own "
    "session, the cookie `todoapp_refresh` is cleared",
    responses=errors(*AUTHED, 404),
)
def end_session(
    session_id: IdPath,
    user: CurrentUser,
    claims: TokenClaimsDep,
    db: SessionDep,
    request: Request,
    response: Response,
) -> None:
    sessions.end_one(db, user.id, session_id)
    if session_id == claims.session_id:
        clear_refresh_cookie(request, response)
