"""The spatial index lists stores exactly as a brute-force geodesic scan over every store would.

The reference is geopy's geodesic on WGS-84 and the order is (distance, -priority, store_id), so
stores at one spot come out by priority, then id. Worlds are seeded or drawn by hypothesis; each
query's brute-force distances are measured once and then checked against the full order, the
first few, a distance cut and a judge.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import Callable, Iterable, Sequence

import pytest
import shapely
from geographiclib.geodesic import Geodesic
from geopy.distance import geodesic
from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.fulfilment.domain.catalogue import Candidate, CatalogueSnapshot, StoreCatalogue
from services.fulfilment.domain.geodesy import geodesic_distance_m
from services.fulfilment.domain.stores import DeliveryZone, Store, StoreStatus

PEOPLES_SQUARE = (31.2304, 121.4737)  # (latitude, longitude), Shanghai
# The antipode of People's Square, by the Argentina-Uruguay border: ~20,000 km from all of China.
ANTIPODE = (-PEOPLES_SQUARE[0], PEOPLES_SQUARE[1] - 180.0)
BUENOS_AIRES = (-34.6037, -58.3816)
WESTERN_CHINA = ((28.0, 48.0), (75.0, 100.0))  # Xinjiang and Tibet: (lat range, lng range)
MAINLAND = ((18.0, 54.0), (73.0, 135.0))

Key = tuple[float, int, str]  # (distance, -priority, store_id)
Point = tuple[float, float]
# geopy measures in kilometres and scales to metres, so its figure can differ from the geodesic in
# metres in the last bit (a relative 2.2e-16); orders are compared exactly, distances to this.
ULP = 1e-12


def make_store(
    store_id: str,
    latitude: float,
    longitude: float,
    *,
    priority: int = 0,
    radius_m: float = 3_000.0,
    zone: str = "",
) -> Store:
    return Store(
        store_id=store_id,
        name=f"Store {store_id}",
        latitude=latitude,
        longitude=longitude,
        status=StoreStatus.ACTIVE,
        delivery_radius_m=radius_m,
        delivery_zone_geojson=zone,
        opening_hours=(),
        timezone="Asia/Shanghai",
        max_active_orders=0,
        priority=priority,
    )


def reference_distance(point: Point, store: Store) -> float:
    return float(geodesic(point, (store.latitude, store.longitude)).meters)


def exact_distance(point: Point, store: Store) -> float:
    """The geodesic in metres as the index measures it (geopy's number, without geopy's per-call
    overhead): the measure a limit "exactly at" a store's distance is taken in."""
    return geodesic_distance_m(point[0], point[1], store.latitude, store.longitude)


def brute_force(stores: Iterable[Store], point: Point) -> list[Key]:
    """Every store measured with geopy, in (distance, -priority, store_id) order."""
    return sorted((reference_distance(point, s), -s.priority, s.store_id) for s in stores)


def keys(candidates: Iterable[Candidate]) -> list[Key]:
    return [c.sort_key() for c in candidates]


def ids(found: Iterable[Key]) -> list[str]:
    return [store_id for _, _, store_id in found]


def assert_same(found: Sequence[Key], expected: Sequence[Key]) -> None:
    """The same stores in the same order, at the same distances (to geopy's last bit)."""
    assert ids(found) == ids(expected)
    assert [key[0] for key in found] == pytest.approx([key[0] for key in expected], rel=ULP, abs=ULP)


def cut(expected: Sequence[Key], stores: Sequence[Store], point: Point, limit: float) -> list[Key]:
    """The brute-force order of the stores no farther than `limit`; a store within rounding of
    the limit is measured again exactly, so one exactly at the limit is kept."""
    by_id = {s.store_id: s for s in stores}
    kept = []
    for key in expected:
        distance = key[0]
        if math.isclose(distance, limit, rel_tol=ULP, abs_tol=ULP):
            distance = exact_distance(point, by_id[key[2]])
        if distance <= limit:
            kept.append(key)
    return kept


def around(rng: random.Random, centre: Point, radius_m: float) -> Point:
    """A point uniformly spread over the disc of `radius_m` around `centre`."""
    end = Geodesic.WGS84.Direct(
        centre[0], centre[1], rng.uniform(-180, 180), radius_m * math.sqrt(rng.random())
    )
    return end["lat2"], end["lon2"]


