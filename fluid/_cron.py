"""Cron expressions: the five classic fields, and the next fire time in a time zone.

Why a parser of our own and not croniter: the job is a few hundred lines over
``zoneinfo`` (standard library; the ``tzdata`` package supplies the zone
database where the system has none). croniter's author declared it abandoned
at the end of 2024 ("do not use" on its PyPI page, with a threat to
unpublish); it has since moved to pallets-eco, but its future is uncertain
and its DST handling has a long history of bug reports. A parser of our own
keeps fluid's runtime dependencies at anyio and uvloop, and keeps the DST
rules below ours to define, document and test.

The syntax is Vixie cron's: ``minute hour day-of-month month day-of-week``
with ``*``, ``a``, ``a-b``, ``*/n``, ``a-b/n``, ``a/n`` and lists joined by
``,``; month and weekday names (``jan``, ``mon``); 0 or 7 for Sunday; and the
macros ``@yearly`` (``@annually``), ``@monthly``, ``@weekly``, ``@daily``
(``@midnight``) and ``@hourly``. When both day fields are restricted, a day
matches if either does (a field starting with ``*`` does not count as
restricted), as in Vixie cron.

Times are wall-clock times in the expression's zone. Across a DST change:

* a time the spring change skips (01:30 when clocks go from 01:00 to 02:00)
  fires as if the clock had not changed yet: at 02:30 the new time, exactly
  24 h after the day before's 01:30. Times that land on the same instant fire
  once.
* a time the autumn change repeats (01:30 happens twice) fires once, at its
  first occurrence, unless the hour field is ``*`` (every hour): then it
  fires in both, so an hourly job still runs every hour.

How the next time is found: walk the matching local times in order, turn each
into one or two instants (``zoneinfo`` with ``fold=0`` and ``fold=1``) and keep
the earliest after the given instant. Near an offset change the local order
and the instant order differ by up to the size of the change, so the walk
then starts and ends ``_MARGIN`` (3 h, more than any DST change in use) around
the answer. Far from any change one local time is enough, and that is the
common path.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["CronExpression", "check_tz"]

_MARGIN = timedelta(hours=3)
_MINUTE = timedelta(minutes=1)
_DAY = timedelta(days=1)
_EPOCH = datetime(1970, 1, 1)  # naive: local wall times are counted from it
_MAX_YEARS = 30  # a fire that exists happens within this many years (Feb 1 on a Monday: 11)

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
    Across DST changes a skipped time fires as if the clock had not changed
    yet, and a repeated time fires once, or in both occurrences when the hour
    field is ``*`` (so that an hourly job still runs every hour).

    Args:
        expression: the cron expression.
        tz: the zone of its wall-clock times: an IANA name or a ``tzinfo``;
            UTC by default.

    Raises:
        ValueError: the expression is malformed (the message names the
            field), can never fire (``0 0 30 2 *``), or the zone is unknown.
        TypeError: ``expression`` is not a string.

    Example:
        ```python
        from datetime import datetime
        from zoneinfo import ZoneInfo

        london = ZoneInfo("Europe/London")
        nightly = fluid.CronExpression("30 1 * * *", tz=london)
        print(nightly.next_after(datetime(2024, 3, 30, 12, tzinfo=london)))
        # 2024-03-31 02:30:00+01:00: 01:30 does not exist that night
        ```
    """

    __slots__ = (
        "_days",
        "_dom_star",
        "_dow_star",
        "_every_hour",
        "_expression",
        "_hours",
        "_minutes",
        "_months",
        "_tz",
        "_weekdays",
    )

    def __init__(self, expression: str, tz: tzinfo | str | None = None) -> None:
        if not isinstance(expression, str):
            raise TypeError(f"cron must be a string, got {expression!r}")
        self._expression = expression
        self._tz = check_tz(tz)
        text = _MACROS.get(expression.strip().lower(), expression)
        parts = text.split()
        if len(parts) != len(_FIELDS):
            raise ValueError(
                f"cron expression {expression!r} must have 5 fields (minute hour "
                f"day-of-month month day-of-week), got {len(parts)}"
            )
        sets = [_parse_field(expression, p, field) for p, field in zip(parts, _FIELDS, strict=True)]
        self._minutes, self._hours, self._days, self._months, weekdays = (sorted(s) for s in sets)
        self._weekdays = frozenset(day % 7 for day in weekdays)  # 7 is Sunday too
        self._dom_star = parts[2].startswith("*")
        self._dow_star = parts[4].startswith("*")
        self._every_hour = len(self._hours) == 24
        if self._dow_star and not any(
            day <= _days_in(month) for month in self._months for day in self._days
        ):
            raise ValueError(f"cron expression {expression!r} can never fire: no such date")

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
            ValueError: ``when`` is naive, or no fire time exists within 30
                years (e.g. ``0 0 1 2 1`` with a Monday that never comes).

        Example:
            ```python
            every_5 = fluid.CronExpression("*/5 * * * *")
            now = datetime.now(UTC)
            print(every_5.next_after(now))
            ```
        """
        if when.tzinfo is None or when.utcoffset() is None:
            raise ValueError(f"when must be timezone-aware, got {when!r}")
        return datetime.fromtimestamp(self.next_timestamp(when.timestamp()), self._tz)

    def next_timestamp(self, after: float) -> float:
        """Like [`next_after`][fluid.CronExpression.next_after] with POSIX timestamps."""
        found = self._search(after, timedelta(0), exact=False)
        if found is not None and self._steady(after, found):
            return found
        found = self._search(after, _MARGIN, exact=True)
        if found is None:
            raise ValueError(
                f"cron expression {self._expression!r} does not fire within {_MAX_YEARS} years"
            )
        return found

    # ------------------------------------------------------------- internals

    def _steady(self, after: float, found: float) -> bool:
        # No offset change between ``after`` and ``found`` (margins included):
        # local order is instant order and one local time was enough. Two
        # changes that cancel out within two days do not happen in practice.
        if found - after > 2 * 86400:
            return False
        margin = _MARGIN.total_seconds()
        offsets = {self._offset(t) for t in (after - margin, after, found, found + margin)}
        return len(offsets) == 1

    def _offset(self, timestamp: float) -> timedelta | None:
        return datetime.fromtimestamp(timestamp, self._tz).utcoffset()

    def _search(self, after: float, margin: timedelta, *, exact: bool) -> float | None:
        local = datetime.fromtimestamp(after, self._tz).replace(tzinfo=None)
        start = local.replace(second=0, microsecond=0) - margin
        best: float | None = None
        limit: datetime | None = None
        for candidate in self._local_times(start):
            if limit is not None and candidate > limit:
                break
            for instant in self._instants(candidate):
                if instant > after and (best is None or instant < best):
                    best = instant
                    limit = candidate + margin
            if best is not None and not exact:
                break
        return best

    def _instants(self, local: datetime) -> tuple[float, ...]:
        """The instants a local wall time stands for: none is dropped, see the module doc."""
        naive = (local - _EPOCH).total_seconds()
        first = local.replace(tzinfo=self._tz).utcoffset()
        second = local.replace(tzinfo=self._tz, fold=1).utcoffset()
        assert first is not None
        assert second is not None
        at_first = naive - first.total_seconds()
        if first == second:
            return (at_first,)
        at_second = naive - second.total_seconds()
        if at_first < at_second and self._every_hour:  # a repeated hour, both occurrences
            return (at_first, at_second)
        # A repeated time fires at its first occurrence; a skipped one (where
        # fold=0 gives the later instant) as if the clock had not changed.
        return (at_first,)

    def _local_times(self, start: datetime) -> Iterator[datetime]:
        """Matching local wall times from ``start`` on, in order."""
        day = start.date()
        end = date(min(day.year + _MAX_YEARS, 9999), 1, 1)
        first_day = True
        while day < end:
            if day.month not in self._months:
                day = _first_of_next_month(day)
                first_day = False
                continue
            if self._day_matches(day):
                for hour in self._hours:
                    if first_day and hour < start.hour:
                        continue
                    for minute in self._minutes:
                        if first_day and hour == start.hour and minute < start.minute:
                            continue
                        yield datetime(day.year, day.month, day.day, hour, minute)
            day += _DAY
            first_day = False

    def _day_matches(self, day: date) -> bool:
        in_month = day.day in self._days
        in_week = (day.weekday() + 1) % 7 in self._weekdays  # cron counts from Sunday
        if self._dom_star or self._dow_star:
            return in_month and in_week
        return in_month or in_week


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


def _days_in(month: int) -> int:
    return 29 if month == 2 else calendar.monthrange(2001, month)[1]


def _first_of_next_month(day: date) -> date:
    if day.month == 12:
        return date(day.year + 1, 1, 1)
    return date(day.year, day.month + 1, 1)
