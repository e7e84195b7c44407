"""Domain errors raised by the services; main.py maps each to one HTTP status."""

RESOURCE_CHANGED = "the resource changed since it was read"


class DomainError(Exception):
    """A rule of the domain refused the request; `detail` is safe to show the client.

    `retry_after`, when set, is sent as the `Retry-After` header (whole seconds).
    """

    def __init__(self, detail: str, *, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after


class InvalidInput(DomainError):
    """Well-formed but wrong, e.g. the current password does not match (400)."""


class NotAuthenticated(DomainError):
    """Bad credentials or an unusable token (401, with `WWW-Authenticate: Bearer`)."""


class PermissionDenied(DomainError):
    """Known, but not allowed: a disabled account, a non-admin on /admin (403)."""


class NotFound(DomainError):
    """The thing does not exist, or is not the caller's to see (404)."""


class Conflict(DomainError):
    """The request clashes with the current state, e.g. a taken username (409)."""


class TooManyAttempts(DomainError):
    """A failed-login budget is spent; try again after `retry_after` seconds (429)."""


class Unavailable(DomainError):
    """The service cannot take the request now, e.g. too many waiting already (503)."""


class PreconditionFailed(DomainError):
    """An `If-Match` that no longer holds: the resource changed since it was read (412)."""


class InvalidQuery(DomainError):
    """A query parameter the service refused, e.g. a tampered cursor (422, in the shape
    of FastAPI's own field errors)."""

    def __init__(self, parameter: str, detail: str) -> None:
        super().__init__(detail)
        self.parameter = parameter
