"""Store assignment as pure rules: decide() over a catalogue snapshot and an in-memory live load.

Stores stand at known geodesic distances from People's Square; the customer is there unless a
test says otherwise. Noon and the small hours are on Wednesday 4 March 2026, Shanghai time.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
import shapely
from geographiclib.geodesic import Geodesic
from geopy.distance import geodesic
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import shape

from services.fulfilment.domain.assignment import (
    MAX_SPLIT_STORES,
    AssignmentRequest,
    Availability,
    Decision,
    FulfilmentType,
    Line,
    Outcome,
    Reason,
    decide,
)
from services.fulfilment.domain.catalogue import StoreCatalogue
from services.fulfilment.domain.geodesy import geodesic_distance_m
from services.fulfilment.domain.hours import parse_hours
from services.fulfilment.domain.stores import Store, StoreStatus

PEOPLES_SQUARE = (31.2304, 121.4737)  # (latitude, longitude), Shanghai
SHANGHAI = ZoneInfo("Asia/Shanghai")
NOON = datetime(2026, 3, 4, 12, 0, tzinfo=SHANGHAI)  # a Wednesday
SMALL_HOURS = datetime(2026, 3, 4, 2, 30, tzinfo=SHANGHAI)
PICKUP_RADIUS_M = 10_000.0
DAYTIME = [(day, "08:00", "22:00") for day in range(1, 8)]

DELIVERY = FulfilmentType.DELIVERY
PICKUP = FulfilmentType.PICKUP
IN_STORE = FulfilmentType.IN_STORE

Point = tuple[float, float]


def toward(distance_m: float, azimuth: float = 90.0, start: Point = PEOPLES_SQUARE) -> Point:
    """The point `distance_m` (geodesic) from `start` along `azimuth` (degrees from north)."""
    end = Geodesic.WGS84.Direct(start[0], start[1], azimuth, distance_m)
    return end["lat2"], end["lon2"]


def make_store(
    store_id: str,
    distance_m: float = 0.0,
    *,
    azimuth: float = 90.0,
    at: Point | None = None,
    priority: int = 0,
    status: StoreStatus = StoreStatus.ACTIVE,
    radius_m: float = 5_000.0,
    zone: str = "",
    hours: Sequence[tuple[int, str, str]] = (),
    timezone: str = "Asia/Shanghai",
    max_active_orders: int = 0,
) -> Store:
    latitude, longitude = at if at is not None else toward(distance_m, azimuth)
    return Store(
        store_id=store_id,
        name=f"Store {store_id}",
        latitude=latitude,
        longitude=longitude,
        status=status,
        delivery_radius_m=radius_m,
        delivery_zone_geojson=zone,
        opening_hours=tuple(parse_hours(list(hours))),
        timezone=timezone,
        max_active_orders=max_active_orders,
        priority=priority,
    )


class MemoryLoad:
    """Open orders and available stock per store, kept in dicts; records which stores were read."""

    def __init__(
        self,
        stock: Mapping[str, Mapping[str, int]] | None = None,
        open_orders: Mapping[str, int] | None = None,
    ) -> None:
        self.stock: dict[str, dict[str, int]] = {k: dict(v) for k, v in (stock or {}).items()}
        self.open_orders: dict[str, int] = dict(open_orders or {})
        self.read: list[str] = []

    def availability(self, store_ids: Sequence[str], skus: Sequence[str]) -> Mapping[str, Availability]:
        self.read.extend(store_ids)
        return {
            store_id: Availability(
                self.open_orders.get(store_id, 0),
                {sku: self.stock.get(store_id, {}).get(sku, 0) for sku in skus},
            )
            for store_id in store_ids
        }


def plenty(*store_ids: str, **open_orders: int) -> MemoryLoad:
    """Ten of every SKU the tests use at each named store."""
    return MemoryLoad({s: {"TEA": 10, "RICE": 10, "SOAP": 10} for s in store_ids}, open_orders)


def order(
    kind: FulfilmentType = DELIVERY,
    *,
    location: Point | None = PEOPLES_SQUARE,
    lines: Iterable[tuple[str, int]] = (("TEA", 1),),
    at: datetime = NOON,
    exclude: Iterable[str] = (),
    preferred: str = "",
    split: bool = False,
) -> AssignmentRequest:
    return AssignmentRequest(
        order_id="ORDER-1",
        location=location,
        lines=tuple(Line(sku, quantity, 100) for sku, quantity in lines),
        fulfilment_type=kind,
        at=at,
        exclude=frozenset(exclude),
        preferred_store_id=preferred,
        allow_split=split,
    )


def assign(
    stores: Iterable[Store],
    load: MemoryLoad,
    request: AssignmentRequest,
    *,
    pickup_radius_m: float = PICKUP_RADIUS_M,
) -> Decision:
    return decide(StoreCatalogue().build(stores), request, load, pickup_radius_m=pickup_radius_m)


def chosen(decision: Decision) -> list[str]:
    return [a.store_id for a in decision.assignments]


def reasons(decision: Decision) -> dict[str, list[str]]:
    """Each store's verdict: "CHOSEN", or the reasons it was not."""
    return {v.store_id: ["CHOSEN"] if v.chosen else list(v.reasons) for v in decision.verdicts}


