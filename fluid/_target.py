"""Targets: what ``fluid.run``, the ``fluid`` command and ``Prefork`` are given to run.

A target is a [`Worker`][fluid.Worker], or a function without arguments
that returns one (a factory: a function, a class, any callable that can be
called with no argument), or, where it must cross a process boundary or
a command line, a string ``"package.module:attribute"`` naming either. This
module is the one place that reads and checks a target, so that the three
callers agree on what is accepted and say it with the same words:

* ``check_target``: a Worker or a callable without required arguments, at
  the call (``fluid.run``, the web integrations);
* ``check_sendable_target``: a spec or a picklable factory, for child
  processes (``Prefork``): a Worker cannot cross a process boundary;
* ``load_target``: import a spec and check what it names (the ``fluid``
  command in its process, each prefork child in its own);
* ``build_worker``: call a factory and check that it returned a Worker.

A callable that needs arguments is refused by all three, naming them: it
would only fail later, when called, with a ``TypeError`` that looks like a
bug of the caller's (a traceback from the runner) rather than a wrong target.

The errors are ``TargetError`` (a spec that cannot be loaded) and
``NotAWorker`` (a factory that returned something else), both in
``_errors.py`` under ``FluidError``.

Why a module of its own: the command line, the runner and the prefork
master each checked targets before, with three versions of the check, and
prefork imported the command line module to load a spec while the command
line imported prefork to run one (an import cycle). Both now import this
module, which imports neither.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import os
import pickle
import traceback
from collections.abc import Callable
from typing import TypeAlias, TypeGuard

from ._errors import NotAWorker, TargetError
from ._worker import Worker

__all__ = [
    "NotAWorker",
    "TargetError",
    "WorkerOrFactory",
    "build_worker",
    "check_sendable_target",
    "check_target",
    "load_target",
    "split_spec",
]

WorkerOrFactory: TypeAlias = Worker | Callable[[], Worker]
"""A worker, or a function without arguments that returns one."""


def split_spec(spec: str) -> tuple[str, str]:
    """Split ``"package.module:attribute"`` into the module and the (dotted) attribute.

    Raises:
        TargetError: ``spec`` has no ``:``, or nothing on one side of it.

    Example:
        ```python
        assert split_spec("myapp.workers:app.tree") == ("myapp.workers", "app.tree")
        ```
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise TargetError(f"expected a target like 'package.module:attribute', got {spec!r}")
    return module_name, attribute


def check_target(target: object) -> None:
    """Raise ``TypeError`` unless ``target`` is a Worker or a callable without arguments.

    What a callable returns is checked when it is called, by ``build_worker``.

    Raises:
        TypeError: ``target`` is neither, or it is a callable with required
            parameters (the message names them).

    Example:
        ```python
        check_target(build)  # a factory: fine
        check_target(42)  # TypeError: expected a fluid.Worker or a function ...
        check_target(connect)  # TypeError: ... needs arguments (host, port) ...
        ```
    """
    if not _is_target(target):
        raise TypeError(f"expected a fluid.Worker or a function returning one, got {target!r}")
    _check_no_arguments(target, repr(target), TypeError)


def check_sendable_target(target: object) -> None:
    """Raise unless ``target`` can be sent to a child process that builds the worker.

    A spec string is checked for its shape only (the child imports it); a
    factory must pickle (a module-level function, not a lambda or a nested
    function). A Worker is refused: it is bound to this process and cannot
    be sent.

    Raises:
        TargetError: ``target`` is a string that is not
            ``"package.module:attribute"`` (also a ``ValueError``).
        TypeError: ``target`` is a Worker, is not callable, needs arguments,
            or does not pickle.

    Example:
        ```python
        check_sendable_target("myapp.workers:build")  # fine: imported by the child
        check_sendable_target(lambda: fluid.Workers())  # TypeError: cannot be sent
        ```
    """
    if isinstance(target, Worker):
        raise TypeError(
            f"a Worker cannot be sent to child processes, got {target!r}: pass a "
            "module-level function returning one, or 'package.module:attribute'"
        )
    if isinstance(target, str):
        split_spec(target)
        return
    if not callable(target):
        raise TypeError(f"target must be a function returning a Worker, got {target!r}")
    _check_no_arguments(target, repr(target), TypeError)
    try:
        pickle.dumps(target)
    except Exception as exc:
        raise TypeError(
            f"target {target!r} cannot be sent to child processes ({exc}): define it at "
            "module level, or pass 'package.module:attribute'"
        ) from exc


