"""OneHopRoute: a route whose dependencies are solved by a plan made once, and whose
plain `def` work (the route and its plain `def` dependencies) takes one thread hop.

FastAPI solves a route's dependencies afresh on every request: for each dependency it
works out again whether the callable is a coroutine or a generator, what its cache key
and scopes are, and which of four parameter groups to read, and it runs every sync
dependency in a worker thread of its own (a `yield` one in two: to enter and to leave).
For `GET /todos/{id}` that was about 450 Python calls and four thread hops per request,
more than the route's own work. This route class reads the same `Dependant` tree that
FastAPI builds from the `Annotated` aliases, once, when the route is declared, into a
plan (`_Plan`): the steps in FastAPI's order, each with its kind, its cache key and only
the parameter groups it has. Per request the plan is followed:

- async dependencies are awaited on the event loop, in FastAPI's order, each once;
  `yield` ones are entered on the request's exit stack by FastAPI's own
  `_solve_generator`, so they are left after the answer is sent (or, with
  `scope="function"`, before), with the exception if one was raised, and shielded
  from cancellation while they clean up;
- sync dependencies are not run where they are solved but *deferred*: the route runs
  them, in dependency order and each once per request, in the same worker thread as
  itself; a sync dependency with `yield` is left again in that thread, right after the
  route returns or raises, with its exception. Two differences from FastAPI follow:
  sync dependencies run after every parameter and the body were validated (a 422
  comes before what they would refuse: see README, "Which check answers first"), and
  a sync `yield` dependency is left before the answer is sent, not after (the
  connection it holds goes back at once);
- parameters and bodies are read and validated with FastAPI's own functions, so every
  422 is worded and located as FastAPI words and locates it; answers are validated and
  serialised by the route's response field, once, as FastAPI does.

Rules it adds (checked when a route is declared, so a mistake fails at import):
- an `async def` dependency cannot use a sync one (it would get the deferred call, not
  its value): make it a plain `def`, which costs nothing here;
- what the plan does not cover is served FastAPI's own way: streaming routes, websocket
  parameters, dependencies with a concurrency limit, an async route with a sync
  dependency.

A planned route runs the dependencies it declares, and nothing else: nothing is looked
up per request to replace one (FastAPI's replacements for tests are not consulted by
it), so a request always takes the path production takes. Tests build the app as
production does instead, with their own settings and database (tests/conftest.py).
"""

import asyncio
import email.message
import json
import queue
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import (
    AsyncExitStack,
    ExitStack,
    contextmanager,
    suppress,
)
from contextvars import Context, copy_context
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import anyio.to_thread

# FastAPI's own pieces (some private, pinned with FastAPI in requirements.txt): they
# decide what FastAPI would decide, so the plan answers exactly as FastAPI answers.
from fastapi import APIRouter, FastAPI, params
from fastapi._compat import ModelField, Undefined
from fastapi._compat.shared import field_annotation_is_sequence
from fastapi.datastructures import DefaultPlaceholder
from fastapi.dependencies.models import (
    Dependant,
    _get_cache_key,
    _get_oauth_scopes,
    _is_async_gen_callable,
    _is_coroutine_callable,
    _is_gen_callable,
)
from fastapi.dependencies.utils import (
    _get_param_aliases,
    _get_param_model,
    _is_json_field,
    _solve_generator,
    _validate_value_with_model_field,
    request_body_to_args,
    request_params_to_args,
)
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError, ResponseValidationError
from fastapi.routing import (
    APIRoute,
    _DefaultLifespan,
    _effective_route_context_var,
    _extract_endpoint_context,
    _get_scope_effective_route_context,
)
from fastapi.security import SecurityScopes
from fastapi.utils import is_body_allowed_for_status_code
from starlette.background import BackgroundTasks
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import Scope

_ASYNC, _ASYNC_GEN, _SYNC, _SYNC_GEN = "async", "async generator", "sync", "sync generator"
UNPARSABLE_BODY = "There was an error parsing the body"  # FastAPI's own words