def square_zone(south: float, west: float, north: float, east: float) -> str:
    ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
    return json.dumps({"type": "Polygon", "coordinates": [ring]})


# --- the nearest store that can serve --------------------------------------------------------


def test_the_nearest_store_with_stock_wins() -> None:
    stores = [make_store("NEAR", 500), make_store("MIDDLE", 1_000), make_store("FAR", 1_500)]
    load = MemoryLoad({"NEAR": {"TEA": 0}, "MIDDLE": {"TEA": 3}, "FAR": {"TEA": 9}})

    decision = assign(stores, load, order(lines=[("TEA", 2)]))

    assert chosen(decision) == ["MIDDLE"]
    assert decision.outcome is None
    (assignment,) = decision.assignments
    assert assignment.distance_m == pytest.approx(1_000.0, abs=1e-6)
    assert assignment.lines == (Line("TEA", 2, 100),)
    assert reasons(decision) == {
        "NEAR": [Reason.INSUFFICIENT_STOCK],
        "MIDDLE": ["CHOSEN"],
        "FAR": [Reason.FARTHER],
    }


def test_a_store_must_cover_every_line_of_the_order() -> None:
    stores = [make_store("TEA-ONLY", 300), make_store("BOTH", 900)]
    load = MemoryLoad({"TEA-ONLY": {"TEA": 5}, "BOTH": {"TEA": 5, "RICE": 5}})
    decision = assign(stores, load, order(lines=[("TEA", 1), ("RICE", 1)]))
    assert chosen(decision) == ["BOTH"]


def test_lines_naming_one_sku_are_added_together() -> None:
    stores = [make_store("THREE", 300), make_store("FIVE", 900)]
    load = MemoryLoad({"THREE": {"TEA": 3}, "FIVE": {"TEA": 5}})
    decision = assign(stores, load, order(lines=[("TEA", 2), ("TEA", 2)]))
    assert chosen(decision) == ["FIVE"]
    assert decision.assignments[0].lines == (Line("TEA", 2, 100), Line("TEA", 2, 100))


def test_a_tie_in_distance_goes_to_the_higher_priority() -> None:
    spot = toward(700)
    stores = [make_store("A-LOW", at=spot, priority=1), make_store("Z-HIGH", at=spot, priority=5)]
    decision = assign(stores, plenty("A-LOW", "Z-HIGH"), order())
    assert chosen(decision) == ["Z-HIGH"]
    assert reasons(decision)["A-LOW"] != ["CHOSEN"]


def test_a_tie_in_distance_and_priority_goes_to_the_lower_store_id() -> None:
    spot = toward(700)
    stores = [make_store(store_id, at=spot, priority=2) for store_id in ("SH-0010", "SH-0002", "SH-0100")]
    decision = assign(stores, plenty("SH-0010", "SH-0002", "SH-0100"), order())
    assert chosen(decision) == ["SH-0002"]


def test_a_tie_goes_past_the_higher_priority_store_when_it_cannot_serve() -> None:
    spot = toward(700)
    stores = [make_store("LOW", at=spot, priority=1), make_store("HIGH", at=spot, priority=5)]
    load = MemoryLoad({"LOW": {"TEA": 1}, "HIGH": {"TEA": 0}})
    assert chosen(assign(stores, load, order())) == ["LOW"]


def test_a_nearer_store_beats_a_higher_priority_one() -> None:
    stores = [make_store("NEAR", 700, priority=0), make_store("FAVOURED", 701, priority=9)]
    assert chosen(assign(stores, plenty("NEAR", "FAVOURED"), order())) == ["NEAR"]


@pytest.mark.parametrize("kind", [DELIVERY, PICKUP])
def test_paused_closed_and_excluded_stores_are_never_chosen(kind: FulfilmentType) -> None:
    stores = [
        make_store("PAUSED", 100, status=StoreStatus.PAUSED),
        make_store("CLOSED", 200, status=StoreStatus.CLOSED),
        make_store("EXCLUDED", 300),
        make_store("OPEN", 4_000),
    ]
    load = plenty("PAUSED", "CLOSED", "EXCLUDED", "OPEN")

    decision = assign(stores, load, order(kind, exclude=["EXCLUDED"]))

    assert chosen(decision) == ["OPEN"]
    assert reasons(decision) == {
        "PAUSED": [Reason.PAUSED],
        "CLOSED": [Reason.CLOSED],
        "EXCLUDED": [Reason.EXCLUDED],
        "OPEN": ["CHOSEN"],
    }
    # Without the one open store, none of the others steps in.
    alone = assign(stores, load, order(kind, exclude=["EXCLUDED", "OPEN"]))
    assert alone.assignments == []
    assert alone.outcome is Outcome.NO_STORE_IN_RANGE


# --- delivery zones and the pickup radius ----------------------------------------------------


def test_delivery_goes_only_to_a_store_whose_radius_covers_the_location() -> None:
    stores = [make_store("SMALL-RADIUS", 500, radius_m=400), make_store("WIDE-RADIUS", 1_500, radius_m=2_000)]
    decision = assign(stores, plenty("SMALL-RADIUS", "WIDE-RADIUS"), order())
    assert chosen(decision) == ["WIDE-RADIUS"]
    assert reasons(decision)["SMALL-RADIUS"] == [Reason.OUT_OF_ZONE]


