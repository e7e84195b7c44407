"""Prometheus metrics: what they count, the middleware that times requests, `/metrics`.

Every metric lives here, so that any module (and the helpers that add refresh tokens and
mail) counts with one import and one call, whether or not `/metrics` is served. Labels
hold only words of our own (route templates, methods, statuses, reasons): never a path
as sent, a user, a token or an address.

Several worker processes (uvicorn --workers N) each count on their own; with
PROMETHEUS_MULTIPROC_DIR set to an empty directory before they start, prometheus-client
keeps every count in a file there and `/metrics` adds up all the workers (its
multiprocess mode). `make serve` and `make cluster` set it up.
"""

import hmac
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prometheus_multiprocess
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from todoapp.logs import route_template

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MULTIPROC_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Seconds: from a fast-lane read (about 1 ms) to a request that waited out a pool timeout.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# --- requests -------------------------------------------------------------------------
HTTP_REQUESTS = Counter(
    "todoapp_http_requests",
    "HTTP requests answered, by route template, method and status.",
    ["route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "todoapp_http_request_duration_seconds",
    "Time from the request's arrival to the end of its answer, by route template and method.",
    ["route", "method"],
    buckets=LATENCY_BUCKETS,
)

# --- the database ------------------------------------------------------------------------
# "threads": requests admitted to the pooled connections (deps.admit); "fast_lane": the
# lane's reads on its own event-loop connections (pg_async.AsyncReader).
DB_IN_USE = Gauge(
    "todoapp_db_connections_in_use",
    "Database connections in use by requests now, by pool (summed over live workers).",
    ["pool"],
    multiprocess_mode="livesum",
)
DB_POOL_SIZE = Gauge(
    "todoapp_db_pool_size",
    "Database connections each pool may open (summed over live workers).",
    ["pool"],
    multiprocess_mode="livesum",
)
DB_WAITS = Counter(
    "todoapp_db_waits",
    "Requests that found every pooled connection in use and waited for one, by outcome "
    "(admitted, or timed_out after DB_POOL_TIMEOUT: a 503).",
    ["outcome"],
)
DB_WAIT_SECONDS = Histogram(
    "todoapp_db_wait_seconds",
    "How long requests that had to wait for a pooled connection waited.",
    buckets=WAIT_BUCKETS,
)

# --- the fast lane -------------------------------------------------------------------------
FAST_LANE_ANSWERS = Counter(
    "todoapp_fastlane_answers", "Plain GET /todos answered by the fast lane itself."
)
FAST_LANE_HANDOVERS = Counter(
    "todoapp_fastlane_handovers",
    "Plain GET /todos the fast lane tried and handed to the app, by reason: read_failed "
    "(database down, busy or restarted), token (the token no longer holds), past_end "
    "(a page past the end, whose total the app counts).",
    ["reason"],
)

# --- sign-in ---------------------------------------------------------------------------
LOGIN_THROTTLED = Counter(
    "todoapp_login_throttled", "Login attempts refused with 429 (too many failures)."
)
REFRESH_TOKEN_REUSE = Counter(
    "todoapp_refresh_token_reuse",
    "Refresh tokens presented again after they were rotated (a replay: the session ends).",
)

# --- mail ------------------------------------------------------------------------------------
MAIL_QUEUED = Counter("todoapp_mail_queued", "Mails written to the outbox.")
MAIL_SENT = Counter("todoapp_mail_sent", "Mails the SMTP server accepted.")
MAIL_FAILED = Counter(
    "todoapp_mail_failed", "Mail deliveries that failed (retried later, or given up)."
)
MAIL_OLDEST_QUEUED_AGE = Gauge(
    "todoapp_mail_oldest_queued_age_seconds",
    "Age of the oldest mail still waiting in the outbox (0 when it is empty).",
    multiprocess_mode="mostrecent",  # whichever process looked last knows best
)

THREADS_IN_USE = DB_IN_USE.labels("threads")
LANE_IN_USE = DB_IN_USE.labels("fast_lane")


def _method(scope: Scope) -> str:
    method: str = scope["method"]
    return method if method in METHODS else "other"


class MetricsMiddleware:
    """Counts and times every HTTP request by route template, method and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]  # what the client gets when nothing is sent at all

        async def send_and_note(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route, method = route_template(scope), _method(scope)
            HTTP_REQUESTS.labels(route, method, str(status[0])).inc()
            HTTP_LATENCY.labels(route, method).observe(time.perf_counter() - started)


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_DIR_VARIABLE) or None


def exposition() -> bytes:
    """Every metric in Prometheus' text format: all workers' when counted in files."""
    if multiprocess_dir() is None:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    prometheus_multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def token_matches(authorization: str | None, expected: str) -> bool:
    """Whether an Authorization header carries the bearer `expected` (constant time)."""
    if not authorization or not authorization.startswith("Bearer "):
        return False
    return hmac.compare_digest(authorization[7:].encode(), expected.encode())


def worker_stopped() -> None:
    """Forget this process's live gauges (the files of its counters stay and still add up)."""
    directory = multiprocess_dir()
    if directory is not None:
        prometheus_multiprocess.mark_process_dead(os.getpid(), directory)  # type: ignore[no-untyped-call]


# The text format every Prometheus reads (our names need nothing newer).
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