class Deferred:
    """A sync dependency's call with its arguments, run later in the route's thread."""

    __slots__ = ("arguments", "call", "generator")

    def __init__(self, call: Callable[..., Any], generator: bool, arguments: dict[str, Any]):
        self.call = call
        self.generator = generator
        self.arguments = arguments


class Unplannable(Exception):
    """The route has something the plan does not cover: FastAPI serves it its own way."""


class AsyncUsesSync(Unplannable):
    """An async dependency uses a plain `def` one: a mistake (TypeError at import)."""


def _kind(call: Callable[..., Any]) -> str:
    if _is_async_gen_callable(call):
        return _ASYNC_GEN
    if _is_coroutine_callable(call):
        return _ASYNC
    return _SYNC_GEN if _is_gen_callable(call) else _SYNC


@dataclass(frozen=True, slots=True, eq=False)
class _Step:
    """One dependency: how to call it, and the plan for its own arguments."""

    call: Callable[..., Any]
    kind: str
    name: str | None
    dependant: Dependant  # FastAPI's, for its _solve_generator
    key: tuple[Any, ...]  # FastAPI's cache key: the callable, its scopes, its scope
    use_cache: bool
    function_scope: bool  # a `yield` dependency left before the answer, not after
    plan: "_Plan"


@dataclass(frozen=True, slots=True, eq=False)
class _Plan:
    """What one dependant (a dependency or the route) needs, in FastAPI's order."""

    steps: tuple[_Step, ...]
    path: "_Params | None"
    query: "_Params | None"
    header: "_Params | None"
    cookie: "_Params | None"
    body: list[ModelField]  # as FastAPI's request_body_to_args takes it
    request_names: tuple[str, ...]  # Request and HTTPConnection parameters
    response_name: str | None
    background_name: str | None
    scopes_name: str | None
    scopes: tuple[str, ...]
    deferred: bool  # this plan or a step below it runs a sync dependency
    empty: bool  # nothing to solve: no steps, parameters, body or special arguments


def _plan(dependant: Dependant, owner: str, *, top: bool) -> _Plan:
    if dependant.websocket_param_name is not None:
        raise Unplannable("websocket")
    steps: list[_Step] = []
    deferred = False
    for index, original in enumerate(dependant.dependencies):
        call = original.call
        assert call is not None
        if original.concurrency is not None:
            raise Unplannable("a dependency with a concurrency limit")
        inner = _plan(original, owner, top=False)
        kind = _kind(call)
        sync = kind in (_SYNC, _SYNC_GEN)
        if not sync and inner.deferred:
            raise AsyncUsesSync(
                f"{owner}: async dependency {getattr(call, '__name__', call)} uses a plain "
                "def dependency; make it a plain def too (see todoapp/routing.py)"
            )
        name = original.name
        if name is None and sync and top:
            # A dependency without a name (`dependencies=[...]`) gets one, so that its
            # deferred call reaches the route's thread, which runs it.
            name = f"_one_hop_{index}"
        elif name is None and sync:
            raise Unplannable("a nameless sync dependency below the route")
        steps.append(
            _Step(
                dependant=original,
                call=call,
                kind=kind,
                name=name,
                # FastAPI's own cache key, worked out once.
                key=_get_cache_key(dependant=original),
                use_cache=original.use_cache,
                function_scope=original.scope == "function",
                plan=inner,
            )
        )
        deferred = deferred or sync or inner.deferred
    request_names = tuple(
        name
        for name in (dependant.request_param_name, dependant.http_connection_param_name)
        if name is not None
    )
    special = (
        dependant.response_param_name,
        dependant.background_tasks_param_name,
        dependant.security_scopes_param_name,
    )
    groups = (
        dependant.path_params,
        dependant.query_params,
        dependant.header_params,
        dependant.cookie_params,
        dependant.body_params,
    )
    return _Plan(
        steps=tuple(steps),
        path=_params(dependant.path_params),
        query=_params(dependant.query_params),
        header=_params(dependant.header_params),
        cookie=_params(dependant.cookie_params),
        body=list(dependant.body_params),
        request_names=request_names,
        response_name=dependant.response_param_name,
        background_name=dependant.background_tasks_param_name,
        scopes_name=dependant.security_scopes_param_name,
        scopes=tuple(_get_oauth_scopes(dependant=dependant)),
        deferred=deferred,
        empty=not (steps or request_names or any(groups) or any(n is not None for n in special)),
    )


