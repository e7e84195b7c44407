"""create_app(): the app, its routers, middleware, error handlers and docs."""

import asyncio
import gc
import json
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Mount

from todoapp import metrics
from todoapp.config import ConfigError, Settings, get_settings
from todoapp.database import Database, SchemaNotReady, make_engine
from todoapp.deps import SessionSource
from todoapp.docs import install_docs
from todoapp.drain import Drain, DrainMiddleware
from todoapp.errors import (
    Conflict,
    DomainError,
    InvalidInput,
    InvalidQuery,
    NotAuthenticated,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    TooManyAttempts,
    Unavailable,
)
from todoapp.fastlane import TodoListFastLane, on_loop_reads
from todoapp.frontend import install_frontend
from todoapp.logs import configure_logging, loggable
from todoapp.mailer import LogTransport, MailWorker, make_transport
from todoapp.metrics import MetricsMiddleware
from todoapp.middleware import RequestContextMiddleware
from todoapp.routers import admin, auth, operations, todos, users
from todoapp.routers import metrics as metrics_router
from todoapp.routing import include_routes
from todoapp.throttle import LoginThrottle, make_failure_store

logger = logging.getLogger("todoapp")

_STATUS = {
    InvalidInput: 400,
    NotAuthenticated: 401,
    PermissionDenied: 403,
    NotFound: 404,
    Conflict: 409,
    PreconditionFailed: 412,
    TooManyAttempts: 429,
    Unavailable: 503,
}
DATABASE_UNAVAILABLE = "database unavailable"
UNPARSABLE_BODY = "There was an error parsing the body"  # FastAPI's own words
_JSON_INVALID = {
    "type": "json_invalid",
    "loc": ["body", 0],
    "msg": "JSON decode error",
    "ctx": {"error": "the body could not be parsed"},
}


class AsciiJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped, so that any text (even a lone surrogate) encodes."""

    def render(self, content: object) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def _configure_logging(settings: Settings) -> None:
    # Our own handler when nothing above us has one (as under uvicorn); see logs.py.
    configure_logging(logger, settings.log_level, settings.log_format)
    # The logging HOWTO's optimisations: our records never show the caller's file and
    # line, threads or processes, so do not spend time on every request finding them.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def _allowed_methods(app: FastAPI, request: Request) -> str:
    """Every method some route answers on this path (Starlette names only the first
    route's), HEAD wherever GET is (see RequestContextMiddleware). Asked of the router
    itself, one method at a time: only on a 405. Mounts (static files) say their own."""
    allowed = []
    for method in _METHODS:
        scope = {**request.scope, "method": "GET" if method == "HEAD" else method}
        routes = (route for route in app.router.routes if not isinstance(route, Mount))
        if any(route.matches(scope)[0] == Match.FULL for route in routes):
            allowed.append(method)
    return ", ".join(allowed)


def _install_error_handlers(app: FastAPI) -> None:
    async def domain_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, DomainError)
        status = next(code for kind, code in _STATUS.items() if isinstance(exc, kind))
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
        if exc.retry_after is not None:
            headers["Retry-After"] = str(exc.retry_after)
        return JSONResponse({"detail": exc.detail}, status_code=status, headers=headers)

    async def invalid_query(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, InvalidQuery)
        error = {"type": "value_error", "loc": ["query", exc.parameter], "msg": exc.detail}
        return AsciiJSONResponse({"detail": [error]}, status_code=422)

    async def schema_not_ready(_request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)

    async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, DBAPIError) and not (
            isinstance(exc, OperationalError) or exc.connection_invalidated
        ):
            raise exc  # a real defect: let the middleware answer 500 and log it
        logger.warning(
            "database unavailable (%s) on %s", type(exc).__name__, loggable(request.url.path)
        )
        return JSONResponse({"detail": DATABASE_UNAVAILABLE}, status_code=503)

    async def validation_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        # FastAPI's list of field errors, less each `input`: an input can be a
        # password, or a whole body holding one, and must never be echoed.
        errors = [
            {key: value for key, value in error.items() if key != "input"} for error in exc.errors()
        ]
        return AsciiJSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        # FastAPI answers 400 when the JSON parser itself gives up (an integer of
        # thousands of digits, nesting too deep): malformed JSON, so 422 like the rest.
        if exc.status_code == 400 and exc.detail == UNPARSABLE_BODY:
            return AsciiJSONResponse({"detail": [_JSON_INVALID]}, status_code=422)
        if exc.status_code == 405 and (allowed := _allowed_methods(app, request)):
            exc.headers = {**(exc.headers or {}), "Allow": allowed}
        return await http_exception_handler(request, exc)

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(InvalidQuery, invalid_query)
    app.add_exception_handler(DomainError, domain_error)
    app.add_exception_handler(SchemaNotReady, schema_not_ready)
    for kind in (OperationalError, DisconnectionError, PoolTimeoutError, DBAPIError):
        app.add_exception_handler(kind, database_unavailable)


def create_app(settings: Settings | None = None, database: Database | None = None) -> FastAPI:
    settings = settings or get_settings()
    _configure_logging(settings)
    database = database or Database(make_engine(settings.database_url, settings))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.uses_development_secret:
            logger.warning(
                "SECRET_KEY is the built-in development key: fine on your machine, "
                "refused when ENVIRONMENT is not development"
            )
        # Our own access line replaces uvicorn's, which would also log query strings.
        logging.getLogger("uvicorn.access").disabled = True
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.worker_threads
        app.state.admission = asyncio.BoundedSemaphore(settings.worker_threads)  # this loop's own
        app.state.hashing = asyncio.Semaphore(settings.hashing_turns)
        try:
            problem = database.schema_problem()
        except Exception as exc:  # the app still starts; /readyz reports it
            logger.warning("database unavailable at start-up (%s)", type(exc).__name__)
        else:
            if problem is not None:
                logger.error("%s", problem)
        app.state.on_loop_reads = on_loop_reads(database, settings)  # this loop's own
        metrics.DB_POOL_SIZE.labels("threads").set(settings.worker_threads)
        if app.state.on_loop_reads is not None:
            metrics.DB_POOL_SIZE.labels("fast_lane").set(settings.fast_lane_connections)
        if settings.metrics_enabled and metrics.multiprocess_dir() is None:
            logger.info(
                "metrics: PROMETHEUS_MULTIPROC_DIR is not set, so /metrics shows this "
                "worker's counts only (fine with one worker)"
            )
        transport = make_transport(settings)
        if transport is None:
            logger.warning(
                "SMTP_HOST is not set: mail (password resets, address verification) is "
                "queued but not sent; set SMTP_HOST to deliver it"
            )
        elif isinstance(transport, LogTransport):
            logger.warning("SMTP_HOST is not set: mail is written to this log (development)")
        mail_worker = MailWorker(database, settings, transport)
        mail_worker.start()
        drain.install()
        # Start-up leaves about a million objects that live as long as the process (the
        # framework, the models, the schemas, the routes). Frozen, the collector no longer
        # walks them in its full collections, each of which otherwise stopped every
        # request for about 70 ms now and then (p99 at 8 connections: 78 ms, not 10).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            drain.uninstall()
            await mail_worker.stop()
            if app.state.on_loop_reads is not None:
                app.state.on_loop_reads.reader.close()
            database.engine.dispose()
            metrics.worker_stopped()

    app = FastAPI(
        title="todoapp",
        version="1.0.0",
        summary="Todos and users over a small, strict REST API.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        # What this app reports is Prometheus metrics and its own log lines (README,
        # Observability). FastAPI's native OpenTelemetry would look on every request for
        # globally configured providers (none: no SDK is installed): off, it costs nothing.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.settings = settings
    app.state.database = database
    drain = app.state.drain = Drain(settings.drain_seconds)
    app.state.session_source = SessionSource(database)
    # Remade at start-up for the serving loop; see deps.get_session_source.
    app.state.admission = asyncio.BoundedSemaphore(settings.worker_threads)
    app.state.hashing = asyncio.Semaphore(settings.hashing_turns)  # remade likewise
    app.state.login_throttle = LoginThrottle(
        make_failure_store(
            settings.redis_url, settings.login_window_seconds, settings.redis_key_prefix
        ),
        per_account=settings.login_max_failures,
        per_address=settings.login_max_failures_per_address,
    )
    # The busiest first: a request is matched against the routes in this order.
    # Each router's routes declared on the app itself: matched once per request, where
    # app.include_router's are matched twice (see routing.include_routes).
    for router in (todos.router, users.router, auth.router, admin.router, operations.router):
        include_routes(app, router)
    if settings.metrics_enabled:
        include_routes(app, metrics_router.router)
    install_docs(app)
    install_frontend(app)
    _install_error_handlers(app)
    # Inside CORS and the request context, so its answers get their headers and log line.
    app.add_middleware(TodoListFastLane, fastapi_app=app)
    if settings.cors_origins:
        # Credentials: these origins' pages may refresh with the cookie (and send the
        # X-Requested-With it needs); other origins get no CORS headers at all. With `*`
        # every origin may call, never with credentials: Starlette would echo any
        # page's origin, and any site could refresh with a visitor's cookie.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials="*" not in settings.cors_origins,
            allow_methods=["*"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "X-Request-ID",
                "X-Requested-With",
                "If-Match",
                "If-None-Match",
            ],
            expose_headers=["X-Request-ID", "Location", "Retry-After", "ETag"],
        )
    app.add_middleware(DrainMiddleware, drain=drain)
    app.add_middleware(RequestContextMiddleware)
    if settings.metrics_enabled:  # outermost: it sees every answer, 413s and 500s too
        app.add_middleware(MetricsMiddleware)
    return app


def _app_from_environment() -> FastAPI:
    settings = get_settings()
    try:
        settings.check_secret_key()
    except ConfigError as exc:
        print(f"todoapp: refusing to start: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    return create_app(settings)


app = _app_from_environment()
