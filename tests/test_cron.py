"""CronExpression: parsing, errors that name the field, and next fire times across DST changes."""

from __future__ import annotations

import functools
import itertools
import math
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fluid import CronExpression

LONDON = ZoneInfo("Europe/London")
NEW_YORK = ZoneInfo("America/New_York")


def fires(expression: str, start: datetime, count: int, tz: object = None) -> list[str]:
    """The next ``count`` fire times after ``start``, as ISO strings in the cron's zone."""
    cron = CronExpression(expression, tz=tz)  # type: ignore[arg-type]
    times, when = [], start
    for _ in range(count):
        when = cron.next_after(when)
        times.append(when.isoformat())
    return times


# ----------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("expression", "start", "expected"),
    [
        ("* * * * *", "2024-01-01T10:00:30", ["10:01", "10:02", "10:03"]),
        ("*/20 * * * *", "2024-01-01T10:00:00", ["10:20", "10:40", "11:00"]),
        ("5,35 9-10 * * *", "2024-01-01T00:00:00", ["09:05", "09:35", "10:05"]),
        ("10-40/15 * * * *", "2024-01-01T10:00:00", ["10:10", "10:25", "10:40"]),
        ("50/5 * * * *", "2024-01-01T10:00:00", ["10:50", "10:55", "11:50"]),
        ("0 12 * * *", "2024-01-01T12:00:00", ["12:00"]),
        ("@hourly", "2024-01-01T10:30:00", ["11:00", "12:00", "13:00"]),
    ],
)
def test_minutes_and_hours(expression: str, start: str, expected: list[str]) -> None:
    begin = datetime.fromisoformat(start).replace(tzinfo=UTC)
    got = fires(expression, begin, len(expected))
    assert [t[11:16] for t in got] == expected
    if expression == "0 12 * * *":
        assert got == ["2024-01-02T12:00:00+00:00"]  # strictly after: not the same instant


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("0 0 * * mon", ["2024-01-08", "2024-01-15"]),  # 2024-01-06 is a Saturday
        ("0 0 * * 0", ["2024-01-07", "2024-01-14"]),
        ("0 0 * * 7", ["2024-01-07", "2024-01-14"]),  # 7 is Sunday too
        ("0 0 * * sun,SAT", ["2024-01-07", "2024-01-13"]),
        ("0 0 * * 5-7", ["2024-01-07", "2024-01-12"]),
        ("0 0 1 * *", ["2024-02-01", "2024-03-01"]),
        ("0 0 31 * *", ["2024-01-31", "2024-03-31"]),  # months without a 31st are passed
        ("0 0 1 JAN,Jul *", ["2024-07-01", "2025-01-01"]),
        ("@monthly", ["2024-02-01", "2024-03-01"]),
        ("@weekly", ["2024-01-07", "2024-01-14"]),
        ("@yearly", ["2025-01-01", "2026-01-01"]),
        ("@daily", ["2024-01-07", "2024-01-08"]),
        # Both day fields restricted: either matches (Vixie cron).
        ("0 0 13 * fri", ["2024-01-12", "2024-01-13", "2024-01-19"]),
        # A day field starting with * counts as unrestricted: both must match.
        ("0 0 */10 * mon", ["2024-03-11"]),  # 1st, 11th, 21st or 31st and a Monday
    ],
)
def test_days_and_months(expression: str, expected: list[str]) -> None:
    start = datetime(2024, 1, 6, 12, tzinfo=UTC)
    assert [t[:10] for t in fires(expression, start, len(expected))] == expected


def test_february_29_waits_for_a_leap_year() -> None:
    start = datetime(2024, 3, 1, tzinfo=UTC)
    assert fires("0 0 29 2 *", start, 2) == [
        "2028-02-29T00:00:00+00:00",
        "2032-02-29T00:00:00+00:00",
    ]


def test_a_rare_day_is_found_years_ahead() -> None:
    # 1 February on a Monday: 2021, then 2027.
    start = datetime(2021, 2, 2, tzinfo=UTC)
    assert fires("0 0 */31 2 mon", start, 1) == ["2027-02-01T00:00:00+00:00"]


