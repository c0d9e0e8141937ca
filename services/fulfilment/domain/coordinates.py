"""Map coordinates from Chinese providers (GCJ-02, BD-09) turned back into WGS-84 before any distance.

Chinese maps (WeChat, AMap, Tencent: GCJ-02; Baidu: BD-09) publish deliberately shifted
coordinates. Distances and delivery zones are measured on WGS-84, so every location a caller gives
is converted on entry. The shifts follow the widely published "Mars coordinates" formulas; their
inverses have no closed form, so they are solved by fixed-point iteration to well below a
centimetre, where the usual one-step inverse is off by a metre or two.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from quanyu.errors import Violations

# The GCJ-02 formulas are defined on the Krasovsky 1940 ellipsoid, not WGS-84's.
_KRASOVSKY_A = 6378245.0
_KRASOVSKY_EE = 0.00669342162296594323
_BD_X_PI = math.pi * 3000.0 / 180.0
_BD_LAT_OFFSET = 0.006
_BD_LNG_OFFSET = 0.0065

# 1e-9 degrees is about 0.1 mm on the ground; the forward transforms are smooth and shift by less
# than a kilometre, so the iteration contracts fast and a handful of rounds reach it.
_INVERSE_TOLERANCE_DEGREES = 1e-9
_INVERSE_MAX_ROUNDS = 30


class CoordinateSystem(StrEnum):
    WGS84 = "WGS84"
    GCJ02 = "GCJ02"  # WeChat, AMap (Gaode), Tencent maps
    BD09 = "BD09"  # Baidu maps


def _outside_mainland_china(lat: float, lng: float) -> bool:
    # The rough box every published implementation uses; GCJ-02 is the identity outside it.
    return not (72.004 <= lng <= 137.8347 and 0.8293 <= lat <= 55.8271)


def _gcj02_shift(lat: float, lng: float) -> tuple[float, float]:
    """The GCJ-02 shift in degrees (latitude, longitude) at a WGS-84 point, box test aside."""
    x = lng - 105.0
    y = lat - 35.0
    x_pi = x * math.pi
    y_pi = y * math.pi
    common = (20.0 * math.sin(6.0 * x_pi) + 20.0 * math.sin(2.0 * x_pi)) * 2.0 / 3.0
    sqrt_abs_x = math.sqrt(abs(x))
    shift_lat = (
        -100.0
        + 2.0 * x
        + 3.0 * y
        + 0.2 * y * y
        + 0.1 * x * y
        + 0.2 * sqrt_abs_x
        + common
        + (20.0 * math.sin(y_pi) + 40.0 * math.sin(y_pi / 3.0)) * 2.0 / 3.0
        + (160.0 * math.sin(y_pi / 12.0) + 320.0 * math.sin(y_pi / 30.0)) * 2.0 / 3.0
    )
    shift_lng = (
        300.0
        + x
        + 2.0 * y
        + 0.1 * x * x
        + 0.1 * x * y
        + 0.1 * sqrt_abs_x
        + common
        + (20.0 * math.sin(x_pi) + 40.0 * math.sin(x_pi / 3.0)) * 2.0 / 3.0
        + (150.0 * math.sin(x_pi / 12.0) + 300.0 * math.sin(x_pi / 30.0)) * 2.0 / 3.0
    )
    rad_lat = math.radians(lat)
    magic = 1.0 - _KRASOVSKY_EE * math.sin(rad_lat) ** 2
    sqrt_magic = math.sqrt(magic)
    # The shifts come out in metres; the radii of curvature at this latitude turn them into degrees.
    meridian_radius = (_KRASOVSKY_A * (1.0 - _KRASOVSKY_EE)) / (magic * sqrt_magic)
    parallel_radius = _KRASOVSKY_A / sqrt_magic * math.cos(rad_lat)
    shift_lat = (shift_lat * 180.0) / (meridian_radius * math.pi)
    shift_lng = (shift_lng * 180.0) / (parallel_radius * math.pi)
    return shift_lat, shift_lng


def wgs84_to_gcj02(lat: float, lng: float) -> tuple[float, float]:
    """WGS-84 to GCJ-02; a point outside mainland China is returned unchanged."""
    if _outside_mainland_china(lat, lng):
        return lat, lng
    shift_lat, shift_lng = _gcj02_shift(lat, lng)
    return lat + shift_lat, lng + shift_lng


def gcj02_to_wgs84(lat: float, lng: float) -> tuple[float, float]:
    """GCJ-02 to WGS-84, the exact inverse of wgs84_to_gcj02 (round trip well under 1 cm)."""
    if _outside_mainland_china(lat, lng):
        return lat, lng
    shift_lat, shift_lng = _gcj02_shift(lat, lng)
    wgs_lat, wgs_lng = lat - shift_lat, lng - shift_lng
    for _ in range(_INVERSE_MAX_ROUNDS):
        # The shift itself, not wgs84_to_gcj02: an estimate just across the box edge must still
        # be corrected rather than bounce between the shifted and the unshifted point.
        shift_lat, shift_lng = _gcj02_shift(wgs_lat, wgs_lng)
        error_lat = wgs_lat + shift_lat - lat
        error_lng = wgs_lng + shift_lng - lng
        if abs(error_lat) < _INVERSE_TOLERANCE_DEGREES and abs(error_lng) < _INVERSE_TOLERANCE_DEGREES:
            break
        wgs_lat -= error_lat
        wgs_lng -= error_lng
    return wgs_lat, wgs_lng


def gcj02_to_bd09(lat: float, lng: float) -> tuple[float, float]:
    """GCJ-02 to Baidu's BD-09, which Baidu applies on top of GCJ-02 wherever the point lies."""
    z = math.hypot(lng, lat) + 0.00002 * math.sin(lat * _BD_X_PI)
    theta = math.atan2(lat, lng) + 0.000003 * math.cos(lng * _BD_X_PI)
    return z * math.sin(theta) + _BD_LAT_OFFSET, z * math.cos(theta) + _BD_LNG_OFFSET