def test_a_location_exactly_at_the_radius_is_delivered_to() -> None:
    spot = toward(1_234.5)
    exact = geodesic_distance_m(*PEOPLES_SQUARE, *spot)
    at_edge = make_store("EDGE", at=spot, radius_m=exact)
    assert chosen(assign([at_edge], plenty("EDGE"), order())) == ["EDGE"]
    short = make_store("EDGE", at=spot, radius_m=math.nextafter(exact, 0.0))
    assert assign([short], plenty("EDGE"), order()).outcome is Outcome.NO_STORE_IN_RANGE


def test_a_radius_of_zero_delivers_nowhere_not_even_next_door() -> None:
    decision = assign([make_store("NO-DELIVERY", 0, radius_m=0)], plenty("NO-DELIVERY"), order())
    assert decision.outcome is Outcome.NO_STORE_IN_RANGE
    assert reasons(decision) == {"NO-DELIVERY": [Reason.OUT_OF_ZONE]}


def test_a_zone_polygon_decides_instead_of_the_radius() -> None:
    lat, lng = PEOPLES_SQUARE
    elsewhere = square_zone(lat + 0.01, lng - 0.01, lat + 0.02, lng + 0.01)  # north of the customer
    around_customer = square_zone(lat - 0.01, lng - 0.01, lat + 0.01, lng + 0.01)
    stores = [
        make_store("WIDE-RADIUS-POLYGON-ELSEWHERE", 300, radius_m=50_000, zone=elsewhere),
        make_store("NO-RADIUS-POLYGON-HERE", 800, radius_m=0, zone=around_customer),
    ]
    decision = assign(stores, plenty(*(s.store_id for s in stores)), order())
    assert chosen(decision) == ["NO-RADIUS-POLYGON-HERE"]
    assert reasons(decision)["WIDE-RADIUS-POLYGON-ELSEWHERE"] == [Reason.OUT_OF_ZONE]


@pytest.mark.parametrize(
    ("location", "just_outside"),
    [
        ((31.125, 121.375), (31.125, 121.3749)),  # the south-western vertex
        ((31.375, 121.5), (31.3751, 121.5)),  # the apex
        ((31.125, 121.5), (31.1249, 121.5)),  # on the southern edge
        ((31.1875, 121.625), (31.1875, 121.6251)),  # on the eastern edge
        ((31.3125, 121.4375), (31.3126, 121.4375)),  # on the slanted north-western edge
    ],
)
def test_a_location_on_a_zone_edge_or_vertex_is_inside(location: Point, just_outside: Point) -> None:
    # Eighths of a degree are exact in binary, so these points lie exactly on the boundary.
    ring = [[121.375, 31.125], [121.625, 31.125], [121.625, 31.25], [121.5, 31.375], [121.375, 31.25]]
    zone = json.dumps({"type": "Polygon", "coordinates": [[*ring, ring[0]]]})
    store = make_store("ZONED", at=(31.2, 121.5), radius_m=0, zone=zone)
    assert chosen(assign([store], plenty("ZONED"), order(location=location))) == ["ZONED"]
    outside = assign([store], plenty("ZONED"), order(location=just_outside))
    assert outside.outcome is Outcome.NO_STORE_IN_RANGE


def test_pickup_ignores_delivery_zones() -> None:
    stores = [make_store("NO-DELIVERY", 2_000, radius_m=0), make_store("DELIVERS", 6_000, radius_m=9_000)]
    load = plenty("NO-DELIVERY", "DELIVERS")
    assert chosen(assign(stores, load, order(PICKUP))) == ["NO-DELIVERY"]
    assert chosen(assign(stores, load, order(DELIVERY))) == ["DELIVERS"]


def test_pickup_goes_no_farther_than_the_pickup_radius() -> None:
    spot = toward(12_000)
    exact = geodesic_distance_m(*PEOPLES_SQUARE, *spot)
    stores = [make_store("TWELVE-KM", at=spot)]
    load = plenty("TWELVE-KM")
    too_far = assign(stores, load, order(PICKUP), pickup_radius_m=10_000)
    assert too_far.outcome is Outcome.NO_STORE_IN_RANGE
    assert chosen(assign(stores, load, order(PICKUP), pickup_radius_m=exact)) == ["TWELVE-KM"]
    just_short = assign(stores, load, order(PICKUP), pickup_radius_m=math.nextafter(exact, 0.0))
    assert just_short.outcome is Outcome.NO_STORE_IN_RANGE


# --- opening hours ---------------------------------------------------------------------------


def test_a_night_time_order_goes_to_a_24_hour_store() -> None:
    stores = [make_store("DAYTIME", 300, hours=DAYTIME), make_store("ALL-NIGHT", 2_500)]
    load = plenty("DAYTIME", "ALL-NIGHT")

    night = assign(stores, load, order(at=SMALL_HOURS))
    assert chosen(night) == ["ALL-NIGHT"]
    assert reasons(night)["DAYTIME"] == [Reason.CLOSED]
    assert chosen(assign(stores, load, order(at=NOON))) == ["DAYTIME"]


