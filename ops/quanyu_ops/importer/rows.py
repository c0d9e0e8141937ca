"""The rows of an import file as messages of the fulfilment contract: each value converted and
checked just enough to build the message, every problem noted with the field it concerns (the
service judges the rest)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from quanyu.common.v1 import common_pb2
from quanyu.fulfilment.v1 import fulfilment_pb2

STORE_COLUMNS = ("store_id", "name", "latitude", "longitude")
OPTIONAL_STORE_COLUMNS = (
    "coordinate_system",
    "status",
    "delivery_radius_m",
    "timezone",
    "max_active_orders",
    "priority",
    "opening_hours",
    "delivery_zone_geojson",
)
STOCK_COLUMNS = ("store_id", "sku", "on_hand")

_SYSTEMS = {
    "WGS84": common_pb2.COORDINATE_SYSTEM_WGS84,
    "GCJ02": common_pb2.COORDINATE_SYSTEM_GCJ02,
    "BD09": common_pb2.COORDINATE_SYSTEM_BD09,
}
_STATUSES = {
    "ACTIVE": fulfilment_pb2.STORE_STATUS_ACTIVE,
    "PAUSED": fulfilment_pb2.STORE_STATUS_PAUSED,
    "CLOSED": fulfilment_pb2.STORE_STATUS_CLOSED,
}
_INT32_MAX = 2**31 - 1
_LATITUDE_RULE = "must be a number of degrees from -90 to 90"
_LONGITUDE_RULE = "must be a number of degrees from -180 to 180"
_DAYS = re.compile(r"([1-7])(?:-([1-7]))?")
_SPAN = re.compile(r"([0-9]{1,2}):([0-9]{2})-([0-9]{1,2}):([0-9]{2})")


@dataclass(frozen=True)
class Problem:
    """Why one row of the file was not loaded."""

    position: int  # CSV: the line the record starts on; GeoJSON: the index of the feature
    field: str  # "" when the row as a whole is at fault
    description: str


class RowValues:
    """One row's values by column or property name, converted with each problem noted."""

    def __init__(self, position: int, values: Mapping[str, object]) -> None:
        self.position = position
        self._values = values
        self.problems: list[Problem] = []

    def note(self, field_name: str, description: str) -> None:
        self.problems.append(Problem(self.position, field_name, description))

    def raw(self, name: str) -> object:
        value = self._values.get(name)
        return value.strip() if isinstance(value, str) else value

    def text(self, name: str, field_name: str) -> str:
        value = self.raw(name)
        if value is None:
            return ""
        if isinstance(value, str):
            return value
        # A GeoJSON property may hold a store code as a number; it is text all the same.
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        self.note(field_name, "must be text")
        return ""

    def number(self, value: object, field_name: str, rule: str) -> float | None:
        """A float, or None when empty; a value that is no number is noted with the rule it breaks."""
        if value is None or value == "":
            return None
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        self.note(field_name, f"{rule}, not {shown(value)}")
        return None

    def whole(self, name: str, field_name: str) -> int:
        """A whole number within int32, 0 when empty."""
        value = self.raw(name)
        if value is None or value == "":
            return 0
        number = whole_number(value)
        if number is None or not -_INT32_MAX - 1 <= number <= _INT32_MAX:
            self.note(field_name, f"must be a whole number up to {_INT32_MAX:,}, not {shown(value)}")
            return 0
        return number

    def choice(self, name: str, field_name: str, choices: Mapping[str, int]) -> int:
        """The enum value a word names, ignoring case, '-', '_' and spaces; 0 (unspecified) when empty."""
        value = self.raw(name)
        if value is None or value == "":
            return 0
        key = re.sub(r"[\s_-]", "", value).upper() if isinstance(value, str) else None
        if key is None or key not in choices:
            self.note(field_name, f"must be one of {', '.join(choices)}, not {shown(value)}")
            return 0
        return choices[key]


