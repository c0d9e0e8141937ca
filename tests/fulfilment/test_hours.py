"""When a store is open, on its own wall clock, and what callers may write as opening hours."""

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quanyu.errors import InvalidArgument
from services.fulfilment.domain.hours import (
    OpeningHours,
    WeeklySchedule,
    is_open,
    local_time,
    parse_hours,
    valid_timezone,
)

SHANGHAI = "Asia/Shanghai"
# 2024-01-01 was a Monday, so day n of that week is weekday n.
MONDAY, TUESDAY, SATURDAY, SUNDAY = 1, 2, 6, 7


def on(day: int, clock: str, zone: str = SHANGHAI) -> datetime:
    """An instant on the store's wall clock: `day` of the week starting Monday 2024-01-01."""
    hours, minutes = (int(part) for part in clock.split(":"))
    return datetime(2024, 1, day, hours, minutes, tzinfo=ZoneInfo(zone))


def hours(*entries: tuple[int, str, str]) -> list[OpeningHours]:
    return parse_hours(list(entries))


def test_a_span_past_midnight_is_open_early_next_morning() -> None:
    late = hours((MONDAY, "22:00", "02:00"))
    assert is_open(late, on(TUESDAY, "01:59"), SHANGHAI)
    assert not is_open(late, on(TUESDAY, "02:00"), SHANGHAI)


def test_a_span_past_midnight_opens_on_its_own_day() -> None:
    late = hours((MONDAY, "22:00", "02:00"))
    assert not is_open(late, on(MONDAY, "21:59"), SHANGHAI)
    assert is_open(late, on(MONDAY, "22:00"), SHANGHAI)
    assert is_open(late, on(MONDAY, "23:59"), SHANGHAI)
    # Monday's early hours belong to Sunday's span, and there is none.
    assert not is_open(late, on(MONDAY, "01:00"), SHANGHAI)


def test_sunday_past_midnight_runs_into_monday() -> None:
    late = hours((SUNDAY, "22:00", "02:00"))
    assert is_open(late, on(MONDAY, "01:00"), SHANGHAI)
    assert is_open(late, on(SUNDAY, "23:30"), SHANGHAI)
    assert not is_open(late, on(MONDAY, "02:00"), SHANGHAI)


def test_a_split_shift_is_closed_between_its_spans() -> None:
    split = hours((MONDAY, "09:00", "12:00"), (MONDAY, "14:00", "21:00"))
    assert not is_open(split, on(MONDAY, "08:59"), SHANGHAI)
    assert is_open(split, on(MONDAY, "09:00"), SHANGHAI)
    assert is_open(split, on(MONDAY, "11:59"), SHANGHAI)
    assert not is_open(split, on(MONDAY, "12:00"), SHANGHAI)
    assert not is_open(split, on(MONDAY, "13:59"), SHANGHAI)
    assert is_open(split, on(MONDAY, "14:00"), SHANGHAI)
    assert is_open(split, on(MONDAY, "20:59"), SHANGHAI)
    assert not is_open(split, on(MONDAY, "21:00"), SHANGHAI)


@pytest.mark.parametrize("instant", [on(MONDAY, "00:00"), on(TUESDAY, "03:17"), on(SUNDAY, "23:59")])
def test_a_store_without_hours_is_open_around_the_clock(instant: datetime) -> None:
    assert is_open([], instant, SHANGHAI)


def test_a_weekday_without_hours_is_closed_all_day_when_others_have_some() -> None:
    weekdays = hours(*[(day, "09:00", "21:00") for day in range(MONDAY, SATURDAY)])
    assert is_open(weekdays, on(MONDAY, "12:00"), SHANGHAI)
    for clock in ("00:00", "09:00", "12:00", "23:59"):
        assert not is_open(weekdays, on(SATURDAY, clock), SHANGHAI)


def test_24_00_closes_at_the_end_of_the_day() -> None:
    evening = hours((MONDAY, "18:00", "24:00"))
    assert evening == [OpeningHours(MONDAY, time(18, 0), time(0, 0))]
    assert is_open(evening, on(MONDAY, "23:59"), SHANGHAI)
    assert not is_open(evening, on(TUESDAY, "00:00"), SHANGHAI)
    assert not is_open(evening, on(MONDAY, "17:59"), SHANGHAI)


