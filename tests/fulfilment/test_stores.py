"""What a store may look like when a caller sends one, and where a store delivers."""

import dataclasses
import json
import math
from datetime import time
from typing import Any

import pytest
import shapely
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from shapely.geometry import shape
from shapely.validation import explain_validity

from quanyu.errors import InvalidArgument
from services.fulfilment.domain.geodesy import geodesic_distance_m
from services.fulfilment.domain.hours import OpeningHours
from services.fulfilment.domain.stores import (
    DEFAULT_TIMEZONE,
    MAX_NAME_LENGTH,
    MAX_RADIUS_M,
    MAX_STORE_ID_LENGTH,
    MAX_ZONE_GEOJSON_BYTES,
    DeliveryZone,
    Store,
    StoreDraft,
    StoreStatus,
    validate_store,
)

PEOPLES_SQUARE = (31.2304, 121.4737)  # (latitude, longitude), Shanghai

VALID = StoreDraft(
    store_id="SH-001",
    name="People's Square",
    latitude=PEOPLES_SQUARE[0],
    longitude=PEOPLES_SQUARE[1],
    status=None,
    delivery_radius_m=3_000.0,
    delivery_zone_geojson="",
    opening_hours=[(1, "09:00", "22:00")],
    timezone="",
    max_active_orders=0,
    priority=0,
)

# Around the store, in GeoJSON order: [longitude, latitude].
SQUARE = [[[121.4, 31.2], [121.5, 31.2], [121.5, 31.3], [121.4, 31.3], [121.4, 31.2]]]
SQUARE_GEOJSON = json.dumps({"type": "Polygon", "coordinates": SQUARE})
# Two edges cross at (121.45, 31.25).
BOW_TIE = {
    "type": "Polygon",
    "coordinates": [[[121.4, 31.2], [121.5, 31.3], [121.5, 31.2], [121.4, 31.3], [121.4, 31.2]]],
}


def draft(**changes: Any) -> StoreDraft:
    return dataclasses.replace(VALID, **changes)


def problems(candidate: StoreDraft, field: str = "store") -> dict[str, str]:
    """Field path -> description of everything validation rejects."""
    with pytest.raises(InvalidArgument) as caught:
        validate_store(candidate, field)
    return {violation.field: violation.description for violation in caught.value.violations}


def zone_problem(geojson: object) -> str:
    text = geojson if isinstance(geojson, str) else json.dumps(geojson)
    found = problems(draft(delivery_zone_geojson=text))
    assert list(found) == ["store.delivery_zone_geojson"]
    return found["store.delivery_zone_geojson"]


def zone_of(geojson: object, *, at: tuple[float, float] = PEOPLES_SQUARE) -> DeliveryZone:
    text = geojson if isinstance(geojson, str) else json.dumps(geojson)
    store = validate_store(draft(latitude=at[0], longitude=at[1], delivery_zone_geojson=text))
    return DeliveryZone.of(store)


def test_a_valid_draft_becomes_a_store_with_the_defaults_filled_in() -> None:
    store = validate_store(VALID)
    assert store == Store(
        store_id="SH-001",
        name="People's Square",
        latitude=PEOPLES_SQUARE[0],
        longitude=PEOPLES_SQUARE[1],
        status=StoreStatus.ACTIVE,
        delivery_radius_m=3_000.0,
        delivery_zone_geojson="",
        opening_hours=(OpeningHours(1, time(9), time(22)),),
        timezone=DEFAULT_TIMEZONE,
        max_active_orders=0,
        priority=0,
    )
    assert DEFAULT_TIMEZONE == "Asia/Shanghai"


def test_a_given_status_and_timezone_are_kept() -> None:
    store = validate_store(draft(status=StoreStatus.PAUSED, timezone="Asia/Urumqi"))
    assert store.status is StoreStatus.PAUSED
    assert store.timezone == "Asia/Urumqi"


def test_no_opening_hours_is_a_valid_store_open_around_the_clock() -> None:
    assert validate_store(draft(opening_hours=[])).opening_hours == ()


