"""Fulfilment's use cases over an in-memory unit of work: no database, no gRPC, a fixed clock."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from quanyu.auth import Principal, Role
from quanyu.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound
from quanyu.paging import PageTokens
from quanyu.unit_of_work import ConcurrentChange, InMemoryUnitOfWork
from services.fulfilment.domain.assignment import Line
from services.fulfilment.domain.coordinates import MapPoint
from services.fulfilment.domain.reservations import ReservationState
from services.fulfilment.domain.stores import StoreDraft
from services.fulfilment.handlers import FulfilmentService
from services.fulfilment.metrics import ASSIGNMENTS
from tests.fulfilment.memory import MemoryCatalogue, MemoryStores

OPS = Principal(Role.OPS, "ops")
PEOPLES_SQUARE = MapPoint(31.2304, 121.4737)
NOON = datetime(2026, 3, 4, 4, 0, tzinfo=UTC)  # a Wednesday, noon in Shanghai
MIDNIGHT = datetime(2026, 3, 4, 16, 0, tzinfo=UTC)  # midnight in Shanghai
DAYTIME = [(day, "08:00", "22:00") for day in range(1, 8)]


def draft(store_id: str, latitude: float, longitude: float, **changes: Any) -> StoreDraft:
    fields: dict[str, Any] = {
        "store_id": store_id,
        "name": f"Store {store_id}",
        "latitude": latitude,
        "longitude": longitude,
        "status": None,
        "delivery_radius_m": 5_000.0,
        "delivery_zone_geojson": "",
        "opening_hours": [],
        "timezone": "",
        "max_active_orders": 0,
        "priority": 0,
    }
    fields.update(changes)
    return StoreDraft(**fields)


class World:
    def __init__(self, now: datetime = NOON) -> None:
        self.now = now
        self.memory = MemoryStores()
        self.uow = InMemoryUnitOfWork(self.memory)
        self.catalogue = MemoryCatalogue(self.memory)
        self.service = FulfilmentService(
            self.uow,
            self.catalogue,
            PageTokens(b"k" * 32, purpose="fulfilment"),
            lambda: self.now,
            pickup_radius_m=50_000.0,
        )

    def assign(self, order_id: str, *lines: Line, **fields: Any) -> list[tuple[str, int]]:
        placed = self.service.assign(
            order_id,
            fields.pop("location", PEOPLES_SQUARE),
            lines,
            fields.pop("kind", "DELIVERY"),
            None,
            **fields,
        )
        return [(a.store_id, sum(ln.quantity for ln in a.lines)) for a in placed]


@pytest.fixture
def world() -> World:
    world = World()
    world.service.upsert_store(draft("near", 31.2310, 121.4740))
    world.service.upsert_store(draft("far", 31.2400, 121.4800))
    for store in ("near", "far"):
        world.service.set_stock(OPS, store, [("TEA", 5)])
    return world


def test_an_order_is_reserved_at_the_nearest_store_and_asking_again_reserves_nothing_more(
    world: World,
) -> None:
    assert world.assign("ord-1", Line("TEA", 3)) == [("near", 3)]
    assert world.assign("ord-1", Line("TEA", 3)) == [("near", 3)]
    [level] = world.service.get_stock(OPS, "near", ["TEA"])
    assert (level.on_hand, level.reserved) == (5, 3)
    assert world.memory.state_of("ord-1") is ReservationState.ACTIVE


def test_a_fresh_decision_is_counted_once_after_it_commits_and_a_repeat_not_at_all(world: World) -> None:
    counted = ASSIGNMENTS.labels("ASSIGNED")
    before = counted._value.get()
    world.assign("ord-1", Line("TEA", 1))
    world.assign("ord-1", Line("TEA", 1))
    assert counted._value.get() == before + 1


def test_stock_taken_meanwhile_every_time_is_aborted_contended_and_counts_nothing(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    def taken(*args: Any, **kwargs: Any) -> None:
        raise ConcurrentChange("stock")

    monkeypatch.setattr(world.memory, "reserve", taken)
    counted = ASSIGNMENTS.labels("ASSIGNED")
    before = counted._value.get()
    with pytest.raises(Aborted) as caught:
        world.assign("ord-1", Line("TEA", 1))
    assert caught.value.reason == "CONTENDED"
    assert counted._value.get() == before


def test_when_no_store_has_the_stock_the_reason_says_so_and_the_decision_is_kept(world: World) -> None:
    with pytest.raises(FailedPrecondition) as caught:
        world.assign("ord-1", Line("TEA", 6))
    assert caught.value.reason == "INSUFFICIENT_STOCK"
    explained = world.service.explain("ord-1")
    assert explained.outcome_reason == "INSUFFICIENT_STOCK"
    assert [v.store_id for v in explained.verdicts] == ["near", "far"]
    assert all(v.distance_m is not None for v in explained.verdicts)
    assert explained.decide_time == NOON


def test_a_request_without_a_time_is_decided_at_the_clocks_time(world: World) -> None:
    world.service.upsert_store(draft("day", 31.2305, 121.4738, opening_hours=DAYTIME))
    world.service.set_stock(OPS, "day", [("TEA", 5)])
    assert world.assign("ord-noon", Line("TEA", 1)) == [("day", 1)]
    assert world.service.is_open(OPS, "day", None)
    world.now = MIDNIGHT
    assert world.assign("ord-midnight", Line("TEA", 1)) == [("near", 1)]
    assert not world.service.is_open(OPS, "day", None)


def test_a_released_reservation_cannot_be_committed_and_an_unknown_one_is_not_found(world: World) -> None:
    world.assign("ord-1", Line("TEA", 2))
    assert world.service.release("ord-1", "") == 1
    with pytest.raises(FailedPrecondition) as released:
        world.service.commit("ord-1")
    assert released.value.reason == "RESERVATION_RELEASED"
    with pytest.raises(NotFound) as unknown:
        world.service.commit("ord-404")
    assert unknown.value.reason == "RESERVATION_NOT_FOUND"


def test_committing_takes_the_stock_off_the_shelf(world: World) -> None:
    world.assign("ord-1", Line("TEA", 2))
    world.service.commit("ord-1")
    world.service.commit("ord-1")
    [level] = world.service.get_stock(OPS, "near", ["TEA"])
    assert (level.on_hand, level.reserved) == (3, 0)
    assert world.memory.state_of("ord-1") is ReservationState.COMMITTED


def test_stock_cannot_be_set_below_what_is_reserved(world: World) -> None:
    world.assign("ord-1", Line("TEA", 4))
    with pytest.raises(FailedPrecondition) as caught:
        world.service.set_stock(OPS, "near", [("TEA", 3)])
    assert caught.value.reason == "BELOW_RESERVED"


def test_find_nearest_names_every_reason_a_store_cannot_serve(world: World) -> None:
    world.service.upsert_store(draft("paused", 31.2305, 121.4738, status="PAUSED", opening_hours=DAYTIME))
    world.now = MIDNIGHT
    matches = world.service.find_nearest(
        PEOPLES_SQUARE, limit=3, max_distance_m=0.0, lines=[Line("TEA", 1)], fulfilment_type="", at=None
    )
    assert [(m.store.store_id, m.can_fulfil, m.reasons) for m in matches] == [
        ("paused", False, ["PAUSED", "CLOSED", "INSUFFICIENT_STOCK"]),
        ("near", True, []),
        ("far", True, []),
    ]


def test_an_import_loads_the_sound_rows_and_names_the_others_by_row(world: World) -> None:
    loaded, errors = world.service.import_stores(
        [
            draft("a", 31.0, 121.0),
            draft("b", 91.0, 121.0, status="7"),
            draft("a", 31.1, 121.1),
        ]
    )
    assert loaded == 1
    assert [(e.index, e.field) for e in errors] == [
        (1, "stores[1].location.latitude"),
        (1, "stores[1].status"),
        (2, "stores[2].store_id"),
    ]
    assert world.catalogue.snapshot.get("a") is not None


def test_a_bad_request_changes_nothing(world: World) -> None:
    with pytest.raises(InvalidArgument):
        world.assign("", Line("TEA", 0))
    assert world.memory.orders == {}
    assert world.uow.commits == 4  # the two stores and their stock, from the fixture
