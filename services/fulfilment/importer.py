"""Bulk loading for ops: stores from CSV or GeoJSON and stock levels from CSV, through FulfilmentService.

The importer is a client of the fulfilment contract like any other caller: it turns the rows of a
file into ImportStores and SetStock calls, and the service checks every store and refreshes its
index, so a file loads exactly as the same stores sent one by one would. It never opens the
database.

Every rejected row is reported with where it sits in the file (CSV: the physical line its record
starts on, the header being line 1; GeoJSON: its index in `features`), the field and the reason;
the good rows load regardless. Exit codes: 0 when every row loaded, 1 when some were rejected, 2
when the file cannot be read or the service cannot be reached.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from tqdm import tqdm

from quanyu.auth import Principal, Role, TokenCodec
from quanyu.common.v1 import common_pb2
from quanyu.config import ConfigurationError, Settings
from quanyu.fulfilment.v1 import fulfilment_pb2, fulfilment_pb2_grpc

EXIT_LOADED, EXIT_REJECTED, EXIT_FAILED = 0, 1, 2

# ImportStores takes at most this many stores per call, SetStock is held to the same size.
STORES_PER_CALL = 1000
LEVELS_PER_CALL = 1000
# The service reads requests of up to 16 MiB; delivery zones can be large, so a batch of stores
# is also cut short by size, well below that.
MAX_REQUEST_BYTES = 8 * 1024 * 1024
# A batch of stores with detailed zones takes the service a while to check and index.
IMPORT_DEADLINE_SECONDS = 120.0
STOCK_DEADLINE_SECONDS = 30.0
# Pauses before retrying a call that found the service UNAVAILABLE (restarting, rolling out).
# Every call is idempotent, so sending a batch again is harmless.
RETRY_PAUSES_SECONDS = (0.2, 0.5, 1.0, 2.0)
# Below this many rows a load takes a moment and a progress bar is only noise.
PROGRESS_MIN_ROWS = 5000
# A delivery zone sits in one CSV cell and may be up to a megabyte; csv refuses >128 KiB cells.
MAX_CSV_CELL = 4 * 1024 * 1024
# Who the ops token the importer signs for itself names, as the service logs show.
OPS_SUBJECT = "quanyu-import"

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
_BATCH_ROW = re.compile(r"^stores\[\d+\]")
_LEVEL_FIELD = re.compile(r"^levels\[(\d+)\]\.?(.*)$")


class ImportFailed(Exception):
    """Nothing more can load: the file cannot be read, or the service cannot be reached or refuses."""


@dataclass(frozen=True)
class Problem:
    """Why one row of the file was not loaded."""

    position: int  # CSV: the line the record starts on; GeoJSON: the index of the feature
    field: str  # "" when the row as a whole is at fault
    description: str


class Report:
    """Rejected rows, written as they are found, and the tally for the closing summary."""

    def __init__(self, out: TextIO) -> None:
        # How a row's position is named: "line 17" for CSV, "features[16]" for GeoJSON.
        self.label: Callable[[int], str] = _line
        self._out = out
        self.loaded = 0
        self.rejected: set[int] = set()

    def reject(self, problems: Iterable[Problem]) -> None:
        for problem in sorted(problems, key=lambda p: p.position):
            self.rejected.add(problem.position)
            where = self.label(problem.position)
            subject = f"{where}: {problem.field}" if problem.field else where
            # Through tqdm, so a progress bar on the terminal is cleared first and redrawn after.
            tqdm.write(f"{subject}: {problem.description}", file=self._out)

    def summary(self, noun: str) -> str:
        line = f"{noun}: {self.loaded:,} loaded, {len(self.rejected):,} rejected"
        return f"{line} (see above)" if self.rejected else line

    @property
    def started(self) -> bool:
        return bool(self.loaded or self.rejected)

    @property
    def exit_code(self) -> int:
        return EXIT_REJECTED if self.rejected else EXIT_LOADED


def _line(number: int) -> str:
    return f"line {number}"


def _feature(index: int) -> str:
    return f"features[{index}]"


# --- reading files --------------------------------------------------------------------------


def read_text(path: Path) -> str:
    """The file as text; UTF-8, with or without the byte-order mark Excel writes."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImportFailed(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImportFailed(f"{path}: is a directory, not a file") from None
    except OSError as error:
        raise ImportFailed(f"{path}: cannot be read: {error.strerror}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ImportFailed(
            f"{path}: is not UTF-8 text (byte {error.start}); save it as UTF-8 (in Excel: 'CSV UTF-8')"
        ) from None


