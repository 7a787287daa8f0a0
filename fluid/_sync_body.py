"""The body of a sync worker: ``setup()``, ``main()``, ``teardown()``, and their outcome.

[`ThreadWorker`][fluid.ThreadWorker] runs the body in a thread,
[`ProcessWorker`][fluid.ProcessWorker] in a child process; both run it with
[`run_body`][] and so agree, by construction, on what it means:

* ``setup()`` runs first. Once it returned, the host is told at once
  (``ready``): ``startup()`` returns then, whatever the body does next. If
  it raises, neither ``main()`` nor ``teardown()`` runs and ``startup()``
  raises its error.
* ``teardown()`` runs after ``main()``, also when ``main()`` raised. The
  error of ``main()`` wins; an error of ``teardown()`` alone is the outcome;
  one raised after an error of ``main()`` is logged.
* Any exception is the outcome, ``BaseException`` included. A
  ``SystemExit`` or ``KeyboardInterrupt`` raised by sync code is not the
  end of its thread or process only: it crosses back to the loop and is
  raised by the worker's ``run()``, where it does what it does when an
  async worker raises it (it propagates, after ``on_shutdown()``). The body
  of a worker is the sync form of ``run()``, and ``sys.exit()`` in it means
  the same in a thread as in a child process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from ._validate import is_async_callable

__all__ = ["SyncBody", "check_sync_target", "run_body"]

logger = logging.getLogger("fluid")


class SyncBody(Protocol):
    """What a host runs: the three steps of a sync worker."""

    def setup(self) -> None: ...  # pragma: no cover - a protocol

    def main(self) -> None: ...  # pragma: no cover - a protocol

    def teardown(self) -> None: ...  # pragma: no cover - a protocol


def run_body(body: SyncBody, name: str, ready: Callable[[], None]) -> BaseException | None:
    """Run ``setup``, then ``ready()``, ``main`` and ``teardown``; return the outcome.

    Args:
        body: the worker whose steps run here, in its thread or process.
        name: the worker's name, for the log of a second error.
        ready: called once ``setup()`` returned, before ``main()``.

    Returns:
        The error the body ended with (see the module docstring), or None.
    """
    try:
        body.setup()
    except BaseException as exc:
        return exc
    ready()
    error: BaseException | None = None
    try:
        body.main()
    except BaseException as exc:
        error = exc
    try:
        body.teardown()
    except BaseException as exc:
        if error is None:
            return exc
        logger.error("teardown of worker %r failed", name, exc_info=exc)
    return error


def check_sync_target(owner: type, target: object, main: object) -> None:
    """Reject a target that is not a plain callable, or a missing one without ``main``."""
    if target is None:
        if getattr(owner, "main", None) is main:
            raise TypeError(
                f"{owner.__name__} needs a target function or a subclass overriding main()"
            )
        return
    if not callable(target):
        raise TypeError(f"target must be a callable, got {target!r}")
    if is_async_callable(target):
        raise TypeError(
            f"target must be a plain (sync) function, got the coroutine function {target!r}: "
            "use fluid.WorkerFunction for async code"
        )
