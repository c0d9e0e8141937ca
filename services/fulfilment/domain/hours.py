"""Opening hours in a store's own time zone: reading them from callers and asking "open right now?".

A span whose close is at or before its open runs into the next day: Monday 22:00-02:00 covers
Monday 22:00-24:00 and Tuesday 00:00-02:00, and an equal open and close is a full 24 hours from the
open ("00:00"-"00:00" is the whole day). "24:00" as a close is held as midnight, which by that rule
ends the span exactly at the end of its day. Open is inclusive, close exclusive, to the minute.
"""

from __future__ import annotations

import functools
import re
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from quanyu.errors import Violations

MINUTES_PER_DAY = 24 * 60
MONDAY = 1
SUNDAY = 7
END_OF_DAY = "24:00"

# ASCII digits only: \d would also take full-width and other Unicode digits.
_HH_MM = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")


@dataclass(frozen=True)
class OpeningHours:
    """One span of one weekday; a day may have several (a split shift closes over lunch)."""

    weekday: int  # ISO: 1 = Monday .. 7 = Sunday
    open: time
    close: time  # at or before open: the span ends on the next day

    def __post_init__(self) -> None:
        if not MONDAY <= self.weekday <= SUNDAY:
            raise ValueError(f"weekday must be {MONDAY}..{SUNDAY}, not {self.weekday}")


def _parse_clock(text: str) -> time | None:
    match = _HH_MM.fullmatch(text)
    if match is None:
        return None
    return time(int(match.group(1)), int(match.group(2)))


MAX_OPENING_HOURS = 28


def parse_hours(entries: Sequence[tuple[int, str, str]], field: str = "opening_hours") -> list[OpeningHours]:
    """(weekday, "HH:MM", "HH:MM") entries as a caller sends them; every bad one is reported at once.

    Raises quanyu.errors.InvalidArgument naming each problem as `<field>[i].weekday|open|close`.
    """
    violations = Violations()
    parsed = read_hours(entries, violations.within(field))
    violations.raise_if_any()
    return parsed


def read_hours(entries: Sequence[tuple[int, str, str]], violations: Violations) -> list[OpeningHours]:
    """The entries that are sound; each problem of the others goes to `violations`, under its
    index (`[i].weekday|open|close` below wherever `violations` names)."""
    parsed: list[OpeningHours] = []
    if len(entries) > MAX_OPENING_HOURS:
        violations.add("", f"at most {MAX_OPENING_HOURS} spans (four a day)")
        entries = ()
    for index, (weekday, open_text, close_text) in enumerate(entries):
        entry = violations.within(index)
        weekday_ok = MONDAY <= weekday <= SUNDAY
        entry.check(weekday_ok, "weekday", "must be 1 (Monday) to 7 (Sunday)")
        opens = _parse_clock(open_text)
        if opens is None:
            description = 'must be a time "HH:MM" from 00:00 to 23:59'
            if open_text == END_OF_DAY:
                description += "; 24:00 is only a closing time"
            entry.add("open", description)
        closes = time(0, 0) if close_text == END_OF_DAY else _parse_clock(close_text)
        entry.check(closes is not None, "close", 'must be a time "HH:MM" from 00:00 to 24:00')
        if weekday_ok and opens is not None and closes is not None:
            parsed.append(OpeningHours(weekday=weekday, open=opens, close=closes))
    return parsed


@functools.lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo:
    # Only names that load are cached (a raising call is not), so callers cannot grow it at will.
    return ZoneInfo(name)


MAX_TIMEZONE_LENGTH = 64


def valid_timezone(name: str) -> bool:
    """An IANA zone name this host can load, e.g. "Asia/Shanghai"; the empty name is not one."""
    if not name or len(name) > MAX_TIMEZONE_LENGTH:
        return False
    try:
        _zone(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # ValueError: malformed keys ("../x", absolute paths) and files that are not zone data.
        return False
    return True


def local_time(at: datetime, timezone: str) -> tuple[int, int]:
    """(ISO weekday, minute of the day) of an aware instant on the store's wall clock."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("the time must be timezone-aware")
    try:
        zone = _zone(timezone)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValueError(f"unknown time zone {timezone!r}") from exc
    try:
        local = at.astimezone(zone)
    except OverflowError:
        # Within a day of the calendar's first or last day the wall clock falls off it; 400 years
        # (146,097 days, a whole number of weeks) nearer the middle it shows the same weekday and
        # time of day.
        local = (at + _400_YEARS if at.year < 5000 else at - _400_YEARS).astimezone(zone)
    return local.isoweekday(), local.hour * 60 + local.minute


_400_YEARS = timedelta(days=146_097)


def _minute_of(clock: time) -> int:
    return clock.hour * 60 + clock.minute


class WeeklySchedule:
    """A store's week as sorted, merged minute intervals per weekday, built once and asked often.

    Assignment checks thousands of stores per request, so a check is one binary search, and a
    store's week costs a few small tuples rather than a 10,080-entry bitmap.
    """

    __slots__ = ("_ends", "_starts", "always_open")

    def __init__(self, hours: Iterable[OpeningHours]) -> None:
        spans: list[list[tuple[int, int]]] = [[] for _ in range(SUNDAY)]
        entries = list(hours)
        if not entries:
            # No hours given means the store never closes.
            spans = [[(0, MINUTES_PER_DAY)] for _ in range(SUNDAY)]
        for entry in entries:
            day = entry.weekday - 1
            opens, closes = _minute_of(entry.open), _minute_of(entry.close)
            if closes > opens:
                spans[day].append((opens, closes))
            else:
                spans[day].append((opens, MINUTES_PER_DAY))
                if closes > 0:
                    spans[(day + 1) % SUNDAY].append((0, closes))
        merged = [_merge(day_spans) for day_spans in spans]
        self._starts = tuple(tuple(start for start, _ in day) for day in merged)
        self._ends = tuple(tuple(end for _, end in day) for day in merged)
        # Open every minute of the week: no need to work out the store's local time at all.
        self.always_open = all(day == [(0, MINUTES_PER_DAY)] for day in merged)

    def is_open(self, at_local_weekday: int, minute_of_day: int) -> bool:
        """Open at this ISO weekday (1..7) and minute (0..1439) on the store's own clock."""
        starts = self._starts[at_local_weekday - 1]
        index = bisect_right(starts, minute_of_day) - 1
        return index >= 0 and minute_of_day < self._ends[at_local_weekday - 1][index]

    def is_open_at(self, at: datetime, timezone: str) -> bool:
        """Open at an aware instant, for a store whose clock runs in `timezone`."""
        return self.is_open(*local_time(at, timezone))


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    # Overlapping or touching spans become one, so a single bisect finds the only candidate.
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


@functools.lru_cache(maxsize=4096)
def _schedule(hours: tuple[OpeningHours, ...]) -> WeeklySchedule:
    return WeeklySchedule(hours)


def is_open(hours: Sequence[OpeningHours], at: datetime, timezone: str) -> bool:
    """Whether a store with these hours is open at an aware instant; no hours = always open.

    Raises ValueError for a naive `at` or a zone name that does not load.
    """
    return _schedule(tuple(hours)).is_open(*local_time(at, timezone))