class CsvTable:
    """A CSV file with a header row, read record by record with the line each record starts on."""

    def __init__(self, path: Path, text: str, required: Sequence[str], optional: Sequence[str]) -> None:
        csv.field_size_limit(max(csv.field_size_limit(), MAX_CSV_CELL))
        # newline="": line breaks inside quoted cells stay part of the cell, as csv expects.
        self._reader = csv.reader(io.StringIO(text, newline=""))
        try:
            header = next(self._reader)
        except StopIteration:
            raise ImportFailed(f"{path}: is empty; line 1 must be the header {','.join(required)}") from None
        except csv.Error as error:
            raise ImportFailed(f"{path}: line 1 is not a CSV header: {error}") from None
        self.columns = [name.strip().lower() for name in header]
        repeated = sorted({name for name in self.columns if name and self.columns.count(name) > 1})
        if repeated:
            raise ImportFailed(f"{path}: the header names {', '.join(repeated)} more than once")
        missing = [name for name in required if name not in self.columns]
        if missing:
            raise ImportFailed(
                f"{path}: the header (line 1) lacks {', '.join(missing)}; "
                f"it must name {','.join(required)}"
                + (f" and may name {','.join(optional)}" if optional else "")
            )
        self.ignored = [name for name in self.columns if name not in (*required, *optional)]
        self.rows = max(0, text.count("\n") + (0 if text.endswith("\n") else 1) - 1)

    def records(self) -> Iterator[tuple[int, dict[str, str] | Problem]]:
        """(line, cells by column), or (line, problem) for a record that does not fit the header."""
        end_of_previous = self._reader.line_num
        while True:
            try:
                cells = next(self._reader)
            except StopIteration:
                return
            except csv.Error as error:
                start, end_of_previous = end_of_previous + 1, self._reader.line_num
                yield start, Problem(start, "", f"is not valid CSV: {error}")
                continue
            start, end_of_previous = end_of_previous + 1, self._reader.line_num
            if not any(cell.strip() for cell in cells):
                continue
            if len(cells) != len(self.columns):
                yield (
                    start,
                    Problem(
                        start,
                        "",
                        f"has {len(cells)} cells where the header has {len(self.columns)}; "
                        "a cell holding a comma must be in double quotes",
                    ),
                )
                continue
            yield start, {name: cell.strip() for name, cell in zip(self.columns, cells, strict=True)}


# --- turning values into messages -----------------------------------------------------------


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
        self.note(field_name, f"{rule}, not {_shown(value)}")
        return None

    def whole(self, name: str, field_name: str) -> int:
        """A whole number within int32, 0 when empty."""
        value = self.raw(name)
        if value is None or value == "":
            return 0
        number = whole_number(value)
        if number is None or not -_INT32_MAX - 1 <= number <= _INT32_MAX:
            self.note(field_name, f"must be a whole number up to {_INT32_MAX:,}, not {_shown(value)}")
            return 0
        return number

    def choice(self, name: str, field_name: str, choices: Mapping[str, int]) -> int:
        """The enum value a word names, ignoring case, '-', '_' and spaces; 0 (unspecified) when empty."""
        value = self.raw(name)
        if value is None or value == "":
            return 0
        key = re.sub(r"[\s_-]", "", value).upper() if isinstance(value, str) else None
        if key is None or key not in choices:
            self.note(field_name, f"must be one of {', '.join(choices)}, not {_shown(value)}")
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


def _shown(value: object) -> str:
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
class StoreRow:
    """One row of a stores file: the store it describes (None when it could not even be read as
    one), and what is wrong with it; only a row without problems is sent."""

    position: int
    store: fulfilment_pb2.Store | None
    problems: list[Problem]


def stores_from_csv(table: CsvTable) -> Iterator[StoreRow]:
    for line, record in table.records():
        if isinstance(record, Problem):
            yield StoreRow(line, None, [record])
            continue
        values = RowValues(line, record)
        point = (record["latitude"], record["longitude"])
        store = store_message(values, point, record.get("delivery_zone_geojson", ""))
        yield StoreRow(line, store, values.problems)