def in_box(rng: random.Random, box: tuple[tuple[float, float], tuple[float, float]]) -> Point:
    (south, north), (west, east) = box
    return rng.uniform(south, north), rng.uniform(west, east)


def scatter(
    rng: random.Random, prefix: str, points: Sequence[Point], *, shared_every: int = 10
) -> list[Store]:
    """Stores at the given points, with every `shared_every`-th one moved onto an earlier store's
    spot (a mall: exact ties in distance from anywhere) and random priorities."""
    stores: list[Store] = []
    for index, point in enumerate(points):
        spot = point
        if stores and index % shared_every == 0:
            other = rng.choice(stores)
            spot = (other.latitude, other.longitude)
        stores.append(make_store(f"{prefix}-{index:05d}", *spot, priority=rng.randrange(4)))
    rng.shuffle(stores)  # the catalogue must not depend on the order it is given stores in
    return stores


def every_third(store_id: str) -> bool:
    return sum(map(ord, store_id)) % 3 == 0


def assert_agrees(
    snapshot: CatalogueSnapshot,
    stores: Sequence[Store],
    point: Point,
    rng: random.Random,
    *,
    full: bool = True,
    first: int = 25,
) -> None:
    """The index against one brute-force scan: in full (or the first `first` when `full` is
    False), cut at a store's exact distance, and with a judge leaving every third store out."""
    expected = brute_force(stores, point)
    if full:
        assert_same(keys(snapshot.nearest(*point)), expected)
    assert_same(keys(itertools.islice(snapshot.nearest(*point), first)), expected[:first])

    if expected:
        # A limit equal to one store's exact distance keeps that store and its ties.
        at_limit = rng.choice(stores)
        limit = exact_distance(point, at_limit)
        found = keys(snapshot.nearest(*point, max_distance_m=limit))
        assert_same(found, cut(expected, stores, point, limit))
        assert at_limit.store_id in ids(found)

    judged: list[str] = []

    def judge(candidate: Candidate) -> str | None:
        judged.append(candidate.store.store_id)
        return "EVERY_THIRD" if every_third(candidate.store.store_id) else None

    rest = [key for key in expected if not every_third(key[2])]
    nearest = snapshot.nearest(*point, judge=judge)
    if full:
        assert_same(keys(nearest), rest)
        assert sorted(judged) == sorted(s.store_id for s in stores)
    else:
        assert_same(keys(itertools.islice(nearest, first)), rest[:first])


def test_thousands_of_stores_across_china_come_out_in_brute_force_order() -> None:
    rng = random.Random(20240601)
    stores = scatter(rng, "CN", [in_box(rng, MAINLAND) for _ in range(2_000)])
    snapshot = StoreCatalogue().build(stores)
    assert len(snapshot) == len(stores)
    for _ in range(6):
        assert_agrees(snapshot, stores, in_box(rng, MAINLAND), rng)
    # From exactly where a store stands: it is at 0 m, ahead of everything else.
    standing = rng.choice(stores)
    assert_agrees(snapshot, stores, (standing.latitude, standing.longitude), rng)


def test_a_thousand_queries_get_the_brute_force_nearest_stores() -> None:
    rng = random.Random(7)
    stores = scatter(rng, "Q", [in_box(rng, MAINLAND) for _ in range(25)], shared_every=5)
    snapshot = StoreCatalogue().build(stores)
    for _ in range(1_000):
        point = in_box(rng, MAINLAND)
        assert_same(keys(itertools.islice(snapshot.nearest(*point), 3)), brute_force(stores, point)[:3])


def test_a_dense_city_centre_agrees_with_brute_force() -> None:
    rng = random.Random(31)
    stores = scatter(rng, "SH", [around(rng, PEOPLES_SQUARE, 2_000.0) for _ in range(3_000)])
    snapshot = StoreCatalogue().build(stores)
    assert_agrees(snapshot, stores, PEOPLES_SQUARE, rng)
    for _ in range(2):
        assert_agrees(snapshot, stores, around(rng, PEOPLES_SQUARE, 3_000.0), rng)
    for _ in range(4):
        assert_agrees(snapshot, stores, around(rng, PEOPLES_SQUARE, 3_000.0), rng, full=False, first=60)
    standing = rng.choice(stores)
    assert_agrees(snapshot, stores, (standing.latitude, standing.longitude), rng, full=False)


