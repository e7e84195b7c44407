"""Pure ASGI middleware: request ids, the access log, the 1 MiB body limit, security
headers, and HEAD wherever GET is answered."""

import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from todoapp.logs import loggable, route_template

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_BODY_BYTES = 1024 * 1024
_CLIENT_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")  # fullmatch: `$` allows a final "\n"

# On every answer: browsers must not guess a type other than the one sent.
NOSNIFF = (b"x-content-type-options", b"nosniff")
# Answers that carry tokens must never be stored by a cache (RFC 6749, section 5.1).
TOKEN_PATHS = frozenset({"/auth/token", "/auth/refresh"})
NO_STORE = [(b"cache-control", b"no-store"), (b"pragma", b"no-cache")]
# HTML pages that bring no policy of their own get this one: everything from this
# origin only, scripts included (no inline ones; inline styles are let through), and
# never inside a frame.
HTML_POLICY = (
    b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    b"img-src 'self' data:; object-src 'none'; base-uri 'self'; form-action 'self'; "
    b"frame-ancestors 'none'"
)

access_log = logging.getLogger("todoapp.access")


def security_headers(path: str, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The response headers of `path` with the hardening headers added."""
    headers = [*headers, NOSNIFF]
    if path in TOKEN_PATHS:
        headers = [h for h in headers if h[0].lower() not in (b"cache-control", b"pragma")]
        headers += NO_STORE
    html = any(n.lower() == b"content-type" and v.startswith(b"text/html") for n, v in headers)
    if html:
        names = {name.lower() for name, _ in headers}
        if b"content-security-policy" not in names:
            headers.append((b"content-security-policy", HTML_POLICY))
        if b"x-frame-options" not in names:
            headers.append((b"x-frame-options", b"DENY"))  # frame-ancestors for old browsers
    return headers


async def _send_json(send: Send, status: int, body: dict[str, Any], headers: list[Any]) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                NOSNIFF,
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class RequestContextMiddleware:
    """X-Request-ID on every response, one access-log line per request, 413 over 1 MiB.

    The body is read here, before routing and authentication, whether it comes with
    a Content-Length or chunked; a body within the limit is handed on unchanged.
    The log line holds method, path, status, duration and request id: never the
    query string, headers or body, where tokens and passwords travel; the path is
    escaped (logs.loggable), so that one request is always one line.

    Every answer also gets the security headers (see security_headers), and a HEAD
    request is answered as its GET would be, without the body.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = ""
        has_body = False
        content_length: int | None = None
        json_body = False
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                if _CLIENT_ID.fullmatch(candidate):
                    request_id = candidate
            elif name == b"content-length":
                has_body = True
                try:
                    content_length = int(value)
                except ValueError:
                    content_length = None
            elif name == b"transfer-encoding":
                has_body = True
            elif name == b"content-type":
                media_type = value.split(b";", 1)[0].strip().lower()
                json_body = media_type == b"application/json" or media_type.endswith(b"+json")
        request_id = request_id or os.urandom(16).hex()  # 128 random bits, as a uuid4's
        id_header = (b"x-request-id", request_id.encode())
        status_holder = [500]
        started_response = [False]
        path = scope["path"]
        root_path = scope.get("root_path", "")
        # The path the app routes on, also when mounted under a prefix behind a proxy.
        app_path = path[len(root_path) :] if root_path and path.startswith(root_path) else path
        head = scope["method"] == "HEAD"
        inner_scope = {**scope, "method": "GET"} if head else scope

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                started_response[0] = True
                status_holder[0] = message["status"]
                headers = security_headers(app_path, message.get("headers", []))
                message["headers"] = [*headers, id_header]
            elif head and message["type"] == "http.response.body":
                # The GET's headers (Content-Length included), none of its body.
                message = {**message, "body": b""}
            await send(message)

        try:
            if has_body:
                too_large = content_length is not None and content_length > self.max_body_bytes
                body = b"" if too_large else await self._read_body(receive)
                if too_large or body is None:
                    status_holder[0] = 413
                    await _send_json(
                        send,
                        413,
                        {"detail": "Request body is larger than 1 MiB"},
                        [id_header, (b"connection", b"close")],
                    )
                    return
                if json_body and not _is_utf8(body):
                    # JSON is UTF-8; anything else is malformed JSON, a 422 like any other.
                    status_holder[0] = 422
                    await _send_json(send, 422, _NOT_UTF8, [id_header])
                    return
                receive = _replay(body, receive)
            await self.app(inner_scope, receive, send_with_id)
        except Exception as exc:
            # A defect. One line, no stack trace: tracebacks can carry parameters.
            access_log.error(
                "unhandled %s on %s %s %s",
                type(exc).__name__,
                loggable(scope["method"]),
                loggable(path),
                request_id,
            )
            if not started_response[0]:
                status_holder[0] = 500
                await _send_json(send, 500, {"detail": "Internal Server Error"}, [id_header])
        finally:
            if access_log.isEnabledFor(logging.INFO):
                duration_ms = (time.perf_counter() - started) * 1000
                # Logger.info without its look for the caller's file and line (in no
                # format of ours), one line a request.
                record = access_log.makeRecord(
                    access_log.name,
                    logging.INFO,
                    __file__,
                    0,
                    "%s %s %d %.1fms %s",
                    (
                        loggable(scope["method"]),
                        loggable(path),
                        status_holder[0],
                        duration_ms,
                        request_id,
                    ),
                    None,
                    # The fields of a JSON line (LOG_FORMAT=json, see logs.py).
                    extra={
                        "request_id": request_id,
                        "method": scope["method"],
                        "path": scope["path"],
                        "route": route_template(inner_scope),
                        "status": status_holder[0],
                        "duration_ms": round(duration_ms, 1),
                    },
                )
                access_log.handle(record)

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The whole body, or None as soon as it passes the limit."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


_NOT_UTF8 = {
    "detail": [
        {
            "type": "json_invalid",
            "loc": ["body", 0],
            "msg": "JSON decode error",
            "ctx": {"error": "the body is not valid UTF-8"},
        }
    ]
}


def _is_utf8(body: bytes) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