def geojson_features(path: Path, text: str) -> list[Any]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise ImportFailed(
            f"{path}: is not JSON: {error.msg} at line {error.lineno} column {error.colno}"
        ) from None
    except (RecursionError, ValueError) as error:
        raise ImportFailed(f"{path}: is not JSON this importer reads: {error}") from None
    if not isinstance(document, dict) or document.get("type") != "FeatureCollection":
        raise ImportFailed(f"{path}: must be a GeoJSON FeatureCollection of Point features, one per store")
    features = document.get("features")
    if not isinstance(features, list):
        raise ImportFailed(f"{path}: the FeatureCollection has no array of features")
    return features


def stores_from_geojson(features: list[Any]) -> Iterator[StoreRow]:
    for index, feature in enumerate(features):
        if not isinstance(feature, dict) or feature.get("type") != "Feature":
            yield StoreRow(index, None, [Problem(index, "", "is not a GeoJSON Feature")])
            continue
        properties = feature.get("properties") or {}
        if not isinstance(properties, dict):
            yield StoreRow(index, None, [Problem(index, "", "its properties must be an object")])
            continue
        if "store_id" not in properties and feature.get("id") is not None:
            # The feature's own id is the natural place for a store code too.
            properties = {**properties, "store_id": feature["id"]}
        values = RowValues(index, properties)
        geometry = feature.get("geometry")
        position = geometry.get("coordinates") if isinstance(geometry, dict) else None
        point: tuple[object, object] | None = None
        if (
            isinstance(geometry, dict)
            and geometry.get("type") == "Point"
            and isinstance(position, list)
            and len(position) >= 2
        ):
            # GeoJSON puts longitude first.
            point = (position[1], position[0])
        else:
            values.note("store.location", "the feature's geometry must be a Point [longitude, latitude]")
        store = store_message(values, point, _zone_text(values, properties))
        yield StoreRow(index, store, values.problems)


def _zone_text(values: RowValues, properties: Mapping[str, Any]) -> str:
    """The delivery zone's GeoJSON text: `delivery_zone` as a geometry, or `delivery_zone_geojson`."""
    shape, text = properties.get("delivery_zone"), properties.get("delivery_zone_geojson")
    if shape is not None and text not in (None, ""):
        values.note("store.delivery_zone_geojson", "give delivery_zone or delivery_zone_geojson, not both")
        return ""
    given = shape if shape is not None else text
    if isinstance(given, dict):
        return json.dumps(given, separators=(",", ":"))
    if isinstance(given, str) and shape is None:
        return given.strip()
    if given is not None:
        values.note("store.delivery_zone_geojson", "must be a GeoJSON Polygon or MultiPolygon")
    return ""


# --- talking to the service -----------------------------------------------------------------


def caller_token(explicit: str | None, settings: Settings) -> str:
    """--token, else $QUANYU_TOKEN, else an ops token signed with this deployment's own key."""
    if explicit:
        return explicit.strip()
    from_environment = os.environ.get("QUANYU_TOKEN", "").strip()
    if from_environment:
        return from_environment
    try:
        key = settings.signing_key_bytes()
    except ConfigurationError as error:
        raise ImportFailed(f"{error}; or pass --token, or set QUANYU_TOKEN") from None
    return TokenCodec(key).issue(Principal(Role.OPS, OPS_SUBJECT)).token