def whole_number(value: object) -> int | None:
    """An int from a cell or a property; "12.0", as a spreadsheet may write 12, is 12 as well."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        if re.fullmatch(r"[+-]?[0-9]+", value):
            return int(value)
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def shown(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return json.dumps(text[:60] + "…" if len(text) > 60 else text, ensure_ascii=False)


def parse_opening_hours(text: str) -> list[fulfilment_pb2.OpeningHours]:
    """Opening hours as ops write them in a cell: "1-5 09:00-22:00; 6-7 10:00-23:00".

    Entries are separated by ';'. Each is weekdays (1 = Monday .. 7 = Sunday: a day, a range
    such as 1-5, or several joined by ',') then one or more spans joined by ','
    ("1-5 09:00-12:00,13:00-21:00"). A close at or before the open runs past midnight; 24:00
    closes at midnight. Empty means open around the clock. ValueError says what is wrong.
    """
    hours: list[fulfilment_pb2.OpeningHours] = []
    for entry in (part.strip() for part in text.split(";")):
        if not entry:
            continue
        parts = entry.split(None, 1)
        if len(parts) != 2:
            raise ValueError(f'"{entry}" must be weekdays then times, e.g. "1-5 09:00-22:00"')
        days: list[int] = []
        for item in parts[0].split(","):
            matched = _DAYS.fullmatch(item)
            if matched is None:
                raise ValueError(
                    f'"{item}" is not a weekday 1 (Monday) to 7 (Sunday) or a range of them such as 1-5'
                )
            first, last = int(matched[1]), int(matched[2] or matched[1])
            if first > last:
                ordered = f"{_days(first, 7)},{_days(1, last)}"
                raise ValueError(f'"{item}" runs backwards; write the days in order: "{ordered}"')
            days.extend(range(first, last + 1))
        spans: list[tuple[str, str]] = []
        for item in re.sub(r"\s", "", parts[1]).split(","):
            matched = _SPAN.fullmatch(item)
            if matched is None:
                raise ValueError(f'"{item}" is not a span of times such as 09:00-22:00')
            spans.append((_clock(matched[1], matched[2], closing=False), _clock(*matched.group(3, 4))))
        hours += [fulfilment_pb2.OpeningHours(weekday=d, open=o, close=c) for d in days for o, c in spans]
    return hours


def _days(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}-{last}"


def _clock(hour: str, minute: str, *, closing: bool = True) -> str:
    clock = f"{int(hour):02d}:{minute}"
    if clock == "24:00" and closing:
        return clock
    if int(hour) > 23 or int(minute) > 59:
        latest = "24:00" if closing else "23:59"
        raise ValueError(f'"{hour}:{minute}" is not a time from 00:00 to {latest}')
    return clock


def _hours_from(values: RowValues) -> list[fulfilment_pb2.OpeningHours]:
    value = values.raw("opening_hours")
    if value is None or value == "":
        return []
    if isinstance(value, list):
        # GeoJSON may carry them as the contract does: [{"weekday": 1, "open": "09:00", ...}].
        if all(isinstance(h, dict) for h in value):
            try:
                return [
                    fulfilment_pb2.OpeningHours(
                        weekday=int(h.get("weekday", 0)),
                        open=str(h.get("open", "")),
                        close=str(h.get("close", "")),
                    )
                    for h in value
                ]
            except (TypeError, ValueError):
                pass
        values.note("store.opening_hours", 'must be text such as "1-5 09:00-22:00; 6-7 10:00-23:00"')
        return []
    if not isinstance(value, str):
        values.note("store.opening_hours", 'must be text such as "1-5 09:00-22:00; 6-7 10:00-23:00"')
        return []
    try:
        return parse_opening_hours(value)
    except ValueError as error:
        values.note("store.opening_hours", str(error))
        return []


def store_message(values: RowValues, point: tuple[object, object] | None, zone: str) -> fulfilment_pb2.Store:
    """The Store a row describes, `point` being its (latitude, longitude) as written, None when
    the row has none in a usable shape (already noted); problems are in `values.problems`.

    Only what must be understood to build the message is checked here (numbers, names of
    statuses and systems, opening hours); everything else is the service's to judge.
    """
    lat = lng = None
    if point is not None:
        for value, field_name in zip(
            point, ("store.location.latitude", "store.location.longitude"), strict=True
        ):
            if value is None or value == "":
                values.note(field_name, "is required")
        lat = values.number(point[0], "store.location.latitude", _LATITUDE_RULE)
        lng = values.number(point[1], "store.location.longitude", _LONGITUDE_RULE)
    system = values.choice("coordinate_system", "store.location.system", _SYSTEMS)
    radius = values.number(
        values.raw("delivery_radius_m"), "store.delivery_radius_m", "must be a number of metres"
    )
    store = fulfilment_pb2.Store(
        store_id=values.text("store_id", "store.store_id"),
        name=values.text("name", "store.name"),
        status=values.choice("status", "store.status", _STATUSES),  # type: ignore[arg-type]
        delivery_radius_m=radius or 0.0,
        delivery_zone_geojson=zone,
        opening_hours=_hours_from(values),
        timezone=values.text("timezone", "store.timezone"),
        max_active_orders=values.whole("max_active_orders", "store.max_active_orders"),
        priority=values.whole("priority", "store.priority"),
    )
    if lat is not None and lng is not None:
        store.location.CopyFrom(
            common_pb2.LatLng(
                latitude=lat,
                longitude=lng,
                system=system or common_pb2.COORDINATE_SYSTEM_WGS84,  # type: ignore[arg-type]
            )
        )
    return store


@dataclass(frozen=True)
class LevelRow:
    line: int
    sku: str
    on_hand: int


def level_row(line: int, record: Mapping[str, str]) -> LevelRow | list[Problem]:
    problems = [Problem(line, name, "is required") for name in STOCK_COLUMNS if not record[name]]
    on_hand = whole_number(record["on_hand"]) if record["on_hand"] else 0
    if on_hand is None:
        problems.append(
            Problem(line, "on_hand", f"must be a whole number of units, not {shown(record['on_hand'])}")
        )
    elif on_hand < 0:
        problems.append(Problem(line, "on_hand", "must not be negative"))
    elif on_hand >= 2**63:
        problems.append(Problem(line, "on_hand", "is too large"))
    return problems or LevelRow(line, record["sku"], on_hand or 0)
