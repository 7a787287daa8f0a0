"""Command line: ``python -m bench [--loop asyncio|uvloop] [--quick] [--json PATH]``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from . import (
    consumers,
    executors,
    fanout,
    grace,
    jobs,
    queue,
    schedule,
    stop,
    streams,
    supervision,
    threads,
    tree,
)
from ._harness import Options, Row, header, run_case, summary, table, write_json

Case = Callable[[Options], Coroutine[Any, Any, list[Row]]]

CASES: dict[str, Case] = {
    module.NAME: module.run
    for module in (
        queue,
        threads,
        fanout,
        tree,
        stop,
        grace,
        consumers,
        supervision,
        executors,
        schedule,
        jobs,
        streams,
    )
}


def parse(argv: Sequence[str] | None = None) -> tuple[Options, list[str]]:
    """The options and the names of the cases to run."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="fluid against hand-written asyncio, case by case, in one run.",
    )
    parser.add_argument(
        "--loop",
        choices=["asyncio", "uvloop"],
        default="asyncio",
        help="event loop for both sides (default asyncio)",
    )
    parser.add_argument("--quick", action="store_true", help="one run, small sizes: a smoke test")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument(
        "--repeats", type=int, default=5, help="repeats of the timed cases (default 5)"
    )
    parser.add_argument(
        "--case",
        action="append",
        choices=list(CASES),
        help="run only this case (repeatable; default: all)",
    )
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    options = Options(args.loop, args.quick, args.repeats, args.json)
    chosen = args.case or list(CASES)
    return options, [name for name in CASES if name in chosen]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected cases, print the table, write the JSON file if asked."""
    options, names = parse(argv)
    print("\n".join(header(options)), flush=True)
    rows: list[Row] = []
    started = time.perf_counter()
    for name in names:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        case_started = time.perf_counter()
        rows.extend(run_case(CASES[name], options))
        print(f"  {time.perf_counter() - case_started:.1f} s", file=sys.stderr, flush=True)
    seconds = time.perf_counter() - started
    print(f"total    {seconds:.0f} s\n")
    print(table(rows))
    print("\n" + summary(rows))
    if options.json_path:
        write_json(options.json_path, options, rows, seconds)
        print(f"results written to {options.json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
