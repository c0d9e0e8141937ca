"""Orders' repository on a real database (SQLite, and PostgreSQL when reachable): an order read
back as stored, and its status moved only from where the caller saw it."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import Connection

from quanyu.db import Database, migrate
from quanyu.unit_of_work import ConcurrentChange
from services.orders.bootstrap import MIGRATIONS
from services.orders.domain import FulfilmentType, Line, Order, Price, Status, StatusChange
from services.orders.storage import OrderRepository

PLACED = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    db = Database(database_url)
    migrate(db, MIGRATIONS)
    with db.transaction() as connection:
        OrderRepository(connection).add(
            Order(
                order_id="ord-1",
                request_id="req-1",
                customer_id="cust-1",
                member_id="mem-1",
                channel="CHANNEL_APP",
                fulfilment_type=FulfilmentType.DELIVERY,
                lines=[Line("TEA", 2, 1_500), Line("CAKE", 1, 3_000)],
                price=Price(6_000, 500, 100),
                delivery_location=(31.2304, 121.4737, 1),
                delivery_address="People's Square",
                origin_store_id="",
                fulfilling_store_id="SH-001",
                guide_id="",
                status=Status.ASSIGNED,
                status_reason="",
                coupon_code="",
                points_earned=0,
                create_time=PLACED,
                update_time=PLACED,
                accept_deadline=PLACED + timedelta(seconds=120),
                changes=[StatusChange("", "ASSIGNED", "system", "", "SH-001", PLACED)],
            ),
            "fingerprint-1",
            owner="",
        )
    yield db
    db.dispose()


def read(connection: Connection) -> Order:
    order = OrderRepository(connection).get("ord-1", lock=True)
    assert order is not None
    return order


def test_an_order_reads_back_as_it_was_stored(database: Database) -> None:
    with database.snapshot() as connection:
        order = read(connection)
        assert OrderRepository(connection).get("ord-2") is None
    assert (order.status, order.fulfilling_store_id, order.price.total_cents) == (
        Status.ASSIGNED,
        "SH-001",
        5_400,
    )
    assert order.lines == [Line("TEA", 2, 1_500), Line("CAKE", 1, 3_000)]
    assert order.accept_deadline == PLACED + timedelta(seconds=120)


def test_a_status_moves_only_from_where_the_caller_saw_it(database: Database) -> None:
    later = PLACED + timedelta(minutes=1)
    with database.snapshot() as connection:
        stale = read(connection)
    with database.transaction() as connection:
        repo = OrderRepository(connection)
        order = read(connection)
        order.accept("store", later)
        repo.save(order)
        # A copy read before the change moves nothing: the use case runs again on the order now.
        stale.accept("store", later)
        with pytest.raises(ConcurrentChange):
            repo.save(stale)
        order.reject("", "re-routed", "ops", later)
        order.assign("SH-002", later, timedelta(seconds=120))
        repo.save(order)
        assert not order.changes  # saved once, not again
        assert not order.rejections
    with database.snapshot() as connection:
        order = read(connection)
        history = OrderRepository(connection).history("ord-1")
    assert (order.status, order.status_reason, order.fulfilling_store_id) == (
        Status.ASSIGNED,
        "re-routed",
        "SH-002",
    )
    assert order.rejected_store_ids == ["SH-001"]
    assert order.accept_deadline == later + timedelta(seconds=120)
    assert [(c.from_status, c.to_status, c.store_id) for c in history][-3:] == [
        ("ASSIGNED", "ACCEPTED", "SH-001"),
        ("ACCEPTED", "PENDING_ASSIGNMENT", "SH-001"),
        ("PENDING_ASSIGNMENT", "ASSIGNED", "SH-002"),
    ]


def test_what_other_services_answered_is_saved_without_moving_the_status(database: Database) -> None:
    with database.transaction() as connection:
        order = read(connection)
        order.note_points_earned(120)
        order.note_origin_hours(False)
        OrderRepository(connection).save(order)
    with database.snapshot() as connection:
        order = read(connection)
        history = OrderRepository(connection).history("ord-1")
    assert (order.points_earned, order.origin_open, order.status) == (120, False, Status.ASSIGNED)
    assert len(history) == 1


def test_reports_sum_money_exactly_however_large_the_total(database: Database) -> None:
    """SQLite's SUM fails past 2^63; what a report adds up is summed in halves that cannot."""
    with database.transaction() as connection:
        repo = OrderRepository(connection)
        first = read(connection)
        for n in range(3):
            huge = dataclasses.replace(
                first,
                order_id=f"ord-huge-{n}",
                request_id=f"req-huge-{n}",
                origin_store_id="SH-001",
                guide_id="guide-1",
                status=Status.COMPLETED,
                price=Price(2**62 + n, 0, 0),
            )
            repo.add(huge, f"fingerprint-huge-{n}", owner="")
    with database.snapshot() as connection:
        repo = OrderRepository(connection)
        store = repo.store_report("SH-001", PLACED - timedelta(days=1), PLACED + timedelta(days=1))
        guide = repo.guide_report("guide-1", PLACED - timedelta(days=1), PLACED + timedelta(days=1), "")
    assert store.revenue_cents == guide.revenue_cents == 3 * 2**62 + 3
    assert (store.orders_fulfilled, guide.orders) == (3, 3)
