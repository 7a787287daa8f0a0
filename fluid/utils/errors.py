"""Errors at their earlier import path: ``from fluid.utils.errors import WorkerStartError``."""

from __future__ import annotations

from .._errors import (
    DuplicateWorkerName,
    FluidError,
    WorkerStartError,
    WorkerStateError,
)

__all__ = ["DuplicateWorkerName", "FluidError", "WorkerStartError", "WorkerStateError"]
