"""A FastAPI app with a fluid worker tree that starts and stops with it.

    python examples/fastapi_app.py        # or: uvicorn examples.fastapi_app:app
    curl -X POST localhost:8000/orders -H 'content-type: application/json' -d '{"id": 1}'
    curl localhost:8000/status            # the tree as JSON: 200 running, 503 failed

`POST /orders` queues the order for the `orders` consumer and answers at once;
the consumer stores it in the background. The tree starts before the app
serves its first request and stops (draining the queue) after its last one.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, Request

import fluid
from fluid.integrations.starlette import lifespan, status_route, workers_of

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


@asynccontextmanager
async def app_lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    """The app's own lifespan: entered once the workers run, left before they stop."""
    workers = workers_of(app, AppWorkers)
    print(f"app lifespan: {workers.num_workers} workers running", flush=True)
    yield {"region": "eu"}
    print("app lifespan: done, the workers stop next", flush=True)


app = FastAPI(lifespan=lifespan(AppWorkers, app_lifespan=app_lifespan))
app.router.routes.append(status_route("/status"))


@app.post("/orders")
async def create_order(order: Order, request: Request) -> dict[str, Any]:
    workers = workers_of(request, AppWorkers)
    workers.orders.send(order)
    return {"queued": order.get("id"), "region": request.state.region}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