def test_opening_hours_are_read_on_the_stores_own_clock() -> None:
    spot = toward(800)
    hours = [(day, "09:00", "21:00") for day in range(1, 8)]
    # Xinjiang keeps its own clock two hours behind Beijing time.
    stores = [
        make_store("URUMQI-TIME", at=spot, hours=hours, timezone="Asia/Urumqi", priority=1),
        make_store("BEIJING-TIME", at=spot, hours=hours, timezone="Asia/Shanghai"),
    ]
    load = plenty("URUMQI-TIME", "BEIJING-TIME")

    # 01:30 UTC: 09:30 in Shanghai, 07:30 in Urumqi.
    morning = assign(stores, load, order(at=datetime(2026, 3, 4, 1, 30, tzinfo=UTC)))
    assert chosen(morning) == ["BEIJING-TIME"]
    assert reasons(morning)["URUMQI-TIME"] == [Reason.CLOSED]
    # 13:30 UTC: 21:30 in Shanghai (just shut), 19:30 in Urumqi.
    evening = assign(stores, load, order(at=datetime(2026, 3, 4, 13, 30, tzinfo=UTC)))
    assert chosen(evening) == ["URUMQI-TIME"]


def test_a_span_past_midnight_keeps_the_store_open_into_the_next_morning() -> None:
    stores = [make_store("LATE", 300, hours=[(3, "18:00", "02:00")])]  # Wednesday evening
    load = plenty("LATE")
    thursday = datetime(2026, 3, 5, 1, 59, tzinfo=SHANGHAI)
    assert chosen(assign(stores, load, order(at=thursday))) == ["LATE"]
    at_close = assign(stores, load, order(at=thursday + timedelta(minutes=1)))
    assert at_close.outcome is Outcome.NO_STORE_OPEN
    at_open = datetime(2026, 3, 4, 18, 0, tzinfo=SHANGHAI)
    assert chosen(assign(stores, load, order(at=at_open))) == ["LATE"]


# --- capacity --------------------------------------------------------------------------------


def test_a_store_with_open_orders_at_its_limit_is_passed_over() -> None:
    stores = [make_store("BUSY", 300, max_active_orders=3), make_store("QUIET", 900)]

    at_limit = assign(stores, plenty("BUSY", "QUIET", BUSY=3), order())
    assert chosen(at_limit) == ["QUIET"]
    assert reasons(at_limit)["BUSY"] == [Reason.AT_CAPACITY]
    assert chosen(assign(stores, plenty("BUSY", "QUIET", BUSY=2), order())) == ["BUSY"]


def test_a_limit_of_zero_means_no_limit() -> None:
    stores = [make_store("UNLIMITED", 300, max_active_orders=0)]
    assert chosen(assign(stores, plenty("UNLIMITED", UNLIMITED=10_000), order())) == ["UNLIMITED"]


# --- why nothing qualified: the furthest step any store got past -----------------------------


def test_no_stores_at_all_is_no_store_in_range() -> None:
    assert assign([], MemoryLoad(), order()).outcome is Outcome.NO_STORE_IN_RANGE
    assert assign([], MemoryLoad(), order(PICKUP)).outcome is Outcome.NO_STORE_IN_RANGE


def test_when_no_active_store_covers_the_location_it_is_no_store_in_range() -> None:
    stores = [
        make_store("OUT-OF-ZONE", 3_000, radius_m=1_000),
        make_store("PAUSED", 100, status=StoreStatus.PAUSED),
        make_store("CLOSED-FOR-GOOD", 200, status=StoreStatus.CLOSED),
        make_store("EXCLUDED", 300),
    ]
    decision = assign(stores, plenty(*(s.store_id for s in stores)), order(exclude=["EXCLUDED"]))
    assert decision.assignments == []
    assert decision.outcome is Outcome.NO_STORE_IN_RANGE


def test_a_store_closed_for_good_never_turns_the_outcome_into_no_store_open() -> None:
    # Its zone does not even reach the customer; another store's wide zone makes the search reach it.
    stores = [
        make_store("SHUT", 20_000, status=StoreStatus.CLOSED, radius_m=100),
        make_store("WIDE", 60_000, radius_m=100_000),
    ]
    decision = assign(stores, plenty("SHUT", "WIDE"), order(exclude=["WIDE"]))
    assert decision.outcome is Outcome.NO_STORE_IN_RANGE


def test_stores_in_range_but_shut_at_that_hour_is_no_store_open() -> None:
    stores = [
        make_store("DAYTIME", 300, hours=DAYTIME),
        make_store("ALL-NIGHT-OUT-OF-ZONE", 3_000, radius_m=1_000),
        make_store("ALL-NIGHT-PAUSED", 400, status=StoreStatus.PAUSED),
    ]
    decision = assign(stores, plenty(*(s.store_id for s in stores)), order(at=SMALL_HOURS))
    assert decision.outcome is Outcome.NO_STORE_OPEN


def test_open_stores_all_at_capacity_is_at_capacity() -> None:
    stores = [
        make_store("DAYTIME", 300, hours=DAYTIME),
        make_store("ALL-NIGHT-BUSY", 600, max_active_orders=5),
        make_store("OUT-OF-ZONE", 3_000, radius_m=1_000),
    ]
    load = plenty(*(s.store_id for s in stores), **{"ALL-NIGHT-BUSY": 5})
    decision = assign(stores, load, order(at=SMALL_HOURS))
    assert decision.outcome is Outcome.AT_CAPACITY
    assert reasons(decision) == {
        "DAYTIME": [Reason.CLOSED],
        "ALL-NIGHT-BUSY": [Reason.AT_CAPACITY],
        "OUT-OF-ZONE": [Reason.OUT_OF_ZONE],
    }


