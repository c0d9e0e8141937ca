"""What orders tells marketing, on a real database (SQLite, and PostgreSQL when reachable): the
event of a member's order completed or cancelled is written in the transaction of that change,
so a change that fails tells nothing and one run again tells once."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Connection

from quanyu.auth import Principal, Role
from quanyu.db import Database, migrate
from quanyu.paging import PageTokens
from quanyu.unit_of_work import ConcurrentChange, SqlUnitOfWork
from services.orders.bootstrap import MIGRATIONS
from services.orders.domain import (
    CustomerRef,
    FulfilmentType,
    Line,
    Member,
    OrderRequest,
    PlaceOrder,
    Status,
    Where,
)
from services.orders.domain.events import MARKETING_EVENT
from services.orders.handlers import Behaviour, OrdersService
from services.orders.ports import Customer, Placed
from services.orders.storage import SqlStores, outbox
from tests.outboxes import Failing, FlakyOutbox

NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
APP = Principal(Role.CHANNEL, "channel:CHANNEL_APP", channel="CHANNEL_APP")
TILL = Principal(Role.STORE, "store:C/till", store_id="C")


class Services:
    """Identity, membership and fulfilment as orders sees them: every order goes to store C."""

    def resolve_customer(self, ref: CustomerRef) -> Customer:
        return Customer(ref.customer_id, frozenset({"CHANNEL_APP"}))

    def enroll(self, customer_id: str, home_store_id: str, guide_id: str, channel: str) -> Member:
        return Member("mem-1", "HOME", "")

    def assign(
        self, order_id: str, lines: Sequence[Line], kind: FulfilmentType, where: Where, *, at: datetime
    ) -> list[Placed]:
        return [Placed("C", tuple(lines))]

    def release(self, order_id: str, store_id: str = "") -> None:
        return None


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    db = Database(database_url)
    migrate(db, MIGRATIONS)
    yield db
    db.dispose()


@pytest.fixture
def failing() -> Failing:
    return Failing()


@pytest.fixture
def service(database: Database, failing: Failing) -> OrdersService:
    def stores(connection: Connection) -> SqlStores:
        real = SqlStores(connection)
        real.outbox = FlakyOutbox(real.outbox, failing, lambda effect: effect.kind == MARKETING_EVENT)  # type: ignore[assignment]
        return real

    return OrdersService(
        SqlUnitOfWork(database, stores),
        Services(),  # type: ignore[arg-type]
        PageTokens(b"k" * 32, purpose="orders"),
        Behaviour(fingerprint_key=b"f" * 32, accept_window=timedelta(seconds=120)),
        clock=lambda: NOW,
    )


def order_request(kind: FulfilmentType = FulfilmentType.PICKUP, request_id: str = "req-1") -> PlaceOrder:
    in_store = kind is FulfilmentType.IN_STORE
    return PlaceOrder(
        OrderRequest(
            request_id=request_id,
            owner="store:C" if in_store else "channel:CHANNEL_APP",
            customer=CustomerRef(customer_id="cus-1"),
            channel="CHANNEL_STORE_POS" if in_store else "CHANNEL_APP",
            fulfilment_type=kind,
            lines=(Line("tea", 2, 1_000), Line("cup", 1, 500)),
            delivery_location=None,
            delivery_address="",
            origin_store_id="C",
            guide_id="",
            coupon_code="",
            points_to_redeem=0,
        )
    )


def told(database: Database) -> list[dict[str, Any]]:
    with database.snapshot() as connection:
        rows = connection.execute(
            select(outbox.c.payload).where(outbox.c.kind == MARKETING_EVENT).order_by(outbox.c.effect_id)
        ).all()
    return [json.loads(row.payload) for row in rows]


def ready(service: OrdersService) -> str:
    order = service.create(APP, order_request())
    service.accept(TILL, order.order_id)
    service.mark_ready(TILL, order.order_id)
    return order.order_id


def test_completing_a_members_order_writes_its_event_with_the_change(
    service: OrdersService, database: Database
) -> None:
    order_id = ready(service)
    assert told(database) == []
    service.complete(TILL, order_id)
    service.complete(TILL, order_id)  # a till's retry: already completed, nothing more to tell
    assert told(database) == [
        {
            "event_id": f"orders/{order_id}/completed",
            "occur_time": NOW.isoformat(),
            "order_completed": {
                "order_id": order_id,
                "member_id": "mem-1",
                "customer_id": "cus-1",
                "total_cents": 2_500,
                "store_id": "C",
                "skus": ["tea", "cup"],
                "channel": "CHANNEL_APP",
            },
        }
    ]


def test_a_till_sale_tells_marketing_as_it_is_placed(service: OrdersService, database: Database) -> None:
    sale = service.create(
        Principal(Role.STORE, "store:C/till", store_id="C"), order_request(FulfilmentType.IN_STORE)
    )
    assert sale.status is Status.COMPLETED
    assert [(e["event_id"], e["order_completed"]["channel"]) for e in told(database)] == [
        (f"orders/{sale.order_id}/completed", "CHANNEL_STORE_POS")
    ]


def test_a_completion_that_fails_tells_nothing_and_leaves_the_order_as_it_was(
    service: OrdersService, database: Database, failing: Failing
) -> None:
    order_id = ready(service)
    failing.times = 1
    with pytest.raises(RuntimeError):
        service.complete(TILL, order_id)
    assert told(database) == []
    assert service.order(order_id).status is Status.READY  # type: ignore[union-attr]


def test_a_cancellation_run_again_after_a_conflict_tells_once(
    service: OrdersService, database: Database, failing: Failing
) -> None:
    order = service.create(APP, order_request())
    failing.times, failing.error = 2, ConcurrentChange
    assert service.cancel(APP, order.order_id, "changed my mind").status is Status.CANCELLED
    assert failing.times == 0  # it did run three times
    assert [e["event_id"] for e in told(database)] == [f"orders/{order.order_id}/cancelled"]
    assert told(database)[0]["order_cancelled"] == {
        "order_id": order.order_id,
        "member_id": "mem-1",
        "customer_id": "cus-1",
    }
