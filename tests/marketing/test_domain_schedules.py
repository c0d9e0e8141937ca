"""Schedules in each member's own time zone: daily runs, birthdays, win-back and expiring points,
and the occurrence ids that keep a rerun from granting twice."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quanyu.errors import InvalidArgument
from services.marketing.domain import (
    Expiry,
    ScheduleKind,
    birthday_in,
    due_at,
    is_birthday,
    is_inactive_for,
    next_birthday_run,
    next_daily_run,
    occurrence_of_run,
    parse_local_time,
    picks,
    points_expiring,
    zone_of,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")  # UTC+8
URUMQI = ZoneInfo("Asia/Urumqi")  # UTC+6
TEN = time(10, 0)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, *, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def test_a_member_without_a_zone_lives_in_shanghai() -> None:
    assert zone_of("") == SHANGHAI
    assert zone_of("Not/AZone") == SHANGHAI
    assert zone_of("Asia/Urumqi") == URUMQI


def test_ten_o_clock_is_ten_o_clock_where_the_member_lives() -> None:
    after = utc(2026, 3, 1, 0, 0)
    assert next_daily_run(TEN, SHANGHAI, after) == utc(2026, 3, 1, 2, 0)
    assert next_daily_run(TEN, URUMQI, after) == utc(2026, 3, 1, 4, 0)


def test_a_daily_run_due_exactly_now_is_this_one_a_moment_later_tomorrow_s() -> None:
    assert next_daily_run(TEN, SHANGHAI, utc(2026, 3, 1, 2, 0)) == utc(2026, 3, 1, 2, 0)
    assert next_daily_run(TEN, SHANGHAI, utc(2026, 3, 1, 2, 0, second=1)) == utc(2026, 3, 2, 2, 0)


def test_the_local_date_decides_the_day_not_the_utc_one() -> None:
    # 17:00 UTC on 28 Feb is already 1 March 01:00 in Shanghai, still 28 Feb 23:00 in Ürümqi.
    after = utc(2026, 2, 28, 17, 0)
    assert next_daily_run(TEN, SHANGHAI, after) == utc(2026, 3, 1, 2, 0)
    assert next_daily_run(TEN, URUMQI, after) == utc(2026, 3, 1, 4, 0)
    assert next_daily_run(time(0, 30), URUMQI, after) == utc(2026, 2, 28, 18, 30)


@given(
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)),
    st.integers(0, 23),
    st.integers(0, 59),
    st.sampled_from(["Asia/Shanghai", "Asia/Urumqi", "Asia/Kolkata", "Europe/Berlin", "America/New_York"]),
)
def test_the_next_daily_run_is_the_first_at_local_time_at_or_after(
    after: datetime, hour: int, minute: int, zone_name: str
) -> None:
    zone = ZoneInfo(zone_name)
    run = next_daily_run(time(hour, minute), zone, after)
    assert after <= run < after + timedelta(days=1, hours=2)
    local = run.astimezone(zone)
    # Only a local time that a spring-forward gap skips may land elsewhere.
    if zone_name.startswith("Asia"):
        assert (local.hour, local.minute) == (hour, minute)
        assert run < after + timedelta(days=1)


@pytest.mark.parametrize(
    ("year", "day"),
    [
        (2027, date(2027, 2, 28)),
        (2028, date(2028, 2, 29)),
        (2100, date(2100, 2, 28)),
        (2000, date(2000, 2, 29)),
    ],
)
def test_a_29_february_birthday_is_kept_on_28_february_without_a_leap_day(year: int, day: date) -> None:
    assert birthday_in("02-29", year) == day


def test_birthdays_are_whole_days_of_the_member_s_calendar() -> None:
    assert is_birthday("03-01", date(2026, 3, 1))
    assert not is_birthday("03-01", date(2026, 2, 28))
    assert is_birthday("02-29", date(2027, 2, 28))
    assert not is_birthday("02-28", date(2028, 2, 29))
    assert is_birthday("02-28", date(2028, 2, 28))
    assert not is_birthday("", date(2028, 2, 28))


@pytest.mark.parametrize(
    "value", ["2-29", "02/29", "13-01", "02-30", "00-10", "04-31", "ab-cd", "", "0３-01"]
)
def test_a_birthday_not_mm_dd_is_refused(value: str) -> None:
    with pytest.raises(InvalidArgument):
        birthday_in(value, 2028)


def test_the_next_birthday_greeting_in_the_member_s_zone() -> None:
    assert next_birthday_run("03-01", TEN, SHANGHAI, utc(2026, 1, 1)) == utc(2026, 3, 1, 2, 0)
    assert next_birthday_run("03-01", TEN, URUMQI, utc(2026, 3, 1, 3, 0)) == utc(2026, 3, 1, 4, 0)
    # Past this year's greeting: next year's.
    assert next_birthday_run("03-01", TEN, SHANGHAI, utc(2026, 3, 1, 3, 0)) == utc(2027, 3, 1, 2, 0)
    assert next_birthday_run("02-29", TEN, SHANGHAI, utc(2027, 3, 1)) == utc(2028, 2, 29, 2, 0)
    assert next_birthday_run("02-29", TEN, SHANGHAI, utc(2026, 3, 1)) == utc(2027, 2, 28, 2, 0)


def test_a_win_back_picks_the_member_on_exactly_the_local_day() -> None:
    # 16:30 UTC on 1 January: 2 January in Shanghai, still 1 January in Ürümqi.
    last = utc(2026, 1, 1, 16, 30)
    assert is_inactive_for(last, 60, date(2026, 3, 3), SHANGHAI)
    assert not is_inactive_for(last, 60, date(2026, 3, 2), SHANGHAI)
    assert not is_inactive_for(last, 60, date(2026, 3, 4), SHANGHAI)
    assert is_inactive_for(last, 60, date(2026, 3, 2), URUMQI)
    assert not is_inactive_for(None, 60, date(2026, 3, 2), URUMQI)


def test_points_expiring_within_the_days_count_and_no_others() -> None:
    at = utc(2026, 3, 1)
    expiries = [
        Expiry(100, at),  # lapsed already
        Expiry(200, at + timedelta(seconds=1)),
        Expiry(400, at + timedelta(days=7)),
        Expiry(800, at + timedelta(days=7, seconds=1)),
        Expiry(0, at + timedelta(days=1)),
    ]
    assert points_expiring(expiries, 7, at) == 600
    assert points_expiring(expiries, 8, at) == 1400
    assert points_expiring([], 7, at) == 0


def test_each_kind_picks_its_members() -> None:
    at = utc(2026, 3, 1, 2, 0)
    day = date(2026, 3, 1)
    assert picks(ScheduleKind.ONCE, day=day, zone=SHANGHAI, at=at)
    assert picks(ScheduleKind.DAILY, day=day, zone=SHANGHAI, at=at)
    assert picks(ScheduleKind.BIRTHDAY, day=day, zone=SHANGHAI, at=at, birthday="03-01")
    assert not picks(ScheduleKind.BIRTHDAY, day=day, zone=SHANGHAI, at=at, birthday="03-02")
    assert not picks(ScheduleKind.BIRTHDAY, day=day, zone=SHANGHAI, at=at)
    last = utc(2025, 12, 31, 12, 0)
    assert picks(ScheduleKind.INACTIVE_DAYS, day=day, zone=SHANGHAI, at=at, days=60, last_order=last)
    expiring = [Expiry(50, at + timedelta(days=3))]
    assert picks(ScheduleKind.POINTS_EXPIRING, day=day, zone=SHANGHAI, at=at, days=7, expiries=expiring)
    assert not picks(ScheduleKind.POINTS_EXPIRING, day=day, zone=SHANGHAI, at=at, days=2, expiries=expiring)
    assert not picks(ScheduleKind.UNSPECIFIED, day=day, zone=SHANGHAI, at=at)


def test_a_once_campaign_is_due_at_its_start_others_at_local_time() -> None:
    start = utc(2026, 3, 5, 1, 0)
    assert due_at(ScheduleKind.ONCE, "", SHANGHAI, date(2026, 3, 5), start) == start
    assert due_at(ScheduleKind.DAILY, "10:00", URUMQI, date(2026, 3, 5), start) == utc(2026, 3, 5, 4, 0)


def test_a_rerun_of_a_day_has_the_same_occurrence_and_another_day_another() -> None:
    day = date(2026, 3, 1)
    assert occurrence_of_run("cmp_1", ScheduleKind.DAILY, day) == occurrence_of_run(
        "cmp_1", ScheduleKind.DAILY, day
    )
    assert occurrence_of_run("cmp_1", ScheduleKind.DAILY, day) != occurrence_of_run(
        "cmp_1", ScheduleKind.DAILY, day + timedelta(days=1)
    )
    # A ONCE campaign reaches each member once in all its life, whatever day the run resumes.
    assert occurrence_of_run("cmp_1", ScheduleKind.ONCE, day) == occurrence_of_run(
        "cmp_1", ScheduleKind.ONCE, day + timedelta(days=3)
    )
    # A birthday's occurrence carries the year: next year's greeting is a new one.
    assert occurrence_of_run("cmp_1", ScheduleKind.BIRTHDAY, date(2026, 3, 1)) != occurrence_of_run(
        "cmp_1", ScheduleKind.BIRTHDAY, date(2027, 3, 1)
    )


@pytest.mark.parametrize("value", ["24:00", "9:00", "aa:bb", "10-00", "10:0", "1０:00", "１０:００"])
def test_a_local_time_is_parsed_strictly(value: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_local_time(value)
    assert parse_local_time("09:05") == time(9, 5)
