"""Log formats: the readable line (the default) or one JSON object per line.

`LOG_FORMAT=json` gives every record as one JSON object on one line: `time` (UTC,
ISO 8601 with milliseconds), `level`, `logger`, `message`, and for the access log also
`request_id`, `method`, `path`, `route` (the route's template, e.g. `/todos/{todo_id}`),
`status` and `duration_ms`. JSON escapes every control character, so no text a client
sends can break a line or forge another one. An exception is named by its type only:
a stack trace can carry parameters, and never reaches a log line.
"""

import json
import logging
import time
from collections.abc import MutableMapping
from typing import Any, Literal

# What the access log passes in `extra`; the JSON formatter copies these when present.
ACCESS_FIELDS = ("request_id", "method", "path", "route", "status", "duration_ms")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
UNMATCHED_ROUTE = "unmatched"
# Loggers of the server around the app, given the same format when it is JSON.
SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")
HANDLER_NAME = "todoapp"


# Longer texts from a request are cut: a log line is not a place for a 1 MiB path.
MAX_LOGGED_CHARS = 1000


def loggable(text: str) -> str:
    """A text from the request (a path, a method, a name) made safe for a log line.

    Every control or non-ASCII character, and the backslash, is escaped (`\\r\\n`,
    `\\x1b`, `\\u202e`), so a request can never write a line break (a forged log
    line), a terminal escape or a look-alike character into the readable log: one
    request stays one line, shown as sent. Used by every line that holds such text.
    """
    if len(text) > MAX_LOGGED_CHARS:
        text = text[:MAX_LOGGED_CHARS] + "..."
    if text.isascii() and text.isprintable() and "\\" not in text:
        return text  # the usual case, at the cost of two C-level scans
    return text.encode("unicode_escape").decode("ascii")


def route_template(scope: MutableMapping[str, Any]) -> str:
    """The template of the route that answered (`/todos/{todo_id}`), never the raw path.

    Set by the router once it matched (a mount gives its prefix); a request no route
    matched is `unmatched`, so that no path a client invents becomes a label or field.
    """
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) and path else UNMATCHED_ROUTE


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (ASCII only, control characters escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _utc_iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ACCESS_FIELDS:
            value = record.__dict__.get(key)
            if value is not None:
                entry[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            entry["exception"] = record.exc_info[0].__name__
        return json.dumps(entry, ensure_ascii=True, separators=(",", ":"), default=str)


class TextFormatter(logging.Formatter):
    """The readable line; an exception adds its type's name, never its traceback."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatException(self, ei: Any) -> str:  # noqa: N802 (logging's name)
        return f"({ei[0].__name__})" if ei and ei[0] is not None else ""

    def formatStack(self, stack_info: str) -> str:  # noqa: N802
        return ""


def _utc_iso(created: float) -> str:
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(seconds))}.{millis:03d}Z"


def make_formatter(log_format: Literal["text", "json"]) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


def configure_logging(
    logger: logging.Logger, level: str, log_format: Literal["text", "json"]
) -> None:
    """Give `logger` its handler (unless the application around it has its own) and format.

    With JSON, the server's own loggers (uvicorn's) get the JSON format too, so that a
    process writes nothing else. Records still propagate, so an embedding application
    or the test suite sees them as well.
    """
    formatter = make_formatter(log_format)
    ours: list[logging.Handler] = [h for h in logger.handlers if h.get_name() == HANDLER_NAME]
    if not ours and not logger.handlers and not logging.getLogger().handlers:
        stream = logging.StreamHandler()
        stream.set_name(HANDLER_NAME)
        logger.addHandler(stream)
        ours = [stream]
    for own in ours:
        own.setFormatter(formatter)
    if log_format == "json":
        for name in SERVER_LOGGERS:
            for theirs in logging.getLogger(name).handlers:
                theirs.setFormatter(formatter)
    logger.setLevel(level)