def test_the_limits_themselves_are_allowed() -> None:
    store = validate_store(
        draft(
            store_id="s" * MAX_STORE_ID_LENGTH,
            name="n" * MAX_NAME_LENGTH,
            latitude=-90.0,
            longitude=180.0,
            delivery_radius_m=float(MAX_RADIUS_M),
            max_active_orders=0,
            priority=0,
        )
    )
    assert store.delivery_radius_m == MAX_RADIUS_M
    assert validate_store(draft(latitude=90.0, longitude=-180.0, delivery_radius_m=0.0)).latitude == 90.0


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"store_id": ""}, "store.store_id"),
        ({"store_id": "s" * (MAX_STORE_ID_LENGTH + 1)}, "store.store_id"),
        ({"store_id": "SH\n001"}, "store.store_id"),
        ({"store_id": "SH\x00001"}, "store.store_id"),
        ({"name": ""}, "store.name"),
        ({"name": "n" * (MAX_NAME_LENGTH + 1)}, "store.name"),
        ({"latitude": None}, "store.location"),
        ({"longitude": None}, "store.location"),
        ({"latitude": None, "longitude": None}, "store.location"),
        ({"latitude": 90.000001}, "store.location.latitude"),
        ({"latitude": -91.0}, "store.location.latitude"),
        ({"latitude": math.nan}, "store.location.latitude"),
        ({"latitude": math.inf}, "store.location.latitude"),
        ({"longitude": 180.5}, "store.location.longitude"),
        ({"longitude": -math.inf}, "store.location.longitude"),
        ({"longitude": math.nan}, "store.location.longitude"),
        ({"delivery_radius_m": -1.0}, "store.delivery_radius_m"),
        ({"delivery_radius_m": MAX_RADIUS_M + 1.0}, "store.delivery_radius_m"),
        ({"delivery_radius_m": math.nan}, "store.delivery_radius_m"),
        ({"delivery_radius_m": math.inf}, "store.delivery_radius_m"),
        ({"delivery_zone_geojson": "{"}, "store.delivery_zone_geojson"),
        ({"opening_hours": [(0, "09:00", "22:00")]}, "store.opening_hours[0].weekday"),
        ({"opening_hours": [(1, "09:00", "22:00"), (2, "9:00", "22:00")]}, "store.opening_hours[1].open"),
        ({"opening_hours": [(3, "09:00", "24:01")]}, "store.opening_hours[0].close"),
        ({"timezone": "Mars/Olympus_Mons"}, "store.timezone"),
        ({"timezone": "../../etc/passwd"}, "store.timezone"),
        ({"max_active_orders": -1}, "store.max_active_orders"),
        ({"priority": -1}, "store.priority"),
    ],
)
def test_each_bad_field_is_reported_at_its_path(changes: dict[str, Any], field: str) -> None:
    assert list(problems(draft(**changes))) == [field]


def test_every_problem_is_reported_in_one_answer() -> None:
    found = problems(
        draft(
            store_id="",
            name="",
            latitude=math.nan,
            longitude=200.0,
            delivery_radius_m=-5.0,
            delivery_zone_geojson=json.dumps(BOW_TIE),
            opening_hours=[(8, "25:00", "x")],
            timezone="Nowhere/Land",
            max_active_orders=-1,
            priority=-1,
        )
    )
    assert set(found) == {
        "store.store_id",
        "store.name",
        "store.location.latitude",
        "store.location.longitude",
        "store.delivery_radius_m",
        "store.delivery_zone_geojson",
        "store.opening_hours[0].weekday",
        "store.opening_hours[0].open",
        "store.opening_hours[0].close",
        "store.timezone",
        "store.max_active_orders",
        "store.priority",
    }


def test_a_field_prefix_names_the_row_of_an_import() -> None:
    found = problems(draft(name="", opening_hours=[(9, "09:00", "22:00")]), field="stores[12]")
    assert set(found) == {"stores[12].name", "stores[12].opening_hours[0].weekday"}


def test_the_descriptions_say_what_is_wanted() -> None:
    found = problems(draft(store_id="", name="x\ty", latitude=None, priority=-1))
    assert found == {
        "store.store_id": "is required",
        "store.name": "must not contain control characters",
        "store.location": "is required",
        "store.priority": "must not be negative",
    }


