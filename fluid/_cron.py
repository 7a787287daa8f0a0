"""Cron expressions: fluid's syntax and errors in front of cronsim's arithmetic.

The time arithmetic, DST changes included, is cronsim's
(https://github.com/cuu508/cronsim, no dependencies, maintained; it computes
the schedules of Healthchecks.io). This module adds what cronsim leaves to
its callers: the accepted syntax (a subset of cronsim's), errors that name
the offending field, the zone, and instants rather than local times.

The syntax: ``minute hour day-of-month month day-of-week`` with ``*``, ``a``,
``a-b``, ``*/n``, ``a-b/n``, ``a/n`` and lists joined by ``,``; month and
weekday names (``jan``, ``mon``); 0 or 7 for Sunday; and the macros
``@yearly`` (``@annually``), ``@monthly``, ``@weekly``, ``@daily``
(``@midnight``) and ``@hourly``. When both day fields are restricted a day
matches if either does; a day field starting with ``*`` does not count as
restricted. cronsim's extensions (a seconds field, ``L``, ``LW``, ``#``) are
refused: they are not part of the documented syntax.

Across a DST change the rules are those cronsim takes from Debian cron,
which sorts jobs by the first character of the minute and hour fields:

* a *fixed-time* job (neither field starts with ``*``: ``30 1 * * *``,
  ``@daily``) runs in the first minute after a spring gap if one of its times
  fell in the gap (once, however many did), and runs only in the first of
  the two occurrences of an autumn repeat;
* a *wildcard* job (``*/15 * * * *``, ``0 * * * *``, ``@hourly``) follows
  the wall clock: its times in a gap never show and do not run, its times in
  a repeat show twice and run twice.

Fixed-time jobs are cronsim's work, given the zone. It walks naive local
times for them, and from a start in the second occurrence of a repeated hour
it answers times of the first one, already past: those are passed over.

Wildcard jobs are computed here from cronsim's answers in fixed offsets:
cronsim's own walk in a zone steps whole hours from a wall time, and ends
off the clock after a change by 30 minutes (Lord Howe) or at midnight
(Santiago, Beirut). In a fixed offset its arithmetic is exact, so the search
runs in the offset in force and starts again at each change of offset before
its answer. tests/test_cron.py holds both kinds to a minute-by-minute reading
of the rules in such zones.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, tzinfo
from typing import NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

__all__ = ["CronExpression", "check_tz"]

_HORIZON_YEARS = 50  # cronsim's search gives up after this many years
# Offset changes in the tz database are at least 6.9 days apart since 1970
# (Brazil, October 2000): a probe this far ahead cannot step over two.
_PROBE = 2 * 86400

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
_LONGEST_MONTH = [0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]  # February of a leap year


class _Field(NamedTuple):
    name: str
    low: int
    high: int
    names: dict[str, int]


_FIELDS = (
    _Field("minute", 0, 59, {}),
    _Field("hour", 0, 23, {}),
    _Field("day-of-month", 1, 31, {}),
    _Field("month", 1, 12, {name: i + 1 for i, name in enumerate(_MONTHS)}),
    _Field("day-of-week", 0, 7, {name: i for i, name in enumerate(_DAYS)}),
)


def check_tz(tz: object) -> tzinfo:
    """A time zone from a ``tzinfo``, an IANA name such as ``"Europe/London"``, or None (UTC)."""
    if tz is None:
        return UTC
    if isinstance(tz, tzinfo):
        return tz
    if not isinstance(tz, str):
        raise TypeError(f"tz must be a time zone name or a tzinfo, got {tz!r}")
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {tz!r}") from exc


class CronExpression:
    """A parsed cron expression and the wall-clock zone its times are in.

    Five fields, ``minute hour day-of-month month day-of-week``, with the
    usual syntax: ``*``, values, ranges ``a-b``, steps ``*/n`` and ``a-b/n``,
    lists ``a,b``, names (``jan``, ``mon``) and the ``@daily``-style macros.
    Across DST changes the rules are Debian cron's, computed by cronsim: a
    job whose minute and hour fields do not start with ``*`` runs once at the
    end of a spring gap if one of its times fell in it, and once in an
    autumn repeat (the first occurrence); a job with ``*`` there follows the
    new wall clock (no run in the gap, runs in both occurrences of the
    repeat), so an hourly job still runs every hour.

    Args:
        expression: the cron expression.
        tz: the zone of its wall-clock times: an IANA name or a ``tzinfo``;
            UTC by default.

    Raises:
        ValueError: the expression is malformed (the message names the
            field), can never fire (``0 0 30 2 *``), or the zone is unknown.
        TypeError: ``expression`` is not a string, or ``tz`` is neither a
            name nor a ``tzinfo``.

    Example:
        ```python
        from datetime import datetime
        from zoneinfo import ZoneInfo

        london = ZoneInfo("Europe/London")
        nightly = fluid.CronExpression("30 1 * * *", tz=london)
        print(nightly.next_after(datetime(2024, 3, 30, 12, tzinfo=london)))
        # 2024-03-31 02:00:00+01:00: 01:30 does not exist that night,
        # the job runs when the clock has jumped
        ```
    """

    __slots__ = ("_expression", "_fields", "_tz", "_wildcard")

    def __init__(self, expression: str, tz: tzinfo | str | None = None) -> None:
        if not isinstance(expression, str):
            raise TypeError(f"cron must be a string, got {expression!r}")
        self._expression = expression
        self._tz = check_tz(tz)
        self._fields = _validate(expression)
        # Debian cron's two kinds of job, told apart as cronsim does.
        self._wildcard = self._fields.startswith("*") or self._fields.split()[1].startswith("*")
        try:  # cronsim's own checks, after ours: an error here is a disagreement
            CronSim(self._fields, datetime(2000, 1, 1))
        except CronSimError as exc:
            raise ValueError(f"cron expression {expression!r}: {exc}") from exc

    def __repr__(self) -> str:
        return f"CronExpression({self._expression!r}, tz={self._tz!s})"

    @property
    def expression(self) -> str:
        """The expression as given."""
        return self._expression

    @property
    def tz(self) -> tzinfo:
        """The zone the expression's times are in."""
        return self._tz

    def next_after(self, when: datetime) -> datetime:
        """The first fire time strictly after ``when``, in the expression's zone.

        Args:
            when: an aware datetime, in any zone.

        Raises:
            ValueError: ``when`` is naive, or no fire time exists within 50
                years (cronsim's horizon: no accepted expression is that
                rare, but the calendar ends in the year 9999).

        Example:
            ```python
            every_5 = fluid.CronExpression("*/5 * * * *")
            now = datetime.now(UTC)
            print(every_5.next_after(now))
            ```
        """
        if when.tzinfo is None or when.utcoffset() is None:
            raise ValueError(f"when must be timezone-aware, got {when!r}")
        return datetime.fromtimestamp(self._next(when.timestamp()), self._tz)

    def next_timestamp(self, after: float) -> float:
        """Like [`next_after`][fluid.CronExpression.next_after] with POSIX timestamps.

        Raises:
            TypeError: ``after`` is not a number.
            ValueError: ``after`` is not finite, or the expression does not
                fire within 50 years.
        """
        if type(after) is not float and (
            isinstance(after, bool) or not isinstance(after, int | float)
        ):
            raise TypeError(f"after must be a POSIX timestamp, got {after!r}")
        if not math.isfinite(after):
            raise ValueError(f"after must be a finite POSIX timestamp, got {after!r}")
        return self._next(after)

    def _next(self, after: float) -> float:
        try:
            if self._wildcard:
                found = self._next_on_the_clock(after)
            else:
                found = self._next_fixed_time(after)
        except (OverflowError, OSError, ValueError):  # the calendar ends in the year 9999
            found = None
        if found is None:
            raise ValueError(
                f"cron expression {self._expression!r} does not fire within {_HORIZON_YEARS} years"
            )
        return found

    def _next_fixed_time(self, after: float) -> float | None:
        # cronsim walks naive local times here; from a start in the second
        # occurrence of a repeated hour it answers times of the first one,
        # which have happened: the loop passes them.
        for fire in CronSim(self._fields, datetime.fromtimestamp(after, self._tz)):
            instant = fire.timestamp()
            if instant > after:
                return instant
        return None

    def _next_on_the_clock(self, after: float) -> float | None:
        # The first instant after ``after`` whose wall time matches. cronsim's
        # own walk in a zone with DST steps whole hours from a wall time and
        # lands off the clock after a change by 30 minutes (Lord Howe) or at
        # midnight (Santiago, Beirut). In a fixed offset it is exact: search
        # in the offset in force, again from each change before the answer.
        while True:
            first = math.floor(after) + 1  # the first whole second after ``after``
            offset = self._offset_at(first)
            # Naive wall times of the offset: cronsim's plain calendar arithmetic.
            start = datetime.fromtimestamp(after, UTC).replace(tzinfo=None) + offset
            wall = next(CronSim(self._fields, start), None)
            if wall is None:
                return None
            fire = (wall - offset).replace(tzinfo=UTC).timestamp()
            change = self._offset_change(first, int(fire), offset)
            if change is None:
                return fire
            after = change - 1

    def _offset_change(self, low: int, high: int, offset: timedelta) -> int | None:
        """The first second in ``[low, high]`` whose UTC offset is not ``offset``.

        ``low`` is in ``offset``. Probes every ``_PROBE`` seconds, less than
        the time between any two changes, then halves the probe step that
        holds the change.
        """
        while low < high:
            end = min(low + _PROBE, high)
            if self._offset_at(end) == offset:
                low = end
                continue
            while end - low > 1:
                middle = (low + end) // 2
                if self._offset_at(middle) == offset:
                    low = middle
                else:
                    end = middle
            return end
        return None

    def _offset_at(self, instant: float) -> timedelta:
        offset = datetime.fromtimestamp(instant, self._tz).utcoffset()
        assert offset is not None  # an aware datetime from fromtimestamp
        return offset