def load_target(spec: str, *, app_dir: str | None = None) -> WorkerOrFactory:
    """Import ``"package.module:attribute"`` and return the attribute, checked.

    The attribute may be dotted (``module:app.tree``). It must be a
    [`Worker`][fluid.Worker] or a callable without required arguments (a
    function or class returning one); what a callable returns is checked
    when it is called.

    Args:
        spec: ``"package.module:attribute"``.
        app_dir: the directory the module is looked for in first (the
            command line's ``--app-dir``), named by the message of a module
            not found; by default the current directory.

    Raises:
        TargetError: the spec is malformed, the module is not found or fails
            to import (the message has its traceback), the attribute is
            missing, it is neither a Worker nor callable, or it needs
            arguments (the message names them).

    Example:
        ```python
        from fluid.cli import load_target

        target = load_target("examples.pipeline:build")
        sys.exit(fluid.run(target))
        ```
    """
    module_name, attribute = split_spec(spec)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            where = os.path.abspath(app_dir) if app_dir is not None else os.getcwd()
            raise TargetError(
                f"module {module_name!r} not found (is {where!r} the right directory?)"
            ) from None
        raise TargetError(_import_failed(module_name, exc)) from exc
    except Exception as exc:
        raise TargetError(_import_failed(module_name, exc)) from exc
    target: object = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise TargetError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if not _is_target(target):
        raise TargetError(
            f"{spec!r} is {target!r}, not a fluid.Worker nor a function returning one"
        )
    _check_no_arguments(target, repr(spec), TargetError)
    return target


def build_worker(target: WorkerOrFactory) -> Worker:
    """The worker itself, or what the factory returns once checked.

    Call it where the worker must live: on the event loop that runs it (a
    factory may create loop-bound objects), in the child process that runs it.

    Raises:
        NotAWorker: the factory returned something else than a Worker, a
            coroutine included (an ``async def`` factory; it is closed).
        Exception: whatever the factory raised.

    Example:
        ```python
        worker = build_worker(build)  # build() called, its result checked
        ```
    """
    if isinstance(target, Worker):
        return target
    try:
        worker: object = target()
    except TypeError as exc:
        if exc.__traceback__ is not None and exc.__traceback__.tb_next is None:
            # raised by the call itself, not from inside the factory: a
            # callable whose signature could not be read (C code) needs
            # arguments
            raise NotAWorker(
                f"{target!r} cannot be called without arguments ({exc}): a target is "
                "a fluid.Worker or a function without arguments that returns one"
            ) from None
        raise
    if asyncio.iscoroutine(worker):
        worker.close()
        raise NotAWorker(
            f"{target!r} returned a coroutine: a factory must be a plain function "
            "that returns a fluid.Worker (open resources in the worker's on_startup)"
        )
    if not isinstance(worker, Worker):
        raise NotAWorker(f"{target!r} returned {worker!r}, not a fluid.Worker")
    return worker


# ------------------------------------------------------------- internals


def _is_target(target: object) -> TypeGuard[WorkerOrFactory]:
    return isinstance(target, Worker) or callable(target)


def _check_no_arguments(target: object, name: str, error: type[Exception]) -> None:
    """Raise ``error`` if ``target`` is a callable that cannot be called without arguments.

    A Worker is never called. A callable whose signature cannot be read (a
    builtin, some extension types) is let through: calling it says the rest.
    """
    if isinstance(target, Worker):
        return
    needed = _required_parameters(target)
    if needed:
        kind = "class" if isinstance(target, type) else "function"
        raise error(
            f"{name} is a {kind} that needs arguments ({', '.join(needed)}): a target is a "
            "fluid.Worker or a function without arguments that returns one"
        )


def _required_parameters(target: object) -> list[str]:
    """The parameters ``target(...)`` must be given: no default, not ``*args``/``**kwargs``."""
    # the target's own signature, not the one functools.wraps points to: a
    # decorator may supply the arguments the wrapped function needs
    try:
        signature = inspect.signature(target, follow_wrapped=False)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return []
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return [
        parameter.name
        for parameter in signature.parameters.values()
        if parameter.default is inspect.Parameter.empty and parameter.kind not in variadic
    ]


def _import_failed(module: str, exc: BaseException) -> str:
    text = "".join(traceback.format_exception(exc)).rstrip()
    return f"importing module {module!r} failed:\n{text}"