@pytest.mark.parametrize("close", ["00:00", "24:00"])
def test_midnight_to_midnight_is_open_that_whole_day(close: str) -> None:
    monday = hours((MONDAY, "00:00", close))
    assert is_open(monday, on(MONDAY, "00:00"), SHANGHAI)
    assert is_open(monday, on(MONDAY, "23:59"), SHANGHAI)
    assert not is_open(monday, on(TUESDAY, "00:00"), SHANGHAI)
    assert not is_open(monday, on(SUNDAY, "23:59"), SHANGHAI)


def test_equal_open_and_close_is_24_hours_from_the_open() -> None:
    round_the_clock = hours((MONDAY, "08:00", "08:00"))
    assert not is_open(round_the_clock, on(MONDAY, "07:59"), SHANGHAI)
    assert is_open(round_the_clock, on(TUESDAY, "07:59"), SHANGHAI)
    assert not is_open(round_the_clock, on(TUESDAY, "08:00"), SHANGHAI)


def test_each_store_is_judged_by_its_own_clock() -> None:
    mornings = hours(*[(day, "08:00", "13:00") for day in range(MONDAY, SUNDAY + 1)])
    # Sunday 31 March 2024, 06:30 UTC: Berlin moved to summer time (UTC+2) at 01:00 UTC that day.
    instant = datetime(2024, 3, 31, 6, 30, tzinfo=UTC)
    assert not is_open(mornings, instant, "Asia/Shanghai")  # 14:30
    assert is_open(mornings, instant, "Asia/Urumqi")  # 12:30
    assert is_open(mornings, instant, "Europe/Berlin")  # 08:30 CEST
    # The same UTC time in winter is still 07:30 in Berlin.
    assert not is_open(mornings, datetime(2024, 1, 7, 6, 30, tzinfo=UTC), "Europe/Berlin")


def test_the_instant_may_be_given_in_any_zone() -> None:
    weekdays = hours((MONDAY, "09:00", "18:00"))
    # Monday 09:00 in Shanghai is Monday 01:00 UTC and Sunday 17:00 in New York.
    assert is_open(weekdays, datetime(2024, 1, 1, 1, 0, tzinfo=UTC), SHANGHAI)
    assert is_open(weekdays, datetime(2023, 12, 31, 20, 0, tzinfo=ZoneInfo("America/New_York")), SHANGHAI)


def test_local_time_is_the_iso_weekday_and_the_minute_of_the_day() -> None:
    assert local_time(datetime(2024, 1, 1, 1, 30, tzinfo=UTC), SHANGHAI) == (MONDAY, 9 * 60 + 30)
    assert local_time(datetime(2024, 1, 1, 1, 30, tzinfo=UTC), "Europe/Berlin") == (MONDAY, 2 * 60 + 30)
    assert local_time(datetime(2024, 1, 1, 1, 30, tzinfo=UTC), "America/New_York") == (SUNDAY, 20 * 60 + 30)


def test_a_naive_datetime_is_rejected() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        is_open([], datetime(2024, 1, 1, 9, 0), SHANGHAI)


def test_an_unknown_time_zone_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown time zone"):
        is_open([], datetime(2024, 1, 1, 9, 0, tzinfo=UTC), "Mars/Olympus_Mons")


@pytest.mark.parametrize("name", ["Asia/Shanghai", "Asia/Urumqi", "Europe/Berlin", "UTC"])
def test_iana_zone_names_are_valid(name: str) -> None:
    assert valid_timezone(name)


@pytest.mark.parametrize(
    "name", ["", "Mars/Olympus_Mons", "Asia", "../etc/passwd", "/etc/localtime", "+08:00"]
)
def test_other_zone_names_are_not_valid(name: str) -> None:
    assert not valid_timezone(name)


def test_parsed_hours_keep_weekday_open_and_close() -> None:
    assert parse_hours([(MONDAY, "09:30", "21:45"), (SUNDAY, "22:00", "02:00")]) == [
        OpeningHours(MONDAY, time(9, 30), time(21, 45)),
        OpeningHours(SUNDAY, time(22, 0), time(2, 0)),
    ]


def test_every_bad_entry_is_reported_at_once_naming_its_index_and_field() -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_hours(
            [
                (0, "09:00", "18:00"),
                (MONDAY, "9:00", "18:00"),
                (TUESDAY, "09:00", "25:00"),
                (8, "24:00", "xx"),
                (MONDAY, "09:00", "18:00"),
            ]
        )
    assert [violation.field for violation in caught.value.violations] == [
        "opening_hours[0].weekday",
        "opening_hours[1].open",
        "opening_hours[2].close",
        "opening_hours[3].weekday",
        "opening_hours[3].open",
        "opening_hours[3].close",
    ]