class Service:
    """The fulfilment service as the importer calls it: a bearer token, deadlines and retries."""

    def __init__(self, channel: grpc.Channel, target: str, token: str) -> None:
        self._stub = fulfilment_pb2_grpc.FulfilmentServiceStub(channel)
        self._target = target
        self._metadata = (("authorization", f"Bearer {token}"),)

    def start_import(self, request: fulfilment_pb2.ImportStoresRequest) -> Any:
        return self._stub.ImportStores.future(
            request, timeout=IMPORT_DEADLINE_SECONDS, metadata=self._metadata
        )

    def finish_import(self, request: fulfilment_pb2.ImportStoresRequest, call: Any) -> Any:
        """The answer to a started ImportStores, sending it again while the service is UNAVAILABLE."""
        for pause in RETRY_PAUSES_SECONDS:
            try:
                return call.result()
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE:
                    raise self.failure(error, IMPORT_DEADLINE_SECONDS) from None
            time.sleep(pause)
            call = self.start_import(request)
        try:
            return call.result()
        except grpc.RpcError as error:
            raise self.failure(error, IMPORT_DEADLINE_SECONDS) from None

    def set_stock(self, request: fulfilment_pb2.SetStockRequest) -> fulfilment_pb2.SetStockResponse:
        """SetStock, sent again while the service is UNAVAILABLE; other errors are the caller's."""
        for pause in (*RETRY_PAUSES_SECONDS, None):
            try:
                answer: fulfilment_pb2.SetStockResponse = self._stub.SetStock(
                    request, timeout=STOCK_DEADLINE_SECONDS, metadata=self._metadata
                )
                return answer
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE or pause is None:
                    raise
            time.sleep(pause)
        raise AssertionError("unreachable")

    def failure(self, error: grpc.RpcError, deadline: float) -> ImportFailed:
        """Why nothing more can load, for a call that failed as a whole."""
        code, details = error.code(), error.details()
        if code == grpc.StatusCode.UNAVAILABLE:
            return ImportFailed(
                f"cannot reach the fulfilment service at {self._target}: {details} "
                "(is it running? QUANYU_FULFILMENT__TARGET or QUANYU_FULFILMENT__PORT say where it is)"
            )
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return ImportFailed(
                f"the fulfilment service at {self._target} did not answer within {deadline:g} s"
            )
        if code == grpc.StatusCode.UNAUTHENTICATED:
            return ImportFailed(
                f"the fulfilment service refused the token: {details}; pass --token or set QUANYU_TOKEN"
            )
        if code == grpc.StatusCode.PERMISSION_DENIED:
            return ImportFailed(f"the token may not do this: {details}; an ops token is needed")
        return ImportFailed(f"the fulfilment service answered {code.name}: {details}")


def _details(error: grpc.RpcError, kind: type[Message]) -> list[Any]:
    # quanyu.clients has the same readers, but importing it brings the server and database
    # libraries along, a quarter of a second on every run of the command.
    status = rpc_status.from_call(error)
    found = []
    for detail in status.details if status else ():
        if detail.Is(kind.DESCRIPTOR):
            message = kind()
            detail.Unpack(message)
            found.append(message)
    return found


def field_violations(error: grpc.RpcError) -> list[tuple[str, str]]:
    """(field, description) of each violation in the BadRequest a refusal carries."""
    return [
        (v.field, v.description)
        for request in _details(error, error_details_pb2.BadRequest)
        for v in request.field_violations
    ]


def error_metadata(error: grpc.RpcError) -> Mapping[str, str]:
    """The metadata of the ErrorInfo a refusal carries; empty when it has none."""
    infos = _details(error, error_details_pb2.ErrorInfo)
    return dict(infos[0].metadata) if infos else {}


# --- stores ---------------------------------------------------------------------------------


@dataclass
class StoreBatch:
    """The stores of one ImportStores call, the rows rejected before it, and how many rows of the
    file it covers (for the progress bar)."""

    positions: list[int] = field(default_factory=list)
    stores: list[fulfilment_pb2.Store] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    size: int = 0
    rows: int = 0


def store_batches(rows: Iterable[StoreRow], label: Callable[[int], str]) -> Iterator[StoreBatch]:
    """Rows in batches the service takes, a store id repeated in the file rejected where it repeats."""
    first_seen: dict[str, int] = {}
    batch = StoreBatch()
    for row in rows:
        batch.rows += 1
        problems = row.problems
        store_id = row.store.store_id if row.store is not None else ""
        if store_id in first_seen:
            repeat = Problem(row.position, "store.store_id", f"repeats {label(first_seen[store_id])}")
            problems = [*problems, repeat]
        elif store_id:
            # Even a rejected row claims its id: a later row with it is a repeat all the same.
            first_seen[store_id] = row.position
        if problems or row.store is None:
            batch.problems += problems
            continue
        size = row.store.ByteSize()
        if batch.stores and batch.size + size > MAX_REQUEST_BYTES:
            yield batch
            batch = StoreBatch()
        batch.positions.append(row.position)
        batch.stores.append(row.store)
        batch.size += size
        if len(batch.stores) == STORES_PER_CALL:
            yield batch
            batch = StoreBatch()
    if batch.rows:
        yield batch