def test_sparse_western_china_agrees_with_brute_force() -> None:
    rng = random.Random(87)
    stores = scatter(rng, "XZ", [in_box(rng, WESTERN_CHINA) for _ in range(300)])
    snapshot = StoreCatalogue().build(stores)
    for _ in range(25):
        assert_agrees(snapshot, stores, in_box(rng, WESTERN_CHINA), rng)
    # Shanghai is thousands of kilometres from every one of them.
    assert_agrees(snapshot, stores, PEOPLES_SQUARE, rng)


def test_queries_far_from_every_store_agree_with_brute_force() -> None:
    rng = random.Random(11)
    stores = scatter(rng, "FAR", [around(rng, PEOPLES_SQUARE, 2_000.0) for _ in range(400)])
    snapshot = StoreCatalogue().build(stores)
    for point in (ANTIPODE, BUENOS_AIRES, (90.0, 0.0), (-90.0, 0.0), (0.0, -60.0)):
        assert_agrees(snapshot, stores, point, rng)
        assert list(snapshot.nearest(*point, max_distance_m=1_000_000.0)) == []


def test_stores_at_one_spot_come_out_by_priority_then_store_id() -> None:
    # More stores at one spot than the index fetches in its first batch.
    mall = [make_store(f"MALL-{i:03d}", *PEOPLES_SQUARE, priority=i % 7) for i in range(70)]
    rng = random.Random(5)
    nearby = [make_store(f"NEAR-{i:03d}", *around(rng, PEOPLES_SQUARE, 500.0)) for i in range(70)]
    stores = mall + nearby
    snapshot = StoreCatalogue().build(stores)

    found = keys(snapshot.nearest(*PEOPLES_SQUARE))
    assert found[:70] == sorted((0.0, -s.priority, s.store_id) for s in mall)
    assert_same(found, brute_force(stores, PEOPLES_SQUARE))
    for _ in range(5):
        assert_agrees(snapshot, stores, around(rng, PEOPLES_SQUARE, 1_000.0), rng)


def test_a_mall_in_the_tree_and_one_just_added_beside_it_tie_exactly() -> None:
    catalogue = StoreCatalogue(rebuild_after=1_000)
    built = [make_store(f"B-{i:02d}", *PEOPLES_SQUARE, priority=i % 3) for i in range(40)]
    added = [make_store(f"A-{i:02d}", *PEOPLES_SQUARE, priority=i % 4) for i in range(10)]
    snapshot = catalogue.update(catalogue.build(built), added)
    query = (31.2310, 121.4750)
    assert_same(keys(snapshot.nearest(*query)), brute_force(built + added, query))


points_anywhere = st.tuples(
    st.floats(min_value=-90, max_value=90, allow_nan=False),
    st.floats(min_value=-180, max_value=180, allow_nan=False),
)
points_near_shanghai = st.tuples(
    st.floats(min_value=31.0, max_value=31.5), st.floats(min_value=121.2, max_value=121.8)
)


@st.composite
def worlds(draw: st.DrawFn) -> tuple[list[Store], list[Point]]:
    """Up to 80 stores over a handful of spots (so many tie exactly), and a few queries."""
    spots = draw(st.lists(st.one_of(points_anywhere, points_near_shanghai), min_size=1, max_size=25))
    count = draw(st.integers(min_value=0, max_value=80))
    stores = [
        make_store(
            f"W-{draw(st.integers(0, 9_999)):04d}-{index}",
            *draw(st.sampled_from(spots)),
            priority=draw(st.integers(0, 3)),
        )
        for index in range(count)
    ]
    queries = draw(
        st.lists(
            st.one_of(st.sampled_from(spots), points_anywhere, points_near_shanghai), min_size=1, max_size=3
        )
    )
    return stores, queries


@settings(max_examples=120)
@given(worlds(), st.randoms(use_true_random=False))
def test_random_worlds_agree_with_brute_force(
    world: tuple[list[Store], list[Point]], rng: random.Random
) -> None:
    stores, queries = world
    snapshot = StoreCatalogue().build(stores)
    for point in queries:
        assert_agrees(snapshot, stores, point, rng, first=rng.randrange(1, 10))


