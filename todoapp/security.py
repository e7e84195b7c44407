"""Password hashing (libpass + bcrypt) and access tokens (python-jose).

The only module that imports passlib or jose, so either can be swapped here alone.
"""

import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jose import JWTError, jwt
from passlib.context import CryptContext

from todoapp.config import get_settings

ALGORITHM = "HS256"
# Never matches a real password; verifying against it costs what a real check costs.
_DUMMY_PASSWORD = "not-a-password-of-anyone"


@lru_cache
def _context() -> CryptContext:
    rounds = get_settings().bcrypt_rounds
    return CryptContext(schemes=["bcrypt"], deprecated="auto", bcrypt__rounds=rounds)


@lru_cache
def _dummy_hash() -> str:
    return str(_context().hash(_DUMMY_PASSWORD))


def hash_password(password: str) -> str:
    return str(_context().hash(password))


def verify_password(password: str, password_hash: str | None) -> tuple[bool, str | None]:
    """Check a password; returns (matches, a new hash when the old one needs updating).

    With no hash (an unknown user) it verifies against a dummy hash all the same, so
    that an unknown username costs as much time as a wrong password.
    """
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:
        password = _DUMMY_PASSWORD + "!"
    if password_hash is None or len(password.encode("utf-8")) > 72 or "\x00" in password:
        _context().verify(_DUMMY_PASSWORD + "?", _dummy_hash())
        return False, None
    try:
        ok, new_hash = _context().verify_and_update(password, password_hash)
        return bool(ok), new_hash
    except ValueError:
        # An unusable hash (e.g. "!" for a legacy user without one).
        _context().verify(_DUMMY_PASSWORD + "?", _dummy_hash())
        return False, None


@dataclass(frozen=True, slots=True)
class TokenClaims:
    user_id: int
    token_version: int


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    expires_in: int


def issue_access_token(user_id: int, token_version: int) -> IssuedToken:
    settings = get_settings()
    now = int(time.time())
    expires_in = settings.access_token_expire_minutes * 60
    claims = {"sub": str(user_id), "iat": now, "exp": now + expires_in, "ver": token_version}
    token = jwt.encode(claims, settings.secret_key, algorithm=ALGORITHM)
    return IssuedToken(token=token, expires_in=expires_in)


def read_access_token(token: str) -> TokenClaims | None:
    """The claims of a well-signed, unexpired token, or None for anything else."""
    if len(token) > 4096:
        return None
    verified = _verified(token, get_settings().secret_key)
    if verified is None:
        return None
    claims, expires_at = verified
    # Expiry is checked on every use; only the signature check is remembered.
    return claims if time.time() < expires_at else None


@lru_cache(maxsize=8192)
def _verified(token: str, secret_key: str) -> tuple[TokenClaims, int] | None:
    """The signature and claims check of one token, remembered: it is the costly part
    of authenticating a request, and a client sends the same token many times. The
    secret is part of the key, so a new secret never meets an old verdict."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            secret_key,
            algorithms=[ALGORITHM],
            options={
                "require_exp": True,
                "require_iat": True,
                "require_sub": True,
                "verify_exp": False,  # checked on every use, by read_access_token
            },
        )
    except (JWTError, ValueError, TypeError):
        return None
    sub, version, expires_at = claims.get("sub"), claims.get("ver"), claims.get("exp")
    if not isinstance(sub, str) or not sub.isdigit() or type(version) is not int:
        return None
    if type(expires_at) is not int:
        return None
    user_id = int(sub)
    if not 0 < user_id <= 2**31 - 1:
        return None
    return TokenClaims(user_id=user_id, token_version=version), expires_at
