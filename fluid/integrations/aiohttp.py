"""aiohttp: run a fluid worker tree with the app, and serve its status.

How it fits together:

* [`cleanup_ctx`][fluid.integrations.aiohttp.cleanup_ctx] returns what
  ``app.cleanup_ctx.append(...)`` takes. Its startup half makes the worker
  (calling the factory, on the app's loop), stores it as ``app[key]`` and
  starts it; an error fails the app's startup. Its cleanup half stops it
  (gracefully, forced after its grace period) and raises the worker's
  error, if it crashed while the app served: aiohttp reports it from
  ``AppRunner.cleanup()``.
* aiohttp runs the startup halves in the order they were appended and the
  cleanup halves in reverse: append it before the contexts that use the
  tree, after those it uses.
* The key is a ``web.AppKey``, typed: ``request.app[WORKERS]`` is a Worker;
  [`workers_of`][fluid.integrations.aiohttp.workers_of] gives your tree's own
  class, and says what is missing when the cleanup context is not there.
* A factory is called at each start (a new app per test, say), and it may
  put workers made once, at module level, in the new tree: a worker moves
  from a tree that stopped to the tree that adds it
  ([`Workers.add_workers`][fluid.Workers.add_workers]).
* A tree that crashes while the app serves does not stop the app: the status
  handler answers 503 with the error, which is what health checks act on.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar, overload

try:
    from aiohttp import web
except ImportError as exc:  # one sentence naming the extra, not a bare ModuleNotFoundError
    raise ImportError(
        "fluid.integrations.aiohttp needs aiohttp: pip install 'fluid-workers[aiohttp]'"
    ) from exc

from .._target import WorkerOrFactory, build_worker, check_target
from .._worker import Worker
from . import health

__all__ = ["WORKERS", "cleanup_ctx", "status_handler", "workers_of"]

WorkerT = TypeVar("WorkerT", bound=Worker)

WORKERS: web.AppKey[Worker] = web.AppKey("fluid_workers", Worker)
"""The default key of the app's worker: ``request.app[WORKERS]``."""


def cleanup_ctx(
    worker: WorkerOrFactory, *, key: web.AppKey[Worker] = WORKERS
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context that starts ``worker`` with the app and stops it at cleanup.

    Args:
        worker: the worker (tree), or a function returning one, called at
            each startup of the app, on its event loop. The tree it returns
            may hold workers made once, at module level: the stopped tree of
            an earlier start lets them go.
        key: where the app keeps the worker.

    Returns:
        An async generator function for ``app.cleanup_ctx.append``.

    Raises:
        TypeError: ``worker`` is neither a Worker nor a callable without
            arguments, or ``key`` is not a ``web.AppKey``.

    It raises what ``startup()`` raised at the app's startup, and the
    worker's error at cleanup.

    Example:
        ```python
        from aiohttp import web
        from fluid.integrations.aiohttp import WORKERS, cleanup_ctx, status_handler

        app = web.Application()
        app.cleanup_ctx.append(cleanup_ctx(build_tree))
        app.router.add_get("/status", status_handler())
        ```
    """
    check_target(worker)
    if not isinstance(key, web.AppKey):
        raise TypeError(f"key must be an aiohttp.web.AppKey, got {key!r}")

    async def fluid_workers(app: web.Application) -> AsyncIterator[None]:
        tree = build_worker(worker)
        app[key] = tree
        await tree.startup()
        try:
            yield
        finally:
            await tree.shutdown()

    return fluid_workers


def status_handler(
    key: web.AppKey[Worker] = WORKERS,
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """A handler answering with the status of the app's worker as JSON.

    200 while the worker runs without error, 503 once it failed or stopped,
    or when the cleanup context did not start it (see
    [`health`][fluid.integrations.health]).

    Args:
        key: the key given to [`cleanup_ctx`][fluid.integrations.aiohttp.cleanup_ctx].

    Raises:
        TypeError: ``key`` is not a ``web.AppKey``.

    Example:
        ```python
        app.router.add_get("/status", status_handler())
        ```
    """
    if not isinstance(key, web.AppKey):
        raise TypeError(f"key must be an aiohttp.web.AppKey, got {key!r}")

    async def fluid_status(request: web.Request) -> web.Response:
        code, body = await health(request.app.get(key))
        return web.json_response(body, status=code, dumps=json.dumps)

    return fluid_status


@overload
def workers_of(
    source: web.Request | web.Application, *, key: web.AppKey[Worker] = WORKERS
) -> Worker: ...


@overload
def workers_of(
    source: web.Request | web.Application,
    kind: type[WorkerT],
    *,
    key: web.AppKey[Worker] = WORKERS,
) -> WorkerT: ...


def workers_of(
    source: web.Request | web.Application,
    kind: type[Worker] = Worker,
    *,
    key: web.AppKey[Worker] = WORKERS,
) -> Worker:
    """The app's worker (tree) as your tree's own class, or a clear error if it is missing.

    ``request.app[WORKERS]`` is typed already, as a ``fluid.Worker``; this
    gives the subclass you built (checked), and instead of a bare
    ``KeyError`` says that the cleanup context is missing.

    Args:
        source: a request, or the app.
        kind: the class the worker must be an instance of; ``fluid.Worker``
            by default.
        key: the key given to [`cleanup_ctx`][fluid.integrations.aiohttp.cleanup_ctx].

    Returns:
        The worker the cleanup context started (or started and stopped,
        once the app cleaned up).

    Raises:
        LookupError: there is none: the app has no fluid cleanup context,
            or it did not start.
        TypeError: the worker is not a ``kind``, ``source`` is neither a
            request nor an app, or ``key`` is not a ``web.AppKey``.

    Example:
        ```python
        from fluid.integrations.aiohttp import workers_of

        async def create_order(request: web.Request) -> web.Response:
            workers = workers_of(request, AppWorkers)  # an AppWorkers, for mypy too
            workers.orders.send(await request.json())
            return web.json_response({"queued": True})
        ```
    """
    if not isinstance(key, web.AppKey):
        raise TypeError(f"key must be an aiohttp.web.AppKey, got {key!r}")
    if isinstance(source, web.Request):
        app = source.app
    elif isinstance(source, web.Application):
        app = source
    else:
        raise TypeError(f"expected an aiohttp request or application, got {source!r}")
    worker = app.get(key)
    if worker is None:
        raise LookupError(
            f"the app has no fluid worker under {key!r}: append "
            "fluid.integrations.aiohttp.cleanup_ctx(...) to its cleanup_ctx, and start the app"
        )
    if not isinstance(worker, kind):
        raise TypeError(
            f"the app's worker is {worker!r}, not a {kind.__module__}.{kind.__qualname__}"
        )
    return worker
