"""What measuring another library yields: figures on suite rows, and what it could not measure.

The aio-fluid subprocess (``with_aiofluid.py``) cannot import this module (it
must not see this project's ``fluid``); it prints the same fields as plain
JSON, and ``Library.from_dict`` reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

LIBRARIES = ("aio-fluid", "aiomisc", "aiojobs")
"""The libraries compared, in the order of the report's columns."""


@dataclass(frozen=True)
class Figure:
    """One figure of another library on the suite row whose key is ``key``.

    ``unit`` is the suite row's unit (the report checks it); ``how`` says in
    one sentence what the library's side does.
    """

    key: str
    value: float
    unit: str
    how: str

    def as_dict(self) -> dict[str, Any]:
        """The figure as plain data."""
        return {"key": self.key, "value": self.value, "unit": self.unit, "how": self.how}


@dataclass(frozen=True)
class NotCompared:
    """A case of the suite the library has no equivalent for, and why."""

    case: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        """The gap as plain data."""
        return {"case": self.case, "reason": self.reason}


@dataclass(frozen=True)
class Library:
    """Everything measured for one library on one loop, and the Python that ran it."""

    name: str
    version: str
    python: str
    figures: list[Figure] = field(default_factory=list)
    not_compared: list[NotCompared] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The library's results as plain data."""
        return {
            "name": self.name,
            "version": self.version,
            "python": self.python,
            "figures": [figure.as_dict() for figure in self.figures],
            "not_compared": [gap.as_dict() for gap in self.not_compared],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Library:
        """Read what ``as_dict`` (or the aio-fluid subprocess) wrote."""
        return cls(
            name=str(data["name"]),
            version=str(data["version"]),
            python=str(data["python"]),
            figures=[
                Figure(str(f["key"]), float(f["value"]), str(f["unit"]), str(f["how"]))
                for f in data["figures"]
            ],
            not_compared=[
                NotCompared(str(g["case"]), str(g["reason"])) for g in data["not_compared"]
            ],
        )
