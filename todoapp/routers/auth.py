"""/auth: register, log in for a session's tokens, refresh them, log out; password
recovery and email verification."""

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Body, Cookie, Depends, Form, Header, Request, Response, status
from fastapi.security import OAuth2PasswordRequestForm

from todoapp import metrics
from todoapp.deps import ClientAddress, CurrentUser, HashingSlot, LoginThrottleDep, SessionDep
from todoapp.errors import NotAuthenticated, TooManyAttempts
from todoapp.routers.refresh_cookie import (
    REFRESH_COOKIE,
    REQUESTED_WITH,
    clear_refresh_cookie,
    token_answer,
)
from todoapp.routers.responses import AUTHED, BODY, DB, errors, links_by_id
from todoapp.routing import OneHopRoute
from todoapp.schemas import (
    Accepted,
    EmailVerification,
    ForgotPassword,
    PasswordReset,
    RefreshRequest,
    Token,
    UserCreate,
    UserOut,
)
from todoapp.services import mail, sessions, users

router = APIRouter(prefix="/auth", tags=["auth"], route_class=OneHopRoute)

# What an admin can do next with an account just registered.
REGISTERED_USER_LINKS = links_by_id(
    "user_id",
    {
        "AdminReadUser": "admin-users-read",
        "AdminUpdateUser": "admin-users-update",
        "AdminDeleteUser": "admin-users-delete",
    },
)


class LoginForm(OAuth2PasswordRequestForm):
    """OAuth2's password form, as FastAPI's, with a document that tells the truth: an
    empty form field counts as one not sent, so `grant_type=` (empty) is accepted like
    no `grant_type` at all; any other value but `password` is 422."""

    def __init__(
        self,
        *,
        username: Annotated[str, Form()],
        password: Annotated[str, Form(json_schema_extra={"format": "password"})],
        grant_type: Annotated[str | None, Form(pattern="^(password)?$")] = None,
        scope: Annotated[str, Form()] = "",
        client_id: Annotated[str | None, Form()] = None,
        client_secret: Annotated[str | None, Form(json_schema_extra={"format": "password"})] = None,
    ) -> None:
        super().__init__(
            grant_type=grant_type,
            username=username,
            password=password,
            scope=scope,
            client_id=client_id,
            client_secret=client_secret,
        )


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    summary="Create an account",
    operation_id="auth-register",
    response_description="The new user; `Location` points at /users/me",
    responses={**errors(409, *BODY, *DB), 201: {"links": REGISTERED_USER_LINKS}},
    dependencies=[HashingSlot],
)
def register(body: UserCreate, db: SessionDep, response: Response) -> UserOut:
    # The verification mail is queued in the same transaction; sent after the answer.
    user = users.register(db, **body.model_dump())
    response.headers["Location"] = "/users/me"
    return UserOut.model_validate(user)


@router.post(
    "/token",
    summary="Log in with username (or email) and password: a new session",
    operation_id="auth-token",
    response_description="A new session's tokens; the refresh token is also set as the "
    "cookie `todoapp_refresh`",
    responses=errors(401, 403, 429, *BODY, *DB),
    dependencies=[HashingSlot],
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
    form: Annotated[LoginForm, Depends()],
    request: Request,
    response: Response,
    db: SessionDep,
    throttle: LoginThrottleDep,
    address: ClientAddress,
) -> Token:
    try:
        user = users.authenticate(
            db, login=form.username, password=form.password, throttle=throttle, address=address
        )
    except TooManyAttempts:
        metrics.LOGIN_THROTTLED.inc()
        raise
    issued = sessions.start(db, user, user_agent=request.headers.get("user-agent"))
    return token_answer(issued, request, response)


NO_REFRESH_TOKEN = "no refresh token: send it in the body"
COOKIE_NEEDS_HEADER = (
    f"a refresh from the cookie needs the header X-Requested-With: {REQUESTED_WITH}"
)


