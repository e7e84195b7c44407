"""Password hashing (libpass + bcrypt), access tokens (python-jose), signed cursors.

The only module that imports passlib or jose, or does cryptography, so any of it can
be swapped here alone.
"""

import base64
import binascii
import contextlib
import hashlib
import hmac
import os
import re
import secrets
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar

from jose import JWTError, jwt
from passlib.context import CryptContext

from todoapp.config import get_settings

ALGORITHM = "HS256"
MAX_ID = 2**31 - 1  # PostgreSQL's integer: the range of user and session ids
# How much lower than the request threads' the hashing threads' CPU priority is (Linux).
HASHING_NICENESS = 10
T = TypeVar("T")
# A user id as `issue_access_token` writes it: ASCII digits only (str.isdigit() also
# takes "²" and "٢"), no sign, no padding, within PostgreSQL's integer.
_SUBJECT = re.compile(r"[1-9][0-9]{0,9}")
# Never matches a real password; verifying against it costs what a real check costs.
_DUMMY_PASSWORD = "not-a-password-of-anyone"


@lru_cache
def _context() -> CryptContext:
    rounds = get_settings().bcrypt_rounds
    return CryptContext(schemes=["bcrypt"], deprecated="auto", bcrypt__rounds=rounds)


@lru_cache
def _dummy_hash() -> str:
    return str(_context().hash(_DUMMY_PASSWORD))


def _lower_priority() -> None:
    # On Linux a nice value belongs to one thread: only the hashing threads yield the
    # CPU to requests that are not hashing. Elsewhere (one value per process) not at all.
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):  # not allowed: hashing still works
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASHING_NICENESS)


@lru_cache
def _hashing_threads() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(
        max_workers=get_settings().hashing_turns,
        thread_name_prefix="todoapp-hashing",
        initializer=_lower_priority,
    )


def _on_hashing_thread(work: Callable[..., T], *args: Any) -> T:
    """Run bcrypt at a low CPU priority: a flood of logins may slow down logins, while
    the other requests of the worker keep the CPU they need (bcrypt releases the GIL)."""
    return _hashing_threads().submit(work, *args).result()


def hash_password(password: str) -> str:
    return str(_on_hashing_thread(_context().hash, password))


def verify_password(password: str, password_hash: str | None) -> tuple[bool, str | None]:
    """Check a password; returns (matches, a new hash when the old one needs updating).

    With no hash (an unknown user) it verifies against a dummy hash all the same, so
    that an unknown username costs as much time as a wrong password.
    """
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:
        password = _DUMMY_PASSWORD + "!"
    return _on_hashing_thread(_verify, password, password_hash)


def _verify(password: str, password_hash: str | None) -> tuple[bool, str | None]:
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


def new_mail_token() -> str:
    """A single-use token for a link in a mail: 32 random bytes, URL-safe."""
    return secrets.token_urlsafe(32)


def digest(value: str) -> str:
    """SHA-256 in hex: how a mail token is stored, and a fingerprint of what it is
    bound to. The tokens are random, so a fast hash is enough (nothing to guess)."""
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class TokenClaims:
    user_id: int
    token_version: int
    session_id: int


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    expires_in: int


def issue_access_token(user_id: int, token_version: int, session_id: int) -> IssuedToken:
    settings = get_settings()
    now = int(time.time())
    expires_in = settings.access_token_expire_minutes * 60
    claims = {
        "sub": str(user_id),
        "iat": now,
        "exp": now + expires_in,
        "ver": token_version,
        "sid": session_id,
    }
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
    except JWTError:
        return None
    except Exception:
        # Whatever else the library trips over on a crafted token (a RecursionError
        # from a header of deeply nested JSON, a ValueError, a TypeError) is a token
        # that does not hold, never an error of the server.
        return None
    sub, version, expires_at = claims.get("sub"), claims.get("ver"), claims.get("exp")
    session_id = claims.get("sid")
    if not isinstance(sub, str) or not _SUBJECT.fullmatch(sub) or type(version) is not int:
        return None
    if type(expires_at) is not int or type(session_id) is not int:
        return None
    user_id = int(sub)
    if not 0 < user_id <= MAX_ID or not 0 < session_id <= MAX_ID:
        return None
    return TokenClaims(user_id=user_id, token_version=version, session_id=session_id), expires_at


