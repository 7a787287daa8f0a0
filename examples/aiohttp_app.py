"""An aiohttp app with a fluid worker tree that starts and stops with it.

    python examples/aiohttp_app.py
    curl -X POST localhost:8000/orders -d '{"id": 1}'
    curl localhost:8000/status            # the tree as JSON: 200 running, 503 failed

`POST /orders` queues the order for the `orders` consumer and answers at once;
the consumer stores it in the background. The tree starts before the app
serves its first request and stops (draining the queue) at cleanup.
"""

from __future__ import annotations

import os
from typing import Any

from aiohttp import web

import fluid
from fluid.integrations.aiohttp import cleanup_ctx, status_handler, workers_of

Order = dict[str, Any]


async def store(order: Order) -> None:
    print(f"stored order {order['id']}", flush=True)  # a database call, in real life


async def report() -> None:
    print("[workers] alive", flush=True)


class AppWorkers(fluid.Workers):
    """The app's background workers: an order consumer and a periodic report."""

    def __init__(self) -> None:
        self.orders = fluid.QueueConsumerWorker[Order](store, name="orders")
        super().__init__(
            self.orders,
            fluid.WorkerFunction(report, heartbeat=5, name="report"),
            name="app_workers",
        )


async def create_order(request: web.Request) -> web.Response:
    order: Order = await request.json()
    workers = workers_of(request, AppWorkers)
    workers.orders.send(order)
    return web.json_response({"queued": order.get("id")})


def make_app() -> web.Application:
    """The app: the workers' cleanup context first, so they run for every later one."""
    app = web.Application()
    app.cleanup_ctx.append(cleanup_ctx(AppWorkers))
    app.router.add_post("/orders", create_order)
    app.router.add_get("/status", status_handler())
    return app


if __name__ == "__main__":
    web.run_app(make_app(), host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
