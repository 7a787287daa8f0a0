"""Errors at aio-fluid's import path: ``from fluid.utils.errors import WorkerStartError``.

Every public name of aio-fluid's ``fluid.utils.errors`` is here.
``FluidError`` and ``WorkerStartError`` are fluid's own (``fluid.FluidError``,
``fluid.WorkerStartError``): what fluid raises is caught by the same
``except`` clauses. The other three are aio-fluid's errors for its own
validation and profiling tools, which fluid does not have: nothing in fluid
raises them. They are defined here, under fluid's ``FluidError``, so that code
raising or catching them keeps working.
"""

from __future__ import annotations

from .._errors import (
    DuplicateWorkerName,
    FluidError,
    WorkerStartError,
    WorkerStateError,
)

__all__ = [
    "DuplicateWorkerName",
    "FlamegraphError",
    "FluidError",
    "FluidValueError",
    "ValidationError",
    "WorkerStartError",
    "WorkerStateError",
]


class FluidValueError(FluidError, ValueError):
    """aio-fluid's value error: a ``ValueError`` that is also a ``FluidError``.

    Example:
        ```python
        try:
            raise FluidValueError("price must be positive")
        except ValueError as error:
            assert isinstance(error, fluid.FluidError)
        ```
    """


class ValidationError(FluidValueError):
    """aio-fluid's error for a field that fails validation; its text is ``msg``.

    Args:
        field: the name of the field that failed.
        msg: what is wrong; ``"validation error"`` by default.
        field_type: the kind of field, ``"string"`` by default.
        value: the offending value.

    Example:
        ```python
        error = ValidationError("price", "must be positive", "number", -1)
        assert str(error) == "must be positive" and error.value == -1
        ```
    """

    def __init__(
        self, field: str, msg: str = "", field_type: str = "string", value: object = None
    ) -> None:
        self.field = field
        self.field_type = field_type
        self.msg = msg or "validation error"
        self.value = value
        # No super().__init__(), as in aio-fluid: args stay the arguments as
        # given (BaseException.__new__ keeps them), and it pickles (to a
        # parent process, from a process pool) as any exception does: rebuilt
        # from args, then its fields, notes and attributes restored.

    def __str__(self) -> str:
        return self.msg


class FlamegraphError(FluidError):
    """aio-fluid's error of its flamegraph tool, which fluid has not; nothing raises it.

    Kept so that code catching it imports.

    Example:
        ```python
        assert issubclass(FlamegraphError, fluid.FluidError)
        ```
    """
