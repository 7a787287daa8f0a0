"""The ``fluid`` command: run a worker as a program.

``fluid run package.module:attribute`` imports the module, takes the
attribute (a Worker, or a function returning one) and runs it with
[`fluid.run`][fluid.run]: the first SIGINT or SIGTERM stops it gracefully, a
second forces it. With ``--processes N`` it runs a
[`Prefork`][fluid.Prefork] master instead, whose N children each import the
target and run it, sharing the sockets of ``--bind``.

Exit status: 0 after a clean stop, 1 after a failure, 2 for a bad command
line or target, 128 + N after a stop forced by signal N (130 for SIGINT, 143
for SIGTERM).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from typing import NoReturn

from . import __version__
from ._child import KILL_AFTER
from ._prefork import Prefork, describe_socket, master_grace_period
from ._runner import EXIT_FAILURE, EXIT_USAGE, loop_factory, run
from ._target import NotAWorker, TargetError, load_target
from ._validate import check_seconds
from ._worker import STOPPING_GRACE_PERIOD

__all__ = ["LOG_FORMAT", "TargetError", "console", "load_target", "main"]

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
"""The log format of the ``fluid`` command (and of its prefork children)."""

_LEVELS = ("critical", "error", "warning", "info", "debug")


def main(argv: Sequence[str] | None = None) -> int:
    """The ``fluid`` command (also ``python -m fluid``); returns the exit status.

    Args:
        argv: the arguments, without the program name; by default ``sys.argv[1:]``.

    Returns:
        The exit status (see the module docstring). A bad option makes
        argparse exit with status 2 (``SystemExit``).

    Example:
        ```python
        from fluid.cli import main

        status = main(["run", "examples.pipeline:build", "--stopping-grace-period", "5"])
        ```
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command != "run":
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if args.bind and args.processes is None:
        return _error("--bind needs --processes: the sockets are for prefork children")
    return _run(args)


def console() -> NoReturn:
    """The program ``fluid`` (and ``python -m fluid``): exit with what ``main()`` returns.

    When ``main()`` returns, the stop is over and the exit status decided. A
    SIGINT or SIGTERM that still arrives (the tail of a signal storm, a second
    Ctrl-C) is ignored from then on, instead of killing the exiting process
    with another status.

    Example:
        ```toml
        [project.scripts]
        fluid = "fluid.cli:console"
        ```
    """
    status = main()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    sys.exit(status)


# ------------------------------------------------------------- internals


def _error(message: str) -> int:
    print(f"fluid run: error: {message}", file=sys.stderr, flush=True)
    return EXIT_USAGE


def _seconds(value: str) -> float:
    try:
        return check_seconds("the grace period", float(value))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _count(value: str) -> int:
    try:
        count = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of processes, got {value!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"needs at least 1 process, got {count}")
    return count


def _address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fluid", description="Run fluid workers.")
    parser.add_argument("--version", action="version", version=f"fluid {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    cmd = commands.add_parser(
        "run",
        help="run a worker until it ends or SIGINT/SIGTERM stops it",
        description=(
            "Run TARGET, a fluid.Worker or a function returning one, until it ends or a "
            "signal stops it: the first SIGINT/SIGTERM stops it gracefully, a second "
            "forces it. Exit status: 0 clean stop, 1 failure, 2 bad target, "
            "128+N forced by signal N."
        ),
    )
    cmd.add_argument("target", metavar="TARGET", help="package.module:attribute")
    cmd.add_argument(
        "--stopping-grace-period",
        "--grace",  # its earlier, shorter name
        dest="stopping_grace_period",
        type=_seconds,
        metavar="SECONDS",
        help="the grace period: seconds to stop gracefully after the first signal "
        "before forcing (default: the worker's own stopping_grace_period; with "
        f"--processes, {STOPPING_GRACE_PERIOD:g} for each child, then SIGTERM and SIGKILL "
        f"{KILL_AFTER:g} later: {master_grace_period(STOPPING_GRACE_PERIOD):g} in all "
        "for the master)",
    )
    cmd.add_argument(
        "--log-level",
        type=str.lower,
        choices=_LEVELS,
        default="info",
        help="logging level (default: info)",
    )
    cmd.add_argument(
        "--uvloop",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="use uvloop (default: when installed)",
    )
    cmd.add_argument(
        "--processes",
        type=_count,
        metavar="N",
        help="prefork N child processes, each running the target (respawned if they "
        "crash; a child whose worker ends by itself is not, and when all have ended the "
        "master exits)",
    )
    cmd.add_argument(
        "--bind",
        type=_address,
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="open a listening socket shared by the children (repeatable; needs --processes)",
    )
    cmd.add_argument(
        "--app-dir",
        default=".",
        metavar="DIR",
        help="directory put first on sys.path to import the target (default: .)",
    )
    return parser


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format=LOG_FORMAT, stream=sys.stderr)
    app_dir = os.path.abspath(args.app_dir)
    if not os.path.isdir(app_dir):
        what = "is not a directory" if os.path.exists(app_dir) else "does not exist"
        return _error(f"--app-dir {args.app_dir!r} {what}")
    # first, also when already on the path further down (PYTHONPATH)
    while app_dir in sys.path:
        sys.path.remove(app_dir)
    sys.path.insert(0, app_dir)
    try:
        loop_factory(args.uvloop)
        target = load_target(args.target, app_dir=app_dir)
    except (RuntimeError, TargetError) as exc:
        return _error(str(exc))
    if args.processes is not None:
        return _prefork(args)
    try:
        return run(target, stopping_grace_period=args.stopping_grace_period, use_uvloop=args.uvloop)
    except NotAWorker as exc:
        return _error(str(exc))


def _prefork(args: argparse.Namespace) -> int:
    sockets: list[socket.socket] = []
    try:
        for host, port in args.bind:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            try:
                sockets.append(socket.create_server((host, port), family=family, backlog=1024))
            except OSError as exc:
                logging.getLogger("fluid").error("cannot listen on %s:%s: %s", host, port, exc)
                return EXIT_FAILURE
        master = Prefork(
            args.target,
            processes=args.processes,
            sockets=sockets,
            stopping_grace_period=args.stopping_grace_period,
            use_uvloop=args.uvloop,
        )
        logging.getLogger("fluid").debug(
            "prefork of %s on %s", args.target, [describe_socket(s) for s in sockets]
        )
        return run(master, use_uvloop=args.uvloop)
    finally:
        for sock in sockets:
            sock.close()