@pytest.mark.parametrize("short_distance", [200, 900])
def test_an_open_store_with_room_but_short_of_stock_is_insufficient_stock(short_distance: float) -> None:
    stores = [
        make_store("SHORT", short_distance),
        make_store("BUSY", 500, max_active_orders=1),
        make_store("DAYTIME", 100, hours=DAYTIME),
    ]
    load = MemoryLoad({"SHORT": {"TEA": 1}, "BUSY": {"TEA": 9}, "DAYTIME": {"TEA": 9}}, {"BUSY": 1})
    decision = assign(stores, load, order(lines=[("TEA", 2)], at=SMALL_HOURS))
    assert decision.outcome is Outcome.INSUFFICIENT_STOCK
    assert reasons(decision)["SHORT"] == [Reason.INSUFFICIENT_STOCK]


# --- pickup at a preferred store -------------------------------------------------------------


def test_a_preferred_pickup_store_that_can_serve_wins_over_a_nearer_one() -> None:
    stores = [make_store("NEAR", 200), make_store("FAVOURITE", 7_000)]
    decision = assign(stores, plenty("NEAR", "FAVOURITE"), order(PICKUP, preferred="FAVOURITE"))
    assert chosen(decision) == ["FAVOURITE"]
    assert decision.assignments[0].distance_m == pytest.approx(7_000.0, abs=1e-6)


@pytest.mark.parametrize(
    ("favourite", "load", "reason"),
    [
        (
            make_store("FAVOURITE", 700),
            MemoryLoad({"NEAR": {"TEA": 1}, "FAR": {"TEA": 1}}),
            "INSUFFICIENT_STOCK",
        ),
        (
            make_store("FAVOURITE", 700, status=StoreStatus.PAUSED),
            plenty("NEAR", "FAR", "FAVOURITE"),
            "PAUSED",
        ),
        (
            make_store("FAVOURITE", 700, hours=[(1, "09:00", "10:00")]),
            plenty("NEAR", "FAR", "FAVOURITE"),
            "CLOSED",
        ),
        (
            make_store("FAVOURITE", 700, max_active_orders=1),
            plenty("NEAR", "FAR", "FAVOURITE", FAVOURITE=1),
            "AT_CAPACITY",
        ),
    ],
)
def test_a_preferred_pickup_store_that_cannot_serve_falls_back_to_the_nearest(
    favourite: Store, load: MemoryLoad, reason: str
) -> None:
    stores = [favourite, make_store("FAR", 3_000), make_store("NEAR", 1_000)]
    decision = assign(stores, load, order(PICKUP, preferred="FAVOURITE"))
    assert chosen(decision) == ["NEAR"]
    assert reasons(decision)["FAVOURITE"] == [reason]


def test_pickup_without_a_location_considers_only_the_preferred_store() -> None:
    stores = [make_store("FAVOURITE", 7_000), make_store("OTHER", 100)]
    served = assign(stores, plenty("FAVOURITE", "OTHER"), order(PICKUP, location=None, preferred="FAVOURITE"))
    assert chosen(served) == ["FAVOURITE"]
    assert served.assignments[0].distance_m == 0.0

    short = MemoryLoad({"OTHER": {"TEA": 5}})
    unserved = assign(stores, short, order(PICKUP, location=None, preferred="FAVOURITE"))
    assert unserved.assignments == []
    assert unserved.outcome is Outcome.INSUFFICIENT_STOCK
    assert set(short.read) == {"FAVOURITE"}


def test_a_preferred_store_plays_no_part_in_delivery() -> None:
    stores = [make_store("NEAR", 200), make_store("FAVOURITE", 2_000)]
    decision = assign(stores, plenty("NEAR", "FAVOURITE"), order(DELIVERY, preferred="FAVOURITE"))
    assert chosen(decision) == ["NEAR"]


# --- in store --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "till",
    [
        make_store("TILL", 5_000, status=StoreStatus.PAUSED),
        make_store("TILL", 5_000, status=StoreStatus.CLOSED),
        make_store("TILL", 5_000, hours=[(1, "09:00", "10:00")]),
        make_store("TILL", 5_000, max_active_orders=1),
        make_store("TILL", 50_000, radius_m=0),
    ],
    ids=["paused", "closed-for-good", "outside-its-hours", "at-capacity", "far-and-not-delivering"],
)
def test_an_in_store_sale_uses_the_tills_store_whatever_its_state(till: Store) -> None:
    stores = [till, make_store("NEARER", 100)]
    load = plenty("TILL", "NEARER", TILL=1)
    decision = assign(stores, load, order(IN_STORE, preferred="TILL", at=SMALL_HOURS))
    assert chosen(decision) == ["TILL"]
    assert decision.outcome is None
    assert reasons(decision) == {"TILL": ["CHOSEN"]}
    assert set(load.read) == {"TILL"}


def test_an_in_store_sale_short_of_stock_fails_with_insufficient_stock() -> None:
    stores = [make_store("TILL", 500), make_store("NEARER", 100)]
    load = MemoryLoad({"TILL": {"TEA": 1}, "NEARER": {"TEA": 10}})
    decision = assign(stores, load, order(IN_STORE, preferred="TILL", lines=[("TEA", 2)], split=True))
    assert decision.assignments == []
    assert decision.outcome is Outcome.INSUFFICIENT_STOCK
    assert reasons(decision) == {"TILL": [Reason.INSUFFICIENT_STOCK]}
    assert set(load.read) == {"TILL"}