@dataclass(frozen=True, slots=True, eq=False)
class _Params:
    """One group of parameters (path, query, header or cookie) of one dependant.

    `plain` holds, for a group of plain values only (no model, list or JSON), each
    field with the request keys FastAPI would look it up by and its error location:
    read here as FastAPI's request_params_to_args reads them, minus the working out.
    """

    fields: tuple[ModelField, ...]
    # (field, request keys, location, its default when it is taken as it is, else _NONE)
    plain: tuple[tuple[ModelField, tuple[str, ...], str, Any], ...] | None


_NONE = object()
# Defaults FastAPI's deepcopy gives back as they are: taken as they are when missing.
_IMMUTABLE = (type(None), bool, int, float, str, bytes)


def _as_is(field: ModelField) -> Any:
    """The value a missing parameter takes, where FastAPI would take a deep copy of a
    default it does not validate and the copy is the default itself; else _NONE."""
    info = field.field_info
    if info.is_required() or info.validate_default or info.default_factory is not None:
        return _NONE
    return info.default if type(info.default) in _IMMUTABLE else _NONE


def _params(fields: list[ModelField]) -> _Params | None:
    if not fields:
        return None
    plain: list[tuple[ModelField, tuple[str, ...], str, Any]] = []
    for field in fields:
        info = field.field_info
        if (
            _get_param_model(field) is not None
            or _is_json_field(field)
            or field_annotation_is_sequence(info.annotation)
            or not isinstance(info, params.Param)
        ):
            return _Params(tuple(fields), None)
        keys = tuple(key for _, key in _get_param_aliases(field))
        plain.append((field, keys, info.in_.value, _as_is(field)))
    return _Params(tuple(fields), tuple(plain))


class _Solving:
    """One request's solving: its values so far, errors, sub-response and tasks."""

    __slots__ = ("background", "body", "cache", "embed", "errors", "request", "response")

    def __init__(self, request: Request, body: Any, embed: bool) -> None:
        self.request = request
        self.body = body
        self.embed = embed
        self.cache: dict[tuple[Any, ...], Any] = {}
        self.errors: list[Any] = []
        self.background: BackgroundTasks | None = None
        # As FastAPI makes it: headers and a status code the route may set.
        response = Response()
        del response.headers["content-length"]
        response.status_code = None  # type: ignore[assignment]
        self.response = response


async def _solve(plan: _Plan, solving: _Solving) -> dict[str, Any]:
    """FastAPI's solve_dependencies, following a plan made once (sync steps deferred)."""
    values: dict[str, Any] = {}
    request = solving.request
    for step in plan.steps:
        before = len(solving.errors)
        arguments = {} if step.plan.empty else await _solve(step.plan, solving)
        if len(solving.errors) > before:
            continue
        if step.use_cache and step.key in solving.cache:
            solved = solving.cache[step.key]
        elif step.kind == _ASYNC:
            solved = await step.call(**arguments)
        elif step.kind == _ASYNC_GEN:
            stack_name = (
                "fastapi_function_astack" if step.function_scope else "fastapi_inner_astack"
            )
            stack = request.scope[stack_name]
            assert isinstance(stack, AsyncExitStack)
            solved = await _solve_generator(
                dependant=step.dependant, stack=stack, sub_values=arguments, request=request
            )
        else:
            solved = Deferred(step.call, step.kind == _SYNC_GEN, arguments)
        if step.name is not None:
            values[step.name] = solved
        if step.key not in solving.cache:
            solving.cache[step.key] = solved
    if plan.path is not None:
        _read(plan.path, request.path_params, values, solving)
    if plan.query is not None:
        _read(plan.query, request.query_params, values, solving)
    if plan.header is not None:
        _read(plan.header, request.headers, values, solving)
    if plan.cookie is not None:
        _read(plan.cookie, request.cookies, values, solving)
    if plan.body:
        body_values, body_errors = await request_body_to_args(
            body_fields=plan.body, received_body=solving.body, embed_body_fields=solving.embed
        )
        values.update(body_values)
        solving.errors.extend(body_errors)
    for name in plan.request_names:
        values[name] = request
    if plan.background_name is not None:
        if solving.background is None:
            solving.background = BackgroundTasks()
        values[plan.background_name] = solving.background
    if plan.response_name is not None:
        values[plan.response_name] = solving.response
    if plan.scopes_name is not None:
        values[plan.scopes_name] = SecurityScopes(scopes=list(plan.scopes))
    return values


