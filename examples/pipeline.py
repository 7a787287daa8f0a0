"""An order pipeline you can watch: `make run`, then Ctrl-C to stop it cleanly.

Also `fluid run examples.pipeline:build`: `fluid.run` handles the signals (a
second Ctrl-C forces the stop) and the exit status.

producer ──send──► orders (QueueConsumerWorker) ──send──► events (AsyncConsumer)
                                                             ├── audit
                                                             └── notify
reporter: prints one status line a second

The tree starts top to bottom and stops bottom to top, so the producer stops
first and the consumers drain what it sent before they stop.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import sys

import fluid

Order = dict[str, object]


class Pipeline(fluid.Workers):
    """The tree, with hooks that show where it is in its life."""

    async def on_startup(self) -> None:
        print("pipeline running: press Ctrl-C to stop", flush=True)

    async def on_shutdown(self) -> None:
        print("pipeline on_shutdown: every worker stopped, queues drained", flush=True)

    def after_shutdown(self, reason: str, code: int = 0) -> None:
        print(f"pipeline {reason}: bye", flush=True)


def announce_stop(transition: fluid.Transition) -> None:
    """A lifecycle observer: say so when the whole pipeline is asked to stop."""
    if transition.kind == "stopping" and isinstance(transition.worker, Pipeline):
        print("\nstopping: producer first, consumers drain their queues ...", flush=True)


def build() -> Pipeline:
    """The worker tree of the example."""
    dispatcher = fluid.AsyncDispatcher[Order](message_type=lambda m: str(m["type"]))

    def dead_letter(order: Order, error: Exception) -> None:
        print(f"  failed   order {order['id']:>3}: {error}")

    events = fluid.AsyncConsumer(dispatcher, name="events", on_error=dead_letter)

    async def audit(order: Order) -> None:
        print(f"  audit    order {order['id']:>3} worth {order['amount']:>4}")

    async def notify(order: Order) -> None:
        await asyncio.sleep(0.01)  # an I/O call
        if random.random() < 0.05:
            raise ConnectionError(f"mail server refused order {order['id']}")

    dispatcher.register_handler("order.audit", audit)
    dispatcher.register_handler("order.notify", notify)

    async def process(order: Order) -> None:
        await asyncio.sleep(0.05)  # pretend to store it
        events.send({**order, "type": "order"})

    orders = fluid.QueueConsumerWorker(process, name="orders")
    ids = itertools.count(1)

    async def produce() -> None:
        orders.send({"id": next(ids), "amount": random.randint(1, 999)})

    async def report() -> None:
        status = await tree.status()
        parts = [
            f"{w['name']}: queued {w['queue']['size']} handled {w['queue']['handled']} "
            f"failed {w['queue']['failed']}"
            for w in status["workers"]
            if "queue" in w
        ]
        print(f"[status] {status['state']} | " + " | ".join(parts), flush=True)

    tree = Pipeline(
        fluid.WorkerFunction(report, heartbeat=1, name="reporter"),
        events,
        orders,
        fluid.WorkerFunction(produce, heartbeat=0.2, name="producer"),
        name="pipeline",
    )
    tree.add_observer(announce_stop)
    return tree


if __name__ == "__main__":
    sys.exit(fluid.run(build))
