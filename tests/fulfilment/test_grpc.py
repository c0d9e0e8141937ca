"""FulfilmentService over gRPC, called as ops, a store terminal and the orders service would."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import grpc
import pytest
from geopy.distance import geodesic
from google.protobuf.timestamp_pb2 import Timestamp

from quanyu.auth import Role
from quanyu.clients import error_reason, field_violations
from quanyu.common.v1 import common_pb2
from quanyu.config import Settings
from quanyu.fulfilment.v1 import fulfilment_pb2, fulfilment_pb2_grpc
from services.fulfilment import bootstrap
from services.fulfilment.domain.coordinates import wgs84_to_gcj02
from tests.conftest import TokenFactory, bearer, running

Stub = fulfilment_pb2_grpc.FulfilmentServiceStub
PEOPLES_SQUARE = (31.2304, 121.4737)
DELIVERY = common_pb2.FULFILMENT_TYPE_DELIVERY
PICKUP = common_pb2.FULFILMENT_TYPE_PICKUP
IN_STORE = common_pb2.FULFILMENT_TYPE_IN_STORE
# A Wednesday afternoon in Shanghai.
AFTERNOON = datetime(2026, 11, 18, 6, 0, tzinfo=UTC)


@pytest.fixture
def stub(settings: Settings, database_url: str) -> Iterator[Stub]:
    settings.fulfilment.database_url = database_url
    bootstrap.migrate(settings)
    with running(bootstrap.build_app(settings), settings) as channel:
        yield Stub(channel)


@pytest.fixture
def ops(token: TokenFactory) -> tuple[tuple[str, str]]:
    return bearer(token(Role.OPS))


@pytest.fixture
def service(token: TokenFactory) -> tuple[tuple[str, str]]:
    return bearer(token(Role.SERVICE))


def at(lat: float, lng: float, system: int = common_pb2.COORDINATE_SYSTEM_WGS84) -> common_pb2.LatLng:
    return common_pb2.LatLng(latitude=lat, longitude=lng, system=system)  # type: ignore[arg-type]


def stamp(when: datetime) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(when)
    return value


def store(store_id: str, lat: float, lng: float, /, **fields: object) -> fulfilment_pb2.Store:
    defaults: dict[str, object] = {"name": f"Store {store_id}", "delivery_radius_m": 3000.0}
    defaults.update(fields)
    return fulfilment_pb2.Store(store_id=store_id, location=at(lat, lng), **defaults)  # type: ignore[arg-type]


def line(sku: str, quantity: int = 1, price: int = 1000) -> common_pb2.Line:
    return common_pb2.Line(sku=sku, quantity=quantity, unit_price_cents=price)


def upsert(stub: Stub, ops: tuple[tuple[str, str]], *stores: fulfilment_pb2.Store) -> None:
    for one in stores:
        stub.UpsertStore(fulfilment_pb2.UpsertStoreRequest(store=one), metadata=ops)


def stock(stub: Stub, ops: tuple[tuple[str, str]], store_id: str, **levels: int) -> None:
    stub.SetStock(
        fulfilment_pb2.SetStockRequest(
            store_id=store_id,
            levels=[fulfilment_pb2.SkuQuantity(sku=k, on_hand=v) for k, v in levels.items()],
        ),
        metadata=ops,
    )


def assign(
    stub: Stub, meta: tuple[tuple[str, str]], order_id: str, **fields: object
) -> list[fulfilment_pb2.Assignment]:
    fields.setdefault("fulfilment_type", DELIVERY)
    fields.setdefault("location", at(*PEOPLES_SQUARE))
    fields.setdefault("lines", [line("tea")])
    fields.setdefault("at_time", stamp(AFTERNOON))
    request = fulfilment_pb2.AssignStoreRequest(order_id=order_id, **fields)  # type: ignore[arg-type]
    return list(stub.AssignStore(request, metadata=meta).assignments)


def failure(call: object, *args: object, **kwargs: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, **kwargs)  # type: ignore[operator]
    return caught.value


# --- stores --------------------------------------------------------------------------------


def test_a_store_from_a_chinese_map_is_kept_in_wgs84(stub: Stub, ops: tuple[tuple[str, str]]) -> None:
    gcj = wgs84_to_gcj02(*PEOPLES_SQUARE)
    sent = fulfilment_pb2.Store(
        store_id="SH-1", name="People's Square", location=at(*gcj, system=common_pb2.COORDINATE_SYSTEM_GCJ02)
    )
    upsert(stub, ops, sent)
    kept = stub.GetStore(fulfilment_pb2.GetStoreRequest(store_id="SH-1"), metadata=ops).store
    assert kept.location.latitude == pytest.approx(PEOPLES_SQUARE[0], abs=1e-7)
    assert kept.location.longitude == pytest.approx(PEOPLES_SQUARE[1], abs=1e-7)
    assert kept.location.system == common_pb2.COORDINATE_SYSTEM_WGS84
    assert kept.status == fulfilment_pb2.STORE_STATUS_ACTIVE
    assert kept.timezone == "Asia/Shanghai"


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (store("", 31.0, 121.0), "store.store_id"),
        (store("x", 91.0, 121.0), "store.location.latitude"),
        (store("x", float("nan"), 121.0), "store.location.latitude"),
        (store("x", 31.0, float("inf")), "store.location.longitude"),
        (store("x", 31.0, 121.0, delivery_radius_m=-1.0), "store.delivery_radius_m"),
        (store("x", 31.0, 121.0, timezone="Mars/Olympus"), "store.timezone"),
        (store("x", 31.0, 121.0, max_active_orders=-1), "store.max_active_orders"),
        (
            store("x", 31.0, 121.0, delivery_zone_geojson='{"type": "Point", "coordinates": [121, 31]}'),
            "store.delivery_zone_geojson",
        ),
        (
            store(
                "x",
                31.0,
                121.0,
                opening_hours=[fulfilment_pb2.OpeningHours(weekday=8, open="09:00", close="21:00")],
            ),
            "store.opening_hours[0].weekday",
        ),
        (
            store(
                "x",
                31.0,
                121.0,
                opening_hours=[fulfilment_pb2.OpeningHours(weekday=1, open="9am", close="21:00")],
            ),
            "store.opening_hours[0].open",
        ),
    ],
)
def test_a_bad_store_is_invalid_argument_naming_the_field(
    stub: Stub, ops: tuple[tuple[str, str]], bad: fulfilment_pb2.Store, field: str
) -> None:
    error = failure(stub.UpsertStore, fulfilment_pb2.UpsertStoreRequest(store=bad), metadata=ops)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert field in [name for name, _ in field_violations(error)]


def test_an_unknown_store_is_not_found(stub: Stub, ops: tuple[tuple[str, str]]) -> None:
    error = failure(stub.GetStore, fulfilment_pb2.GetStoreRequest(store_id="nowhere"), metadata=ops)
    assert error.code() is grpc.StatusCode.NOT_FOUND


def test_stores_are_listed_in_pages_that_cover_every_store_once(
    stub: Stub, ops: tuple[tuple[str, str]], token: TokenFactory
) -> None:
    upsert(stub, ops, *[store(f"S{i:02d}", 31.0 + i / 100, 121.0) for i in range(7)])
    seen: list[str] = []
    page_token = ""
    while True:
        page = stub.ListStores(
            fulfilment_pb2.ListStoresRequest(page_size=3, page_token=page_token), metadata=ops
        )
        seen += [s.store_id for s in page.stores]
        page_token = page.next_page_token
        if not page_token:
            break
    assert seen == [f"S{i:02d}" for i in range(7)]
    first = stub.ListStores(fulfilment_pb2.ListStoresRequest(page_size=3), metadata=ops)
    for forged in (first.next_page_token + "x", "garbage"):
        error = failure(stub.ListStores, fulfilment_pb2.ListStoresRequest(page_token=forged), metadata=ops)
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    # A page token is bound to its caller: another caller cannot use it.
    other = bearer(token(Role.CHANNEL, channel="CHANNEL_APP"))
    error = failure(
        stub.ListStores, fulfilment_pb2.ListStoresRequest(page_token=first.next_page_token), metadata=other
    )
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert failure(stub.ListStores, fulfilment_pb2.ListStoresRequest(page_size=-1), metadata=ops).code() is (
        grpc.StatusCode.INVALID_ARGUMENT
    )


# --- stock ---------------------------------------------------------------------------------


def test_stock_tells_on_hand_reserved_and_available(
    stub: Stub, ops: tuple[tuple[str, str]], service: tuple[tuple[str, str]]
) -> None:
    upsert(stub, ops, store("A", *PEOPLES_SQUARE))
    stock(stub, ops, "A", tea=5, cake=2)
    assign(stub, service, "o-1", lines=[line("tea", 3)])
    levels = {
        lv.sku: lv for lv in stub.GetStock(fulfilment_pb2.GetStockRequest(store_id="A"), metadata=ops).levels
    }
    assert (levels["tea"].on_hand, levels["tea"].reserved, levels["tea"].available) == (5, 3, 2)
    assert levels["cake"].available == 2
    # On hand can never drop below what orders have reserved.
    error = failure(
        stub.SetStock,
        fulfilment_pb2.SetStockRequest(
            store_id="A", levels=[fulfilment_pb2.SkuQuantity(sku="tea", on_hand=2)]
        ),
        metadata=ops,
    )
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(error) == "BELOW_RESERVED"
    error = failure(
        stub.SetStock,
        fulfilment_pb2.SetStockRequest(
            store_id="A", levels=[fulfilment_pb2.SkuQuantity(sku="tea", on_hand=-1)]
        ),
        metadata=ops,
    )
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in field_violations(error)] == ["levels[0].on_hand"]


def test_a_store_terminal_keeps_only_its_own_stock(
    stub: Stub, ops: tuple[tuple[str, str]], token: TokenFactory
) -> None:
    upsert(stub, ops, store("A", *PEOPLES_SQUARE), store("B", 31.24, 121.48))
    till = bearer(token(Role.STORE, store_id="A"))
    stock(stub, till, "A", tea=4)
    for target in ("B", "does-not-exist"):
        request = fulfilment_pb2.SetStockRequest(
            store_id=target, levels=[fulfilment_pb2.SkuQuantity(sku="tea", on_hand=1)]
        )
        assert failure(stub.SetStock, request, metadata=till).code() is grpc.StatusCode.PERMISSION_DENIED
        read = fulfilment_pb2.GetStockRequest(store_id=target)
        assert failure(stub.GetStock, read, metadata=till).code() is grpc.StatusCode.PERMISSION_DENIED


# --- assignment ----------------------------------------------------------------------------


def test_the_nearest_store_with_stock_for_every_line_is_chosen_and_reserved(
    stub: Stub, ops: tuple[tuple[str, str]], service: tuple[tuple[str, str]]
) -> None:
    upsert(
        stub,
        ops,
        store("near", 31.2310, 121.4740),
        store("middle", 31.2350, 121.4760),
        store("far", 31.2450, 121.4800),
    )
    stock(stub, ops, "near", tea=5)  # no cake
    stock(stub, ops, "middle", tea=5, cake=5)
    stock(stub, ops, "far", tea=5, cake=5)
    placed = assign(stub, service, "o-1", lines=[line("tea", 2), line("cake", 1)])
    assert [a.store_id for a in placed] == ["middle"]
    assert placed[0].distance_m == pytest.approx(
        geodesic(PEOPLES_SQUARE, (31.2350, 121.4760)).meters,
        abs=1e-6,
    )
    assert [(ln.sku, ln.quantity) for ln in placed[0].lines] == [("tea", 2), ("cake", 1)]
    # Asking again for the same order reserves nothing more and returns the same store.
    assert assign(stub, service, "o-1", lines=[line("tea", 2), line("cake", 1)]) == placed
    levels = stub.GetStock(
        fulfilment_pb2.GetStockRequest(store_id="middle", skus=["tea"]), metadata=ops
    ).levels
    assert levels[0].reserved == 2


def test_equal_distance_goes_to_higher_priority_then_lower_store_id(
    stub: Stub, ops: tuple[tuple[str, str]], service: tuple[tuple[str, str]]
) -> None:
    upsert(
        stub,
        ops,
        store("b", 31.2320, 121.4750, priority=1),
        store("a", 31.2320, 121.4750, priority=1),
        store("c", 31.2320, 121.4750, priority=0),
    )
    for store_id in "abc":
        stock(stub, ops, store_id, tea=10)
    assert [a.store_id for a in assign(stub, service, "o-1")] == ["a"]
    upsert(stub, ops, store("c", 31.2320, 121.4750, priority=5))
    assert [a.store_id for a in assign(stub, service, "o-2")] == ["c"]


def test_delivery_follows_the_zone_polygon_while_pickup_ignores_it(
    stub: Stub, ops: tuple[tuple[str, str]], service: tuple[tuple[str, str]]
) -> None:
    # The near store delivers only to a small square east of it; the customer is west.
    zone = {
        "type": "Polygon",
        "coordinates": [
            [[121.475, 31.229], [121.480, 31.229], [121.480, 31.233], [121.475, 31.233], [121.475, 31.229]]
        ],
    }
    upsert(
        stub,
        ops,
        store("near", 31.2305, 121.4745, delivery_zone_geojson=json.dumps(zone)),
        store("far", 31.2400, 121.4700),
    )
    stock(stub, ops, "near", tea=5)
    stock(stub, ops, "far", tea=5)
    assert [a.store_id for a in assign(stub, service, "d-1")] == ["far"]
    assert [a.store_id for a in assign(stub, service, "p-1", fulfilment_type=PICKUP)] == ["near"]
    # A customer exactly on the zone's edge is inside it.
    on_edge = at(31.231, 121.480)
    assert [a.store_id for a in assign(stub, service, "d-2", location=on_edge)] == ["near"]


def test_a_store_is_open_within_its_hours_on_its_own_clock(
    stub: Stub, ops: tuple[tuple[str, str]], token: TokenFactory
) -> None:
    day_hours = [fulfilment_pb2.OpeningHours(weekday=d, open="09:00", close="22:00") for d in range(1, 8)]
    upsert(stub, ops, store("day", 31.2310, 121.4740, opening_hours=day_hours))
    upsert(stub, ops, store("kashgar", 39.47, 75.99, opening_hours=day_hours, timezone="Asia/Urumqi"))
    night = datetime(2026, 11, 18, 17, 30, tzinfo=UTC)  # 01:30 in Shanghai, 23:30 in Urumqi
    morning = datetime(2026, 11, 18, 2, 30, tzinfo=UTC)  # 10:30 in Shanghai, 08:30 in Urumqi

    def is_open(store_id: str, when: datetime) -> bool:
        request = fulfilment_pb2.CheckStoreOpenRequest(store_id=store_id, at_time=stamp(when))
        return bool(stub.CheckStoreOpen(request, metadata=ops).open)

    assert (is_open("day", night), is_open("day", morning)) == (False, True)
    assert (is_open("kashgar", night), is_open("kashgar", morning)) == (False, False)
    upsert(
        stub,
        ops,
        store("day", 31.2310, 121.4740, opening_hours=day_hours, status=fulfilment_pb2.STORE_STATUS_PAUSED),
    )
    assert not is_open("day", morning)
    other_till = bearer(token(Role.STORE, store_id="kashgar"))
    error = failure(
        stub.CheckStoreOpen, fulfilment_pb2.CheckStoreOpenRequest(store_id="day"), metadata=other_till
    )
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED


def test_a_night_order_goes_to_the_store_open_around_the_clock(
    stub: Stub, ops: tuple[tuple[str, str]], service: tuple[tuple[str, str]]
) -> None:
    day_hours = [fulfilment_pb2.OpeningHours(weekday=d, open="09:00", close="22:00") for d in range(1, 8)]
    upsert(
        stub, ops, store("day", 31.2310, 121.4740, opening_hours=day_hours), store("cloud", 31.2400, 121.4800)
    )
    stock(stub, ops, "day", tea=5)
    stock(stub, ops, "cloud", tea=5)
    night = datetime(2026, 11, 18, 17, 30, tzinfo=UTC)  # 01:30 in Shanghai
    assert [a.store_id for a in assign(stub, service, "n-1", at_time=stamp(night))] == ["cloud"]
    assert [a.store_id for a in assign(stub, service, "d-1")] == ["day"]


@pytest.mark.parametrize(
    ("scenario", "reason"),
    [
        ("far away", "NO_STORE_IN_RANGE"),
        ("closed", "NO_STORE_OPEN"),
        ("busy", "AT_CAPACITY"),
        ("sold out", "INSUFFICIENT_STOCK"),
    ],
)
def test_when_nothing_qualifies_the_reason_says_what_stopped_it(
    stub: Stub, ops: tuple[tuple[str, str]], service: tuple[tuple[str, str]], scenario: str, reason: str
) -> None:
    shut = [fulfilment_pb2.OpeningHours(weekday=d, open="23:00", close="23:30") for d in range(1, 8)]
    fields: dict[str, object] = {
        "far away": {},
        "closed": {"opening_hours": shut},
        "busy": {"max_active_orders": 1},
        "sold out": {},
    }[scenario]  # type: ignore[assignment]
    location = (39.9, 116.4) if scenario == "far away" else (31.2310, 121.4740)
    upsert(stub, ops, store("only", *location, **fields))
    stock(stub, ops, "only", tea=0 if scenario == "sold out" else 5)
    if scenario == "busy":
        assign(stub, service, "first", lines=[line("tea")])
    error = failure(assign, stub, service, "o-x")
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(error) == reason
    explained = stub.ExplainAssignment(
        fulfilment_pb2.ExplainAssignmentRequest(order_id="o-x"), metadata=ops
    ).decision
    assert explained.outcome_reason == reason


def test_a_new_orders_assignment_is_explained_with_what_it_reserved(
    stub: Stub, ops: tuple[tuple[str, str]], service: tuple[tuple[str, str]]
) -> None:
    # On PostgreSQL a new order's reservation and its decision are written by one statement.
    upsert(stub, ops, store("near", 31.2310, 121.4740), store("far", 31.2600, 121.5000))
    stock(stub, ops, "near", tea=5, cake=2)
    stock(stub, ops, "far", tea=5, cake=2)
    assign(stub, service, "o-1", lines=[line("tea", 2), line("cake", 1, 2500)])
    why = stub.ExplainAssignment(
        fulfilment_pb2.ExplainAssignmentRequest(order_id="o-1"), metadata=ops
    ).decision
    assert why.order_id == "o-1"
    assert why.outcome_reason == ""
    assert [a.store_id for a in why.assignments] == ["near"]
    assert sorted((ln.sku, ln.quantity, ln.unit_price_cents) for ln in why.assignments[0].lines) == [
        ("cake", 1, 2500),
        ("tea", 2, 1000),
    ]
    assert [c.store_id for c in why.candidates if c.chosen] == ["near"]
    near = stub.GetStock(fulfilment_pb2.GetStockRequest(store_id="near"), metadata=ops).levels
    assert {level.sku: level.reserved for level in near} == {"cake": 1, "tea": 2}


def test_a_rejected_store_is_excluded_and_the_order_goes_to_the_next_nearest(
    stub: Stub, ops: tuple[tuple[str, str]], service: tuple[tuple[str, str]]
) -> None:
    upsert(stub, ops, store("first", 31.2310, 121.4740), store("second", 31.2350, 121.4760))
    stock(stub, ops, "first", tea=1)
    stock(stub, ops, "second", tea=1)
    assert [a.store_id for a in assign(stub, service, "o-1")] == ["first"]
    stub.ReleaseReservation(
        fulfilment_pb2.ReleaseReservationRequest(order_id="o-1", store_id="first"), metadata=service
    )
    # Releasing twice changes nothing.
    stub.ReleaseReservation(fulfilment_pb2.ReleaseReservationRequest(order_id="o-1"), metadata=service)
    again = assign(stub, service, "o-1", exclude_store_ids=["first"])
    assert [a.store_id for a in again] == ["second"]
    first = stub.GetStock(fulfilment_pb2.GetStockRequest(store_id="first"), metadata=ops).levels[0]
    assert first.reserved == 0
    why = stub.ExplainAssignment(
        fulfilment_pb2.ExplainAssignmentRequest(order_id="o-1"), metadata=ops
    ).decision
    verdicts = {c.store_id: c for c in why.candidates}
    assert verdicts["second"].chosen
    assert list(verdicts["first"].reasons) == ["EXCLUDED"]
    assert verdicts["first"].distance_m > 0


def test_committing_takes_stock_off_the_shelf_once(
    stub: Stub, ops: tuple[tuple[str, str]], service: tuple[tuple[str, str]]
) -> None:
    upsert(stub, ops, store("A", *PEOPLES_SQUARE))
    stock(stub, ops, "A", tea=5)
    assign(stub, service, "o-1", lines=[line("tea", 2)])
    for _ in range(2):
        stub.CommitReservation(fulfilment_pb2.CommitReservationRequest(order_id="o-1"), metadata=service)
    level = stub.GetStock(fulfilment_pb2.GetStockRequest(store_id="A"), metadata=ops).levels[0]
    assert (level.on_hand, level.reserved) == (3, 0)
    # A committed order is not released afterwards.
    stub.ReleaseReservation(fulfilment_pb2.ReleaseReservationRequest(order_id="o-1"), metadata=service)
    level = stub.GetStock(fulfilment_pb2.GetStockRequest(store_id="A"), metadata=ops).levels[0]
    assert (level.on_hand, level.reserved) == (3, 0)
    assign(stub, service, "o-2", lines=[line("tea", 1)])
    stub.ReleaseReservation(fulfilment_pb2.ReleaseReservationRequest(order_id="o-2"), metadata=service)
    error = failure(
        stub.CommitReservation, fulfilment_pb2.CommitReservationRequest(order_id="o-2"), metadata=service
    )
    assert error_reason(error) == "RESERVATION_RELEASED"


def commits(*order_ids: str) -> fulfilment_pb2.BatchCommitReservationsRequest:
    return fulfilment_pb2.BatchCommitReservationsRequest(
        requests=[fulfilment_pb2.CommitReservationRequest(order_id=o) for o in order_ids]
    )


def test_a_batch_commits_each_orders_stock_once_all_or_none(
    stub: Stub, ops: tuple[tuple[str, str]], service: tuple[tuple[str, str]]
) -> None:
    upsert(stub, ops, store("A", *PEOPLES_SQUARE))
    stock(stub, ops, "A", tea=10)
    for order_id, quantity in (("o-1", 2), ("o-2", 3), ("o-3", 1)):
        assign(stub, service, order_id, lines=[line("tea", quantity)])
    stub.ReleaseReservation(fulfilment_pb2.ReleaseReservationRequest(order_id="o-3"), metadata=service)

    # A released order in the batch refuses all of it, naming the request; nothing is committed.
    error = failure(stub.BatchCommitReservations, commits("o-1", "o-3"), metadata=service)
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(error) == "RESERVATION_RELEASED"
    assert "requests[1]" in (error.details() or "")
    level = stub.GetStock(fulfilment_pb2.GetStockRequest(store_id="A"), metadata=ops).levels[0]
    assert (level.on_hand, level.reserved) == (10, 5)
    error = failure(stub.BatchCommitReservations, commits("o-1", "never"), metadata=service)
    assert error.code() is grpc.StatusCode.NOT_FOUND
    assert "requests[1]" in (error.details() or "")

    # Delivered again, or naming an order twice, a batch takes each order's stock once.
    for _ in range(2):
        stub.BatchCommitReservations(commits("o-1", "o-2", "o-1"), metadata=service)
    level = stub.GetStock(fulfilment_pb2.GetStockRequest(store_id="A"), metadata=ops).levels[0]
    assert (level.on_hand, level.reserved) == (5, 0)


@pytest.mark.parametrize(
    ("request_", "fields"),
    [
        (commits(), ["requests"]),
        (commits(*(f"o-{n}" for n in range(101))), ["requests"]),
        (commits("o-1", "", "x" * 65), ["requests[1].order_id", "requests[2].order_id"]),
    ],
    ids=["none", "over the cap", "bad order ids"],
)
def test_a_bad_batch_of_commits_names_its_fields(
    stub: Stub,
    service: tuple[tuple[str, str]],
    request_: fulfilment_pb2.BatchCommitReservationsRequest,
    fields: list[str],
) -> None:
    error = failure(stub.BatchCommitReservations, request_, metadata=service)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert [name for name, _ in field_violations(error)] == fields


def test_pickup_prefers_the_customers_store_and_in_store_uses_the_till(
    stub: Stub, ops: tuple[tuple[str, str]], service: tuple[tuple[str, str]]
) -> None:
    shut = [fulfilment_pb2.OpeningHours(weekday=d, open="23:00", close="23:30") for d in range(1, 8)]
    upsert(
        stub, ops, store("near", 31.2310, 121.4740), store("chosen", 31.2400, 121.4800, opening_hours=shut)
    )
    stock(stub, ops, "near", tea=5)
    stock(stub, ops, "chosen", tea=5)
    # The chosen store is closed now: pickup falls back to the nearest that can serve.
    placed = assign(stub, service, "p-1", fulfilment_type=PICKUP, preferred_store_id="chosen")
    assert [a.store_id for a in placed] == ["near"]
    upsert(stub, ops, store("chosen", 31.2400, 121.4800))
    placed = assign(stub, service, "p-2", fulfilment_type=PICKUP, preferred_store_id="chosen")
    assert [a.store_id for a in placed] == ["chosen"]
    till = assign(stub, service, "t-1", fulfilment_type=IN_STORE, preferred_store_id="chosen", location=None)
    assert [a.store_id for a in till] == ["chosen"]
    error = failure(assign, stub, service, "t-2", fulfilment_type=IN_STORE, preferred_store_id="ghost")
    assert error.code() is grpc.StatusCode.NOT_FOUND


def test_a_split_uses_the_fewest_stores_nearest_first(
    stub: Stub, ops: tuple[tuple[str, str]], service: tuple[tuple[str, str]]
) -> None:
    upsert(
        stub,
        ops,
        store("tea-shop", 31.2310, 121.4740),
        store("cake-shop", 31.2330, 121.4750),
        store("far-cake", 31.2400, 121.4800),
    )
    stock(stub, ops, "tea-shop", tea=5)
    stock(stub, ops, "cake-shop", cake=5)
    stock(stub, ops, "far-cake", cake=5)
    lines = [line("tea", 2), line("cake", 1)]
    assert error_reason(failure(assign, stub, service, "o-1", lines=lines)) == "INSUFFICIENT_STOCK"
    placed = assign(stub, service, "o-2", lines=lines, allow_split=True)
    assert {a.store_id: [(ln.sku, ln.quantity) for ln in a.lines] for a in placed} == {
        "tea-shop": [("tea", 2)],
        "cake-shop": [("cake", 1)],
    }


def test_find_nearest_stores_says_which_can_fulfil_and_why_not(
    stub: Stub, ops: tuple[tuple[str, str]], token: TokenFactory
) -> None:
    upsert(
        stub,
        ops,
        store("open", 31.2310, 121.4740),
        store("paused", 31.2320, 121.4745, status=fulfilment_pb2.STORE_STATUS_PAUSED),
        store("empty", 31.2330, 121.4750),
        store("beyond", 31.3000, 121.5000),
    )
    stock(stub, ops, "open", tea=3)
    stock(stub, ops, "paused", tea=3)
    channel = bearer(token(Role.CHANNEL, channel="CHANNEL_WECHAT_MINI_PROGRAM"))
    found = stub.FindNearestStores(
        fulfilment_pb2.FindNearestStoresRequest(
            location=at(*PEOPLES_SQUARE),
            limit=10,
            max_distance_m=2000,
            lines=[line("tea")],
            fulfilment_type=DELIVERY,
            at_time=stamp(AFTERNOON),
        ),
        metadata=channel,
    ).matches
    assert [m.store.store_id for m in found] == ["open", "paused", "empty"]
    assert [m.distance_m for m in found] == sorted(m.distance_m for m in found)
    assert found[0].can_fulfil
    assert list(found[0].reasons) == []
    assert list(found[1].reasons) == ["PAUSED"]
    assert list(found[2].reasons) == ["INSUFFICIENT_STOCK"]


@pytest.mark.parametrize(
    ("request_message", "field"),
    [
        (
            fulfilment_pb2.AssignStoreRequest(
                fulfilment_type=DELIVERY, location=at(31, 121), lines=[line("t")]
            ),
            "order_id",
        ),
        (
            fulfilment_pb2.AssignStoreRequest(order_id="o", location=at(31, 121), lines=[line("t")]),
            "fulfilment_type",
        ),
        (
            fulfilment_pb2.AssignStoreRequest(order_id="o", fulfilment_type=DELIVERY, lines=[line("t")]),
            "location",
        ),
        (
            fulfilment_pb2.AssignStoreRequest(order_id="o", fulfilment_type=DELIVERY, location=at(31, 121)),
            "lines",
        ),
        (
            fulfilment_pb2.AssignStoreRequest(
                order_id="o", fulfilment_type=DELIVERY, location=at(31, 121), lines=[line("t", 0)]
            ),
            "lines[0].quantity",
        ),
        (
            fulfilment_pb2.AssignStoreRequest(
                order_id="o", fulfilment_type=DELIVERY, location=at(31, 200), lines=[line("t")]
            ),
            "location.longitude",
        ),
        (
            fulfilment_pb2.AssignStoreRequest(order_id="o", fulfilment_type=IN_STORE, lines=[line("t")]),
            "preferred_store_id",
        ),
    ],
)
def test_bad_assignment_requests_name_the_field(
    stub: Stub,
    service: tuple[tuple[str, str]],
    request_message: fulfilment_pb2.AssignStoreRequest,
    field: str,
) -> None:
    error = failure(stub.AssignStore, request_message, metadata=service)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert field in [name for name, _ in field_violations(error)]


# --- roles -----------------------------------------------------------------------------------

ALLOWED = {
    "UpsertStore": {Role.OPS},
    "ImportStores": {Role.OPS},
    "GetStore": set(Role),
    "ListStores": set(Role),
    "SetStock": {Role.OPS, Role.SERVICE, Role.STORE},
    "GetStock": {Role.OPS, Role.SERVICE, Role.STORE},
    "FindNearestStores": set(Role),
    "AssignStore": {Role.SERVICE, Role.OPS},
    "ReleaseReservation": {Role.SERVICE, Role.OPS},
    "CommitReservation": {Role.SERVICE, Role.OPS},
    "BatchCommitReservations": {Role.SERVICE, Role.OPS},
    "ExplainAssignment": {Role.OPS},
    "CheckStoreOpen": {Role.SERVICE, Role.OPS, Role.STORE},
}
CALLS = {
    "UpsertStore": fulfilment_pb2.UpsertStoreRequest(store=store("s1", 31.2, 121.4)),
    "ImportStores": fulfilment_pb2.ImportStoresRequest(stores=[store("s2", 31.2, 121.4)]),
    "GetStore": fulfilment_pb2.GetStoreRequest(store_id="s1"),
    "ListStores": fulfilment_pb2.ListStoresRequest(),
    "SetStock": fulfilment_pb2.SetStockRequest(
        store_id="s1", levels=[fulfilment_pb2.SkuQuantity(sku="t", on_hand=1)]
    ),
    "GetStock": fulfilment_pb2.GetStockRequest(store_id="s1"),
    "FindNearestStores": fulfilment_pb2.FindNearestStoresRequest(location=at(31.2, 121.4)),
    "AssignStore": fulfilment_pb2.AssignStoreRequest(
        order_id="o", fulfilment_type=DELIVERY, location=at(31.2, 121.4), lines=[line("t")]
    ),
    "ReleaseReservation": fulfilment_pb2.ReleaseReservationRequest(order_id="o"),
    "CommitReservation": fulfilment_pb2.CommitReservationRequest(order_id="o"),
    "BatchCommitReservations": commits("o"),
    "ExplainAssignment": fulfilment_pb2.ExplainAssignmentRequest(order_id="o"),
    "CheckStoreOpen": fulfilment_pb2.CheckStoreOpenRequest(store_id="s1"),
}


def test_the_role_matrix_covers_every_rpc() -> None:
    declared = {m.name for m in fulfilment_pb2.DESCRIPTOR.services_by_name["FulfilmentService"].methods}
    assert declared == set(ALLOWED) == set(CALLS)


@pytest.mark.parametrize("method", sorted(CALLS))
@pytest.mark.parametrize("role", list(Role))
def test_every_rpc_admits_only_its_roles(stub: Stub, token: TokenFactory, method: str, role: Role) -> None:
    meta = bearer(
        token(
            role,
            store_id="s1" if role is Role.STORE else "",
            channel="CHANNEL_APP" if role is Role.CHANNEL else "",
        )
    )
    try:
        getattr(stub, method)(CALLS[method], metadata=meta)
        code = grpc.StatusCode.OK
    except grpc.RpcError as error:
        code = error.code()
    if role in ALLOWED[method]:
        assert code not in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)
    else:
        assert code is grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize("method", sorted(CALLS))
def test_every_rpc_refuses_a_missing_token(stub: Stub, method: str) -> None:
    assert failure(getattr(stub, method), CALLS[method]).code() is grpc.StatusCode.UNAUTHENTICATED