# --- refresh tokens ------------------------------------------------------------
# A refresh token is "<session id>.<secret>.<mac>": the secret is 32 random bytes, of
# which the database keeps only the SHA-256; the MAC (HMAC-SHA256 under a key derived
# from SECRET_KEY) proves that this server issued that secret for that session. So a
# used-up token of a session is recognised as one (reuse: the session ends), while a
# made-up token naming someone's session is merely unknown and ends nothing.
REFRESH_SECRET_BYTES = 32
_MAX_REFRESH_TOKEN = 200


@dataclass(frozen=True, slots=True)
class RefreshSecret:
    secret: str
    hash: str  # what the database keeps


@dataclass(frozen=True, slots=True)
class PresentedRefreshToken:
    session_id: int
    secret_hash: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("ascii")).hexdigest()


@lru_cache(maxsize=4)
def _refresh_key(secret_key: str) -> bytes:
    # A key of its own, so a refresh token's MAC can never double as a JWT signature.
    return hmac.new(secret_key.encode(), b"todoapp refresh token", hashlib.sha256).digest()


def _refresh_mac(body: str) -> str:
    key = _refresh_key(get_settings().secret_key)
    return _b64(hmac.new(key, body.encode("ascii"), hashlib.sha256).digest())


def new_refresh_secret() -> RefreshSecret:
    secret = secrets.token_urlsafe(REFRESH_SECRET_BYTES)
    return RefreshSecret(secret=secret, hash=_sha256(secret))


def refresh_token(session_id: int, secret: RefreshSecret) -> str:
    """The refresh token handed to the client: opaque to it, URL-safe."""
    body = f"{session_id}.{secret.secret}"
    return f"{body}.{_refresh_mac(body)}"


def read_refresh_token(token: str) -> PresentedRefreshToken | None:
    """The session and secret hash of a token this server issued, or None for anything
    else (malformed, made up, signed under another SECRET_KEY). Constant-time MAC check."""
    if len(token) > _MAX_REFRESH_TOKEN or not token.isascii():
        return None
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        return None
    sid, secret, mac = parts
    if not sid.isdigit() or len(sid) > 10 or not 0 < int(sid) <= MAX_ID:
        return None
    if not hmac.compare_digest(mac, _refresh_mac(f"{sid}.{secret}")):
        return None
    return PresentedRefreshToken(session_id=int(sid), secret_hash=_sha256(secret))


def same_hash(a: str, b: str) -> bool:
    """Compare two stored hashes in constant time."""
    return hmac.compare_digest(a.encode(), b.encode())


# --- signed cursors ------------------------------------------------------------------
_CURSOR_CONTEXT = b"todoapp cursor v1\x00"
_CURSOR_MAC_BYTES = 16


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _cursor_mac(payload: bytes, listing: bytes) -> bytes:
    mac = _cursor_hmac(get_settings().secret_key).copy()  # the key's setup done once
    mac.update(_listing_digest(listing) + payload)
    return mac.digest()[:_CURSOR_MAC_BYTES]


@lru_cache(maxsize=4)
def _cursor_hmac(secret_key: str) -> "hmac.HMAC":
    """An HMAC with the key and the cursors' context already fed in, to be copied."""
    return hmac.new(secret_key.encode(), _CURSOR_CONTEXT, hashlib.sha256)


@lru_cache(maxsize=1024)
def _listing_digest(listing: bytes) -> bytes:
    # A client pages through one listing many times: its digest is remembered.
    return hashlib.sha256(listing).digest()


def sign_cursor(payload: bytes, listing: bytes) -> str:
    """An opaque, URL-safe cursor carrying `payload`, valid only for `listing`.

    The listing (which list, whose, its filters and sort) is signed but not carried:
    a cursor presented with other filters fails the check like a tampered one.
    """
    return f"{_b64(payload)}.{_b64(_cursor_mac(payload, listing))}"


def read_cursor(cursor: str, listing: bytes) -> bytes | None:
    """The payload of a cursor signed here for this listing, else None."""
    encoded, dot, mac = cursor.partition(".")
    try:
        payload, sent_mac = _b64decode(encoded), _b64decode(mac)
    except (binascii.Error, ValueError):
        return None
    # Only the one canonical spelling: the decoder would skip stray characters and
    # ignore the spare bits of the last one, so that altered text could pass.
    if not dot or _b64(payload) != encoded or _b64(sent_mac) != mac:
        return None
    if not hmac.compare_digest(sent_mac, _cursor_mac(payload, listing)):
        return None
    return payload