@settings(max_examples=60)
@given(worlds(), st.data())
def test_a_distance_cut_keeps_exactly_the_stores_within_it(
    world: tuple[list[Store], list[Point]], data: st.DataObject
) -> None:
    stores, queries = world
    snapshot = StoreCatalogue().build(stores)
    for point in queries:
        expected = brute_force(stores, point)
        limits = [0.0, 1.0, 1e7, math.pi * 6_400_000]
        for store in stores[:6]:
            distance = exact_distance(point, store)
            limits += [distance, math.nextafter(distance, math.inf), math.nextafter(distance, 0.0)]
        limit = data.draw(st.sampled_from(limits))
        found = keys(snapshot.nearest(*point, max_distance_m=limit))
        assert_same(found, cut(expected, stores, point, limit))


def test_the_first_n_results_are_the_brute_force_first_n() -> None:
    rng = random.Random(404)
    stores = scatter(rng, "N", [around(rng, PEOPLES_SQUARE, 30_000.0) for _ in range(500)], shared_every=4)
    snapshot = StoreCatalogue().build(stores)
    for _ in range(8):
        point = around(rng, PEOPLES_SQUARE, 40_000.0)
        expected = brute_force(stores, point)
        for n in (1, 2, 15, 16, 17, 64, 65, 300):
            assert_same(keys(itertools.islice(snapshot.nearest(*point), n)), expected[:n])


def test_a_judge_leaves_out_its_stores_and_the_rest_keep_brute_force_order() -> None:
    rng = random.Random(3)
    stores = scatter(rng, "J", [around(rng, PEOPLES_SQUARE, 10_000.0) for _ in range(600)], shared_every=3)
    snapshot = StoreCatalogue().build(stores)
    point = around(rng, PEOPLES_SQUARE, 5_000.0)
    excluded = {
        s.store_id for index, s in enumerate(sorted(stores, key=lambda s: s.store_id)) if index % 3 == 0
    }
    reasons: dict[str, str] = {}

    def judge(candidate: Candidate) -> str | None:
        if candidate.store.store_id in excluded:
            reasons[candidate.store.store_id] = "EXCLUDED"
            return "EXCLUDED"
        return None

    found = keys(snapshot.nearest(*point, judge=judge))
    assert_same(found, [key for key in brute_force(stores, point) if key[2] not in excluded])
    assert set(reasons) == excluded


def current_agrees(snapshot: CatalogueSnapshot, current: dict[str, Store], rng: random.Random) -> None:
    stores = list(current.values())
    assert len(snapshot) == len(current)
    assert sorted(e.store_id for e in snapshot.entries()) == sorted(current)
    for store_id, store in current.items():
        entry = snapshot.get(store_id)
        assert entry is not None
        assert entry.store == store
    for _ in range(2):
        assert_agrees(snapshot, stores, around(rng, PEOPLES_SQUARE, 15_000.0), rng)


@pytest.mark.parametrize("rebuild_after", [12, 10_000])
def test_updated_snapshots_agree_with_brute_force_over_the_current_stores(rebuild_after: int) -> None:
    rng = random.Random(rebuild_after)
    catalogue = StoreCatalogue(rebuild_after=rebuild_after)
    first = scatter(rng, "U", [around(rng, PEOPLES_SQUARE, 15_000.0) for _ in range(300)], shared_every=6)
    current = {s.store_id: s for s in first}
    snapshot = catalogue.build(first)
    rebuilt = kept_recent = 0
    gone: list[str] = []
    for round_ in range(10):
        changed: list[Store] = []
        for index in range(rng.randrange(2, 6)):  # new stores, some on an existing store's spot
            lat, lng = around(rng, PEOPLES_SQUARE, 15_000.0)
            if index % 2:
                spot = rng.choice(list(current.values()))
                lat, lng = spot.latitude, spot.longitude
            changed.append(make_store(f"U-new-{round_}-{index}", lat, lng, priority=rng.randrange(4)))
        for store_id in rng.sample(sorted(current), 4):  # moved, or given a new priority
            lat, lng = around(rng, PEOPLES_SQUARE, 15_000.0)
            changed.append(make_store(store_id, lat, lng, priority=rng.randrange(4)))
        if gone:  # a store removed earlier comes back
            back = gone.pop()
            changed.append(make_store(back, *around(rng, PEOPLES_SQUARE, 15_000.0)))
        removed = rng.sample(sorted(set(current) - {s.store_id for s in changed}), 3)
        removed.append("never-existed")
        gone.extend(removed[:-1])

        before, listed_before = snapshot, keys(snapshot.nearest(*PEOPLES_SQUARE))
        snapshot = catalogue.update(snapshot, changed, removed)
        for store in changed:
            current[store.store_id] = store
        for store_id in removed:
            current.pop(store_id, None)
        if snapshot.recent:
            kept_recent += 1
        else:
            rebuilt += 1
        current_agrees(snapshot, current, rng)
        # A cut exactly at a store just added or moved (measured beside the tree, not in it).
        point, edge = around(rng, PEOPLES_SQUARE, 15_000.0), changed[0]
        limit = exact_distance(point, edge)
        found = keys(snapshot.nearest(*point, max_distance_m=limit))
        assert_same(found, cut(brute_force(current.values(), point), list(current.values()), point, limit))
        assert edge.store_id in ids(found)
        # A snapshot never changes: the one before the update still lists what it listed.
        assert keys(before.nearest(*PEOPLES_SQUARE)) == listed_before
    if rebuild_after < 100:
        assert rebuilt > 0
    assert kept_recent > 0