@router.post(
    "/refresh",
    summary="Swap a refresh token for a new pair (the one sent is used up)",
    operation_id="auth-refresh",
    response_description="The session's new tokens; the cookie `todoapp_refresh` is renewed",
    responses=errors(401, *BODY, *DB),
    openapi_extra={
        "requestBody": {
            "content": {"application/json": {"example": {"refresh_token": "<refresh_token>"}}}
        }
    },
)
def refresh(
    request: Request,
    response: Response,
    db: SessionDep,
    body: Annotated[RefreshRequest | None, Body()] = None,
    todoapp_refresh: Annotated[
        str | None,
        Cookie(
            alias=REFRESH_COOKIE,
            description="Used when there is no body, and only with `X-Requested-With`.",
        ),
    ] = None,
    x_requested_with: Annotated[
        str | None, Header(description=f"`{REQUESTED_WITH}` for a refresh from the cookie.")
    ] = None,
) -> Token:
    # With a body, its token is used and the cookie ignored. The cookie alone counts
    # only with the header, which another site's page cannot send: the token is not
    # touched (nor used up) otherwise.
    if body is not None:
        presented = body.refresh_token
    elif todoapp_refresh is None:
        raise NotAuthenticated(NO_REFRESH_TOKEN)
    elif x_requested_with != REQUESTED_WITH:
        raise NotAuthenticated(COOKIE_NEEDS_HEADER)
    else:
        presented = todoapp_refresh
    issued = sessions.rotate(db, presented)
    return token_answer(issued, request, response)


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="End every session of the caller: every token issued so far stops working",
    operation_id="auth-logout",
    response_description="Signed out everywhere; the cookie `todoapp_refresh` is cleared",
    responses=errors(*AUTHED),
)
def logout(user: CurrentUser, db: SessionDep, request: Request, response: Response) -> None:
    users.logout(db, user)
    clear_refresh_cookie(request, response)


RESET_ON_ITS_WAY = "if that address belongs to an account, a reset link is on its way"
VERIFICATION_ON_ITS_WAY = "a verification link is on its way"


@router.post(
    "/forgot-password",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Ask for a password reset link by mail",
    operation_id="auth-forgot-password",
    response_description="The same answer, in the same time, for every address",
    responses=errors(*BODY, *DB),
)
def forgot_password(body: ForgotPassword, db: SessionDep) -> Accepted:
    mail.request_password_reset(db, body.email)
    return Accepted(detail=RESET_ON_ITS_WAY)


@router.post(
    "/reset-password",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Set a new password with the token from a reset mail",
    operation_id="auth-reset-password",
    response_description="Password set; every session and token of the account ended",
    responses=errors(400, *BODY, *DB),
    dependencies=[HashingSlot],
)
def reset_password(
    body: PasswordReset,
    request: Request,
    response: Response,
    db: SessionDep,
    throttle: LoginThrottleDep,
) -> None:
    settings = request.app.state.settings
    user = users.reset_password(
        db,
        token=body.token,
        new=body.new_password,
        valid_for=timedelta(minutes=settings.password_reset_expire_minutes),
    )
    throttle.clear_account(user.id)  # its failed logins, from every address
    # Every session has ended: a browser's refresh cookie (sent to /auth) is dead too.
    clear_refresh_cookie(request, response)


@router.post(
    "/request-verify",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Ask for a verification link for one's address",
    operation_id="auth-request-verify",
    responses=errors(*AUTHED, 409),
)
def request_verify(user: CurrentUser, db: SessionDep) -> Accepted:
    users.request_verification(db, user)
    return Accepted(detail=VERIFICATION_ON_ITS_WAY)


@router.post(
    "/verify",
    summary="Verify one's address with the token from a verification mail",
    operation_id="auth-verify",
    responses=errors(400, *BODY, *DB),
)
def verify(body: EmailVerification, request: Request, db: SessionDep) -> UserOut:
    hours = request.app.state.settings.email_verify_expire_hours
    user = users.verify_email(db, token=body.token, valid_for=timedelta(hours=hours))
    return UserOut.model_validate(user)