def _read(
    group: _Params, received: Mapping[str, Any], values: dict[str, Any], solving: _Solving
) -> None:
    if group.plain is None:
        found, errors = request_params_to_args(group.fields, received)
        values.update(found)
        solving.errors.extend(errors)
        return
    found = {}
    for field, keys, location, as_is in group.plain:
        key = keys[0] if len(keys) == 1 else next((k for k in keys if k in received), keys[0])
        value = received.get(key)
        if value is None and as_is is not _NONE:
            found[field.name] = as_is
            continue
        read, errors = _validate_value_with_model_field(
            field=field,
            value=Undefined if value is None else value,
            values=found,
            loc=(location, key),
        )
        if errors:
            solving.errors.extend(errors)
        else:
            found[field.name] = read
    values.update(found)


def _resolve(value: Any, stack: ExitStack, made: dict[int, Any]) -> Any:
    """The value of a deferred dependency, made once per request (in this thread)."""
    if not isinstance(value, Deferred):
        return value
    if id(value) not in made:
        arguments = {name: _resolve(v, stack, made) for name, v in value.arguments.items()}
        if value.generator:
            made[id(value)] = stack.enter_context(contextmanager(value.call)(**arguments))
        else:
            made[id(value)] = value.call(**arguments)
    return made[id(value)]


def _run(endpoint: Callable[..., Any], parameters: frozenset[str], values: dict[str, Any]) -> Any:
    made: dict[int, Any] = {}
    with ExitStack() as stack:
        resolved = {name: _resolve(value, stack, made) for name, value in values.items()}
        return endpoint(**{name: resolved[name] for name in parameters})


# The threads that run planned routes' sync work. A hop is a job on a queue and, when it
# is done, one call_soon_threadsafe that settles the request's future on the loop: no
# concurrent.futures.Future (a Condition) chained to an asyncio one, no shield. That is
# about half of a ThreadPoolExecutor's hop, itself about half of anyio's (a capacity
# limiter, cancel scopes, run variables). As many threads as anyio's pool has tokens
# (WORKER_THREADS: see main.py), started as they are first needed.
@dataclass(slots=True)
class _Job:
    loop: asyncio.AbstractEventLoop
    future: "asyncio.Future[Any]"
    work: Callable[..., Any]
    arguments: tuple[Any, ...]
    finished: bool = False  # the thread is done with it (set on the loop)
    waiter: "asyncio.Future[None] | None" = None  # a cancelled request waiting for that


class _Workers:
    def __init__(self, size: int) -> None:
        self.size = size
        self.jobs: queue.SimpleQueue[tuple[_Job, Context]] = queue.SimpleQueue()
        self.threads = 0
        self.idle = threading.Semaphore(0)  # a token per thread waiting for a job
        self.lock = threading.Lock()

    def submit(self, job: _Job) -> None:
        # A waiting thread takes it; else one more thread, up to the pool's size (started
        # first: should that fail, the request fails and no work of its is left queued).
        if not self.idle.acquire(blocking=False):
            with self.lock:
                if self.threads < self.size:
                    name = f"route-{self.threads + 1}"
                    threading.Thread(target=self.serve, name=name, daemon=True).start()
                    self.threads += 1
        self.jobs.put((job, copy_context()))

    def serve(self) -> None:
        while True:
            job, context = self.jobs.get()
            result: Any = None
            error: BaseException | None = None
            try:
                result = context.run(job.work, *job.arguments)
            except StopIteration as raised:  # a future cannot carry it: a defect, said so
                error = RuntimeError("the work raised StopIteration")
                error.__cause__ = raised
            except BaseException as raised:  # handed to the request, raised there
                error = raised
            with suppress(RuntimeError):  # a closed loop: nobody is waiting any more
                job.loop.call_soon_threadsafe(_settle, job, result, error)
            del job, context, result, error  # nothing kept alive while waiting
            self.idle.release()


