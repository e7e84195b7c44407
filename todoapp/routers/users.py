"""/users/me: the signed-in user's own account."""

from fastapi import APIRouter, status

from todoapp.deps import CurrentUser, SessionDep
from todoapp.routers.responses import AUTHED, BODY, errors
from todoapp.schemas import PasswordChange, UserOut, UserUpdate
from todoapp.services import users

router = APIRouter(prefix="/users", tags=["users"])


@router.get(
    "/me",
    summary="Read one's own account",
    operation_id="users-me-read",
    responses=errors(*AUTHED),
)
def read_me(user: CurrentUser) -> UserOut:
    return UserOut.model_validate(user)


@router.patch(
    "/me",
    summary="Change one's own email, username or names",
    operation_id="users-me-update",
    responses=errors(*AUTHED, 409, *BODY),
)
def update_me(body: UserUpdate, user: CurrentUser, db: SessionDep) -> UserOut:
    changed = users.update_profile(db, user, body.model_dump(exclude_unset=True))
    return UserOut.model_validate(changed)


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