def test_the_zone_may_be_a_name_a_zoneinfo_or_a_fixed_offset() -> None:
    start = datetime(2023, 12, 31, 12, tzinfo=UTC)
    assert fires("0 9 * * *", start, 1, "Asia/Tokyo") == ["2024-01-01T09:00:00+09:00"]
    assert fires("0 9 * * *", start, 1, LONDON) == ["2024-01-01T09:00:00+00:00"]
    plus_two = timezone(timedelta(hours=2))
    assert fires("0 9 * * *", start, 1, plus_two) == ["2024-01-01T09:00:00+02:00"]
    assert CronExpression("0 9 * * *").tz is UTC
    assert CronExpression("0 9 * * *", "Asia/Tokyo").expression == "0 9 * * *"
    assert "Asia/Tokyo" in repr(CronExpression("0 9 * * *", "Asia/Tokyo"))


def test_when_may_be_in_any_zone() -> None:
    cron = CronExpression("0 9 * * *", tz="Asia/Tokyo")
    when = datetime(2024, 1, 1, 0, 30, tzinfo=UTC)  # 09:30 in Tokyo
    assert cron.next_after(when) == datetime(2024, 1, 2, 9, tzinfo=ZoneInfo("Asia/Tokyo"))


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("* * * *", "must have 5 fields .* got 4"),
        ("* * * * * *", "got 6"),
        ("", "got 0"),
        ("60 * * * *", "bad minute field '60': 60 is out of range 0-59"),
        ("* 24 * * *", "bad hour field '24': 24 is out of range 0-23"),
        ("* * 0 * *", "bad day-of-month field '0': 0 is out of range 1-31"),
        ("* * * 13 *", "bad month field '13'"),
        ("* * * * 8", "bad day-of-week field '8': 8 is out of range 0-7"),
        ("* * * foo *", "bad month field 'foo': 'foo' is not a number or a name"),
        ("* * * * funday", "bad day-of-week field 'funday'"),
        ("x * * * *", "bad minute field 'x': 'x' is not a number$"),
        ("*/0 * * * *", "bad minute field '\\*/0': step must be at least 1"),
        ("*/x * * * *", "bad minute field '\\*/x': 'x' is not a number"),
        ("30-10 * * * *", "bad minute field '30-10': range 30-10 goes backwards"),
        ("1,,2 * * * *", "bad minute field '1,,2': empty list item"),
        ("-5 * * * *", "bad minute field '-5'"),
        ("@reboot", "must have 5 fields"),
        # cronsim's extensions are not fluid's syntax
        ("0 0 L * *", "bad day-of-month field 'L'"),
        ("0 0 LW * *", "bad day-of-month field 'LW'"),
        ("0 0 * * mon#2", "bad day-of-week field 'mon#2'"),
        ("0 0 * * 5L", "bad day-of-week field '5L'"),
        ("0 0 0 * * *", "got 6"),
        ("0 0 30 2 *", "can never fire"),
        ("0 0 31 4,6,9,11 *", "can never fire"),
    ],
)
def test_bad_expressions_name_the_field(expression: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CronExpression(expression)


def test_other_bad_input() -> None:
    with pytest.raises(TypeError, match="cron must be a string"):
        CronExpression(5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown time zone 'Europe/Lndon'"):
        CronExpression("* * * * *", tz="Europe/Lndon")
    with pytest.raises(TypeError, match="tz must be a time zone name or a tzinfo"):
        CronExpression("* * * * *", tz=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="when must be timezone-aware"):
        CronExpression("* * * * *").next_after(datetime(2024, 1, 1))


@pytest.mark.parametrize("expression", ["0 0 1 1 *", "0 * 1 1 *"])
def test_the_calendar_ends(expression: str) -> None:
    cron = CronExpression(expression, tz=LONDON)
    with pytest.raises(ValueError, match="does not fire within 50 years"):
        cron.next_after(datetime(9999, 6, 1, tzinfo=UTC))


# -------------------------------------------------------------------- DST
#
# Two kinds of job (docs/schedules.md, "Cron and time zones"): a fixed-time
# job (neither the minute nor the hour field starts with *) runs once at the
# end of a spring gap that swallowed one of its times, and once in an autumn
# repeat; a wildcard job follows the wall clock: nothing in the gap, both
# occurrences of the repeat.
#
# London 2024: 03-31 01:00 GMT -> 02:00 BST; 10-27 02:00 BST -> 01:00 GMT.
# New York 2024: 03-10 02:00 EST -> 03:00 EDT; 11-03 02:00 EDT -> 01:00 EST.


def hours_between(times: list[str]) -> set[float]:
    instants = [datetime.fromisoformat(t) for t in times]
    return {(b - a) / timedelta(hours=1) for a, b in itertools.pairwise(instants)}


def test_london_spring_a_fixed_time_in_the_gap_runs_when_the_clock_has_jumped() -> None:
    start = datetime(2024, 3, 29, 12, tzinfo=LONDON)
    assert fires("30 1 * * *", start, 4, LONDON) == [
        "2024-03-30T01:30:00+00:00",
        "2024-03-31T02:00:00+01:00",  # 01:30 does not exist: the first minute after the jump
        "2024-04-01T01:30:00+01:00",
        "2024-04-02T01:30:00+01:00",
    ]


def test_london_spring_several_fixed_times_in_the_gap_run_once() -> None:
    start = datetime(2024, 3, 31, 0, 50, tzinfo=LONDON)
    assert fires("0,20,40 1 * * *", start, 3, LONDON) == [
        "2024-03-31T02:00:00+01:00",  # 01:00, 01:20 and 01:40 were all skipped
        "2024-04-01T01:00:00+01:00",
        "2024-04-01T01:20:00+01:00",
    ]
    assert fires("15 1,2 * * *", start, 3, LONDON) == [
        "2024-03-31T02:00:00+01:00",  # for 01:15
        "2024-03-31T02:15:00+01:00",  # its own time
        "2024-04-01T01:15:00+01:00",
    ]


def test_london_spring_wildcard_jobs_follow_the_new_clock() -> None:
    start = datetime(2024, 3, 31, 0, 40, tzinfo=LONDON)
    assert fires("*/15 * * * *", start, 3, LONDON) == [
        "2024-03-31T00:45:00+00:00",
        "2024-03-31T02:00:00+01:00",  # 15 minutes later: 01:xx never showed
        "2024-03-31T02:15:00+01:00",
    ]
    hourly = fires("0 * * * *", datetime(2024, 3, 30, 23, 30, tzinfo=LONDON), 4, LONDON)
    assert hourly == [
        "2024-03-31T00:00:00+00:00",
        "2024-03-31T02:00:00+01:00",
        "2024-03-31T03:00:00+01:00",
        "2024-03-31T04:00:00+01:00",
    ]
    assert hours_between(hourly) == {1.0}
    # A wildcard minute with fixed hours: the times of hour 1 are not run at all.
    assert fires("*/20 1,2 * * *", start, 4, LONDON) == [
        "2024-03-31T02:00:00+01:00",
        "2024-03-31T02:20:00+01:00",
        "2024-03-31T02:40:00+01:00",
        "2024-04-01T01:00:00+01:00",
    ]


def test_london_spring_an_hourly_cron_stays_one_hour_apart() -> None:
    start = datetime(2024, 3, 30, 23, 0, tzinfo=LONDON)
    got = fires("30 * * * *", start, 5, LONDON)
    assert got == [
        "2024-03-30T23:30:00+00:00",
        "2024-03-31T00:30:00+00:00",
        "2024-03-31T02:30:00+01:00",
        "2024-03-31T03:30:00+01:00",
        "2024-03-31T04:30:00+01:00",
    ]
    assert hours_between(got) == {1.0}


def test_london_autumn_a_fixed_time_in_the_repeat_runs_once() -> None:
    start = datetime(2024, 10, 25, 12, tzinfo=LONDON)
    assert fires("30 1 * * *", start, 4, LONDON) == [
        "2024-10-26T01:30:00+01:00",
        "2024-10-27T01:30:00+01:00",  # the first 01:30 only
        "2024-10-28T01:30:00+00:00",
        "2024-10-29T01:30:00+00:00",
    ]


def test_london_autumn_wildcard_jobs_run_in_both_occurrences() -> None:
    start = datetime(2024, 10, 27, 0, 50, tzinfo=LONDON)
    assert fires("*/15 * * * *", start, 10, LONDON) == [
        "2024-10-27T01:00:00+01:00",
        "2024-10-27T01:15:00+01:00",
        "2024-10-27T01:30:00+01:00",
        "2024-10-27T01:45:00+01:00",
        "2024-10-27T01:00:00+00:00",  # the clock went back: 01:00 again
        "2024-10-27T01:15:00+00:00",
        "2024-10-27T01:30:00+00:00",
        "2024-10-27T01:45:00+00:00",
        "2024-10-27T02:00:00+00:00",
        "2024-10-27T02:15:00+00:00",
    ]
    hourly = fires("0 * * * *", start, 4, LONDON)
    assert hourly == [
        "2024-10-27T01:00:00+01:00",
        "2024-10-27T01:00:00+00:00",
        "2024-10-27T02:00:00+00:00",
        "2024-10-27T03:00:00+00:00",
    ]
    assert hours_between(hourly) == {1.0}
    # A wildcard minute is enough, even with the hour fixed.
    assert fires("*/30 1 * * *", start, 5, LONDON) == [
        "2024-10-27T01:00:00+01:00",
        "2024-10-27T01:30:00+01:00",
        "2024-10-27T01:00:00+00:00",
        "2024-10-27T01:30:00+00:00",
        "2024-10-28T01:00:00+00:00",
    ]


def test_london_autumn_an_hourly_cron_fires_in_both_repeated_hours() -> None:
    start = datetime(2024, 10, 26, 23, 50, tzinfo=LONDON)
    got = fires("30 * * * *", start, 5, LONDON)
    assert got == [
        "2024-10-27T00:30:00+01:00",
        "2024-10-27T01:30:00+01:00",
        "2024-10-27T01:30:00+00:00",
        "2024-10-27T02:30:00+00:00",
        "2024-10-27T03:30:00+00:00",
    ]
    assert hours_between(got) == {1.0}


def test_london_autumn_from_inside_the_repeated_hour() -> None:
    first_0150 = datetime(2024, 10, 27, 1, 50, tzinfo=LONDON)  # BST, fold=0
    second_0105 = datetime(2024, 10, 27, 1, 5, fold=1, tzinfo=LONDON)  # GMT
    second_0110 = datetime(2024, 10, 27, 1, 10, fold=1, tzinfo=LONDON)
    every_hour = CronExpression("10 * * * *", tz=LONDON)
    got = every_hour.next_after(first_0150)  # the clock goes back: 01:10 comes again
    assert got.isoformat() == "2024-10-27T01:10:00+00:00"
    assert every_hour.next_after(second_0110).isoformat() == "2024-10-27T02:10:00+00:00"
    once = CronExpression("10 1 * * *", tz=LONDON)
    assert once.next_after(first_0150).isoformat() == "2024-10-28T01:10:00+00:00"
    # 01:10 ran in the first occurrence, 65 minutes before: not again, and
    # never an answer before the given instant.
    assert once.next_after(second_0105).isoformat() == "2024-10-28T01:10:00+00:00"
    assert once.next_timestamp(second_0105.timestamp()) > second_0105.timestamp()


def test_new_york_spring_and_autumn() -> None:
    spring = datetime(2024, 3, 9, 12, tzinfo=NEW_YORK)
    assert fires("30 2 * * *", spring, 3, NEW_YORK) == [
        "2024-03-10T03:00:00-04:00",  # 02:30 does not exist: when the clock has jumped
        "2024-03-11T02:30:00-04:00",
        "2024-03-12T02:30:00-04:00",
    ]
    night = datetime(2024, 3, 10, 1, 0, tzinfo=NEW_YORK)
    assert fires("*/15 * * * *", night, 5, NEW_YORK) == [
        "2024-03-10T01:15:00-05:00",
        "2024-03-10T01:30:00-05:00",
        "2024-03-10T01:45:00-05:00",
        "2024-03-10T03:00:00-04:00",
        "2024-03-10T03:15:00-04:00",
    ]
    autumn = datetime(2024, 11, 2, 12, tzinfo=NEW_YORK)
    assert fires("30 1 * * *", autumn, 3, NEW_YORK) == [
        "2024-11-03T01:30:00-04:00",  # once, at the first 01:30
        "2024-11-04T01:30:00-05:00",
        "2024-11-05T01:30:00-05:00",
    ]
    night = datetime(2024, 11, 3, 0, 0, tzinfo=NEW_YORK)
    assert fires("*/30 * * * *", night, 6, NEW_YORK) == [
        "2024-11-03T00:30:00-04:00",
        "2024-11-03T01:00:00-04:00",
        "2024-11-03T01:30:00-04:00",
        "2024-11-03T01:00:00-05:00",
        "2024-11-03T01:30:00-05:00",
        "2024-11-03T02:00:00-05:00",
    ]
    assert fires("0 * * * *", night, 4, NEW_YORK) == [
        "2024-11-03T01:00:00-04:00",
        "2024-11-03T01:00:00-05:00",
        "2024-11-03T02:00:00-05:00",
        "2024-11-03T03:00:00-05:00",
    ]


def test_a_wildcard_job_across_a_half_hour_change() -> None:
    # Lord Howe 2024-04-07: at 02:00 +11 the clocks go back to 01:30 +10:30.
    # cronsim's own walk (whole hours from 18:00) would answer 04:30.
    lord_howe = ZoneInfo("Australia/Lord_Howe")
    start = datetime(2024, 4, 6, 18, 32, tzinfo=lord_howe)
    assert fires("*/5 4-11 * * *", start, 2, lord_howe) == [
        "2024-04-07T04:00:00+10:30",
        "2024-04-07T04:05:00+10:30",
    ]


def test_a_wildcard_job_on_a_day_that_starts_at_one() -> None:
    # Santiago 2024-09-08 (a Sunday): the clocks go from 00:00 to 01:00.
    # cronsim's own walk (from a midnight that does not exist) would answer
    # 02:00 for the first, 00:00 (01:00 by the clock) for the second.
    santiago = ZoneInfo("America/Santiago")
    start = datetime(2024, 9, 7, 23, 59, tzinfo=santiago)
    assert fires("* 1-12 * * 0", start, 2, santiago) == [
        "2024-09-08T01:00:00-03:00",
        "2024-09-08T01:01:00-03:00",
    ]
    assert fires("*/30 */2 * * 0", start, 2, santiago) == [
        "2024-09-08T02:00:00-03:00",
        "2024-09-08T02:30:00-03:00",
    ]
    # A fixed-time job at the missing midnight runs when the clock has jumped.
    assert fires("0 0 * * *", start, 2, santiago) == [
        "2024-09-08T01:00:00-03:00",
        "2024-09-09T00:00:00-03:00",
    ]


@pytest.mark.parametrize("zone", [LONDON, NEW_YORK, ZoneInfo("Australia/Lord_Howe")])
@pytest.mark.parametrize("expression", ["*/7 * * * *", "0 * * * *", "15 1,2 * * *"])
def test_fire_times_strictly_increase_through_a_whole_year(zone: ZoneInfo, expression: str) -> None:
    cron = CronExpression(expression, tz=zone)
    when = datetime(2024, 1, 1, tzinfo=zone)
    end = datetime(2025, 1, 1, tzinfo=zone)
    step = timedelta(days=3, minutes=7)  # lands at every time of day over the year
    while when < end:
        first = cron.next_after(when)
        second = cron.next_after(first)
        assert when < first < second
        assert first - when <= timedelta(days=1, hours=1)
        when += step


# ------------------------------------------------------- against brute force

FIELD = st.one_of(
    st.just("*"),
    st.integers(1, 20).map(lambda n: f"*/{n}"),
    st.lists(st.integers(0, 23), min_size=1, max_size=3).map(lambda v: ",".join(map(str, v))),
    st.tuples(st.integers(0, 11), st.integers(12, 23)).map(lambda r: f"{r[0]}-{r[1]}"),
)
DAY = st.one_of(
    st.just("*"),
    st.lists(st.integers(0, 6), min_size=1, max_size=3).map(lambda v: ",".join(map(str, v))),
)
MONTH_DAY = st.one_of(st.just("*"), st.integers(1, 28).map(str))


def matches(expression: str, at: datetime) -> bool:
    """A slow, obvious reading of the fields, for UTC times."""
    minute, hour, dom, month, dow = expression.split()

    def field(text: str, value: int, low: int, high: int) -> bool:
        for item in text.split(","):
            span, _, step = item.partition("/")
            if span == "*":
                first, last = low, high
            elif "-" in span:
                first, last = (int(x) for x in span.split("-"))
            else:
                first = int(span)
                last = high if step else first
            if first <= value <= last and (value - first) % int(step or 1) == 0:
                return True
        return False

    day_ok = field(dom, at.day, 1, 31)
    week_ok = field(dow, (at.weekday() + 1) % 7, 0, 6)
    days = day_ok and week_ok if "*" in (dom[0], dow[0]) else day_ok or week_ok
    return (
        field(minute, at.minute, 0, 59)
        and field(hour, at.hour, 0, 23)
        and days
        and (field(month, at.month, 1, 12))
    )


@settings(max_examples=100, deadline=None)
@given(
    minute=FIELD,
    hour=FIELD,
    dom=MONTH_DAY,
    dow=DAY,
    start=st.datetimes(datetime(2020, 1, 1), datetime(2030, 1, 1)),
)
def test_next_after_is_the_first_matching_minute(
    minute: str, hour: str, dom: str, dow: str, start: datetime
) -> None:
    expression = f"{minute} {hour} {dom} * {dow}"
    when = start.replace(tzinfo=UTC)
    got = CronExpression(expression).next_after(when)
    assert got > when
    assert got.second == 0
    assert matches(expression, got)
    at = when.replace(second=0, microsecond=0) + timedelta(minutes=1)
    steps = 0
    while at < got and steps < 1500:  # no earlier match within the first day
        assert not matches(expression, at), f"{expression} matches {at} before {got}"
        at += timedelta(minutes=1)
        steps += 1


# --------------------------------------- against brute force, in real zones

ZONES = [
    "Europe/London",
    "America/New_York",
    "Australia/Lord_Howe",  # changes by 30 minutes
    "America/Santiago",  # changes at midnight
    "Asia/Beirut",  # changes at midnight
]


@functools.cache
def changes(name: str) -> list[float]:
    """The instants of 2024 when the UTC offset of zone ``name`` changes."""
    zone = ZoneInfo(name)
    t = datetime(2024, 1, 1, tzinfo=UTC).timestamp()
    found: list[float] = []
    offset = datetime.fromtimestamp(t, zone).utcoffset()
    while len(found) < 2:
        t += 60
        if datetime.fromtimestamp(t, zone).utcoffset() != offset:
            found.append(t)
            offset = datetime.fromtimestamp(t, zone).utcoffset()
    return found


def fires_at(expression: str, zone: ZoneInfo, instant: float) -> bool:
    """The documented rules, minute by minute: does the job run at ``instant``?"""
    minute, hour = expression.split()[:2]
    wildcard = minute.startswith("*") or hour.startswith("*")
    wall = datetime.fromtimestamp(instant, zone)
    if matches(expression, wall) and (wildcard or wall.fold == 0):
        return True  # a fixed-time job runs in the first occurrence only
    if wildcard:
        return False
    # A fixed-time job runs at the end of a gap that swallowed one of its times.
    skipped = datetime.fromtimestamp(instant - 60, zone).replace(tzinfo=None) + timedelta(minutes=1)
    while skipped < wall.replace(tzinfo=None):
        if matches(expression, skipped):
            return True
        skipped += timedelta(minutes=1)
    return False


@settings(max_examples=200, deadline=None)
@given(
    minute=FIELD,
    hour=FIELD,
    dom=MONTH_DAY,
    dow=DAY,
    zone=st.sampled_from(ZONES),
    change=st.integers(0, 1),
    minutes=st.integers(-26 * 60, 2 * 60),
    seconds=st.floats(0, 59.999),
)
def test_next_after_follows_the_dst_rules_minute_by_minute(
    minute: str, hour: str, dom: str, dow: str, zone: str, change: int, minutes: int, seconds: float
) -> None:
    # Start within a day before a change or soon after it; compare with the
    # rules read minute by minute up to 3 hours after the change.
    expression = f"{minute} {hour} {dom} * {dow}"
    tz = ZoneInfo(zone)
    at_change = changes(zone)[change]
    after = at_change + minutes * 60 + seconds
    got = CronExpression(expression, tz).next_timestamp(after)
    assert got > after
    end = at_change + 3 * 3600
    t = after // 60 * 60 + 60
    while t < min(got, end):
        assert not fires_at(expression, tz, t), f"runs at {datetime.fromtimestamp(t, tz)}"
        t += 60
    if got < end:
        assert fires_at(expression, tz, got)


@pytest.mark.parametrize(
    ("after", "error", "text"),
    [
        (math.nan, ValueError, "after must be a finite POSIX timestamp"),
        (math.inf, ValueError, "after must be a finite POSIX timestamp"),
        ("0", TypeError, "after must be a POSIX timestamp"),
        (True, TypeError, "after must be a POSIX timestamp"),
    ],
)
def test_a_bad_timestamp_is_named_not_taken_for_a_calendar_end(
    after: object, error: type[Exception], text: str
) -> None:
    # NaN used to answer "does not fire within 50 years"
    with pytest.raises(error, match=text):
        CronExpression("* * * * *").next_timestamp(after)  # type: ignore[arg-type]
    assert CronExpression("* * * * *").next_timestamp(0) == 60.0