def bd09_to_gcj02(lat: float, lng: float) -> tuple[float, float]:
    """BD-09 to GCJ-02, the inverse of gcj02_to_bd09 to better than 1e-9 degrees."""
    x = lng - _BD_LNG_OFFSET
    y = lat - _BD_LAT_OFFSET
    z = math.hypot(x, y) - 0.00002 * math.sin(y * _BD_X_PI)
    theta = math.atan2(y, x) - 0.000003 * math.cos(x * _BD_X_PI)
    # The published one-step inverse evaluates the perturbation at the wrong point; refine it.
    gcj_lat, gcj_lng = z * math.sin(theta), z * math.cos(theta)
    for _ in range(_INVERSE_MAX_ROUNDS):
        bd_lat, bd_lng = gcj02_to_bd09(gcj_lat, gcj_lng)
        error_lat = bd_lat - lat
        error_lng = bd_lng - lng
        if abs(error_lat) < _INVERSE_TOLERANCE_DEGREES and abs(error_lng) < _INVERSE_TOLERANCE_DEGREES:
            break
        gcj_lat -= error_lat
        gcj_lng -= error_lng
    return gcj_lat, gcj_lng


def to_wgs84(lat: float, lng: float, system: CoordinateSystem) -> tuple[float, float]:
    """A caller's point in whatever system its map gave, as WGS-84 (latitude, longitude)."""
    if system == CoordinateSystem.GCJ02:
        return gcj02_to_wgs84(lat, lng)
    if system == CoordinateSystem.BD09:
        return gcj02_to_wgs84(*bd09_to_gcj02(lat, lng))
    return lat, lng


@dataclass(frozen=True)
class MapPoint:
    """A location as a caller's map gave it, not yet checked: `system` names a CoordinateSystem,
    "" when the caller left it unspecified (WGS-84), anything else when it is not one we know."""

    latitude: float
    longitude: float
    system: str = ""


def wgs84_of(point: MapPoint, violations: Violations) -> tuple[float, float] | None:
    """The point as WGS-84 (latitude, longitude); None, with each problem in `violations`
    (which names the location field), when it is not a point."""
    latitude, longitude = point.latitude, point.longitude
    system = CoordinateSystem(point.system) if point.system in _SYSTEMS else None
    if point.system == "":
        system = CoordinateSystem.WGS84
    fine = True
    if not (math.isfinite(latitude) and -90 <= latitude <= 90):
        violations.add("latitude", "must be a number of degrees from -90 to 90")
        fine = False
    if not (math.isfinite(longitude) and -180 <= longitude <= 180):
        violations.add("longitude", "must be a number of degrees from -180 to 180")
        fine = False
    if system is None:
        violations.add("system", "is not a known coordinate system")
        return None
    return to_wgs84(latitude, longitude, system) if fine else None


_SYSTEMS = frozenset(CoordinateSystem)
