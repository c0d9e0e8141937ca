"""A store as fulfilment sees it: checking what a caller sends, and where the store delivers.

Validation reports every problem at once, each at its field path (`store.location.latitude`, or
`stores[12].name` for a row of an import), so one round trip shows a caller all that is wrong;
a location from a Chinese map is turned into WGS-84 on the way in.
A delivery zone is a GeoJSON polygon in WGS-84 [longitude, latitude] when one is set, else a radius
around the store; the spatial index needs from it only a yes/no per location and a distance
beyond which it covers nothing.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import shapely
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry
from shapely.validation import explain_validity

from quanyu.errors import InvalidArgument, Violations
from services.fulfilment.domain.coordinates import MapPoint, wgs84_of
from services.fulfilment.domain.geodesy import geodesic_distance_m
from services.fulfilment.domain.hours import OpeningHours, read_hours, valid_timezone


class StoreStatus(StrEnum):
    ACTIVE = "ACTIVE"
    PAUSED = "PAUSED"  # takes no new orders for now, keeps its open ones
    CLOSED = "CLOSED"


DEFAULT_TIMEZONE = "Asia/Shanghai"
MAX_STORE_ID_LENGTH = 64
MAX_NAME_LENGTH = 128
MAX_ZONE_GEOJSON_BYTES = 1_000_000
MAX_RADIUS_M = 200_000

_ZONE_TYPES = ("Polygon", "MultiPolygon")
# GeoJSON (RFC 7946 §3.1.6): a linear ring is closed and has at least four positions.
_MIN_RING_POSITIONS = 4
# reach_m: a zone's edges are straight in longitude/latitude, not along geodesics, so a point on
# an edge can lie a little farther from the store than both of its ends; this margin covers that.
_REACH_FACTOR = 1.01
_REACH_MARGIN_M = 100.0
# ...as long as edges are short. Seen from far off, an edge tens of degrees long bulges past 1 %
# (a 30-degree edge by about 2 %), so edges longer than this many degrees are split before the
# vertices are measured; a store-sized zone has no such edge and keeps its vertices as they are.
_REACH_SEGMENT_DEGREES = 1.0


@dataclass(frozen=True)
class StoreDraft:
    """What a caller sent, already plain Python, before any of it is checked."""

    store_id: str
    name: str
    latitude: float | None  # None: the caller gave no location
    longitude: float | None
    status: str | None  # a StoreStatus; None or "": unspecified, which means ACTIVE
    delivery_radius_m: float
    delivery_zone_geojson: str
    opening_hours: list[tuple[int, str, str]]  # (ISO weekday, "HH:MM", "HH:MM")
    timezone: str  # "": DEFAULT_TIMEZONE
    max_active_orders: int  # 0: no limit
    priority: int  # higher wins a tie on distance
    coordinate_system: str = ""  # of latitude and longitude, a CoordinateSystem; "": WGS-84


@dataclass(frozen=True, slots=True)
class Store:
    """A store that passed validation, with every default filled in."""

    store_id: str
    name: str
    latitude: float
    longitude: float
    status: StoreStatus
    delivery_radius_m: float  # used when there is no zone; 0: does not deliver
    delivery_zone_geojson: str  # as the caller sent it; "" for none
    opening_hours: tuple[OpeningHours, ...]  # empty: open around the clock
    timezone: str
    max_active_orders: int
    priority: int


def validate_store(draft: StoreDraft | None, *where: str | int) -> Store:
    """The store a draft describes, or InvalidArgument naming every problem below `where`
    (the request's `store` unless told)."""
    violations = Violations()
    store = store_from(draft, violations.within(*(where or ("store",))))
    violations.raise_if_any()
    assert store is not None
    return store


def store_from(draft: StoreDraft | None, violations: Violations) -> Store | None:
    """The store a draft describes; None, with each problem in `violations` (which names the
    store field), when it is not one."""
    if draft is None:
        violations.add("", "is required")
        return None
    found = len(violations.found)
    violations.text(draft.store_id, "store_id", max_length=MAX_STORE_ID_LENGTH)
    violations.text(draft.name, "name", max_length=MAX_NAME_LENGTH)

    location = None
    if draft.latitude is None or draft.longitude is None:
        violations.add("location", "is required")
    else:
        point = MapPoint(draft.latitude, draft.longitude, draft.coordinate_system)
        location = wgs84_of(point, violations.within("location"))

    status = StoreStatus(draft.status) if draft.status in _STATUSES else None
    violations.check(status is not None or not draft.status, "status", "is not a known store status")

    radius = draft.delivery_radius_m
    violations.check(
        math.isfinite(radius) and 0 <= radius <= MAX_RADIUS_M,
        "delivery_radius_m",
        f"must be a finite number of metres from 0 to {MAX_RADIUS_M}",
    )

    if draft.delivery_zone_geojson:
        try:
            _zone_geometry(draft.delivery_zone_geojson)
        except ZoneError as error:
            violations.add("delivery_zone_geojson", str(error))

    opening_hours = read_hours(draft.opening_hours, violations.within("opening_hours"))

    timezone = draft.timezone or DEFAULT_TIMEZONE
    violations.check(
        valid_timezone(timezone), "timezone", f"must be an IANA time zone such as {DEFAULT_TIMEZONE}"
    )
    violations.check(draft.max_active_orders >= 0, "max_active_orders", "must not be negative")
    violations.check(draft.priority >= 0, "priority", "must not be negative")

    if len(violations.found) > found or location is None:
        return None
    return Store(
        store_id=draft.store_id,
        name=draft.name,
        latitude=float(location[0]),
        longitude=float(location[1]),
        status=status or StoreStatus.ACTIVE,
        delivery_radius_m=float(radius),
        delivery_zone_geojson=draft.delivery_zone_geojson,
        opening_hours=tuple(opening_hours),
        timezone=timezone,
        max_active_orders=draft.max_active_orders,
        priority=draft.priority,
    )


_STATUSES = frozenset(StoreStatus)
MAX_IMPORT_BATCH = 1000


@dataclass(frozen=True)
class RowError:
    """A row of a bulk import that was not loaded, and why."""

    index: int
    field: str
    description: str


def checked_batch(drafts: Sequence[StoreDraft]) -> tuple[list[Store], list[RowError]]:
    """The sound rows of an import and the problems of the others, each named under
    `stores[i]`; a row repeating an earlier row's id is one of the others."""
    if len(drafts) > MAX_IMPORT_BATCH:
        raise InvalidArgument("stores", f"at most {MAX_IMPORT_BATCH} stores per call")
    good: list[Store] = []
    errors: list[RowError] = []
    seen: set[str] = set()
    for index, draft in enumerate(drafts):
        row = Violations().within("stores", index)
        store = store_from(draft, row)
        if store is not None and store.store_id in seen:
            row.add("store_id", "repeats an earlier row of this batch")
        elif store is not None:
            seen.add(store.store_id)
            good.append(store)
        errors += [RowError(index, v.field, v.description) for v in row.found]
    return good, errors


class ZoneError(ValueError):
    """A delivery zone that is not a usable GeoJSON polygon; the message says why, for a person."""


def _zone_geometry(text: str) -> BaseGeometry:
    """The (Multi)Polygon a zone's GeoJSON text describes, or ZoneError with the first problem."""
    geometry = _geometry_object(_load_json(text))
    kind = geometry["type"]
    coordinates = geometry.get("coordinates")
    if kind == "Polygon":
        cleaned: list[Any] = _polygon_coordinates(coordinates, "coordinates")
    else:
        if not isinstance(coordinates, list) or not coordinates:
            raise ZoneError("coordinates of a MultiPolygon must be a non-empty array of polygons")
        cleaned = [
            _polygon_coordinates(polygon, f"coordinates[{index}]")
            for index, polygon in enumerate(coordinates)
        ]

    try:
        parsed = shape({"type": kind, "coordinates": cleaned})
    except (ValueError, TypeError, shapely.errors.ShapelyError) as error:
        raise ZoneError(f"is not a {kind} shapely can read: {error}") from None
    if not parsed.is_valid:
        raise ZoneError(f"is not a valid {kind}: {explain_validity(parsed)}")
    return parsed


def _load_json(text: str) -> object:
    if len(text.encode("utf-8")) > MAX_ZONE_GEOJSON_BYTES:
        raise ZoneError(f"must be at most {MAX_ZONE_GEOJSON_BYTES} bytes")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ZoneError(f"is not JSON: {error.msg} at line {error.lineno} column {error.colno}") from None
    except RecursionError:
        # A megabyte of "[[[[..." would otherwise take the parser's recursion limit down with it.
        raise ZoneError("is not JSON this service reads: nested too deeply") from None
    except ValueError as error:
        # e.g. an integer literal longer than Python converts by default.
        raise ZoneError(f"is not JSON this service reads: {error}") from None


def _geometry_object(document: object) -> dict[str, Any]:
    """The Polygon or MultiPolygon object of a document, unwrapping a Feature."""
    geometry = document
    if isinstance(document, dict) and document.get("type") == "Feature":
        geometry = document.get("geometry")
        if not isinstance(geometry, dict):
            raise ZoneError("is a Feature without a geometry; it needs a Polygon or MultiPolygon")
    if not isinstance(geometry, dict):
        raise ZoneError("must be a GeoJSON Polygon or MultiPolygon object")
    kind = geometry.get("type")
    if kind not in _ZONE_TYPES:
        named = f"a {kind}" if isinstance(kind, str) else "an object without a string type"
        raise ZoneError(f"must be a GeoJSON Polygon or MultiPolygon (or a Feature of one), not {named}")
    return geometry


def _polygon_coordinates(rings: object, where: str) -> list[list[tuple[float, float]]]:
    # Checked by hand before shapely sees them: shapely accepts unclosed rings, silently drops
    # what it cannot use in places, and says little about where a bad number sits.
    if not isinstance(rings, list) or not rings:
        raise ZoneError(f"{where} of a Polygon must be a non-empty array of linear rings")
    return [_ring(ring, f"{where}[{index}]") for index, ring in enumerate(rings)]


def _ring(ring: object, where: str) -> list[tuple[float, float]]:
    if not isinstance(ring, list) or len(ring) < _MIN_RING_POSITIONS:
        raise ZoneError(f"{where} must be a linear ring of at least {_MIN_RING_POSITIONS} positions")
    positions = [_position(position, f"{where}[{index}]") for index, position in enumerate(ring)]
    if positions[0] != positions[-1]:
        raise ZoneError(f"{where} must be closed: its last position must repeat its first")
    return positions


def _position(position: object, where: str) -> tuple[float, float]:
    if not isinstance(position, list) or len(position) < 2:
        raise ZoneError(f"{where} must be a position [longitude, latitude]")
    longitude, latitude = position[0], position[1]
    for value in (longitude, latitude):
        # bool is an int to Python, never a coordinate to a caller.
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ZoneError(f"{where} must hold numbers, [longitude, latitude]")
    if not (math.isfinite(longitude) and math.isfinite(latitude)):
        raise ZoneError(f"{where} must hold finite numbers")
    if not -180 <= longitude <= 180:
        raise ZoneError(f"{where} has longitude {longitude} outside -180..180")
    if not -90 <= latitude <= 90:
        raise ZoneError(
            f"{where} has latitude {latitude} outside -90..90 (GeoJSON puts longitude first, then latitude)"
        )
    # Altitude, when given, plays no part in where a store delivers.
    return float(longitude), float(latitude)


class DeliveryZone:
    """Where a store delivers: its polygon when set, else a radius around it."""

    __slots__ = ("_polygon", "_radius_m", "_reach_m")

    def __init__(self, polygon: BaseGeometry | None, radius_m: float, reach_m: float) -> None:
        self._polygon = polygon
        self._radius_m = radius_m
        self._reach_m = reach_m

    @classmethod
    def of(cls, store: Store) -> DeliveryZone:
        """The zone of a validated store; ValueError if its GeoJSON does not validate."""
        if not store.delivery_zone_geojson:
            return _radius_zone(store.delivery_radius_m)
        polygon = _zone_geometry(store.delivery_zone_geojson)
        reach = _polygon_reach_m(store.latitude, store.longitude, polygon)
        shapely.prepare(polygon)
        # GEOS builds a prepared geometry's point index on first use; build it now, once, so that
        # the requests sharing this zone across threads only ever read it.
        polygon.covers(shapely.Point(store.longitude, store.latitude))
        return cls(polygon, store.delivery_radius_m, reach)

    def covers(self, latitude: float, longitude: float, distance_m: float) -> bool:
        """Whether the store delivers to a WGS-84 point `distance_m` (geodesic) from it.

        A point on the polygon's boundary is inside. A radius of 0 means the store does not
        deliver, so it covers nothing, not even its own doorstep.
        """
        if self._polygon is not None:
            return bool(self._polygon.covers(shapely.Point(longitude, latitude)))
        return self._radius_m > 0 and distance_m <= self._radius_m

    @property
    def is_polygon(self) -> bool:
        """Whether a polygon decides; when not, the radius does."""
        return self._polygon is not None

    @property
    def radius_m(self) -> float:
        """The store's delivery radius (0: does not deliver); ignored when there is a polygon."""
        return self._radius_m

    @property
    def reach_m(self) -> float:
        """No point the zone covers is farther than this from the store (geodesic metres).

        0 when the store does not deliver. The spatial index skips a store whose reach falls
        short of the location.
        """
        return self._reach_m


def _polygon_reach_m(latitude: float, longitude: float, polygon: BaseGeometry) -> float:
    pieces = shapely.segmentize(polygon, _REACH_SEGMENT_DEGREES)
    vertices: Iterable[tuple[float, float]] = {
        (float(lng), float(lat)) for lng, lat in shapely.get_coordinates(pieces)
    }
    farthest = max(geodesic_distance_m(latitude, longitude, lat, lng) for lng, lat in vertices)
    return farthest * _REACH_FACTOR + _REACH_MARGIN_M


@functools.lru_cache(maxsize=1024)
def _radius_zone(radius_m: float) -> DeliveryZone:
    # A chain uses a handful of radii; a million stores share a handful of zone objects.
    return DeliveryZone(None, radius_m, radius_m)
