"""Starlette and FastAPI: run a fluid worker tree with the app, and serve its status.

How it fits together:

* [`lifespan`][fluid.integrations.starlette.lifespan] returns what
  ``Starlette(lifespan=...)`` and ``FastAPI(lifespan=...)`` take. At startup
  it makes the worker (calling the factory, on the app's loop), puts it on
  ``app.state`` and starts it: ``startup()`` returns once every worker of
  the tree runs, and an error there fails the app's startup, so the server
  never serves without its workers. Then it enters the app's own lifespan,
  which can use the running tree.
* It yields the lifespan state: the app lifespan's state plus the worker,
  so handlers find it as ``request.state.<name>`` as well as
  ``request.app.state.<name>``.
* At shutdown, in reverse: the app's own lifespan exits, then the tree
  stops (gracefully, forced after its grace period). If the tree crashed
  while the app served, its error is raised here: the server reports a
  failed shutdown instead of losing it.
* A tree that crashes while the app serves does not stop the app: the status
  route answers 503 with the error, which is what health checks act on.
* Starlette runs the lifespan under anyio. A lifespan cancelled by an anyio
  cancel scope (the app's own code around it, a task group whose other
  task failed) forces the tree at once and lets the cancellation go on,
  once every worker ended: anyio cancels whatever is awaited in a cancelled
  scope, a graceful stop included (``tests/test_anyio.py``).
* Handlers reach the tree with [`workers_of`][fluid.integrations.starlette.workers_of],
  typed, rather than through the untyped ``request.app.state``.
* The app can start again (a second ``TestClient``): a factory is called at
  each start, and it may put workers made once, at module level, in the
  new tree: a worker moves from a tree that stopped to the tree that adds
  it ([`Workers.add_workers`][fluid.Workers.add_workers]).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any, TypeAlias, TypeVar, overload

try:
    from starlette.applications import Starlette
    from starlette.requests import HTTPConnection, Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route
except ImportError as exc:  # one sentence naming the extra, not a bare ModuleNotFoundError
    raise ImportError(
        "fluid.integrations.starlette needs Starlette: pip install 'fluid-workers[starlette]'"
    ) from exc

from .._target import WorkerOrFactory, build_worker, check_target
from .._worker import Worker
from . import health

__all__ = ["AppLifespan", "lifespan", "status_endpoint", "status_route", "workers_of"]

WorkerT = TypeVar("WorkerT", bound=Worker)

AppLifespan: TypeAlias = Callable[[Any], AbstractAsyncContextManager[Mapping[str, Any] | None]]
"""An app's own lifespan: a function of the app returning an async context manager."""


def lifespan(
    worker: WorkerOrFactory,
    *,
    app_lifespan: AppLifespan | None = None,
    name: str = "workers",
) -> Callable[[Any], AbstractAsyncContextManager[dict[str, Any]]]:
    """A lifespan that starts ``worker`` before the app serves and stops it after.

    The worker is kept as ``app.state.<name>`` and in the lifespan state
    (``request.state.<name>``). See the module docstring for the order of
    events.

    Args:
        worker: the worker (tree), or a function returning one, called at
            each startup of the app, on its event loop. The tree it returns
            may hold workers made once, at module level: when the app
            starts again, the stopped tree of its last start lets them go.
        app_lifespan: the app's own lifespan, entered once the worker runs
            and exited before it stops; the state it yields is kept.
        name: the attribute and state key of the worker.

    Returns:
        A lifespan for ``Starlette(lifespan=...)`` or ``FastAPI(lifespan=...)``.

    Raises:
        TypeError: ``worker`` is neither a Worker nor a callable without
            arguments, or ``app_lifespan`` is not callable.
        ValueError: ``name`` is not an identifier.

    The returned lifespan raises what ``startup()`` raised at startup, and
    the worker's error at shutdown.

    Example:
        ```python
        from contextlib import asynccontextmanager
        from fastapi import FastAPI
        from fluid.integrations.starlette import lifespan, status_route

        @asynccontextmanager
        async def database(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
            yield {"db": await connect()}  # runs once the workers run

        app = FastAPI(lifespan=lifespan(build_tree, app_lifespan=database))
        app.router.routes.append(status_route("/status"))
        ```
    """
    check_target(worker)
    if app_lifespan is not None and not callable(app_lifespan):
        raise TypeError(f"app_lifespan must be callable, got {app_lifespan!r}")
    _check_name(name)

    @asynccontextmanager
    async def fluid_lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
        tree = build_worker(worker)
        setattr(app.state, name, tree)
        async with AsyncExitStack() as stack:
            await tree.startup()
            stack.push_async_callback(tree.shutdown)
            state: dict[str, Any] = {}
            if app_lifespan is not None:
                app_state = await stack.enter_async_context(app_lifespan(app))
                state.update(app_state or {})
            state[name] = tree
            yield state

    return fluid_lifespan