def test_an_in_store_sale_without_a_location_is_at_the_store() -> None:
    decision = assign(
        [make_store("TILL", 5_000)], plenty("TILL"), order(IN_STORE, location=None, preferred="TILL")
    )
    assert decision.assignments[0].distance_m == 0.0


# --- splitting -------------------------------------------------------------------------------


def units(decision: Decision) -> dict[str, int]:
    total: dict[str, int] = {}
    for assignment in decision.assignments:
        for line in assignment.lines:
            total[line.sku] = total.get(line.sku, 0) + line.quantity
    return total


def test_a_split_takes_the_fewest_stores_nearest_first_splitting_a_line_when_needed() -> None:
    stores = [make_store("A", 100), make_store("B", 200), make_store("C", 300), make_store("D", 400)]
    load = MemoryLoad(
        {
            "A": {"TEA": 3},
            "B": {"RICE": 2},
            "C": {"TEA": 4, "RICE": 1},
            "D": {"TEA": 1, "RICE": 2},
        }
    )
    request = order(lines=[("TEA", 4), ("RICE", 2)], split=True)

    decision = assign(stores, load, request)

    # No one store has it all; of the pairs, A+B and A+C fall short and A+D, the nearest that
    # covers, comes before B+C. TEA is split: three from A, the last from D.
    assert [(a.store_id, a.lines) for a in decision.assignments] == [
        ("A", (Line("TEA", 3, 100),)),
        ("D", (Line("TEA", 1, 100), Line("RICE", 2, 100))),
    ]
    assert units(decision) == request.demand()
    assert decision.outcome is None
    assert {v.store_id for v in decision.verdicts if v.chosen} == {"A", "D"}


def test_a_split_uses_three_stores_when_no_two_cover() -> None:
    stores = [
        make_store("TEA", 100),
        make_store("RICE", 200),
        make_store("SOAP", 300),
        make_store("SPARE", 400),
    ]
    load = MemoryLoad({"TEA": {"TEA": 5}, "RICE": {"RICE": 5}, "SOAP": {"SOAP": 5}, "SPARE": {"TEA": 1}})
    request = order(lines=[("TEA", 2), ("RICE", 1), ("SOAP", 3)], split=True)
    decision = assign(stores, load, request)
    assert chosen(decision) == ["TEA", "RICE", "SOAP"]
    assert units(decision) == request.demand()


def test_one_store_that_covers_the_order_beats_a_nearer_split() -> None:
    stores = [make_store("HALF-1", 100), make_store("HALF-2", 200), make_store("WHOLE", 4_000)]
    load = MemoryLoad({"HALF-1": {"TEA": 1}, "HALF-2": {"TEA": 1}, "WHOLE": {"TEA": 2}})
    decision = assign(stores, load, order(lines=[("TEA", 2)], split=True))
    assert chosen(decision) == ["WHOLE"]


def test_without_allow_split_partial_stores_are_not_combined() -> None:
    stores = [make_store("HALF-1", 100), make_store("HALF-2", 200)]
    load = MemoryLoad({"HALF-1": {"TEA": 1}, "HALF-2": {"TEA": 1}})
    decision = assign(stores, load, order(lines=[("TEA", 2)]))
    assert decision.assignments == []
    assert decision.outcome is Outcome.INSUFFICIENT_STOCK


def test_a_split_uses_only_stores_that_could_take_the_order() -> None:
    stores = [
        make_store("SHUT", 100, hours=DAYTIME),
        make_store("BUSY", 200, max_active_orders=1),
        make_store("OUT-OF-ZONE", 300, radius_m=100),
        make_store("HALF-1", 400),
        make_store("HALF-2", 500),
    ]
    load = MemoryLoad({s.store_id: {"TEA": 1} for s in stores}, {"BUSY": 1})
    decision = assign(stores, load, order(lines=[("TEA", 2)], at=SMALL_HOURS, split=True))
    assert chosen(decision) == ["HALF-1", "HALF-2"]


def test_a_split_that_cannot_cover_the_order_fails_with_insufficient_stock() -> None:
    stores = [make_store("HALF-1", 100), make_store("HALF-2", 200)]
    load = MemoryLoad({"HALF-1": {"TEA": 1}, "HALF-2": {"TEA": 1}})
    decision = assign(stores, load, order(lines=[("TEA", 3)], split=True))
    assert decision.assignments == []
    assert decision.outcome is Outcome.INSUFFICIENT_STOCK


SKUS = ("TEA", "RICE", "SOAP")


