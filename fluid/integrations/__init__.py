"""Run a fluid worker tree inside a web application, and report its health.

* [`fluid.integrations.starlette`][fluid.integrations.starlette]: a lifespan
  for Starlette and FastAPI apps, and a status route.
* [`fluid.integrations.aiohttp`][fluid.integrations.aiohttp]: a
  ``cleanup_ctx`` for aiohttp apps, and a status handler.

Both start the tree before the app serves its first request and stop it
after the last, on the app's own event loop, keep it where handlers find it
(``workers_of(request, MyTree)`` returns it typed), let an app start again
with workers made once at module level (a second ``TestClient``), and
answer the status route with the tree's status as JSON: 200 while it runs,
503 once it failed or stopped or while its broker is away, so that a load
balancer or an orchestrator takes the app out of service. This package
imports neither framework: import the module of the one you use.
"""

from __future__ import annotations

from typing import Any

from .._status import WorkerStatus
from .._worker import Worker

__all__ = ["health"]


async def health(worker: Worker | None) -> tuple[int, dict[str, Any]]:
    """The HTTP status and JSON body of a status route for ``worker``.

    200 and the worker's [`status`][fluid.Worker.status] while it runs
    without error; 503 and the same status once it stopped or failed (its
    ``error`` says why, and a tree's children show which one failed), or
    while a worker of the tree runs but cannot work (its status says
    ``"ready": False``: a stream consumer whose broker is unreachable); 503 and
    an explanation when there is no worker (its lifespan did not start it).
    Use it to write a status route for another framework.

    Args:
        worker: the app's worker (tree), or None if it was not started.

    Returns:
        ``(status_code, body)``, the body ready for ``json.dumps``.

    Example:
        ```python
        from fluid.integrations import health

        async def status(request: Request) -> Response:
            code, body = await health(request.app.workers)
            return Response(json.dumps(body), status=code)
        ```
    """
    if worker is None:
        return 503, {"state": None, "error": "no worker: the app's lifespan did not start it"}
    status = await worker.status()
    healthy = worker.is_running() and status["error"] is None and _ready(status)
    return (200 if healthy else 503), dict(status)


def _ready(status: WorkerStatus) -> bool:
    """No worker of the tree says it cannot work (``ready`` False: its broker is away)."""
    if status.get("ready") is False:
        return False
    return all(_ready(child) for child in status.get("workers", ()))
