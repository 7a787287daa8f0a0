"""A producer and a consumer group of three processes on Redis Streams.

    make streams        # or: .venv/bin/python examples/stream_group.py

It starts a private ``redis-server`` on 127.0.0.1 (a free port, a temporary
directory, nothing kept), then one tree: a schedule that appends an order to
the ``orders`` stream five times a second, and a prefork of three children,
each a ``StreamConsumerWorker`` of the group ``billing``. Redis gives each
order to one child; kill one (``kill -9`` a child's pid: the status line
shows them) and the prefork respawns it under the same consumer name, which
handles what the dead one held at once. Ctrl-C stops the tree gracefully
(the children drain and ack), then the server.

With a Redis of your own, set ``FLUID_EXAMPLE_REDIS=redis://host:6379/0``:
the example then starts no server.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import fluid
import fluid.redis

ENV = "FLUID_EXAMPLE_REDIS"


async def bill(order: dict[str, int]) -> None:
    """The handler: runs in whichever child Redis gave the order to."""
    child = fluid.prefork_child()
    print(f"child {child.id if child else '-'} billed order {order['id']}", flush=True)


def consumer() -> fluid.Worker:
    """What each prefork child runs: one member of the consumer group."""
    return fluid.redis.StreamConsumerWorker(
        bill,
        redis=os.environ[ENV],
        stream="orders",
        group="billing",
        concurrency=4,
        min_idle=5,
        name="billing",
    )


def producer(url: str) -> fluid.Worker:
    orders = fluid.redis.StreamProducer(url, "orders", maxlen=10_000)
    numbers = itertools.count(1)

    async def send_order() -> None:
        await orders.send({"id": next(numbers)})

    class Producer(fluid.ScheduledWorker):
        async def on_shutdown(self) -> None:
            await orders.aclose()

    return Producer(send_order, interval=0.2, name="producer")


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A private redis-server for the example, or the one ``FLUID_EXAMPLE_REDIS`` names."""
    if os.environ.get(ENV):
        yield os.environ[ENV]
        return
    binary = shutil.which("redis-server")
    if binary is None:
        print("redis-server is not installed (apt-get install redis-server)", file=sys.stderr)
        sys.exit(2)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    directory = tempfile.mkdtemp(prefix="fluid-example-redis-")
    server = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--dir", directory],
        stdout=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C goes to the tree; the server is stopped after it
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if time.monotonic() > deadline or server.poll() is not None:
                print("redis-server did not start", file=sys.stderr)
                sys.exit(2)
            time.sleep(0.02)
        url = f"redis://127.0.0.1:{port}/0"
        os.environ[ENV] = url  # the children read it
        print(f"redis-server on {url} (pid {server.pid})", flush=True)
        yield url
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(10)
        shutil.rmtree(directory, ignore_errors=True)


def main() -> int:
    with redis_server() as url:
        tree = fluid.Workers(
            producer(url),
            fluid.Prefork(consumer, processes=3, name="consumers"),
            name="stream-group",
        )
        return fluid.run(tree)


if __name__ == "__main__":
    sys.exit(main())
