"""/auth: register, log in for a token, log out."""

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from fastapi.security import OAuth2PasswordRequestForm

from todoapp import metrics, security
from todoapp.deps import CurrentUser, SessionDep
from todoapp.errors import NotAuthenticated
from todoapp.routers.responses import AUTHED, BODY, DB, errors
from todoapp.schemas import Token, UserCreate, UserOut
from todoapp.services import users

router = APIRouter(prefix="/auth", tags=["auth"])


def _client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    summary="Create an account",
    operation_id="auth-register",
    response_description="The new user; `Location` points at /users/me",
    responses=errors(409, *BODY, *DB),
)
def register(body: UserCreate, db: SessionDep, response: Response) -> UserOut:
    user = users.register(db, **body.model_dump())
    response.headers["Location"] = "/users/me"
    return UserOut.model_validate(user)


@router.post(
    "/token",
    summary="Log in with username (or email) and password",
    operation_id="auth-token",
    responses=errors(401, 403, 429, *BODY, *DB),
    openapi_extra={
        "requestBody": {
            "content": {
                "application/x-www-form-urlencoded": {
                    "example": {"username": "ada", "password": "correct horse battery"}
                }
            }
        }
    },
)
def login(
    form: Annotated[OAuth2PasswordRequestForm, Depends()], request: Request, db: SessionDep
) -> Token:
    failures = request.app.state.login_failures
    key = f"{form.username.lower()[:320]}|{_client_address(request)}"
    # The attempt is counted before the password is checked, so that parallel wrong
    # guesses cannot all pass the limit; one that is not a 401 is taken back.
    retry_after = failures.reserve(key)
    if retry_after is not None:
        metrics.LOGIN_THROTTLED.inc()
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            "Too many failed login attempts; try again later",
            headers={"Retry-After": str(retry_after)},
        )
    try:
        user = users.authenticate(db, login=form.username, password=form.password)
    except NotAuthenticated:
        raise  # a failure: the reserved attempt stays counted
    except BaseException:
        failures.release(key)  # e.g. 403 (disabled) or the database down
        raise
    failures.clear(key)
    issued = security.issue_access_token(user.id, user.token_version)
    return Token(access_token=issued.token, expires_in=issued.expires_in)


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke every token issued to the caller so far",
    operation_id="auth-logout",
    responses=errors(*AUTHED),
)
def logout(user: CurrentUser, db: SessionDep) -> None:
    users.logout(db, user)
