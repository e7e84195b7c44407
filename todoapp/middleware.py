"""Pure ASGI middleware: request ids, the access log, and the 1 MiB body limit."""

import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from todoapp.logs import route_template

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_BODY_BYTES = 1024 * 1024
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")

access_log = logging.getLogger("todoapp.access")


async def _send_json(send: Send, status: int, body: dict[str, Any], headers: list[Any]) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
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
    query string, headers or body, where tokens and passwords travel.
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
                if _CLIENT_ID.match(candidate):
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
        request_id = request_id or uuid.uuid4().hex
        id_header = (b"x-request-id", request_id.encode())
        status_holder = [500]
        started_response = [False]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                started_response[0] = True
                status_holder[0] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], id_header]
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
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            # A defect. One line, no stack trace: tracebacks can carry parameters.
            access_log.error(
                "unhandled %s on %s %s %s",
                type(exc).__name__,
                scope["method"],
                scope["path"],
                request_id,
            )
            if not started_response[0]:
                status_holder[0] = 500
                await _send_json(send, 500, {"detail": "Internal Server Error"}, [id_header])
        finally:
            duration_ms = (time.perf_counter() - started) * 1000
            access_log.info(
                "%s %s %d %.1fms %s",
                scope["method"],
                scope["path"],
                status_holder[0],
                duration_ms,
                request_id,
                # The fields of a JSON line (LOG_FORMAT=json, see logs.py).
                extra={
                    "request_id": request_id,
                    "method": scope["method"],
                    "path": scope["path"],
                    "route": route_template(scope),
                    "status": status_holder[0],
                    "duration_ms": round(duration_ms, 1),
                },
            )

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