# Delivery zones: what is accepted


def test_a_polygon_zone_is_kept_as_the_caller_sent_it() -> None:
    assert validate_store(draft(delivery_zone_geojson=SQUARE_GEOJSON)).delivery_zone_geojson == SQUARE_GEOJSON


def test_a_feature_wrapping_a_polygon_is_accepted() -> None:
    feature = {
        "type": "Feature",
        "properties": {"name": "core"},
        "geometry": {"type": "Polygon", "coordinates": SQUARE},
    }
    zone = zone_of(feature)
    assert zone.covers(31.25, 121.45, 0.0)
    assert not zone.covers(31.35, 121.45, 0.0)


def test_a_multipolygon_covers_each_of_its_parts_and_nothing_between() -> None:
    east = [[[121.6, 31.2], [121.7, 31.2], [121.7, 31.3], [121.6, 31.3], [121.6, 31.2]]]
    zone = zone_of({"type": "MultiPolygon", "coordinates": [SQUARE, east]})
    assert zone.covers(31.25, 121.45, 0.0)
    assert zone.covers(31.25, 121.65, 0.0)
    assert not zone.covers(31.25, 121.55, 0.0)


def test_a_polygon_with_a_hole_does_not_cover_the_hole() -> None:
    hole = [[121.44, 31.24], [121.44, 31.26], [121.46, 31.26], [121.46, 31.24], [121.44, 31.24]]
    zone = zone_of({"type": "Polygon", "coordinates": [*SQUARE, hole]})
    assert not zone.covers(31.25, 121.45, 0.0)
    assert zone.covers(31.21, 121.41, 0.0)


def test_positions_with_an_altitude_are_accepted_and_the_altitude_ignored() -> None:
    ring = [[lng, lat, 12.5] for lng, lat in SQUARE[0]]
    assert zone_of({"type": "Polygon", "coordinates": [ring]}).covers(31.25, 121.45, 0.0)


# Delivery zones: what is rejected, and why


def test_a_self_intersecting_bow_tie_is_rejected_with_shapelys_reason() -> None:
    reason = explain_validity(shape(BOW_TIE))
    assert reason.startswith("Self-intersection")
    assert zone_problem(BOW_TIE) == f"is not a valid Polygon: {reason}"


def test_overlapping_parts_of_a_multipolygon_are_rejected() -> None:
    shifted = [[[lng + 0.05, lat] for lng, lat in SQUARE[0]]]
    assert "is not a valid MultiPolygon" in zone_problem(
        {"type": "MultiPolygon", "coordinates": [SQUARE, shifted]}
    )


@pytest.mark.parametrize(
    "geometry",
    [
        {"type": "Point", "coordinates": [121.47, 31.23]},
        {"type": "LineString", "coordinates": [[121.4, 31.2], [121.5, 31.3]]},
        {"type": "GeometryCollection", "geometries": [{"type": "Polygon", "coordinates": SQUARE}]},
        {"type": "FeatureCollection", "features": []},
    ],
)
def test_a_geometry_other_than_a_polygon_is_rejected_by_name(geometry: dict[str, Any]) -> None:
    assert zone_problem(geometry).endswith(f"not a {geometry['type']}")


def test_a_feature_around_a_point_is_rejected() -> None:
    point = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [121.47, 31.23]}}
    assert zone_problem(point).endswith("not a Point")


def test_a_feature_without_a_geometry_is_rejected() -> None:
    assert "without a geometry" in zone_problem({"type": "Feature", "geometry": None, "properties": {}})


def test_swapped_latitude_and_longitude_are_rejected_as_out_of_range() -> None:
    swapped = [[[lat, lng] for lng, lat in SQUARE[0]]]
    problem = zone_problem({"type": "Polygon", "coordinates": swapped})
    assert problem.startswith("coordinates[0][0] has latitude 121.4 outside -90..90")
    assert "longitude first" in problem