def import_stores(path: Path, service: Service, report: Report, progress: Callable[[int], tqdm]) -> None:
    text = read_text(path)
    rows: Iterable[StoreRow]
    if _is_geojson(path, text):
        features = geojson_features(path, text)
        report.label, total, rows = _feature, len(features), stores_from_geojson(features)
    else:
        table = CsvTable(path, text, STORE_COLUMNS, OPTIONAL_STORE_COLUMNS)
        _warn_ignored(path, table)
        total, rows = table.rows, stores_from_csv(table)
    with progress(total) as bar:
        in_flight: tuple[StoreBatch, fulfilment_pb2.ImportStoresRequest, Any] | None = None
        # One call in flight: the next batch is read and parsed while the service stores this one.
        for batch in store_batches(rows, report.label):
            if in_flight is not None:
                _settle(service, report, *in_flight)
                bar.update(in_flight[0].rows)
                in_flight = None
            if batch.stores:
                request = fulfilment_pb2.ImportStoresRequest(stores=batch.stores)
                in_flight = (batch, request, service.start_import(request))
            else:
                report.reject(batch.problems)
                bar.update(batch.rows)
        if in_flight is not None:
            _settle(service, report, *in_flight)
            bar.update(in_flight[0].rows)


def _settle(
    service: Service,
    report: Report,
    batch: StoreBatch,
    request: fulfilment_pb2.ImportStoresRequest,
    call: Any,
) -> None:
    answer = service.finish_import(request, call)
    report.loaded += answer.upserted
    refused = [
        Problem(batch.positions[e.index], _BATCH_ROW.sub("store", e.field), e.description)
        for e in answer.errors
        if 0 <= e.index < len(batch.positions)
    ]
    report.reject([*batch.problems, *refused])


def _is_geojson(path: Path, text: str) -> bool:
    suffix = path.suffix.lower()
    if suffix in (".geojson", ".json"):
        return True
    if suffix == ".csv":
        return False
    return text.lstrip().startswith("{")


def _warn_ignored(path: Path, table: CsvTable) -> None:
    if table.ignored:
        tqdm.write(f"{path}: ignoring column(s) {', '.join(table.ignored)}", file=sys.stderr)


# --- stock ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LevelRow:
    line: int
    sku: str
    on_hand: int


class StockLoader:
    """Stock levels sent store by store, up to LEVELS_PER_CALL at a time, each refusal traced
    back to the rows it concerns."""

    def __init__(self, service: Service, report: Report) -> None:
        self._service = service
        self._report = report
        # Stores the service refused outright (unknown, or not the token's): their later rows
        # are refused for the same reason without asking again.
        self._refused: dict[str, tuple[str, str]] = {}

    def send(self, store_id: str, rows: list[LevelRow]) -> None:
        # SetStock is all or nothing. When the service names the levels at fault, only their rows
        # are rejected and the others are sent again, so each round sends strictly fewer rows.
        while rows:
            if store_id in self._refused:
                self._refuse(rows, self._refused[store_id])
                return
            request = fulfilment_pb2.SetStockRequest(
                store_id=store_id,
                levels=[fulfilment_pb2.SkuQuantity(sku=r.sku, on_hand=r.on_hand) for r in rows],
            )
            try:
                answer = self._service.set_stock(request)
            except grpc.RpcError as error:
                rows = self._still_to_send(store_id, rows, error)
                continue
            self._report.loaded += len(answer.levels)
            return

    def _still_to_send(self, store_id: str, rows: list[LevelRow], error: grpc.RpcError) -> list[LevelRow]:
        """Reports the rows a refusal rejects; gives back those worth sending again."""
        code, details = error.code(), str(error.details() or error.code().name)
        faulty: dict[int, list[tuple[str, str]]] = {}
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            whole: list[str] = []
            for name, description in field_violations(error):
                matched = _LEVEL_FIELD.match(name)
                if matched and int(matched[1]) < len(rows):
                    faulty.setdefault(int(matched[1]), []).append((matched[2], description))
                else:
                    whole.append(f"{name}: {description}" if name else description)
            if whole:
                faulty = {i: [("", "; ".join(whole))] for i in range(len(rows))}
        elif code == grpc.StatusCode.FAILED_PRECONDITION:
            # BELOW_RESERVED names the SKUs whose new on-hand falls below what orders hold.
            named = set(error_metadata(error).get("skus", "").split(","))
            faulty = {i: [("on_hand", details)] for i, row in enumerate(rows) if row.sku in named}
        elif code == grpc.StatusCode.NOT_FOUND:
            self._refused[store_id] = ("store_id", f"no store {_shown(store_id)}; import the store first")
            return rows
        elif code == grpc.StatusCode.PERMISSION_DENIED:
            self._refused[store_id] = ("store_id", f"the token may not set this store's stock: {details}")
            return rows
        else:
            raise self._service.failure(error, STOCK_DEADLINE_SECONDS) from None
        if not faulty:
            # A refusal that names no row of the call: it applies to them all.
            faulty = {i: [("", details)] for i in range(len(rows))}
        self._report.reject(
            Problem(rows[i].line, name, description)
            for i, found in faulty.items()
            for name, description in found
        )
        return [row for i, row in enumerate(rows) if i not in faulty]

    def _refuse(self, rows: Iterable[LevelRow], why: tuple[str, str]) -> None:
        self._report.reject(Problem(row.line, *why) for row in rows)


