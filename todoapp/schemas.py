"""Pydantic request and response models: the field rules of the HTTP contract."""

from typing import Annotated, Any, Generic, Literal, TypeVar

from email_validator import EmailNotValidError, validate_email
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
)

MAX_PASSWORD_BYTES = 72  # bcrypt ignores (bcrypt 5: refuses) anything longer
MIN_PASSWORD_BYTES = 8


def _storable(value: str) -> str:
    """Refuse text that PostgreSQL cannot store: NUL bytes and lone surrogates."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return value


def _password(value: str) -> str:
    _storable(value)
    size = len(value.encode("utf-8"))
    if size < MIN_PASSWORD_BYTES or size > MAX_PASSWORD_BYTES:
        raise ValueError(f"must be {MIN_PASSWORD_BYTES}-{MAX_PASSWORD_BYTES} bytes in UTF-8")
    return value


def _email(value: str) -> str:
    _storable(value)
    try:
        email = validate_email(value, check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None
    if len(email) > 200:
        raise ValueError("must be at most 200 characters")
    return email


# Patterns for the document (ECMA-262 and Python read them alike), so that it says what
# the validators accept: no NUL anywhere (PostgreSQL cannot store it), and for a text that
# is trimmed and must not end up empty, one character that str.strip() keeps.
NO_NUL = r"^[^\x00]*$"
_SPACE = r"\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
NOT_BLANK = rf"^[^\x00]*[^\x00{_SPACE}][^\x00]*$"


def _text(max_length: int, pattern: str = NO_NUL, **extra: Any) -> WithJsonSchema:
    return WithJsonSchema({"type": "string", "maxLength": max_length, "pattern": pattern, **extra})


Username = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=3, max_length=45, pattern=r"^[A-Za-z0-9_.-]+$"
    ),
]
Email = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=320),
    AfterValidator(_email),
    # The document says what is accepted: an address of at most 200 characters.
    WithJsonSchema({"type": "string", "format": "email", "maxLength": 200}),
]
Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=45),
    AfterValidator(_storable),
    _text(45),
]
# Taken exactly as typed: never trimmed. The limit is in bytes: the document can only say
# characters (and does, with the bytes in words).
Password = Annotated[
    str,
    AfterValidator(_password),
    _text(
        MAX_PASSWORD_BYTES,
        minLength=MIN_PASSWORD_BYTES,
        format="password",
        description=f"{MIN_PASSWORD_BYTES}-{MAX_PASSWORD_BYTES} bytes in UTF-8",
    ),
]
Title = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(_storable),
    _text(200, NOT_BLANK, minLength=1),
]
Description = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=200),
    AfterValidator(_storable),
    _text(200),
]


def _whole_number(value: Any) -> Any:
    """JSON has one number type: 3.0 is the integer 3 (as JSON Schema's `integer` says);
    3.5, "3" and true stay refused."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Priority = Annotated[int, Field(strict=True, ge=1, le=5), BeforeValidator(_whole_number)]
Complete = Annotated[bool, Field(strict=True)]
Role = Literal["user", "admin"]
SearchText = Annotated[
    str, StringConstraints(max_length=200), AfterValidator(_storable), _text(200)
]


_RESPONSE = ConfigDict(from_attributes=True)


def _without_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def omittable() -> Any:
    """A PATCH field: it may be left out, but `null` is refused (422), never stored."""
    return Field(default=None, json_schema_extra=_without_default)


# --- users -------------------------------------------------------------------
class UserCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "email": "ada@example.com",
                    "username": "ada",
                    "password": "correct horse battery",
                    "firstname": "Ada",
                    "lastname": "Lovelace",
                }
            ]
        },
    )

    email: Email
    username: Username
    password: Password
    firstname: Name | None = None
    lastname: Name | None = None