def _settle(job: _Job, result: Any, error: BaseException | None) -> None:
    """On the loop: the thread is done with the job; its request gets what it made."""
    job.finished = True
    if job.waiter is not None and not job.waiter.done():
        job.waiter.set_result(None)
    if job.future.done():  # the request was cancelled meanwhile
        return
    if error is not None:
        job.future.set_exception(error)
    else:
        job.future.set_result(result)


_threads: _Workers | None = None
_threads_lock = threading.Lock()


def _worker_threads() -> _Workers:
    global _threads
    if _threads is None:
        with _threads_lock:
            if _threads is None:
                _threads = _Workers(
                    int(anyio.to_thread.current_default_thread_limiter().total_tokens)
                )
    return _threads


async def _in_a_thread(work: Callable[..., Any], *arguments: Any) -> Any:
    """work(*arguments) in a worker thread, with this request's context variables.

    If the request is cancelled meanwhile, the thread cannot be stopped: this waits for
    it to finish before letting the cancellation on, so that what the work holds (a
    connection, the request's place at the database) is let go only once it is done,
    as anyio's run_sync does.
    """
    loop = asyncio.get_running_loop()
    job = _Job(loop, loop.create_future(), work, arguments)
    _worker_threads().submit(job)
    try:
        return await job.future
    except asyncio.CancelledError:
        while not job.finished:
            if job.waiter is None:
                job.waiter = loop.create_future()
            try:
                await job.waiter
            except asyncio.CancelledError:
                job.waiter = None
                continue
        raise


async def _read_body(request: Request, form: bool, strict_content_type: bool) -> Any:
    """The request's body as FastAPI reads it (fastapi.routing.get_request_handler)."""
    if form:
        body = await request.form()
        stack = request.scope["fastapi_middleware_astack"]
        assert isinstance(stack, AsyncExitStack)
        stack.push_async_callback(body.close)
        return body
    body_bytes = await request.body()
    if not body_bytes:
        return Undefined
    content_type = request.headers.get("content-type")
    if not content_type:
        return await request.json() if not strict_content_type else body_bytes
    return await request.json() if _is_json(content_type) else body_bytes


@lru_cache(maxsize=64)
def _is_json(content_type: str) -> bool:
    """FastAPI's reading of a Content-Type as JSON (application/json or +json), worked
    out once for each value clients send (a parse of the header each time otherwise)."""
    message = email.message.Message()
    message["content-type"] = content_type
    if message.get_content_maintype() != "application":
        return False
    subtype = message.get_content_subtype()
    return subtype == "json" or subtype.endswith("+json")