def pairs_in(box: tuple[tuple[float, float], tuple[float, float]]) -> st.SearchStrategy[tuple[Point, Point]]:
    (south, north), (west, east) = box
    point = st.tuples(st.floats(min_value=south, max_value=north), st.floats(min_value=west, max_value=east))
    return st.tuples(point, point)


@st.composite
def close_pairs(draw: st.DrawFn) -> tuple[Point, Point]:
    """Two points from a nanometre to 200 km apart, somewhere in China."""
    lat, lng = draw(st.tuples(st.floats(18, 54), st.floats(73, 135)))
    distance = draw(st.one_of(st.floats(1e-9, 0.01), st.floats(0.01, 10.0), st.floats(10.0, 200_000.0)))
    end = Geodesic.WGS84.Direct(lat, lng, draw(st.floats(-180, 180)), distance)
    return (lat, lng), (end["lat2"], end["lon2"])


@st.composite
def nearly_antipodal(draw: st.DrawFn) -> tuple[Point, Point]:
    lat, lng = draw(points_anywhere)
    nudge = st.floats(min_value=-1.0, max_value=1.0)
    lat2 = max(-90.0, min(90.0, -lat + draw(nudge)))
    lng2 = (lng + 360.0 + draw(nudge)) % 360.0 - 180.0
    return (lat, lng), (lat2, lng2)


any_pairs = st.one_of(
    st.tuples(points_anywhere, points_anywhere),
    nearly_antipodal(),
    close_pairs(),
    pairs_in(MAINLAND),
    pairs_in(WESTERN_CHINA),
)


def lone_candidate(store: Store, point: Point) -> Candidate:
    """The candidate the index gives for a one-store catalogue, its distance not yet read."""
    candidate = next(StoreCatalogue().build([store]).nearest(*point))
    assert candidate.lower <= candidate.upper
    return candidate


# Nanometres apart (adjacent floats), a few micrometres apart, and across the pole.
TINY_PAIRS = [
    ((18.0, 73.0), (18.0, 73.00000000000001)),
    ((31.2304, 121.4737), (31.230400000000003, 121.47370000000001)),
    ((45.0, 90.0), (45.00000000005, 90.0)),
    ((89.999999999, 0.0), (89.999999999, 180.0)),
]