@settings(max_examples=150)
@given(
    stock=st.lists(st.tuples(*(st.integers(0, 3) for _ in SKUS)), min_size=1, max_size=8),
    lines=st.lists(st.tuples(st.sampled_from(SKUS), st.integers(1, 4)), min_size=1, max_size=4),
)
def test_a_split_reserves_exactly_the_order_from_the_fewest_stores_nearest_first(
    stock: list[tuple[int, int, int]], lines: list[tuple[str, int]]
) -> None:
    stores = [make_store(f"S{index}", 100.0 * (index + 1)) for index in range(len(stock))]
    load = MemoryLoad(
        {s.store_id: dict(zip(SKUS, row, strict=True)) for s, row in zip(stores, stock, strict=True)}
    )
    request = order(lines=lines, split=True)
    demand = request.demand()

    decision = assign(stores, load, request)

    def covering(group: Sequence[str]) -> bool:
        return all(sum(load.stock[s][sku] for s in group) >= n for sku, n in demand.items())

    ids = [s.store_id for s in stores]
    fewest = next(
        (
            size
            for size in range(1, MAX_SPLIT_STORES + 1)
            if any(map(covering, itertools.combinations(ids, size)))
        ),
        None,
    )
    if fewest is None:
        assert decision.assignments == []
        assert decision.outcome is Outcome.INSUFFICIENT_STOCK
        return
    assert len(decision.assignments) == fewest
    assert units(decision) == demand
    assert [a.distance_m for a in decision.assignments] == sorted(a.distance_m for a in decision.assignments)
    for assignment in decision.assignments:
        taken: dict[str, int] = {}
        for line in assignment.lines:
            assert line.quantity > 0
            assert line.unit_price_cents == 100
            taken[line.sku] = taken.get(line.sku, 0) + line.quantity
        assert all(load.stock[assignment.store_id][sku] >= n for sku, n in taken.items())


# --- verdicts --------------------------------------------------------------------------------


def test_verdicts_record_the_chosen_store_and_why_each_other_lost() -> None:
    stores = [
        make_store("PAUSED", 100, status=StoreStatus.PAUSED),
        make_store("OUT-OF-ZONE", 200, radius_m=150),
        make_store("SHUT", 250, hours=[(1, "09:00", "10:00")]),
        make_store("BUSY", 300, max_active_orders=2),
        make_store("SHORT", 400),
        make_store("WINNER", 600),
        make_store("RUNNER-UP", 800),
    ]
    load = plenty("PAUSED", "OUT-OF-ZONE", "SHUT", "BUSY", "WINNER", "RUNNER-UP", BUSY=2)
    load.stock["SHORT"] = {"TEA": 0}

    decision = assign(stores, load, order(exclude=["NOT-A-STORE"]))

    assert reasons(decision) == {
        "PAUSED": [Reason.PAUSED],
        "OUT-OF-ZONE": [Reason.OUT_OF_ZONE],
        "SHUT": [Reason.CLOSED],
        "BUSY": [Reason.AT_CAPACITY],
        "SHORT": [Reason.INSUFFICIENT_STOCK],
        "WINNER": ["CHOSEN"],
        "RUNNER-UP": [Reason.FARTHER],
    }
    winner = next(v for v in decision.verdicts if v.chosen)
    assert winner.distance_m == pytest.approx(600.0, abs=1e-6)
    assert (winner.latitude, winner.longitude) == toward(600)
    for verdict in decision.verdicts:
        if verdict.distance_m is not None:
            exact = geodesic_distance_m(*PEOPLES_SQUARE, verdict.latitude, verdict.longitude)
            assert verdict.distance_m == pytest.approx(exact, abs=1e-6)


# --- decide() against a brute-force reading of the rules -------------------------------------


@dataclass(frozen=True)
class World:
    stores: list[Store]
    load: MemoryLoad
    request: AssignmentRequest
    pickup_radius_m: float


HOURS_SHAPES: list[list[tuple[int, str, str]]] = [
    [],
    [(day, "09:00", "21:00") for day in range(1, 8)],
    [(day, "22:00", "06:00") for day in range(1, 8)],  # nights only
    [(3, "00:00", "24:00")],  # Wednesdays only
    [(day, "10:00", "14:00") for day in range(1, 6)] + [(day, "17:00", "22:00") for day in range(1, 6)],
    [(5, "20:00", "20:00")],  # 24 hours from Friday 20:00
]
TIMEZONES = ["Asia/Shanghai", "Asia/Urumqi", "Asia/Tokyo", "Europe/London"]


@st.composite
def worlds(draw: st.DrawFn) -> World:
    """Up to 60 stores within 20 km of People's Square (some sharing a spot), with random status,
    zones, hours, capacity and stock, and one DELIVERY or PICKUP order. Hypothesis picks how many
    stores and the order; a seeded stream fills in each store (drawing each field from hypothesis
    costs more than the decision under test)."""
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    spots: list[Point] = []
    stores: list[Store] = []
    stock: dict[str, dict[str, int]] = {}
    open_orders: dict[str, int] = {}
    for index in range(draw(st.integers(0, 60))):
        if spots and rng.random() < 0.2:
            spot = rng.choice(spots)
        else:
            spot = toward(rng.uniform(0, 20_000), rng.uniform(-180, 180))
            spots.append(spot)
        zone = ""
        if rng.random() < 0.2:
            half = rng.uniform(0.005, 0.1)
            zone = square_zone(spot[0] - half, spot[1] - half, spot[0] + half, spot[1] + half)
        store_id = f"ST-{rng.randrange(1_000):03d}-{index}"
        stores.append(
            make_store(
                store_id,
                at=spot,
                priority=rng.randrange(4),
                status=rng.choice([StoreStatus.ACTIVE] * 6 + [StoreStatus.PAUSED, StoreStatus.CLOSED]),
                radius_m=rng.choice([0.0, 1_000.0, 3_000.0, 8_000.0, 15_000.0]),
                zone=zone,
                hours=rng.choice(HOURS_SHAPES),
                timezone=rng.choice(TIMEZONES),
                max_active_orders=rng.randrange(4),
            )
        )
        open_orders[store_id] = rng.randrange(5)
        stock[store_id] = {sku: rng.randrange(6) for sku in SKUS}
    ids = [s.store_id for s in stores]
    if bool(spots) and draw(st.booleans()):
        location = rng.choice(spots)
    else:
        location = toward(rng.uniform(0, 15_000), rng.uniform(-180, 180))
    request = order(
        draw(st.sampled_from([DELIVERY, PICKUP])),
        location=location,
        lines=draw(st.lists(st.tuples(st.sampled_from(SKUS), st.integers(1, 2)), min_size=1, max_size=3)),
        at=NOON + timedelta(minutes=draw(st.integers(0, 7 * 24 * 60))),
        exclude=draw(st.lists(st.sampled_from(ids), max_size=5)) if ids else [],
        preferred=draw(st.sampled_from(ids)) if bool(ids) and draw(st.booleans()) else "",
    )
    return World(stores, MemoryLoad(stock, open_orders), request, draw(st.floats(500, 25_000)))


