"""When does ``AsyncDispatcher(concurrent=True)`` pay? ``python -m bench.dispatch_modes``.

Ten handlers of one event type, one message dispatched at a time (what a
consumer with ``concurrency=1`` does), best of 5 runs of each mode:

* trivial handlers (return at once): in turn wins by far, a task per handler
  per message costs much more than the handlers;
* handlers that each await ``asyncio.sleep(0.001)`` (a stand-in for a call to
  a remote service): concurrently, a message takes the slowest handler's time
  instead of the sum, as a hand-written ``asyncio.gather`` does.

The figures are quoted in the docstring of ``fluid/_dispatcher.py``. Not a
case of ``python -m bench``: it compares two fluid modes, not fluid with
hand-written asyncio (the gather row is there for reference).
"""

from __future__ import annotations

import asyncio
import functools
import gc
import time
from collections.abc import Awaitable, Callable

import fluid

HANDLERS = 10
REPEATS = 5

Handler = Callable[[int], Awaitable[None]]


async def trivial(message: int) -> None:
    """Return at once."""


async def waits(message: int) -> None:
    """Wait 1 ms, as a call to a remote service would."""
    await asyncio.sleep(0.001)


async def fluid_dispatch(handler: Handler, concurrent: bool, count: int) -> float:
    """Seconds per message for an ``AsyncDispatcher`` with ``HANDLERS`` handlers."""
    dispatcher = fluid.AsyncDispatcher[int](message_type=lambda m: "e", concurrent=concurrent)
    for index in range(HANDLERS):
        dispatcher.register_handler(f"e.h{index}", handler)
    start = time.perf_counter()
    for message in range(count):
        await dispatcher.dispatch(message)
    return (time.perf_counter() - start) / count


async def gathered(handler: Handler, count: int) -> float:
    """Seconds per message for a hand-written ``asyncio.gather`` of the handlers."""
    handlers = [handler] * HANDLERS
    start = time.perf_counter()
    for message in range(count):
        await asyncio.gather(*[h(message) for h in handlers])
    return (time.perf_counter() - start) / count


async def best(run: Callable[[], Awaitable[float]]) -> float:
    """The best of ``REPEATS`` runs, after a ``gc.collect()`` each."""
    figures = []
    for _ in range(REPEATS):
        gc.collect()
        figures.append(await run())
    return min(figures)


async def main() -> None:
    """Print microseconds per message for each kind of handler and each mode."""
    print(f"{HANDLERS} handlers, one message at a time, best of {REPEATS}: us per message")
    print(f"{'handlers':<22}{'in turn':>12}{'concurrent':>12}{'gather':>12}")
    for label, handler, count in (("trivial", trivial, 20_000), ("await sleep(1 ms)", waits, 100)):
        in_turn = await best(functools.partial(fluid_dispatch, handler, False, count))
        concurrent = await best(functools.partial(fluid_dispatch, handler, True, count))
        gather = await best(functools.partial(gathered, handler, count))
        figures = "".join(f"{seconds * 1e6:>12,.1f}" for seconds in (in_turn, concurrent, gather))
        print(f"{label:<22}{figures}")


if __name__ == "__main__":
    asyncio.run(main())
