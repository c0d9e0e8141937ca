"""Orders' use cases over in-memory stores and a stand-in for the services it calls: what a
change saves, which effects it records, and that the relay is woken only once it committed."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from quanyu.auth import Principal, Role
from quanyu.errors import PermissionDenied
from quanyu.paging import PageTokens
from quanyu.unit_of_work import ConcurrentChange, InMemoryUnitOfWork
from services.orders.domain import (
    CustomerRef,
    Effect,
    FulfilmentType,
    Line,
    Member,
    Order,
    OrderRequest,
    PlaceOrder,
    Status,
    StatusChange,
    Where,
)
from services.orders.domain.events import (
    OrderCancelled,
    RecordOriginHours,
    ReleaseCoupon,
    ReleaseStock,
    Reroute,
    ReversePoints,
)
from services.orders.handlers import Behaviour, OrdersService
from services.orders.ports import Customer, GuideFigures, Page, Placed, StoreFigures
from tests.orders.memory_known import MemoryKnown

NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
APP = Principal(Role.CHANNEL, "channel:CHANNEL_APP", channel="CHANNEL_APP")


@dataclass
class MemoryOrders:
    rows: dict[str, Order] = field(default_factory=dict)
    fingerprints: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    changes: list[StatusChange] = field(default_factory=list)

    def add(self, order: Order, fingerprint: str, *, owner: str) -> None:
        self.fingerprints[owner, order.request_id] = (order.order_id, fingerprint)
        self.changes += order.changes
        order.changes.clear()
        self.rows[order.order_id] = copy.deepcopy(order)

    def get(self, order_id: str, *, lock: bool = False) -> Order | None:
        return copy.deepcopy(self.rows.get(order_id))

    def save(self, order: Order) -> None:
        stored = self.rows[order.order_id]
        if order.changes and stored.status.value != order.changes[0].from_status:
            raise ConcurrentChange(f"order {order.order_id}")
        self.changes += order.changes
        order.changes.clear()
        order.rejections.clear()
        self.rows[order.order_id] = copy.deepcopy(order)

    def fingerprint(self, owner: str, request_id: str) -> tuple[str, str] | None:
        return self.fingerprints.get((owner, request_id))

    def history(self, order_id: str) -> list[StatusChange]:
        return list(self.changes)

    def page(self, page: Page) -> list[Order]:
        raise NotImplementedError

    def count_by_status(self) -> dict[str, float]:
        raise NotImplementedError

    def due_for_timeout(self, now: datetime, limit: int) -> list[tuple[str, str]]:
        return [
            (o.order_id, o.fulfilling_store_id)
            for o in self.rows.values()
            if o.status is Status.ASSIGNED and o.accept_deadline is not None and o.accept_deadline < now
        ]

    def store_report(self, store_id: str, start: datetime, end: datetime) -> StoreFigures:
        raise NotImplementedError

    def guide_report(
        self, guide_id: str, start: datetime, end: datetime, origin_store_id: str
    ) -> GuideFigures:
        raise NotImplementedError


@dataclass
class MemoryOutbox:
    effects: list[Effect] = field(default_factory=list)

    def add(self, effect: Effect, now: datetime, *, delay: timedelta = timedelta(0)) -> None:
        self.effects.append(effect)


@dataclass
class MemoryStores:
    orders: MemoryOrders = field(default_factory=MemoryOrders)
    outbox: MemoryOutbox = field(default_factory=MemoryOutbox)
    known: MemoryKnown = field(default_factory=MemoryKnown)


@dataclass
class Services:
    """Stands in for identity, membership and fulfilment: every store it is asked for is "S1"
    first, then whichever `next_store` says."""

    next_store: str = "S1"
    asked: list[Where] = field(default_factory=list)
    released: list[tuple[str, str]] = field(default_factory=list)

    def resolve_customer(self, ref: CustomerRef) -> Customer:
        return Customer(ref.customer_id, frozenset({"CHANNEL_APP"}))

    def enroll(self, customer_id: str, home_store_id: str, guide_id: str, channel: str) -> Member:
        return Member("mem-1", "HOME", "")

    def assign(
        self, order_id: str, lines: Sequence[Line], kind: FulfilmentType, where: Where, *, at: datetime
    ) -> list[Placed]:
        self.asked.append(where)
        return [Placed(self.next_store, tuple(lines))]

    def release(self, order_id: str, store_id: str = "") -> None:
        self.released.append((order_id, store_id))

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"orders should not have called {name}")


@dataclass
class Running:
    service: OrdersService
    stores: MemoryStores
    services: Services
    wakes: list[int]


@pytest.fixture
def running() -> Running:
    stores, services, wakes = MemoryStores(), Services(), []

    class Relay:
        def wake(self) -> None:
            wakes.append(len(stores.outbox.effects))

    service = OrdersService(
        InMemoryUnitOfWork(stores),
        services,
        PageTokens(b"k" * 32, purpose="orders"),
        Behaviour(fingerprint_key=b"f" * 32, accept_window=timedelta(seconds=120)),
        clock=lambda: NOW,
        relay=Relay(),  # type: ignore[arg-type]
    )
    return Running(service, stores, services, wakes)


def pickup(chosen: str = "C") -> PlaceOrder:
    return PlaceOrder(
        OrderRequest(
            request_id="req-1",
            owner="channel:CHANNEL_APP",
            customer=CustomerRef(customer_id="cus-1"),
            channel="CHANNEL_APP",
            fulfilment_type=FulfilmentType.PICKUP,
            lines=(Line("tea", 1, 1_000),),
            delivery_location=None,
            delivery_address="",
            origin_store_id=chosen,
            guide_id="",
            coupon_code="",
            points_to_redeem=0,
        )
    )


def test_placing_stores_the_order_records_its_effects_and_answers_a_retry_with_it(running: Running) -> None:
    running.services.next_store = "C"
    order = running.service.create(APP, pickup())
    assert (order.status, order.fulfilling_store_id, order.pickup_store_id) == (Status.ASSIGNED, "C", "C")
    assert running.services.asked == [Where(None, preferred_store_id="C")]
    assert running.stores.outbox.effects == [RecordOriginHours(order.order_id, "HOME", NOW.isoformat())]
    assert running.wakes == [1]
    assert running.service.create(APP, pickup()) == order
    assert len(running.services.asked) == 1  # the retry called nobody


def test_a_rejected_pickup_order_is_routed_at_once_from_the_chosen_store(running: Running) -> None:
    running.services.next_store = "C"
    order = running.service.create(APP, pickup())
    running.services.next_store = "N"
    till = Principal(Role.STORE, "store:C/till", store_id="C")
    assert running.service.reject(till, order.order_id, "no staff", "") is None  # it has left C
    moved = running.stores.orders.rows[order.order_id]
    assert (moved.status, moved.fulfilling_store_id, moved.status_reason) == (
        Status.ASSIGNED,
        "N",
        "no staff",
    )
    assert running.services.asked[-1] == Where(None, near_store_id="C", exclude=("C",))
    assert running.services.released == [(order.order_id, "C")]
    # The outbox holds the re-route too, should this attempt have failed.
    assert running.stores.outbox.effects[-1] == Reroute(order.order_id, "C")
    assert [(c.from_status, c.to_status, c.store_id) for c in running.stores.orders.changes] == [
        ("", "ASSIGNED", "C"),
        ("ASSIGNED", "PENDING_ASSIGNMENT", "C"),
        ("PENDING_ASSIGNMENT", "ASSIGNED", "N"),
    ]


def test_cancelling_records_what_goes_back_and_only_a_fulfilling_store_may(running: Running) -> None:
    running.services.next_store = "C"
    order = running.service.create(APP, pickup())
    running.stores.orders.rows[order.order_id].coupon_code = "SAVE5"
    other = Principal(Role.STORE, "store:X/till", store_id="X")
    with pytest.raises(PermissionDenied):
        running.service.cancel(other, order.order_id, "")
    before = list(running.stores.outbox.effects)
    cancelled = running.service.cancel(APP, order.order_id, "changed my mind")
    assert (cancelled.status, cancelled.status_reason) == (Status.CANCELLED, "changed my mind")
    assert running.stores.outbox.effects[len(before) :] == [
        ReleaseStock(order.order_id),
        ReleaseCoupon("SAVE5", order.order_id),
        OrderCancelled(order.order_id, "mem-1", "cus-1", NOW.isoformat()),
    ]
    assert ReversePoints(order.order_id, "CANCELLED") not in running.stores.outbox.effects  # none spent
    # A retry changes nothing and records nothing.
    wakes = len(running.wakes)
    assert running.service.cancel(APP, order.order_id, "changed my mind").status is Status.CANCELLED
    assert len(running.wakes) == wakes
