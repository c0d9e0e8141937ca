"""Locations from Chinese maps come back to WGS-84 exactly, and the shifts have their known size."""

import pytest
from geopy.distance import geodesic
from hypothesis import given
from hypothesis import strategies as st

from services.fulfilment.domain.coordinates import (
    CoordinateSystem,
    bd09_to_gcj02,
    gcj02_to_bd09,
    gcj02_to_wgs84,
    to_wgs84,
    wgs84_to_gcj02,
)

ROUND_TRIP_DEGREES = 1e-7  # about 1 cm on the ground

china_lat = st.floats(min_value=18.0, max_value=53.0)
china_lng = st.floats(min_value=74.0, max_value=134.0)

# Published pairs from the test suites of googollee/eviltransform (python/test.py,
# go/transform_test.go): (WGS-84 lat, lng, GCJ-02 lat, lng).
EVILTRANSFORM_PAIRS = [
    (31.1774276, 121.5272106, 31.17530398364597, 121.531541859215),  # Shanghai
    (22.543847, 113.912316, 22.540796131694766, 113.9171764808363),  # Shenzhen
    (39.911954, 116.377817, 39.91334545536069, 116.38404722455657),  # Beijing
]

BEIJING_TIANANMEN = (39.9087, 116.3975)
SHANGHAI_PEOPLES_SQUARE = (31.2304, 121.4737)


def metres(a: tuple[float, float], b: tuple[float, float]) -> float:
    return float(geodesic(a, b).meters)


@pytest.mark.parametrize(("wgs_lat", "wgs_lng", "gcj_lat", "gcj_lng"), EVILTRANSFORM_PAIRS)
def test_wgs84_to_gcj02_matches_the_published_eviltransform_pairs(
    wgs_lat: float, wgs_lng: float, gcj_lat: float, gcj_lng: float
) -> None:
    lat, lng = wgs84_to_gcj02(wgs_lat, wgs_lng)
    assert lat == pytest.approx(gcj_lat, abs=1e-9)
    assert lng == pytest.approx(gcj_lng, abs=1e-9)


@pytest.mark.parametrize(("wgs_lat", "wgs_lng", "gcj_lat", "gcj_lng"), EVILTRANSFORM_PAIRS)
def test_gcj02_to_wgs84_recovers_the_published_eviltransform_pairs(
    wgs_lat: float, wgs_lng: float, gcj_lat: float, gcj_lng: float
) -> None:
    # eviltransform's own exact inverse only promises 0.5 m; this one is held to a millimetre.
    assert metres(gcj02_to_wgs84(gcj_lat, gcj_lng), (wgs_lat, wgs_lng)) < 0.001


def test_wgs84_to_bd09_matches_the_published_lnglat_converter_example() -> None:
    # The README example of lyttonlee/lnglat-converter: WGS-84 (32, 106) in Sichuan.
    gcj = wgs84_to_gcj02(32.0, 106.0)
    assert gcj == pytest.approx((31.997775713491148, 106.0038603381513), abs=1e-9)
    assert gcj02_to_bd09(*gcj) == pytest.approx((32.00356002052303, 106.01040868983318), abs=1e-9)


@given(china_lat, china_lng)
def test_wgs84_to_gcj02_and_back_returns_the_same_point(lat: float, lng: float) -> None:
    back_lat, back_lng = gcj02_to_wgs84(*wgs84_to_gcj02(lat, lng))
    assert abs(back_lat - lat) < ROUND_TRIP_DEGREES
    assert abs(back_lng - lng) < ROUND_TRIP_DEGREES


@given(china_lat, china_lng)
def test_wgs84_to_bd09_and_back_returns_the_same_point(lat: float, lng: float) -> None:
    bd = gcj02_to_bd09(*wgs84_to_gcj02(lat, lng))
    back_lat, back_lng = to_wgs84(*bd, CoordinateSystem.BD09)
    assert abs(back_lat - lat) < ROUND_TRIP_DEGREES
    assert abs(back_lng - lng) < ROUND_TRIP_DEGREES


@given(china_lat, china_lng)
def test_gcj02_to_bd09_and_back_returns_the_same_point(lat: float, lng: float) -> None:
    back_lat, back_lng = bd09_to_gcj02(*gcj02_to_bd09(lat, lng))
    assert abs(back_lat - lat) < 1e-9
    assert abs(back_lng - lng) < 1e-9


@pytest.mark.parametrize(
    ("lat", "lng"),
    [
        (51.5007, -0.1246),  # London
        (40.7484, -73.9857),  # New York
        (-33.8568, 151.2153),  # Sydney
        (35.6586, 139.7454),  # Tokyo, just east of the box
        (0.0, 0.0),
    ],
)
def test_points_outside_china_are_not_shifted(lat: float, lng: float) -> None:
    assert wgs84_to_gcj02(lat, lng) == (lat, lng)
    assert gcj02_to_wgs84(lat, lng) == (lat, lng)
    assert to_wgs84(lat, lng, CoordinateSystem.GCJ02) == (lat, lng)


@pytest.mark.parametrize("city", [BEIJING_TIANANMEN, SHANGHAI_PEOPLES_SQUARE])
def test_the_gcj02_shift_in_beijing_and_shanghai_is_a_few_hundred_metres(city: tuple[float, float]) -> None:
    shift = metres(city, wgs84_to_gcj02(*city))
    assert 300.0 < shift < 700.0


@given(china_lat, china_lng)
def test_the_gcj02_shift_is_under_a_kilometre_anywhere_in_china(lat: float, lng: float) -> None:
    assert metres((lat, lng), wgs84_to_gcj02(lat, lng)) < 1000.0


@given(china_lat, china_lng)
def test_bd09_lies_about_0_006_north_and_0_0065_east_of_gcj02(lat: float, lng: float) -> None:
    bd_lat, bd_lng = gcj02_to_bd09(lat, lng)
    # The fixed offsets plus Baidu's small rotation (3e-6 rad) and stretch (2e-5 degrees).
    assert 0.0055 < bd_lat - lat < 0.0065
    assert 0.006 < bd_lng - lng < 0.007


def test_wgs84_input_is_taken_as_it_is() -> None:
    assert to_wgs84(*BEIJING_TIANANMEN, CoordinateSystem.WGS84) == BEIJING_TIANANMEN


def test_a_gcj02_point_is_converted_back_to_wgs84() -> None:
    gcj = wgs84_to_gcj02(*BEIJING_TIANANMEN)
    assert metres(to_wgs84(*gcj, CoordinateSystem.GCJ02), BEIJING_TIANANMEN) < 0.01


def test_a_bd09_point_goes_through_gcj02_back_to_wgs84() -> None:
    bd = gcj02_to_bd09(*wgs84_to_gcj02(*SHANGHAI_PEOPLES_SQUARE))
    assert metres(bd, SHANGHAI_PEOPLES_SQUARE) > 500.0
    assert metres(to_wgs84(*bd, CoordinateSystem.BD09), SHANGHAI_PEOPLES_SQUARE) < 0.01


def test_the_system_names_match_the_contract() -> None:
    assert [system.value for system in CoordinateSystem] == ["WGS84", "GCJ02", "BD09"]