def with_tiny_pairs(**others: float) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Each of TINY_PAIRS as an explicit example, with `others` for the remaining arguments."""

    def add_examples(test: Callable[..., None]) -> Callable[..., None]:
        for pair in TINY_PAIRS:
            test = example(pair=pair, **others)(test)
        return test

    return add_examples


@settings(max_examples=400)
@given(pair=any_pairs)
@with_tiny_pairs()
def test_the_upper_bound_is_never_below_the_geodesic(pair: tuple[Point, Point]) -> None:
    (store_lat, store_lng), point = pair
    store = make_store("S", store_lat, store_lng)
    candidate = lone_candidate(store, point)
    upper, lower = candidate.upper, candidate.lower
    assert upper >= reference_distance(point, store)
    assert upper >= exact_distance(point, store)
    assert lower <= exact_distance(point, store)
    assert candidate.distance == exact_distance(point, store)
    assert candidate.distance == pytest.approx(reference_distance(point, store), rel=ULP, abs=ULP)


def limits_around(distance: float, candidate: Candidate) -> list[float]:
    """Limits at, a hair either side of, and between the bounds of a distance."""
    return [
        distance,
        math.nextafter(distance, math.inf),
        math.nextafter(distance, 0.0),
        distance * (1 + 1e-6),
        distance * (1 - 1e-6),
        candidate.lower,
        candidate.upper,
        (candidate.lower + candidate.upper) / 2,
        0.0,
    ]


@settings(max_examples=300)
@given(
    pair=st.one_of(close_pairs(), pairs_in(MAINLAND)),
    choice=st.integers(min_value=0, max_value=9),
    other=st.floats(min_value=0.0, max_value=3e7),
)
@with_tiny_pairs(choice=0, other=0.0)
def test_within_agrees_with_an_exact_geodesic_comparison(
    pair: tuple[Point, Point], choice: int, other: float
) -> None:
    (store_lat, store_lng), point = pair
    store = make_store("S", store_lat, store_lng)
    distance = exact_distance(point, store)
    limits = [*limits_around(distance, lone_candidate(store, point)), other]
    for limit in (limits[choice], *limits):
        assert lone_candidate(store, point).within(limit) is (distance <= limit)


@settings(max_examples=200)
@given(pair=close_pairs(), other=st.floats(min_value=0.0, max_value=200_000.0))
@with_tiny_pairs(other=0.0)
def test_a_radius_zone_covers_exactly_the_points_within_the_radius(
    pair: tuple[Point, Point], other: float
) -> None:
    (store_lat, store_lng), point = pair
    distance = exact_distance(point, make_store("S", store_lat, store_lng))
    for radius in (*limits_around(distance, lone_candidate(make_store("S", *pair[0]), point)), other):
        store = make_store("S", store_lat, store_lng, radius_m=radius)
        assert lone_candidate(store, point).in_zone() is (radius > 0 and distance <= radius)


def square(centre: Point, half_degrees: float) -> list[list[list[float]]]:
    """A closed GeoJSON ring ([longitude, latitude]) around `centre`."""
    lat, lng = centre
    west, east, south, north = lng - half_degrees, lng + half_degrees, lat - half_degrees, lat + half_degrees
    return [[[west, south], [east, south], [east, north], [west, north], [west, south]]]


@settings(max_examples=150)
@given(close_pairs(), st.floats(min_value=0.001, max_value=2.0), st.floats(min_value=0, max_value=500_000))
def test_a_polygon_zone_decides_instead_of_the_radius(
    pair: tuple[Point, Point], half_degrees: float, radius: float
) -> None:
    (store_lat, store_lng), point = pair
    rings = square((store_lat, store_lng), half_degrees)
    zone = json.dumps({"type": "Polygon", "coordinates": rings})
    store = make_store("S", store_lat, store_lng, radius_m=radius, zone=zone)
    polygon = shapely.geometry.Polygon(rings[0])
    expected = bool(polygon.covers(shapely.Point(point[1], point[0])))
    assert lone_candidate(store, point).in_zone() is expected


def test_a_location_on_a_zone_edge_or_vertex_is_inside() -> None:
    # Eighths of a degree are exact in binary, so the points below lie exactly on the edges.
    rings = [
        [[121.375, 31.125], [121.625, 31.125], [121.625, 31.25], [121.5, 31.375], [121.375, 31.25]],
    ]
    rings[0].append(rings[0][0])
    zone = json.dumps({"type": "Polygon", "coordinates": rings})
    store = make_store("EDGE", *PEOPLES_SQUARE, radius_m=0.0, zone=zone)
    snapshot = StoreCatalogue().build([store])

    def inside(point: Point) -> bool:
        (candidate,) = snapshot.nearest(*point)
        covered = DeliveryZone.of(store).covers(*point, reference_distance(point, store))
        assert candidate.in_zone() is covered
        return covered

    for vertex_lng, vertex_lat in rings[0]:
        assert inside((vertex_lat, vertex_lng))
    assert inside((31.125, 121.5))  # on the southern edge
    assert inside((31.1875, 121.375))  # on the western edge
    assert inside((31.3125, 121.5625))  # on the slanted north-eastern edge
    assert not inside((31.1249, 121.5))  # just south of the southern edge
    assert not inside((31.1875, 121.3749))  # just west of the western edge
    assert not inside((31.3126, 121.5626))  # just past the slanted edge


def test_an_empty_catalogue_lists_nothing() -> None:
    snapshot = StoreCatalogue().build([])
    assert len(snapshot) == 0
    assert list(snapshot.nearest(*PEOPLES_SQUARE)) == []
    assert snapshot.get("anything") is None
