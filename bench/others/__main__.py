"""Command line: ``python -m bench.others [--loop asyncio|uvloop] [--quick] [--json PATH]``.

Runs aiomisc's and aiojobs' cases in this process (each case in a fresh loop,
with the suite's leak checks), then aio-fluid's in a subprocess of
``--aiofluid-python`` (see ``with_aiofluid.py``), prints every figure and
writes them as JSON for ``python -m bench.report``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import fanout, grace, queue, schedule, stop, tree
from .._harness import Options, number, run_case
from ._figures import LIBRARIES, Figure, Library

REPOSITORY = Path(__file__).resolve().parents[2]
AIOFLUID_SCRIPT = Path(__file__).resolve().with_name("with_aiofluid.py")
AIOFLUID_PYTHON = REPOSITORY / ".venv-aiofluid" / "bin" / "python"


def parse(argv: Sequence[str] | None = None) -> tuple[Options, list[str], Path]:
    """The options, the libraries to measure and aio-fluid's interpreter."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.others",
        description="aio-fluid, aiomisc and aiojobs on the suite's rows where they do the "
        "same job as fluid.",
    )
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--quick", action="store_true", help="one run, small sizes")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--repeats", type=int, default=5, help="as for python -m bench")
    parser.add_argument(
        "--library",
        action="append",
        choices=LIBRARIES,
        help="measure only this library (repeatable; default: all)",
    )
    parser.add_argument(
        "--aiofluid-python",
        type=Path,
        default=AIOFLUID_PYTHON,
        help=f"the Python of a virtualenv with aio-fluid (default {AIOFLUID_PYTHON})",
    )
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    chosen = args.library or list(LIBRARIES)
    return Options(args.loop, args.quick, args.repeats, args.json), chosen, args.aiofluid_python


def measure_here(name: str, options: Options) -> Library:
    """Run the cases of aiomisc or aiojobs in this process, each in a fresh loop."""
    if name == "aiomisc":
        from . import with_aiomisc as module
    else:
        from . import with_aiojobs as module  # type: ignore[no-redef]
    figures: list[Figure] = []
    for case in module.CASES:
        print(f"  {name} {case.__name__} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        figures.extend(run_case(case, options))
        print(f"    {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    return Library(name, module.version(), sys.version.split()[0], figures, module.NOT_COMPARED)


def aiofluid_plan(options: Options) -> dict[str, Any]:
    """The suite's sizes for the cases aio-fluid runs, read from the suite's modules."""
    return {
        "queue": options.size(*queue.MESSAGES),
        "batch": queue.BATCH,
        "fanout": options.size(*fanout.MESSAGES),
        "fanout_batch": fanout.BATCH,
        "handlers": fanout.HANDLERS,
        "tree": options.size(*tree.WORKERS),
        "stop_runs": options.size(*stop.RUNS),
        "grace": grace.GRACE,
        "schedules": options.size(*schedule.SCHEDULES),
        "seconds": options.size(*schedule.SECONDS),
        "interval": schedule.INTERVAL,
        "idle_schedules": options.size(*schedule.IDLE_SCHEDULES),
        "idle_seconds": options.size(*schedule.IDLE_SECONDS),
    }


def measure_aiofluid(python: Path, options: Options) -> Library:
    """Run ``with_aiofluid.py`` isolated (``-I``, outside the repository) and read its JSON."""
    if not python.exists():
        raise SystemExit(
            f"{python} not found: aio-fluid needs its own virtualenv "
            "(make bench creates .venv-aiofluid)"
        )
    command = [
        str(python.absolute()),  # not resolve(): a virtualenv's python is a symlink
        "-I",
        str(AIOFLUID_SCRIPT),
        "--loop",
        options.loop,
        "--repeats",
        str(options.repeats),
        "--plan",
        json.dumps(aiofluid_plan(options)),
    ]
    if options.quick:
        command.append("--quick")
    completed = subprocess.run(
        command, cwd=tempfile.gettempdir(), stdout=subprocess.PIPE, text=True, check=True
    )
    return Library.from_dict(json.loads(completed.stdout))


def table(libraries: Sequence[Library]) -> str:
    """Every figure, one line each."""
    lines = []
    for library in libraries:
        for figure in library.figures:
            lines.append(
                f"{library.name:<10} {figure.key:<22} {number(figure.value):>12} "
                f"{figure.unit:<9} {figure.how}"
            )
    return "\n".join(lines)


def write_json(path: str, options: Options, libraries: Sequence[Library], seconds: float) -> None:
    """Write the settings and every library's results to ``path``."""
    data = {
        "loop": options.loop,
        "quick": options.quick,
        "repeats": options.repeats,
        "seconds": seconds,
        "libraries": [library.as_dict() for library in libraries],
    }
    with open(path, "w", encoding="utf-8") as file:
        json.dump(data, file, indent=2)
        file.write("\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Measure the chosen libraries, print the figures, write the JSON file if asked."""
    options, chosen, python = parse(argv)
    print(f"other libraries on {options.loop}, {'quick' if options.quick else 'full'} mode")
    started = time.perf_counter()
    libraries: list[Library] = []
    for name in LIBRARIES:
        if name not in chosen:
            continue
        print(f"measuring {name} ...", file=sys.stderr, flush=True)
        if name == "aio-fluid":
            libraries.append(measure_aiofluid(python, options))
        else:
            libraries.append(measure_here(name, options))
    seconds = time.perf_counter() - started
    print(f"total    {seconds:.0f} s\n")
    print(table(libraries))
    if options.json_path:
        write_json(options.json_path, options, libraries, seconds)
        print(f"results written to {options.json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