def test_a_longitude_out_of_range_is_rejected() -> None:
    ring = [[181.0, 31.2], [181.5, 31.2], [181.5, 31.3], [181.0, 31.2]]
    assert "longitude 181.0 outside" in zone_problem({"type": "Polygon", "coordinates": [ring]})


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_coordinates_that_are_not_finite_are_rejected(number: str) -> None:
    ring = f"[[121.4, 31.2], [{number}, 31.2], [121.5, 31.3], [121.4, 31.2]]"
    text = f'{{"type": "Polygon", "coordinates": [{ring}]}}'
    assert zone_problem(text) == "coordinates[0][1] must hold finite numbers"


@pytest.mark.parametrize(
    ("coordinates", "problem"),
    [
        ([], "non-empty array of linear rings"),
        ([[[121.4, 31.2], [121.5, 31.2], [121.4, 31.2]]], "at least 4 positions"),
        ([[[121.4, 31.2], [121.5, 31.2], [121.5, 31.3], [121.4, 31.3]]], "must be closed"),
        ([[[121.4, 31.2], [121.5], [121.5, 31.3], [121.4, 31.2]]], "position [longitude, latitude]"),
        ([[[121.4, 31.2], ["121.5", 31.2], [121.5, 31.3], [121.4, 31.2]]], "must hold numbers"),
        ([[[121.4, 31.2], [True, 31.2], [121.5, 31.3], [121.4, 31.2]]], "must hold numbers"),
        ("nowhere", "non-empty array of linear rings"),
    ],
)
def test_malformed_polygon_coordinates_are_rejected(coordinates: object, problem: str) -> None:
    assert problem in zone_problem({"type": "Polygon", "coordinates": coordinates})


def test_a_multipolygon_without_polygons_is_rejected() -> None:
    assert "non-empty array of polygons" in zone_problem({"type": "MultiPolygon", "coordinates": []})


def test_a_degenerate_ring_is_rejected() -> None:
    flat = [[[121.4, 31.2], [121.5, 31.2], [121.6, 31.2], [121.4, 31.2]]]
    assert zone_problem({"type": "Polygon", "coordinates": flat}).startswith("is not a valid Polygon")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{", "is not JSON"),
        ("not json", "is not JSON"),
        ("[1, 2]", "must be a GeoJSON Polygon or MultiPolygon object"),
        ('{"coordinates": []}', "not an object without a string type"),
        ("[" * 200_000 + "]" * 200_000, "nested too deeply"),
        ("1" * 5_000, "is not JSON this service reads"),
    ],
)
def test_text_that_is_not_a_geojson_object_is_rejected(text: str, problem: str) -> None:
    assert problem in zone_problem(text)


def test_a_zone_over_a_megabyte_is_rejected() -> None:
    padded = json.dumps({"type": "Polygon", "coordinates": SQUARE, "padding": "x" * MAX_ZONE_GEOJSON_BYTES})
    assert zone_problem(padded) == f"must be at most {MAX_ZONE_GEOJSON_BYTES} bytes"