class UserUpdate(BaseModel):
    """PATCH /users/me: any subset; null is refused rather than stored."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"firstname": "Augusta", "lastname": "King"}]},
    )

    email: Email = omittable()
    username: Username = omittable()
    firstname: Name = omittable()
    lastname: Name = omittable()


class PasswordChange(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "current_password": "correct horse battery",
                    "new_password": "staple battery horse",
                }
            ]
        },
    )

    # The current password is only compared, so any string is accepted here; a wrong
    # one is 400, like any other mismatch.
    current_password: Annotated[str, StringConstraints(max_length=1024)]
    new_password: Password


class AdminUserUpdate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"role": "admin"}, {"is_active": False}]},
    )

    role: Role = omittable()
    is_active: Annotated[bool, Field(strict=True)] = omittable()


class UserOut(BaseModel):
    model_config = _RESPONSE

    id: int
    email: str
    username: str
    firstname: str | None
    lastname: str | None
    role: Role
    is_active: bool
    is_verified: bool


# --- auth --------------------------------------------------------------------
class Token(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="Seconds until the access token expires.")
    refresh_token: str = Field(
        description="Opaque; swap it at POST /auth/refresh for a new pair. Single use."
    )
    refresh_expires_in: int = Field(
        description="Seconds the session lasts without a refresh (each refresh renews it)."
    )


class RefreshRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"refresh_token": "12.bm90LWEtcmVhbC10b2tlbg.c2ln"}]},
    )

    refresh_token: Annotated[str, StringConstraints(min_length=1, max_length=1024)]


class SessionOut(BaseModel):
    """One live session (a device) of the caller."""

    model_config = _RESPONSE

    id: int
    created_at: AwareDatetime
    last_used_at: AwareDatetime = Field(description="When it was started or last refreshed.")
    user_agent: str | None
    current: bool = Field(description="True for the session of the token used.")


# A token from a reset or verification mail; anything longer is no token of ours.
MailTokenText = Annotated[str, StringConstraints(min_length=1, max_length=256)]


class ForgotPassword(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"email": "ada@example.com"}]}
    )

    email: Email


class PasswordReset(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"token": "the token from the mail", "new_password": "a new password"}]
        },
    )

    token: MailTokenText
    new_password: Password


class EmailVerification(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"token": "the token from the mail"}]}
    )

    token: MailTokenText


class Accepted(BaseModel):
    """202: the request is taken; what follows happens by mail."""

    detail: str


# --- todos -------------------------------------------------------------------
class TodoCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"title": "Buy milk", "description": "2 litres", "priority": 3}]
        },
    )

    title: Title
    description: Description = ""
    priority: Priority
    complete: Complete = False


class TodoReplace(BaseModel):
    """PUT /todos/{id}: every field required."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "title": "Buy milk",
                    "description": "2 litres",
                    "priority": 3,
                    "complete": True,
                }
            ]
        },
    )

    title: Title
    description: Description
    priority: Priority
    complete: Complete


class TodoPatch(BaseModel):
    """PATCH /todos/{id}: any subset of the PUT body; null is refused."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"complete": True}]})

    title: Title = omittable()
    description: Description = omittable()
    priority: Priority = omittable()
    complete: Complete = omittable()


class TodoOut(BaseModel):
    model_config = _RESPONSE

    id: int
    title: str
    description: str
    priority: int
    complete: bool
    owner_id: int
    # Aware UTC datetimes, which pydantic writes as ISO 8601 ending in Z.
    created_at: AwareDatetime
    updated_at: AwareDatetime


ItemT = TypeVar("ItemT")


class Page(BaseModel, Generic[ItemT]):
    items: list[ItemT]
    total: int | None = Field(
        description="How many rows match the filters; null on a cursor page (not counted)."
    )
    limit: int
    offset: int = Field(description="Rows skipped; 0 on a cursor page.")
    next_cursor: str | None = Field(
        description="Pass as `cursor` (same filters and sort) for the next page; "
        "null on the last page."
    )


class ErrorOut(BaseModel):
    """Every error but 422 has this shape."""

    detail: str


class HealthOut(BaseModel):
    status: Literal["ok"]


class ReadyOut(BaseModel):
    status: Literal["ok"]
    database: Literal["ok"]
    migrations: str
