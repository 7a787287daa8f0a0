"""Profile fluid's hot paths with pyinstrument: ``python -m bench.profile [PATH ...]``.

Runs the fluid side of a benchmark case under pyinstrument's sampling
profiler and prints where the time goes (fluid's frames and what they call).
pyinstrument is not a dependency: install it in the bench environment
(``pip install pyinstrument``). Paths: ``queue``, ``threads``, ``fanout``,
``restart``, ``tree``; all of them by default.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable

from . import fanout, queue, supervision, threads, tree

PATHS: dict[str, Callable[[], Awaitable[object]]] = {
    "queue": lambda: queue.run_fluid(400_000),
    "threads": lambda: threads.run_fluid(100_000),
    "fanout": lambda: fanout.run_fluid(100_000),
    "restart": lambda: supervision.fluid_latencies(5_000),
    "tree": lambda: tree.cycle_fluid(10_000),
}


def main(argv: list[str]) -> int:
    """Profile each chosen path in a fresh event loop and print the call tree."""
    try:
        from pyinstrument import Profiler
    except ImportError:
        print("pyinstrument is not installed: pip install pyinstrument", file=sys.stderr)
        return 2
    unknown = [name for name in argv if name not in PATHS]
    if unknown:
        print(f"unknown paths {unknown}; choose from {list(PATHS)}", file=sys.stderr)
        return 2
    for name in argv or list(PATHS):
        profiler = Profiler(interval=0.0002, async_mode="disabled")
        with asyncio.Runner() as runner:
            profiler.start()
            runner.run(PATHS[name]())
            profiler.stop()
        print(f"==================== {name}")
        print(profiler.output_text(unicode=True, show_all=False, short_mode=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
