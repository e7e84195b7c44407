"""/users/me: the signed-in user's own account."""

from fastapi import APIRouter, Response, status

from todoapp.deps import CurrentUser, IfMatch, IfNoneMatch, SessionDep, etag, expected_versions
from todoapp.models import User
from todoapp.routers.responses import AUTHED, BODY, IF_MATCH, IF_NONE_MATCH, errors, with_etag
from todoapp.schemas import PasswordChange, UserOut, UserUpdate
from todoapp.services import users

router = APIRouter(prefix="/users", tags=["users"])


def _tagged(user: User, response: Response) -> UserOut:
    """The account as the answer's body, its ETag in the answer's header."""
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
    user: CurrentUser, response: Response, if_none_match: IfNoneMatch
) -> Response | UserOut:
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
    summary="Change one's own password (revokes earlier tokens)",
    operation_id="users-me-password",
    responses=errors(400, *AUTHED, *BODY),
)
def change_password(body: PasswordChange, user: CurrentUser, db: SessionDep) -> None:
    users.change_password(db, user, current=body.current_password, new=body.new_password)


@router.delete(
    "/me",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete one's own account and all its todos",
    operation_id="users-me-delete",
    responses=errors(*AUTHED, 409),
)
def delete_me(user: CurrentUser, db: SessionDep) -> None:
    users.delete_account(db, user)