def import_stock(path: Path, service: Service, report: Report, progress: Callable[[int], tqdm]) -> None:
    table = CsvTable(path, read_text(path), STOCK_COLUMNS, ())
    _warn_ignored(path, table)
    loader = StockLoader(service, report)
    waiting: dict[str, list[LevelRow]] = {}
    # Per store, the line each SKU was first given on: a repeat is reported, never silently won.
    first_seen: dict[str, dict[str, int]] = {}
    with progress(table.rows) as bar:
        for line, record in table.records():
            bar.update(1)
            if isinstance(record, Problem):
                report.reject([record])
                continue
            row = _level_row(line, record)
            if isinstance(row, list):
                report.reject(row)
                continue
            store_id = record["store_id"]
            skus = first_seen.setdefault(store_id, {})
            if row.sku in skus:
                report.reject(
                    [Problem(line, "sku", f"repeats line {skus[row.sku]} for store {_shown(store_id)}")]
                )
                continue
            skus[row.sku] = line
            pending = waiting.setdefault(store_id, [])
            pending.append(row)
            if len(pending) == LEVELS_PER_CALL:
                loader.send(store_id, waiting.pop(store_id))
        for store_id, rows in waiting.items():
            loader.send(store_id, rows)


def _level_row(line: int, record: Mapping[str, str]) -> LevelRow | list[Problem]:
    problems = [Problem(line, name, "is required") for name in STOCK_COLUMNS if not record[name]]
    on_hand = whole_number(record["on_hand"]) if record["on_hand"] else 0
    if on_hand is None:
        problems.append(
            Problem(line, "on_hand", f"must be a whole number of units, not {_shown(record['on_hand'])}")
        )
    elif on_hand < 0:
        problems.append(Problem(line, "on_hand", "must not be negative"))
    elif on_hand >= 2**63:
        problems.append(Problem(line, "on_hand", "is too large"))
    return problems or LevelRow(line, record["sku"], on_hand or 0)


# --- the command ----------------------------------------------------------------------------


def main(what: str, path: Path, *, token: str | None, settings: Settings) -> int:
    """`quanyu stores import` and `quanyu stock import`: load the file, report, give the exit code."""
    target = settings.target("fulfilment")
    out, err = sys.stdout, sys.stderr
    noun = "stores" if what == "stores" else "stock levels"

    def progress(total: int) -> tqdm:
        return tqdm(
            total=total,
            unit=" rows",
            file=err,
            disable=total < PROGRESS_MIN_ROWS or not err.isatty(),
            dynamic_ncols=True,
        )

    report = Report(out)
    load = import_stores if what == "stores" else import_stock
    try:
        bearer = caller_token(token, settings)
        with grpc.insecure_channel(target) as channel:
            load(path, Service(channel, target, bearer), report, progress)
    except (ImportFailed, KeyboardInterrupt) as error:
        if report.started:
            print(f"{report.summary(noun)}; stopped before the end of the file", file=out)
        why = str(error) if isinstance(error, ImportFailed) else "interrupted"
        print(f"quanyu {what} import: {why}", file=err)
        return EXIT_FAILED
    print(report.summary(noun), file=out)
    return report.exit_code
