"""OneHopRoute: a plain `def` route and its plain `def` dependencies in one thread hop.

FastAPI runs every sync dependency in a worker thread of its own, and a sync
dependency with `yield` in two (one to enter, one to leave), before the route itself
takes another: `get_session`, `get_current_user` and the route made four hops per
request, and each hop (a queue, a lock, a wake-up and a future) cost more than the
database work. This route class keeps FastAPI's dependency solving and the `Annotated`
aliases exactly as they are, with one change: the sync dependencies are not run where
FastAPI solves them (on the event loop) but *deferred*, and the route runs them, in
dependency order and each once per request, in the same worker thread as itself. A
dependency with `yield` is left again in that thread, right after the route returns
or raises, as FastAPI would have left it.

Rules it adds (checked when a route is declared, so a mistake fails at import):
- an `async def` dependency cannot use a sync one (it would get the deferred call, not
  its value): make it a plain `def`, which costs nothing here;
- while `app.dependency_overrides` holds anything, routes are solved FastAPI's own
  way (a hop per sync dependency), so that overrides work as FastAPI documents.
`async def` routes are left to FastAPI unchanged.
"""

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from typing import Any

# FastAPI's own tests of a callable (private, but they are exactly what decides whether
# FastAPI would run a dependency in a thread), and the context of an included route.
from fastapi.dependencies.models import (
    Dependant,
    _is_async_gen_callable,
    _is_coroutine_callable,
    _is_gen_callable,
)
from fastapi.routing import APIRoute, _effective_route_context_var, get_request_handler
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request


class Deferred:
    """A sync dependency's call with its arguments, run later in the route's thread."""

    __slots__ = ("arguments", "call", "generator")

    def __init__(self, call: Callable[..., Any], generator: bool, arguments: dict[str, Any]):
        self.call = call
        self.generator = generator
        self.arguments = arguments


def _is_sync(call: Callable[..., Any]) -> bool:
    return not (_is_coroutine_callable(call) or _is_async_gen_callable(call))


# One deferring stand-in per dependency, shared by every route: FastAPI caches a
# dependency's value per request by its callable, so a dependency used twice (the
# session, by get_current_user and by the route) is still one value, made once.
_stand_ins: dict[Callable[..., Any], Callable[..., Any]] = {}


def _stand_in(call: Callable[..., Any], generator: bool) -> Callable[..., Any]:
    if call not in _stand_ins:

        async def defer(**arguments: Any) -> Deferred:
            return Deferred(call, generator, arguments)

        defer.__name__ = defer.__qualname__ = getattr(call, "__name__", "dependency")
        _stand_ins[call] = defer
    return _stand_ins[call]


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


def _defer(dependant: Dependant, owner: str) -> tuple[Dependant, bool]:
    """The dependant with its sync sub-dependencies deferred; and whether any was."""
    subs: list[Dependant] = []
    any_deferred = False
    for index, sub in enumerate(dependant.dependencies):
        assert sub.call is not None
        inner, inner_deferred = _defer(sub, owner)
        if _is_sync(sub.call):
            generator = _is_gen_callable(sub.call)
            # A dependency without a name (`dependencies=[...]`) gets one, so that its
            # deferred call reaches the route, which runs it.
            name = sub.name if sub.name is not None else f"_one_hop_{index}"
            inner = replace(inner, call=_stand_in(sub.call, generator), name=name)
            any_deferred = True
        elif inner_deferred:
            raise TypeError(
                f"{owner}: async dependency {sub.call.__name__} uses a plain def "
                "dependency; make it a plain def too (see todoapp/routing.py)"
            )
        subs.append(inner)
    return replace(dependant, dependencies=subs), any_deferred


class OneHopRoute(APIRoute):
    """An APIRoute whose sync route runs with its sync dependencies in one thread hop."""

    def get_route_handler(self) -> Callable[[Request], Any]:
        # As APIRoute does: a route included in a router is built with what the
        # inclusion adds (prefix, dependencies), which FastAPI keeps in a context.
        route: Any = self
        context = _effective_route_context_var.get()
        if context is not None and context.original_route is self:
            route = context
        endpoint = route.dependant.call
        assert endpoint is not None
        if not _is_sync(endpoint) or _is_gen_callable(endpoint):
            return super().get_route_handler()  # async, or a stream: FastAPI's own way
        deferred, _ = _defer(route.dependant, f"{sorted(route.methods)} {route.path}")
        parameters = frozenset(_parameters(self.dependant))

        async def in_one_hop(**values: Any) -> Any:
            return await run_in_threadpool(_run, endpoint, parameters, values)

        in_one_hop.__name__ = in_one_hop.__qualname__ = getattr(endpoint, "__name__", "route")
        one_hop = get_request_handler(
            dependant=replace(deferred, call=in_one_hop),
            body_field=route.body_field,
            status_code=route.status_code,
            response_class=route.response_class,
            response_field=route.response_field,
            response_model_include=route.response_model_include,
            response_model_exclude=route.response_model_exclude,
            response_model_by_alias=route.response_model_by_alias,
            response_model_exclude_unset=route.response_model_exclude_unset,
            response_model_exclude_defaults=route.response_model_exclude_defaults,
            response_model_exclude_none=route.response_model_exclude_none,
            dependency_overrides_provider=route.dependency_overrides_provider,
            embed_body_fields=route._embed_body_fields,
            strict_content_type=route.strict_content_type,
        )
        # app.dependency_overrides replaces dependencies by their callables, which the
        # stand-ins hide: while any are set, the route is solved FastAPI's own way.
        overridable = super().get_route_handler()
        provider = route.dependency_overrides_provider

        async def handler(request: Request) -> Any:
            if provider is not None and provider.dependency_overrides:
                return await overridable(request)
            return await one_hop(request)

        return handler


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