def test_the_field_name_is_the_callers_choice() -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_hours([(MONDAY, "09:00", "18:00"), (SUNDAY, "09:00", "9pm")], field="store.opening_hours")
    assert [violation.field for violation in caught.value.violations] == ["store.opening_hours[1].close"]


@pytest.mark.parametrize(
    "clock", ["9:00", "09:60", "24:01", "0900", "09:00:00", " 09:00", "09:00\n", "０９:００", "", "ab:cd"]
)
def test_a_time_that_is_not_hh_mm_is_invalid(clock: str) -> None:
    for entry, field in (((MONDAY, clock, "18:00"), "open"), ((MONDAY, "09:00", clock), "close")):
        with pytest.raises(InvalidArgument) as caught:
            parse_hours([entry])
        assert [violation.field for violation in caught.value.violations] == [f"opening_hours[0].{field}"]


def test_24_00_is_only_a_closing_time() -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_hours([(MONDAY, "24:00", "02:00")])
    assert caught.value.violations[0].field == "opening_hours[0].open"
    assert "only a closing time" in caught.value.violations[0].description


def test_opening_hours_refuse_a_weekday_outside_the_week() -> None:
    with pytest.raises(ValueError, match="weekday"):
        OpeningHours(0, time(9, 0), time(18, 0))


def open_by_definition(entries: list[OpeningHours], weekday: int, minute: int) -> bool:
    """The rules read straight off the page, one entry at a time: slow but plainly right."""
    if not entries:
        return True
    for entry in entries:
        opens = entry.open.hour * 60 + entry.open.minute
        closes = entry.close.hour * 60 + entry.close.minute
        next_day = entry.weekday % 7 + 1
        if opens < closes:
            if weekday == entry.weekday and opens <= minute < closes:
                return True
        elif (weekday == entry.weekday and minute >= opens) or (weekday == next_day and minute < closes):
            return True
    return False


clocks = st.builds(time, st.integers(0, 23), st.integers(0, 59))
entries_strategy = st.lists(
    st.builds(OpeningHours, weekday=st.integers(1, 7), open=clocks, close=clocks), max_size=8
)
moments = st.tuples(st.integers(1, 7), st.integers(0, 24 * 60 - 1))


def edges_of(entries: list[OpeningHours]) -> list[tuple[int, int]]:
    """The minutes where answers change, on the entry's day and the next: where bugs live."""
    edges = []
    for entry in entries:
        for clock in (entry.open, entry.close):
            minute = clock.hour * 60 + clock.minute
            for day in (entry.weekday, entry.weekday % 7 + 1):
                edges += [(day, m % (24 * 60)) for m in (minute - 1, minute, minute + 1)]
    return edges


@given(entries_strategy, st.lists(moments, max_size=40))
def test_the_weekly_schedule_agrees_with_the_rules_as_written(
    entries: list[OpeningHours], samples: list[tuple[int, int]]
) -> None:
    schedule = WeeklySchedule(entries)
    for weekday, minute in [*samples, *edges_of(entries), (1, 0), (7, 24 * 60 - 1)]:
        assert schedule.is_open(weekday, minute) == open_by_definition(entries, weekday, minute)


@given(
    entries_strategy,
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)),
    st.sampled_from(["Asia/Shanghai", "Asia/Urumqi", "Europe/Berlin", "America/New_York"]),
)
def test_is_open_reads_the_stores_wall_clock(entries: list[OpeningHours], at: datetime, zone: str) -> None:
    local = at.astimezone(ZoneInfo(zone))
    expected = open_by_definition(entries, local.isoweekday(), local.hour * 60 + local.minute)
    assert is_open(entries, at, zone) == expected


@given(entries_strategy, moments)
def test_the_instant_and_the_store_clock_give_the_same_answer(
    entries: list[OpeningHours], moment: tuple[int, int]
) -> None:
    weekday, minute = moment
    at = on(weekday, "00:00") + timedelta(minutes=minute)
    schedule = WeeklySchedule(entries)
    assert schedule.is_open_at(at, SHANGHAI) == schedule.is_open(weekday, minute)
