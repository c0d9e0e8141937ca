"""When scheduled campaigns run: at a local time of day in each member's own time zone, so a
10:00 greeting reaches Ürümqi at its own ten o'clock, and which members each kind picks that day.

Every run is named by its occurrence id (the campaign and the member's local date), so a run
resumed after a crash makes the same grant keys and grants nobody twice."""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from quanyu.errors import InvalidArgument
from services.marketing.domain.validation import is_local_time
from services.marketing.domain.values import Expiry, ScheduleKind

DEFAULT_TIME_ZONE = "Asia/Shanghai"


def zone_of(name: str) -> ZoneInfo:
    """The member's home store's zone; Asia/Shanghai for a member with none (and for a name the
    zone database does not know, rather than failing the whole run for one store's typo)."""
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return ZoneInfo(DEFAULT_TIME_ZONE)


def parse_local_time(value: str, *, field_name: str = "local_time") -> time:
    if not is_local_time(value):
        raise InvalidArgument(field_name, 'must be a time of day as "HH:MM"')
    hours, _, minutes = value.partition(":")
    return time(int(hours), int(minutes))


def local_date(at: datetime, zone: ZoneInfo) -> date:
    return at.astimezone(zone).date()


def instant(day: date, at: time, zone: ZoneInfo) -> datetime:
    """The UTC instant of a local date and time (zoneinfo's fold=0 for a time a change of clocks
    repeats; China keeps no summer time, so its zones never meet one)."""
    return datetime.combine(day, at, tzinfo=zone).astimezone(UTC)


def next_daily_run(local_time: time, zone: ZoneInfo, after: datetime) -> datetime:
    """The first run at `local_time` in `zone` at or after `after`."""
    day = local_date(after, zone)
    candidate = instant(day, local_time, zone)
    return candidate if candidate >= after else instant(day + timedelta(days=1), local_time, zone)


def parse_birthday(value: str) -> tuple[int, int]:
    """ "MM-DD" as (month, day); 02-29 is a birthday."""
    month, sep, day = value.partition("-")
    if not (
        sep and len(month) == 2 and len(day) == 2 and (month + day).isascii() and (month + day).isdigit()
    ):
        raise InvalidArgument("birthday", 'must be a date as "MM-DD"')
    m, d = int(month), int(day)
    if not 1 <= m <= 12 or not 1 <= d <= calendar.monthrange(2000, m)[1]:
        raise InvalidArgument("birthday", 'must be a date as "MM-DD"')
    return m, d


def birthday_in(birthday: str, year: int) -> date:
    """The day a member's birthday is kept in `year`. A member born on 29 February is greeted on
    28 February in a year without one: still in their birth month, and the day before the day
    that is missing rather than a day into the next month."""
    month, day = parse_birthday(birthday)
    if month == 2 and day == 29 and not calendar.isleap(year):
        day = 28
    return date(year, month, day)


def is_birthday(birthday: str, day: date) -> bool:
    return bool(birthday) and birthday_in(birthday, day.year) == day


def next_birthday_run(birthday: str, local_time: time, zone: ZoneInfo, after: datetime) -> datetime:
    """The UTC instant of the member's next birthday greeting at `local_time`, at or after `after`."""
    year = local_date(after, zone).year
    for candidate_year in (year, year + 1):
        run = instant(birthday_in(birthday, candidate_year), local_time, zone)
        if run >= after:
            return run
    return instant(birthday_in(birthday, year + 2), local_time, zone)


def is_inactive_for(last_order: datetime | None, days: int, day: date, zone: ZoneInfo) -> bool:
    """A win-back member on local date `day`: their last completed order fell on the local date
    exactly `days` before. Exactly, so each lapse is reached on one day, and a member still
    inactive the day after is not picked again by the same rule. No order at all: not picked."""
    return last_order is not None and local_date(last_order, zone) + timedelta(days=days) == day


def points_expiring(expiries: Iterable[Expiry], days: int, at: datetime) -> int:
    """Points of the member that lapse after `at` and within `days` days of it."""
    horizon = at + timedelta(days=days)
    return sum(e.points for e in expiries if e.points > 0 and at < e.expire_time <= horizon)


def picks(
    kind: ScheduleKind,
    *,
    day: date,
    zone: ZoneInfo,
    at: datetime,
    days: int = 0,
    birthday: str = "",
    last_order: datetime | None = None,
    expiries: Iterable[Expiry] = (),
) -> bool:
    """Whether a run of `kind` on the member's local date `day` picks the member, from their facts.
    ONCE and DAILY pick every member of the audience (DAILY: those not yet reached, which is the
    grant keys' and limits' business, not the schedule's)."""
    if kind is ScheduleKind.BIRTHDAY:
        return is_birthday(birthday, day)
    if kind is ScheduleKind.INACTIVE_DAYS:
        return is_inactive_for(last_order, days, day, zone)
    if kind is ScheduleKind.POINTS_EXPIRING:
        return points_expiring(expiries, days, at) > 0
    return kind in (ScheduleKind.ONCE, ScheduleKind.DAILY)


def due_at(
    kind: ScheduleKind, local_time: str, zone: ZoneInfo, day: date, start: datetime | None
) -> datetime:
    """When the run of local date `day` is due for a member in `zone`; a ONCE campaign is due at
    its start (at `day`'s local_time when it has no start)."""
    if kind is ScheduleKind.ONCE and start is not None:
        return start
    return instant(day, parse_local_time(local_time or "00:00"), zone)


def occurrence_of_run(campaign_id: str, kind: ScheduleKind, day: date) -> str:
    """The occurrence a scheduled run grants under: the campaign and the member's local date (a
    ONCE campaign has one occurrence for all its life). A rerun of the same day makes the same
    grant keys, so the members it reached before a crash are not reached again."""
    if kind is ScheduleKind.ONCE:
        return f"run:{campaign_id}:once"
    return f"run:{campaign_id}:{day.isoformat()}"