def status_endpoint(name: str = "workers") -> Callable[[Request], Awaitable[Response]]:
    """An endpoint answering with the status of the app's worker as JSON.

    200 while the worker runs without error, 503 once it failed or stopped,
    or when the lifespan did not start it (see
    [`health`][fluid.integrations.health]).

    Args:
        name: the name given to [`lifespan`][fluid.integrations.starlette.lifespan].

    Raises:
        ValueError: ``name`` is not an identifier.

    Example:
        ```python
        app = FastAPI(lifespan=lifespan(build_tree))
        app.add_route("/status", status_endpoint(), include_in_schema=False)
        ```
    """
    _check_name(name)

    async def fluid_status(request: Request) -> Response:
        code, body = await health(_find(request, name))
        return JSONResponse(body, status_code=code)

    return fluid_status


def status_route(
    path: str = "/status", *, name: str = "workers", include_in_schema: bool = False
) -> Route:
    """A ``GET`` route at ``path`` answering with the status of the app's worker.

    Its endpoint is [`status_endpoint`][fluid.integrations.starlette.status_endpoint].

    Args:
        path: the route's path.
        name: the name given to [`lifespan`][fluid.integrations.starlette.lifespan].
        include_in_schema: list the route in FastAPI's OpenAPI schema.

    Example:
        ```python
        app = Starlette(routes=[status_route("/status")], lifespan=lifespan(build_tree))
        ```
    """
    return Route(
        path,
        status_endpoint(name),
        methods=["GET"],
        name="fluid_status",
        include_in_schema=include_in_schema,
    )


@overload
def workers_of(source: HTTPConnection | Starlette, *, name: str = "workers") -> Worker: ...


@overload
def workers_of(
    source: HTTPConnection | Starlette, kind: type[WorkerT], *, name: str = "workers"
) -> WorkerT: ...


def workers_of(
    source: HTTPConnection | Starlette, kind: type[Worker] = Worker, *, name: str = "workers"
) -> Worker:
    """The app's worker (tree), typed: what ``request.app.state.workers`` holds, untyped.

    It looks in the request's lifespan state, then in the app's state, where
    [`lifespan`][fluid.integrations.starlette.lifespan] keeps the worker.
    Pass your tree's class as ``kind`` to get that type back (checked).

    Args:
        source: a request or a websocket (any ``HTTPConnection``), or the app.
        kind: the class the worker must be an instance of; ``fluid.Worker``
            by default.
        name: the name given to [`lifespan`][fluid.integrations.starlette.lifespan].

    Returns:
        The worker the lifespan started (or started and stopped, once the
        app shut down).

    Raises:
        LookupError: there is none: the app has no fluid lifespan, or it
            did not start (a ``TestClient`` used without ``with`` runs no
            lifespan).
        TypeError: the worker is not a ``kind``, or ``source`` is neither a
            connection nor an app.
        ValueError: ``name`` is not an identifier.

    Example:
        ```python
        from fluid.integrations.starlette import workers_of

        @app.post("/orders")
        async def create_order(order: Order, request: Request) -> dict[str, Any]:
            workers = workers_of(request, AppWorkers)  # an AppWorkers, for mypy too
            workers.orders.send(order)
            return {"queued": order["id"]}
        ```
    """
    _check_name(name)
    if not isinstance(source, HTTPConnection) and not hasattr(source, "state"):
        raise TypeError(f"expected a request, a websocket or a Starlette app, got {source!r}")
    worker = _find(source, name)
    if worker is None:
        raise LookupError(
            f"the app has no fluid worker named {name!r}: pass "
            "fluid.integrations.starlette.lifespan(...) as its lifespan, and start the app "
            "(a TestClient runs the lifespan only inside `with TestClient(app)`)"
        )
    if not isinstance(worker, kind):
        raise TypeError(
            f"the app's worker {name!r} is {worker!r}, not a {kind.__module__}.{kind.__qualname__}"
        )
    return worker


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"name must be an identifier, got {name!r}")


def _find(source: HTTPConnection | Starlette, name: str) -> Worker | None:
    """The worker under ``name`` in a connection's lifespan state or its app's state."""
    states = (
        (source.state, source.app.state) if isinstance(source, HTTPConnection) else (source.state,)
    )
    for state in states:
        worker = getattr(state, name, None)
        if isinstance(worker, Worker):
            return worker
    return None
