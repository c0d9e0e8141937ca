"""What fulfilment's requests may hold, checked once by the domain: every problem in one answer, at
the path google.rpc.BadRequest names; and the rules the choice and FindNearestStores share."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from quanyu.errors import InvalidArgument
from services.fulfilment.domain import requests
from services.fulfilment.domain.assignment import (
    AssignmentRequest,
    FulfilmentType,
    Line,
    NearestQuery,
    Reason,
    Verdict,
    decide,
    nearest_matches,
)
from services.fulfilment.domain.catalogue import StoreCatalogue
from services.fulfilment.domain.coordinates import MapPoint, wgs84_to_gcj02
from services.fulfilment.domain.reservations import DecisionRecord, ReservationState
from services.fulfilment.domain.stores import StoreStatus, checked_batch, validate_store
from tests.fulfilment.test_assignment import SMALL_HOURS, MemoryLoad, make_store
from tests.fulfilment.test_stores import VALID, draft

NOON = datetime(2026, 3, 4, 4, 0, tzinfo=UTC)
HERE = MapPoint(31.2304, 121.4737)


def fields(error: pytest.ExceptionInfo[InvalidArgument]) -> list[str]:
    return [v.field for v in error.value.violations]


def test_every_problem_of_an_assignment_is_named_at_once() -> None:
    with pytest.raises(InvalidArgument) as caught:
        requests.assignment_request(
            "",
            MapPoint(95.0, 121.0),
            [Line("TEA", 1), Line("", 0, -1)],
            "DELIVERY",
            NOON,
            exclude=["ok", "bad\x00id"],
        )
    assert fields(caught) == [
        "order_id",
        "location.latitude",
        "exclude_store_ids[1]",
        "lines[1].sku",
        "lines[1].quantity",
        "lines[1].unit_price_cents",
    ]


@pytest.mark.parametrize(
    ("kind", "location", "preferred", "field"),
    [
        ("", HERE, "", "fulfilment_type"),
        ("7", HERE, "", "fulfilment_type"),
        ("DELIVERY", None, "", "location"),
        ("PICKUP", None, "", "location"),
        ("IN_STORE", HERE, "", "preferred_store_id"),
    ],
)
def test_what_each_kind_of_order_needs(
    kind: str, location: MapPoint | None, preferred: str, field: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        requests.assignment_request("o", location, [Line("TEA", 1)], kind, NOON, preferred_store_id=preferred)
    assert fields(caught) == [field]


def test_a_pickup_with_only_its_store_and_a_location_from_a_chinese_map_are_both_fine() -> None:
    assert (
        requests.assignment_request(
            "o", None, [Line("T", 1)], "PICKUP", NOON, preferred_store_id="s"
        ).location
        is None
    )
    gcj = wgs84_to_gcj02(HERE.latitude, HERE.longitude)
    request = requests.assignment_request("o", MapPoint(*gcj, "GCJ02"), [Line("T", 1)], "DELIVERY", NOON)
    assert request.location is not None
    assert math.dist(request.location, (HERE.latitude, HERE.longitude)) < 1e-8
    with pytest.raises(InvalidArgument) as caught:
        requests.assignment_request("o", MapPoint(31.0, 121.0, "9"), [Line("T", 1)], "DELIVERY", NOON)
    assert fields(caught) == ["location.system"]


def test_a_nearest_query_fills_its_defaults_and_caps_its_limit() -> None:
    query = requests.nearest_query(HERE, limit=0, max_distance_m=0.0, lines=[], fulfilment_type="", at=NOON)
    assert (query.limit, query.max_distance_m, query.request.fulfilment_type) == (
        10,
        math.inf,
        FulfilmentType.PICKUP,
    )
    assert (
        requests.nearest_query(
            HERE, limit=500, max_distance_m=1.0, lines=[], fulfilment_type="", at=NOON
        ).limit
        == 100
    )
    with pytest.raises(InvalidArgument) as caught:
        requests.nearest_query(
            None, limit=-1, max_distance_m=math.nan, lines=[], fulfilment_type="9", at=NOON
        )
    assert fields(caught) == ["location", "fulfilment_type", "limit", "max_distance_m"]


def test_stock_levels_name_the_level_at_fault() -> None:
    assert requests.stock_levels("s", [("TEA", 3), ("MILK", 0)]) == {"TEA": 3, "MILK": 0}
    with pytest.raises(InvalidArgument) as caught:
        requests.stock_levels("", [("TEA", 3), ("TEA", -1)])
    assert fields(caught) == ["store_id", "levels[1].sku", "levels[1].on_hand"]
    with pytest.raises(InvalidArgument) as caught:
        requests.stock_query("s", ["TEA", ""])
    assert fields(caught) == ["skus[1]"]


def test_a_store_with_an_unknown_status_or_no_store_at_all_names_the_field() -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_store(draft(status="9"))
    assert fields(caught) == ["store.status"]
    with pytest.raises(InvalidArgument) as missing:
        validate_store(None)
    assert fields(missing) == ["store"]


def test_a_store_from_a_chinese_map_is_kept_in_wgs84() -> None:
    wgs = (HERE.latitude, HERE.longitude)
    gcj = wgs84_to_gcj02(*wgs)
    store = validate_store(draft(latitude=gcj[0], longitude=gcj[1], coordinate_system="GCJ02"))
    assert math.dist((store.latitude, store.longitude), wgs) < 1e-8


def test_an_import_reports_each_bad_row_under_its_index_and_loads_the_rest() -> None:
    good, errors = checked_batch([VALID, draft(name="", opening_hours=[(9, "09:00", "22:00")]), VALID])
    assert [s.store_id for s in good] == [VALID.store_id]
    assert [(e.index, e.field) for e in errors] == [
        (1, "stores[1].name"),
        (1, "stores[1].opening_hours[0].weekday"),
        (2, "stores[2].store_id"),
    ]
    with pytest.raises(InvalidArgument) as caught:
        checked_batch([VALID] * 1001)
    assert fields(caught) == ["stores"]


def test_the_choice_and_find_nearest_stores_rule_a_store_out_for_the_same_first_reason() -> None:
    stores = [
        make_store("paused", 100, status=StoreStatus.PAUSED),
        make_store("shut", 200, hours=[(3, "09:00", "18:00")]),
        make_store("far-off", 300, radius_m=100),
        make_store("full", 400, max_active_orders=2),
        make_store("empty", 500),
        make_store("excluded", 600),
        make_store("open", 700),
    ]
    snapshot = StoreCatalogue().build(stores)
    load = MemoryLoad(
        stock={s.store_id: {"TEA": 5} for s in stores if s.store_id != "empty"}, open_orders={"full": 2}
    )
    request = AssignmentRequest(
        "o",
        (31.2304, 121.4737),
        (Line("TEA", 1),),
        FulfilmentType.DELIVERY,
        SMALL_HOURS,
        frozenset({"excluded"}),
    )
    chosen = decide(snapshot, request, load, pickup_radius_m=10_000)
    listed = nearest_matches(snapshot, NearestQuery(request, limit=10, max_distance_m=math.inf), load)
    first = {m.store.store_id: next(iter(m.reasons), None) for m in listed}
    assert {v.store_id: next(iter(v.reasons), None) for v in chosen.verdicts} == first
    assert first == {
        "paused": Reason.PAUSED,
        "shut": Reason.CLOSED,
        "far-off": Reason.OUT_OF_ZONE,
        "full": Reason.AT_CAPACITY,
        "empty": Reason.INSUFFICIENT_STOCK,
        "excluded": Reason.EXCLUDED,
        "open": None,
    }


def test_an_order_is_committed_once_any_line_is_active_while_any_holds_and_else_released() -> None:
    of = ReservationState.of_order
    assert of([ReservationState.RELEASED, ReservationState.COMMITTED]) is ReservationState.COMMITTED
    assert of([ReservationState.RELEASED, ReservationState.ACTIVE]) is ReservationState.ACTIVE
    assert of([ReservationState.RELEASED]) is ReservationState.RELEASED
    assert of([]) is ReservationState.RELEASED
    assert [s.value for s in ReservationState] == ["ACTIVE", "RELEASED", "COMMITTED"]  # as stored


def test_an_explained_decision_measures_every_store_and_lists_them_nearest_first() -> None:
    near, far = make_store("near", 100), make_store("far", 900)

    record = DecisionRecord(
        "o",
        NOON,
        "DELIVERY",
        (31.2304, 121.4737),
        [],
        [
            Verdict("far", far.latitude, far.longitude, None),
            Verdict("near", near.latitude, near.longitude, None),
        ],
        "INSUFFICIENT_STOCK",
    )
    explained = record.explained()
    assert [v.store_id for v in explained.verdicts] == ["near", "far"]
    assert [round(v.distance_m or 0) for v in explained.verdicts] == [100, 900]
