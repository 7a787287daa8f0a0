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
* The key is a ``web.AppKey``, typed: ``request.app[WORKERS]`` is a Worker.
* A tree that crashes while the app serves does not stop the app: the status
  handler answers 503 with the error, which is what health checks act on.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable

try:
    from aiohttp import web
except ImportError as exc:  # one sentence naming the extra, not a bare ModuleNotFoundError
    raise ImportError(
        "fluid.integrations.aiohttp needs aiohttp: pip install 'fluid-workers[aiohttp]'"
    ) from exc

from .._target import WorkerOrFactory, build_worker, check_target
from .._worker import Worker
from . import health

__all__ = ["WORKERS", "cleanup_ctx", "status_handler"]

WORKERS: web.AppKey[Worker] = web.AppKey("fluid_workers", Worker)
"""The default key of the app's worker: ``request.app[WORKERS]``."""


def cleanup_ctx(
    worker: WorkerOrFactory, *, key: web.AppKey[Worker] = WORKERS
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context that starts ``worker`` with the app and stops it at cleanup.

    Args:
        worker: the worker (tree), or a function returning one, called at
            each startup of the app, on its event loop.
        key: where the app keeps the worker.

    Returns:
        An async generator function for ``app.cleanup_ctx.append``.

    Raises:
        TypeError: ``worker`` is neither a Worker nor callable, or ``key``
            is not a ``web.AppKey``.

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
