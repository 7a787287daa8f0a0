"""Targets for ``fluid run`` and ``Prefork`` in the tests: imported by name in other processes."""

from __future__ import annotations

import asyncio
import os
import signal

import fluid


class Stubborn(fluid.Worker):
    """Ignores graceful stops: only a cancel ends it. Says what happens to it."""

    def __init__(self) -> None:
        super().__init__(stopping_grace_period=30)

    async def on_startup(self) -> None:
        print(f"stubborn started (pid {os.getpid()})", flush=True)

    async def run(self) -> None:
        await asyncio.Event().wait()

    async def on_shutdown(self) -> None:
        print("stubborn on_shutdown ran", flush=True)


class Failing(fluid.Worker):
    """Fails as soon as it runs."""

    async def run(self) -> None:
        raise ValueError("boom from the failing worker")


class Quick(fluid.Worker):
    """Ends on its own, after saying which event loop it ran on."""

    async def run(self) -> None:
        print(f"quick ran on {type(asyncio.get_running_loop()).__module__}", flush=True)


not_a_worker = 42


def returns_a_string() -> str:
    """A factory returning something else than a Worker."""
    return "not a worker"


def deaf_to_sigterm() -> fluid.Worker:
    """In a prefork child: a worker that ignores stops, in a process that blocks SIGTERM."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    return Stubborn()


def needs_arguments(host: str, port: int, *, debug: bool = False) -> fluid.Worker:
    """A factory that needs arguments: not a target (nothing can pass them)."""
    return Quick()


class NeedsASocket(fluid.Worker):
    """A worker class whose constructor needs an argument: not a target either."""

    def __init__(self, sock: object, *args: object, **kwargs: object) -> None:
        super().__init__()
        self.sock = sock

    async def run(self) -> None:
        print(f"serving {self.sock!r}", flush=True)


def crash_then_quick() -> fluid.Worker:
    """In a prefork child: the first one to run exits with code 3, its respawn ends cleanly.

    The file named by ``FLUID_TEST_MARKER`` says a child already ran: it is
    created by the first one. The crash comes once the child's worker runs
    (after the master's startup), as a crash in production would.
    """
    marker = os.environ["FLUID_TEST_MARKER"]
    if os.path.exists(marker):
        return Quick()
    with open(marker, "w"):
        pass
    return ExitsWith3()


class ExitsWith3(fluid.Worker):
    """Ends its process with exit code 3 once running, as a crash of C code would."""

    async def run(self) -> None:
        await asyncio.sleep(0.05)
        os._exit(3)
