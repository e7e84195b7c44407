"""Token answers and the browser's refresh cookie (`todoapp_refresh`).

The cookie is HttpOnly (no script reads it), SameSite=Strict (no other site's page
sends it), Path=/auth (only the auth routes see it) and Secure outside development.
"""

from typing import Any

from fastapi import Request, Response

from todoapp.schemas import Token
from todoapp.services.sessions import IssuedTokens

REFRESH_COOKIE = "todoapp_refresh"
COOKIE_PATH = "/auth"
# The header a cookie refresh needs: a cross-site form cannot send it, and a cross-origin
# script can only with CORS's leave (CORS_ORIGINS).
REQUESTED_WITH = "todoapp"
# Starlette writes the value as given (its type hint says lower case); the attribute is
# case-insensitive, and the contract spells it `SameSite=Strict`.
_STRICT: Any = "Strict"


def _secure(request: Request) -> bool:
    secure: bool = request.app.state.settings.secure_cookies
    return secure


def token_answer(issued: IssuedTokens, request: Request, response: Response) -> Token:
    """The body of /auth/token and /auth/refresh; sets the cookie, forbids caching."""
    response.set_cookie(
        REFRESH_COOKIE,
        issued.refresh_token,
        max_age=issued.refresh_expires_in,
        path=COOKIE_PATH,
        secure=_secure(request),
        httponly=True,
        samesite=_STRICT,
    )
    response.headers["Cache-Control"] = "no-store"
    return Token(
        access_token=issued.access.token,
        expires_in=issued.access.expires_in,
        refresh_token=issued.refresh_token,
        refresh_expires_in=issued.refresh_expires_in,
    )


def clear_refresh_cookie(request: Request, response: Response) -> None:
    """Tell the browser to drop the cookie: its session has ended."""
    response.delete_cookie(
        REFRESH_COOKIE,
        path=COOKIE_PATH,
        secure=_secure(request),
        httponly=True,
        samesite=_STRICT,
    )
