"""CronExpression: parsing, errors that name the field, and next fire times across DST changes."""

from __future__ import annotations

import itertools
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


# -------------------------------------------------------------------- DST


def test_london_spring_a_skipped_time_fires_as_if_the_clock_had_not_changed() -> None:
    # 2024-03-31: at 01:00 GMT the clocks go to 02:00 BST; 01:30 does not exist.
    start = datetime(2024, 3, 29, 12, tzinfo=LONDON)
    assert fires("30 1 * * *", start, 4, LONDON) == [
        "2024-03-30T01:30:00+00:00",
        "2024-03-31T02:30:00+01:00",  # 01:30 GMT: exactly 24 h after the day before
        "2024-04-01T01:30:00+01:00",
        "2024-04-02T01:30:00+01:00",
    ]


def test_london_spring_an_hourly_cron_stays_one_hour_apart() -> None:
    start = datetime(2024, 3, 30, 23, 0, tzinfo=LONDON)
    got = [datetime.fromisoformat(t) for t in fires("30 * * * *", start, 5, LONDON)]
    assert [t.isoformat() for t in got] == [
        "2024-03-30T23:30:00+00:00",
        "2024-03-31T00:30:00+00:00",
        "2024-03-31T02:30:00+01:00",
        "2024-03-31T03:30:00+01:00",
        "2024-03-31T04:30:00+01:00",
    ]
    assert {b - a for a, b in itertools.pairwise(got)} == {timedelta(hours=1)}


def test_london_spring_times_in_the_gap_do_not_fire_twice() -> None:
    start = datetime(2024, 3, 31, 0, 50, tzinfo=LONDON)
    assert fires("*/20 1,2 * * *", start, 5, LONDON) == [
        "2024-03-31T02:00:00+01:00",  # 01:00, 01:20, 01:40 shifted by the gap ...
        "2024-03-31T02:20:00+01:00",  # ... land on 02:00, 02:20, 02:40: once each
        "2024-03-31T02:40:00+01:00",
        "2024-04-01T01:00:00+01:00",
        "2024-04-01T01:20:00+01:00",
    ]


def test_london_autumn_a_repeated_time_fires_once() -> None:
    # 2024-10-27: at 02:00 BST the clocks go back to 01:00 GMT; 01:30 happens twice.
    start = datetime(2024, 10, 25, 12, tzinfo=LONDON)
    assert fires("30 1 * * *", start, 4, LONDON) == [
        "2024-10-26T01:30:00+01:00",
        "2024-10-27T01:30:00+01:00",  # the first 01:30 only
        "2024-10-28T01:30:00+00:00",
        "2024-10-29T01:30:00+00:00",
    ]


def test_london_autumn_an_hourly_cron_fires_in_both_repeated_hours() -> None:
    start = datetime(2024, 10, 26, 23, 50, tzinfo=LONDON)
    got = [datetime.fromisoformat(t) for t in fires("30 * * * *", start, 5, LONDON)]
    assert [t.isoformat() for t in got] == [
        "2024-10-27T00:30:00+01:00",
        "2024-10-27T01:30:00+01:00",
        "2024-10-27T01:30:00+00:00",
        "2024-10-27T02:30:00+00:00",
        "2024-10-27T03:30:00+00:00",
    ]
    assert {b - a for a, b in itertools.pairwise(got)} == {timedelta(hours=1)}


def test_london_autumn_from_inside_the_repeated_hour() -> None:
    first_0150 = datetime(2024, 10, 27, 1, 50, tzinfo=LONDON)  # BST, fold=0
    second_0110 = datetime(2024, 10, 27, 1, 10, fold=1, tzinfo=LONDON)  # GMT
    every_hour = CronExpression("10 * * * *", tz=LONDON)
    got = every_hour.next_after(first_0150)  # the clock goes back: 01:10 comes again
    assert got.isoformat() == "2024-10-27T01:10:00+00:00"
    assert every_hour.next_after(second_0110).isoformat() == "2024-10-27T02:10:00+00:00"
    once = CronExpression("10 1 * * *", tz=LONDON)
    assert once.next_after(first_0150).isoformat() == "2024-10-28T01:10:00+00:00"


def test_new_york_spring_and_autumn() -> None:
    # 2024-03-10 02:00 EST -> 03:00 EDT; 2024-11-03 02:00 EDT -> 01:00 EST.
    spring = datetime(2024, 3, 9, 12, tzinfo=NEW_YORK)
    assert fires("30 2 * * *", spring, 3, NEW_YORK) == [
        "2024-03-10T03:30:00-04:00",  # 02:30 does not exist: 07:30 UTC as if still EST
        "2024-03-11T02:30:00-04:00",
        "2024-03-12T02:30:00-04:00",
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