def _validate(expression: str) -> str:
    """The five fields of ``expression``, macros expanded, or a ValueError naming the field."""
    parts = _MACROS.get(expression.strip().lower(), expression).split()
    if len(parts) != len(_FIELDS):
        raise ValueError(
            f"cron expression {expression!r} must have 5 fields (minute hour "
            f"day-of-month month day-of-week), got {len(parts)}"
        )
    values = [_parse_field(expression, p, field) for p, field in zip(parts, _FIELDS, strict=True)]
    days, months = values[2], values[3]
    if parts[4].startswith("*") and min(days) > max(_LONGEST_MONTH[m] for m in months):
        raise ValueError(f"cron expression {expression!r} can never fire: no such date")
    return " ".join(parts)


def _parse_field(expression: str, text: str, field: _Field) -> set[int]:
    values: set[int] = set()
    for item in text.split(","):
        try:
            values.update(_parse_item(item, field))
        except ValueError as exc:
            raise ValueError(
                f"cron expression {expression!r}: bad {field.name} field {text!r}: {exc}"
            ) from None
    return values


def _parse_item(item: str, field: _Field) -> range:
    if not item:
        raise ValueError("empty list item")
    span, slash, step_text = item.partition("/")
    step = _number(step_text, "") if slash else 1
    if step < 1:
        raise ValueError(f"step must be at least 1, got {step}")
    if span == "*":
        low, high = field.low, field.high
    elif "-" in span:
        first, _, last = span.partition("-")
        low, high = _value(first, field), _value(last, field)
        if low > high:
            raise ValueError(f"range {span} goes backwards")
    else:
        low = _value(span, field)
        high = field.high if slash else low  # a/n: from a to the end, every n
    return range(low, high + 1, step)


def _value(text: str, field: _Field) -> int:
    named = field.names.get(text.lower())
    if named is not None:
        return named
    value = _number(text, "name" if field.names else "")
    if not field.low <= value <= field.high:
        raise ValueError(f"{value} is out of range {field.low}-{field.high}")
    return value


def _number(text: str, alternative: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise ValueError(
            f"{text!r} is not a number" + (f" or a {alternative}" if alternative else "")
        )
    return int(text)