def test_a_zone_is_measured_in_utf8_bytes_not_characters() -> None:
    # Under the limit in characters, over it in bytes (each 店 is three).
    padded = json.dumps(
        {"type": "Polygon", "coordinates": SQUARE, "name": "店" * (MAX_ZONE_GEOJSON_BYTES // 2)},
        ensure_ascii=False,
    )
    assert len(padded) < MAX_ZONE_GEOJSON_BYTES
    assert zone_problem(padded).startswith("must be at most")


def test_a_zone_problem_does_not_hide_the_others() -> None:
    found = problems(draft(name="", delivery_zone_geojson=json.dumps(BOW_TIE)))
    assert set(found) == {"store.name", "store.delivery_zone_geojson"}


# Where a store delivers


def test_a_radius_zone_covers_up_to_and_including_its_radius() -> None:
    zone = DeliveryZone.of(validate_store(draft(delivery_radius_m=3_000.0)))
    assert not zone.is_polygon
    assert zone.radius_m == 3_000.0
    assert zone.reach_m == 3_000.0
    assert zone.covers(31.0, 121.0, 0.0)
    assert zone.covers(31.0, 121.0, 3_000.0)
    assert not zone.covers(31.0, 121.0, 3_000.001)


def test_a_store_with_radius_zero_and_no_polygon_delivers_nowhere() -> None:
    zone = DeliveryZone.of(validate_store(draft(delivery_radius_m=0.0)))
    assert zone.reach_m == 0
    assert not zone.covers(*PEOPLES_SQUARE, 0.0)


def test_a_polygon_replaces_the_radius() -> None:
    zone = zone_of(SQUARE_GEOJSON)
    assert zone.is_polygon
    # Far beyond the 3 km radius but inside the square: the distance passed in plays no part.
    assert zone.covers(31.29, 121.49, 50_000.0)
    assert not zone.covers(31.31, 121.47, 0.0)


def test_a_point_on_the_polygon_edge_is_inside() -> None:
    zone = zone_of(SQUARE_GEOJSON)
    assert zone.covers(31.2, 121.45, 0.0)  # on the southern edge
    assert zone.covers(31.25, 121.5, 0.0)  # on the eastern edge
    assert not zone.covers(31.2 - 1e-9, 121.45, 0.0)


def test_a_polygon_vertex_is_inside() -> None:
    zone = zone_of(SQUARE_GEOJSON)
    for lng, lat in SQUARE[0]:
        assert zone.covers(lat, lng, 0.0)


def test_a_polygon_zone_reaches_past_its_farthest_corner_by_the_margin() -> None:
    zone = zone_of(SQUARE_GEOJSON)
    farthest = max(geodesic_distance_m(*PEOPLES_SQUARE, lat, lng) for lng, lat in SQUARE[0])
    assert zone.reach_m == pytest.approx(farthest * 1.01 + 100.0)


def test_a_store_built_around_broken_geojson_has_no_zone() -> None:
    store = dataclasses.replace(validate_store(VALID), delivery_zone_geojson=json.dumps(BOW_TIE))
    with pytest.raises(ValueError, match="Self-intersection"):
        DeliveryZone.of(store)


@st.composite
def zones_near_shanghai(draw: st.DrawFn) -> tuple[tuple[float, float], str]:
    """A store near Shanghai and a simple polygon around a point near it, up to ~60 km across."""
    store = (draw(st.floats(30.7, 31.8)), draw(st.floats(120.8, 122.0)))
    centre_lat, centre_lng = draw(st.floats(30.7, 31.8)), draw(st.floats(120.8, 122.0))
    corners = draw(st.integers(3, 12))
    step = 2 * math.pi / corners
    ring = []
    for index in range(corners):
        # One corner per sector, each at its own distance: a star-shaped ring never crosses itself.
        angle = step * (index + draw(st.floats(0.0, 0.9)))
        radius = draw(st.floats(0.002, 0.3))
        ring.append([centre_lng + radius * math.cos(angle), centre_lat + radius * math.sin(angle)])
    ring.append(ring[0])
    return store, json.dumps({"type": "Polygon", "coordinates": [ring]})


@settings(max_examples=150)
@given(
    zones_near_shanghai(),
    st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=1, max_size=30),
    st.lists(st.floats(0, 1), min_size=1, max_size=30),
)
def test_reach_bounds_the_distance_to_every_point_a_polygon_covers(
    case: tuple[tuple[float, float], str],
    interior: list[tuple[float, float]],
    along_edges: list[float],
) -> None:
    store_at, geojson = case
    polygon = shape(json.loads(geojson))
    assume(polygon.is_valid)
    zone = zone_of(geojson, at=store_at)
    min_lng, min_lat, max_lng, max_lat = polygon.bounds
    samples = [(min_lat + v * (max_lat - min_lat), min_lng + u * (max_lng - min_lng)) for u, v in interior]
    inside = [(lat, lng) for lat, lng in samples if zone.covers(lat, lng, 0.0)]
    on_boundary = [polygon.boundary.interpolate(share, normalized=True) for share in along_edges]
    inside += [(point.y, point.x) for point in on_boundary if zone.covers(point.y, point.x, 0.0)]
    inside += [(lat, lng) for lng, lat in shapely.get_coordinates(polygon).tolist()]
    for lat, lng in inside:
        assert geodesic_distance_m(*store_at, lat, lng) <= zone.reach_m