class OneHopRoute(APIRoute):
    """An APIRoute solved by a plan made once; its sync work takes one thread hop."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head = self.path_format.partition("{")[0]  # what its paths all start with

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        # The router asks every route in turn (an admin list comes after twenty): a path
        # that does not start with what comes before the route's first parameter cannot
        # be the route's, said without its regular expression. Only where the route
        # matches by its own path: no root_path to take off, no inclusion's context.
        if (
            not scope["path"].startswith(self.head)
            and scope["type"] == "http"
            and not scope.get("root_path")
            and _get_scope_effective_route_context(scope) is None
        ):
            return Match.NONE, {}
        return super().matches(scope)

    def get_route_handler(self) -> Callable[[Request], Any]:
        # As APIRoute does: a route included in a router is built with what the
        # inclusion adds (prefix, dependencies), which FastAPI keeps in a context.
        route: Any = self
        context = _effective_route_context_var.get()
        if context is not None and context.original_route is self:
            route = context
        fastapi_way = super().get_route_handler()
        endpoint = route.dependant.call
        assert endpoint is not None
        owner = f"{sorted(route.methods)} {route.path}"

        try:
            if _is_gen_callable(endpoint) or _is_async_gen_callable(endpoint):
                raise Unplannable("a streaming route")
            plan = _plan(route.dependant, owner, top=True)
            if _is_coroutine_callable(endpoint) and plan.deferred:
                raise Unplannable("an async route with a sync dependency")
        except AsyncUsesSync as mistake:  # declared so: a mistake, said at import
            raise TypeError(str(mistake)) from None
        except Unplannable:
            return fastapi_way
        return _planned_handler(route, endpoint, plan)


def _planned_handler(
    route: Any, endpoint: Callable[..., Any], plan: _Plan
) -> Callable[[Request], Any]:
    """FastAPI's get_request_handler for a route that is neither a stream nor a
    websocket, following the plan: same body reading, errors, status and serialisation."""
    run_sync = not _is_coroutine_callable(endpoint)
    parameters = frozenset(_parameters(route.dependant))
    body_field = route.body_field
    form = body_field is not None and isinstance(body_field.field_info, params.Form)
    strict = route.strict_content_type
    strict_content_type = bool(strict.value if isinstance(strict, DefaultPlaceholder) else strict)
    embed = route._embed_body_fields
    status_code = route.status_code
    response_field = route.response_field
    response_class = route.response_class
    default_class = isinstance(response_class, DefaultPlaceholder)
    actual_class: type[Response] = response_class.value if default_class else response_class
    dump_json = response_field is not None and default_class
    serialise_options = {
        "include": route.response_model_include,
        "exclude": route.response_model_exclude,
        "by_alias": route.response_model_by_alias,
        "exclude_unset": route.response_model_exclude_unset,
        "exclude_defaults": route.response_model_exclude_defaults,
        "exclude_none": route.response_model_exclude_none,
    }
    dependant_path = route.dependant.path

    def endpoint_context(scope: Scope) -> Any:
        context = _extract_endpoint_context(endpoint)
        if dependant_path:
            mount_path = scope.get("root_path", "").rstrip("/")
            context["path"] = f"{scope['method']} {mount_path}{dependant_path}"
        return context

    async def planned(request: Request) -> Response:
        body: Any = Undefined
        if body_field is not None:
            try:
                body = await _read_body(request, form, strict_content_type)
            except json.JSONDecodeError as exc:
                raise RequestValidationError(
                    [
                        {
                            "type": "json_invalid",
                            "loc": ("body", exc.pos),
                            "msg": "JSON decode error",
                            "input": {},
                            "ctx": {"error": exc.msg},
                        }
                    ],
                    body=exc.doc,
                    endpoint_ctx=endpoint_context(request.scope),
                ) from exc
            except HTTPException:
                raise
            except Exception as exc:
                raise HTTPException(status_code=400, detail=UNPARSABLE_BODY) from exc
        solving = _Solving(request, body, embed)
        values = await _solve(plan, solving)
        if solving.errors:
            raise RequestValidationError(
                solving.errors,
                body=None if body is Undefined else body,
                endpoint_ctx=endpoint_context(request.scope),
            )
        if run_sync:
            raw = await _in_a_thread(_run, endpoint, parameters, values)
        else:
            raw = await endpoint(**values)
        if isinstance(raw, Response):
            if raw.background is None:
                raw.background = solving.background
            return raw
        sub_response = solving.response
        arguments: dict[str, Any] = {"background": solving.background}
        current_status = status_code if status_code else sub_response.status_code
        if current_status is not None:
            arguments["status_code"] = current_status
        if sub_response.status_code:
            arguments["status_code"] = sub_response.status_code
        response: Response
        if response_field is not None:
            value, errors = response_field.validate(raw, {}, loc=("response",))
            if errors:
                raise ResponseValidationError(
                    errors=errors, body=raw, endpoint_ctx=endpoint_context(request.scope)
                )
            if dump_json:
                content = response_field.serialize_json(value, **serialise_options)
                response = Response(content=content, media_type="application/json", **arguments)
            else:
                content = response_field.serialize(value, **serialise_options)
                response = actual_class(content, **arguments)
        else:
            response = actual_class(jsonable_encoder(raw), **arguments)
        if not is_body_allowed_for_status_code(response.status_code):
            response.body = b""
        response.headers.raw.extend(sub_response.headers.raw)
        return response

    planned.__name__ = planned.__qualname__ = getattr(endpoint, "__name__", "route")
    return planned


def _parameters(dependant: Dependant) -> Iterator[str]:
    """The names the route function itself takes (dependencies and parameters)."""
    for group in (
        dependant.path_params,
        dependant.query_params,
        dependant.header_params,
        dependant.cookie_params,
        dependant.body_params,
    ):
        yield from (param.name for param in group)
    yield from (sub.name for sub in dependant.dependencies if sub.name is not None)
    for name in (
        dependant.request_param_name,
        dependant.websocket_param_name,
        dependant.http_connection_param_name,
        dependant.response_param_name,
        dependant.background_tasks_param_name,
        dependant.security_scopes_param_name,
    ):
        if name is not None:
            yield name


def include_routes(app: FastAPI, router: APIRouter) -> None:
    """`app.include_router(router)` for a router without prefix or options of its own
    at inclusion, with the router's routes declared on the app's router itself.

    FastAPI (0.163) keeps an included router as one entry that is matched twice per
    request (once to choose it, once more inside it, setting and restoring context on
    the scope for every route it tries): about 70 µs a request on this machine, for a
    route in the last of five routers. Declared on the app's router, a route is
    matched once, as the routes of an app without routers are. Each route is declared
    again with everything it was declared with (the router's prefix, tags and
    dependencies are already in it), so the OpenAPI document and the answers stay as
    with include_router (tests/test_routing.py).
    The routes are those the router has now (include_router would also see routes
    added later); what it cannot carry over (a lifespan or event handlers of the
    router's own, frontend routes, streaming routes) is refused.
    """
    own_lifespan = not isinstance(router.lifespan_context, _DefaultLifespan)
    if router.on_startup or router.on_shutdown or own_lifespan or router._low_priority_routes:
        raise ValueError(
            "include_routes: the router has event handlers, a lifespan or frontend "
            "routes of its own; use app.include_router"
        )
    for route in router.routes:
        if not isinstance(route, APIRoute):
            raise ValueError(f"include_routes: {route!r} is not an APIRoute")
        if _is_gen_callable(route.endpoint) or _is_async_gen_callable(route.endpoint):
            # Its streamed items' type comes from the return annotation, which a
            # route declared again with response_model=None would not read.
            raise ValueError(f"include_routes: {route.path} streams; use app.include_router")
        app.router.add_api_route(
            route.path,
            route.endpoint,
            response_model=route.response_model,
            status_code=route.status_code,
            tags=route.tags,
            dependencies=route.dependencies,
            summary=route.summary,
            description=route.description,
            response_description=route.response_description,
            responses=route.responses,
            deprecated=route.deprecated,
            methods=route.methods,
            operation_id=route.operation_id,
            response_model_include=route.response_model_include,
            response_model_exclude=route.response_model_exclude,
            response_model_by_alias=route.response_model_by_alias,
            response_model_exclude_unset=route.response_model_exclude_unset,
            response_model_exclude_defaults=route.response_model_exclude_defaults,
            response_model_exclude_none=route.response_model_exclude_none,
            include_in_schema=route.include_in_schema,
            response_class=route.response_class,
            name=route.name,
            route_class_override=type(route),
            callbacks=route.callbacks,
            openapi_extra=route.openapi_extra,
            generate_unique_id_function=route.generate_unique_id_function,
            strict_content_type=route.strict_content_type,
        )