def open_on_its_clock(store: Store, at: datetime) -> bool:
    """The hours as hours.py describes them, read directly off the store's wall clock."""
    if not store.opening_hours:
        return True
    local = at.astimezone(ZoneInfo(store.timezone))
    weekday, minute = local.isoweekday(), local.hour * 60 + local.minute

    def minutes(clock: time) -> int:
        return clock.hour * 60 + clock.minute

    for span in store.opening_hours:
        opens, closes = minutes(span.open), minutes(span.close)
        if closes > opens:
            if weekday == span.weekday and opens <= minute < closes:
                return True
        elif (weekday == span.weekday and minute >= opens) or (
            weekday == span.weekday % 7 + 1 and minute < closes
        ):
            return True
    return False


def delivers_to(store: Store, location: Point, distance: float) -> bool:
    if store.delivery_zone_geojson:
        polygon = shape(json.loads(store.delivery_zone_geojson))
        return bool(polygon.covers(shapely.Point(location[1], location[0])))
    return store.delivery_radius_m > 0 and distance <= store.delivery_radius_m


def brute_force(world: World) -> tuple[str | None, Outcome | None]:
    """Every store through every rule, nearest first (the preferred pickup store before all):
    the first that can serve, or the outcome named by the furthest step any store got past."""
    request, load = world.request, world.load
    assert request.location is not None
    location = request.location
    demand = request.demand()
    distance = {s.store_id: float(geodesic(location, (s.latitude, s.longitude)).meters) for s in world.stores}

    def failed_step(store: Store) -> int | None:
        """0: not an active, allowed store covering the location; 1: shut at that hour;
        2: at capacity; 3: short of stock; None: can serve."""
        store_id, kind = store.store_id, request.fulfilment_type
        in_range = (
            store_id not in request.exclude
            and store.status is StoreStatus.ACTIVE
            and (kind is not DELIVERY or delivers_to(store, location, distance[store_id]))
            # The preferred pickup store is weighed wherever it is; the rest within the radius.
            and (
                kind is not PICKUP
                or store_id == request.preferred_store_id
                or distance[store_id] <= world.pickup_radius_m
            )
        )
        if not in_range:
            return 0
        if not open_on_its_clock(store, request.at):
            return 1
        limit = store.max_active_orders
        if limit and load.open_orders[store.store_id] >= limit:
            return 2
        if any(load.stock[store.store_id].get(sku, 0) < n for sku, n in demand.items()):
            return 3
        return None

    ranked = sorted(world.stores, key=lambda s: (distance[s.store_id], -s.priority, s.store_id))
    if request.fulfilment_type is PICKUP:
        ranked.sort(key=lambda s: s.store_id != request.preferred_store_id)  # stable: the rest keep order
    furthest = 0
    for store in ranked:
        step = failed_step(store)
        if step is None:
            return store.store_id, None
        furthest = max(furthest, step)
    outcomes = [
        Outcome.NO_STORE_IN_RANGE,
        Outcome.NO_STORE_OPEN,
        Outcome.AT_CAPACITY,
        Outcome.INSUFFICIENT_STOCK,
    ]
    return None, outcomes[furthest]


@settings(max_examples=250)
@given(worlds())
def test_decide_agrees_with_a_brute_force_reading_of_the_rules(world: World) -> None:
    decision = decide(
        StoreCatalogue().build(world.stores), world.request, world.load, pickup_radius_m=world.pickup_radius_m
    )
    expected_store, expected_outcome = brute_force(world)

    assert (chosen(decision), decision.outcome) == (
        [expected_store] if expected_store else [],
        expected_outcome,
    )
    if expected_store is not None:
        store = next(s for s in world.stores if s.store_id == expected_store)
        assert world.request.location is not None
        distance = float(geodesic(world.request.location, (store.latitude, store.longitude)).meters)
        assert decision.assignments[0].distance_m == pytest.approx(distance, rel=1e-12, abs=1e-9)
        assert decision.assignments[0].lines == world.request.lines
        assert [v.store_id for v in decision.verdicts if v.chosen] == [expected_store]
