"""Orders while another service is down or hung, on real processes: the caller's own action
succeeds at once, and the effects it has elsewhere arrive exactly once after recovery."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import create_engine, select

from quanyu import outbox as outbox_module
from quanyu.auth import Role
from quanyu.common.v1 import common_pb2
from quanyu.config import SERVICE_NAMES
from quanyu.db import Database, new_metadata
from quanyu.errors import Unavailable
from quanyu.fulfilment.v1 import fulfilment_pb2
from quanyu.identity.v1 import identity_pb2
from quanyu.membership.v1 import membership_pb2
from quanyu.orders.v1 import orders_pb2
from services.orders.handlers import EARN_POINTS
from services.orders.storage import outbox as outbox_table
from tests.orders.platform import Metadata, Platform, platform
from tests.processes import poll

T = TypeVar("T")

PEOPLES_SQUARE = (31.2304, 121.4737)
NEARBY = (31.2330, 121.4760)  # a few hundred metres away, inside every store's delivery radius
PROMPTLY = 3.0  # client deadline of a call that must not wait for the service that is down
RECOVERY = 60.0  # how long an effect may take to arrive once its service is back
UNIT_PRICE = 5_000
EARN = membership_pb2.ENTRY_KIND_EARN
REDEEM = membership_pb2.ENTRY_KIND_REDEEM
REVERSAL = membership_pb2.ENTRY_KIND_REVERSAL


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    # Orders stay with their store for the whole module, however long a recovery takes.
    with platform(tmp_path_factory.mktemp("outages"), QUANYU_ORDERS_ACCEPT_WINDOW_SECONDS="3600") as running:
        yield running


@pytest.fixture
def p(shared: Platform) -> Iterator[Platform]:
    """The shared platform, every service serving again after the test whatever it did."""
    yield shared
    for service in SERVICE_NAMES:
        if service in shared.processes:
            shared.thaw(service)
        else:
            shared.start(service)


@pytest.fixture
def ops(p: Platform) -> Metadata:
    return p.token(Role.OPS)


# --- helpers ---------------------------------------------------------------------------------


def eventually(read: Callable[[], T], done: Callable[[T], bool], what: str, within: float = RECOVERY) -> T:
    """Poll `read` until `done` holds of its answer; fail after `within` (RECOVERY unless told)."""
    return poll(read, done, what, within)


def where(lat: float, lng: float) -> common_pb2.LatLng:
    return common_pb2.LatLng(latitude=lat, longitude=lng, system=common_pb2.COORDINATE_SYSTEM_WGS84)


def open_store(p: Platform, ops: Metadata, store_id: str, sku: str, on_hand: int) -> None:
    fulfilment = p.fulfilment
    fulfilment.UpsertStore(
        fulfilment_pb2.UpsertStoreRequest(
            store=fulfilment_pb2.Store(
                store_id=store_id,
                name=f"Store {store_id}",
                location=where(*PEOPLES_SQUARE),
                delivery_radius_m=3000.0,
            )
        ),
        metadata=ops,
    )
    fulfilment.SetStock(
        fulfilment_pb2.SetStockRequest(
            store_id=store_id, levels=[fulfilment_pb2.SkuQuantity(sku=sku, on_hand=on_hand)]
        ),
        metadata=ops,
    )


def stock(p: Platform, ops: Metadata, store_id: str, sku: str) -> fulfilment_pb2.StockLevel:
    request = fulfilment_pb2.GetStockRequest(store_id=store_id, skus=[sku])
    level: fulfilment_pb2.StockLevel = p.fulfilment.GetStock(request, metadata=ops).levels[0]
    return level


def account(external_id: str) -> common_pb2.ChannelAccount:
    return common_pb2.ChannelAccount(channel=common_pb2.CHANNEL_APP, external_id=external_id)


def delivery(
    request_id: str, external_id: str, sku: str, quantity: int, **fields: str | int
) -> orders_pb2.CreateOrderRequest:
    return orders_pb2.CreateOrderRequest(
        request_id=request_id,
        account=account(external_id),
        channel=common_pb2.CHANNEL_APP,
        fulfilment_type=common_pb2.FULFILMENT_TYPE_DELIVERY,
        lines=[common_pb2.Line(sku=sku, quantity=quantity, unit_price_cents=UNIT_PRICE)],
        delivery_location=where(*NEARBY),
        delivery_address="People's Square 1, Huangpu, Shanghai",
        **fields,  # type: ignore[arg-type]
    )


def ready_order(p: Platform, ops: Metadata, request: orders_pb2.CreateOrderRequest) -> orders_pb2.Order:
    """An order placed, accepted and packed by its store, waiting to be completed."""
    orders = p.orders
    order = orders.CreateOrder(request, metadata=ops).order
    assert order.status == orders_pb2.ORDER_STATUS_ASSIGNED
    orders.AcceptOrder(orders_pb2.AcceptOrderRequest(order_id=order.order_id), metadata=ops)
    ready: orders_pb2.Order = orders.MarkOrderReady(
        orders_pb2.MarkOrderReadyRequest(order_id=order.order_id), metadata=ops
    ).order
    return ready


def order_of(p: Platform, ops: Metadata, order_id: str) -> Callable[[], orders_pb2.Order]:
    orders = p.orders
    return lambda: orders.GetOrder(orders_pb2.GetOrderRequest(order_id=order_id), metadata=ops).order


def outbox(p: Platform, ops: Metadata) -> orders_pb2.GetOutboxStatusResponse:
    status: orders_pb2.GetOutboxStatusResponse = p.orders.GetOutboxStatus(
        orders_pb2.GetOutboxStatusRequest(), metadata=ops
    )
    return status


def delivery_attempts(p: Platform, kind: str, order_id: str) -> int:
    """How often the orders relay has tried to deliver that effect of the order (from its database)."""
    engine = create_engine(f"sqlite:///{p.var / 'orders.db'}")
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(outbox_table.c.payload, outbox_table.c.attempts).where(outbox_table.c.kind == kind)
            ).all()
    finally:
        engine.dispose()
    return sum(attempts for payload, attempts in rows if json.loads(payload)["order_id"] == order_id)


def assert_lagging(p: Platform, ops: Metadata) -> None:
    status = outbox(p, ops)
    assert status.undelivered > 0
    assert status.lag_seconds > 0
    assert status.HasField("oldest_undelivered_time")


def assert_drained(p: Platform, ops: Metadata) -> None:
    status = eventually(lambda: outbox(p, ops), lambda s: s.undelivered == 0, "the orders outbox drains")
    assert status.failed == 0
    assert status.lag_seconds == 0
    assert not status.HasField("oldest_undelivered_time")


def ledger(p: Platform, ops: Metadata, member_id: str, source_id: str) -> list[membership_pb2.LedgerEntry]:
    entries = p.membership.ListLedgerEntries(
        membership_pb2.ListLedgerEntriesRequest(member_id=member_id, page_size=1000), metadata=ops
    ).entries
    return [entry for entry in entries if entry.source_id == source_id]


def assert_points_arrive_once(p: Platform, ops: Metadata, order_id: str) -> None:
    earned = eventually(order_of(p, ops, order_id), lambda o: o.points_earned > 0, "the points arrive")
    assert earned.status == orders_pb2.ORDER_STATUS_COMPLETED
    assert_drained(p, ops)
    entries = ledger(p, ops, earned.member_id, order_id)
    assert [(entry.kind, entry.points) for entry in entries] == [(EARN, earned.points_earned)]
    member = p.membership.GetMember(
        membership_pb2.GetMemberRequest(member_id=earned.member_id), metadata=ops
    ).member
    assert member.points_balance == earned.points_earned
    assert member.lifetime_spend_cents == earned.total_cents


# --- completion ------------------------------------------------------------------------------


def test_completing_an_order_while_membership_is_down_succeeds_and_earns_the_points_once_it_is_back(
    p: Platform, ops: Metadata
) -> None:
    open_store(p, ops, "OUT-DOWN-1", "oolong", 10)
    order = ready_order(p, ops, delivery("down-1", "member-down-1", "oolong", 2))
    assert_drained(p, ops)

    p.stop("membership")
    done = p.orders.CompleteOrder(
        orders_pb2.CompleteOrderRequest(order_id=order.order_id), metadata=ops, timeout=PROMPTLY
    ).order
    assert done.status == orders_pb2.ORDER_STATUS_COMPLETED
    assert done.points_earned == 0
    # The stock leaves the shelf meanwhile: fulfilment is up.
    committed = eventually(
        lambda: stock(p, ops, "OUT-DOWN-1", "oolong"), lambda s: s.on_hand == 8, "the stock is committed"
    )
    assert committed.reserved == 0
    assert_lagging(p, ops)
    assert order_of(p, ops, order.order_id)().points_earned == 0

    p.start("membership")
    assert_points_arrive_once(p, ops, order.order_id)
    assert stock(p, ops, "OUT-DOWN-1", "oolong").on_hand == 8


def test_completing_an_order_while_membership_hangs_succeeds_and_earns_the_points_once_it_wakes(
    p: Platform, ops: Metadata
) -> None:
    open_store(p, ops, "OUT-HUNG-1", "pu-erh", 10)
    order = ready_order(p, ops, delivery("hung-1", "member-hung-1", "pu-erh", 3))
    assert_drained(p, ops)

    p.freeze("membership")
    try:
        done = p.orders.CompleteOrder(
            orders_pb2.CompleteOrderRequest(order_id=order.order_id), metadata=ops, timeout=PROMPTLY
        ).order
        assert done.status == orders_pb2.ORDER_STATUS_COMPLETED
        assert done.points_earned == 0
        assert_lagging(p, ops)
        assert order_of(p, ops, order.order_id)().points_earned == 0
        # The relay's call to the hung service runs out of time, and the effect waits for a retry.
        eventually(
            lambda: delivery_attempts(p, EARN_POINTS, order.order_id),
            lambda attempts: attempts >= 1,
            "the relay gives up a call to the hung membership",
        )
        assert order_of(p, ops, order.order_id)().points_earned == 0
    finally:
        p.thaw("membership")
    assert_points_arrive_once(p, ops, order.order_id)
    assert stock(p, ops, "OUT-HUNG-1", "pu-erh").on_hand == 7


# --- placing ---------------------------------------------------------------------------------


def test_a_delivery_order_placed_while_fulfilment_is_down_waits_and_is_assigned_once_it_is_back(
    p: Platform, ops: Metadata
) -> None:
    open_store(p, ops, "OUT-ASSIGN-1", "jasmine", 10)
    open_store(p, ops, "OUT-ASSIGN-2", "jasmine", 10)
    assert_drained(p, ops)

    p.stop("fulfilment")
    placed = p.orders.CreateOrder(
        delivery("assign-1", "member-assign-1", "jasmine", 4), metadata=ops, timeout=PROMPTLY
    ).order
    assert placed.status == orders_pb2.ORDER_STATUS_PENDING_ASSIGNMENT
    assert placed.fulfilling_store_id == ""
    assert placed.member_id
    assert_lagging(p, ops)
    # A retry while fulfilment is still down answers with the same waiting order.
    again = p.orders.CreateOrder(
        delivery("assign-1", "member-assign-1", "jasmine", 4), metadata=ops, timeout=PROMPTLY
    ).order
    assert (again.order_id, again.status) == (placed.order_id, orders_pb2.ORDER_STATUS_PENDING_ASSIGNMENT)

    p.start("fulfilment")
    assigned = eventually(
        order_of(p, ops, placed.order_id),
        lambda o: o.status != orders_pb2.ORDER_STATUS_PENDING_ASSIGNMENT,
        "the relay assigns the order",
    )
    assert assigned.status == orders_pb2.ORDER_STATUS_ASSIGNED
    assert assigned.fulfilling_store_id in ("OUT-ASSIGN-1", "OUT-ASSIGN-2")
    assert_drained(p, ops)
    levels = {s: stock(p, ops, s, "jasmine") for s in ("OUT-ASSIGN-1", "OUT-ASSIGN-2")}
    assert {s: (level.on_hand, level.reserved) for s, level in levels.items()} == {
        s: (10, 4 if s == assigned.fulfilling_store_id else 0) for s in levels
    }
    changes = p.orders.GetOrderHistory(
        orders_pb2.GetOrderHistoryRequest(order_id=placed.order_id), metadata=ops
    ).changes
    assert [(c.to_status, c.actor) for c in changes] == [
        (orders_pb2.ORDER_STATUS_PENDING_ASSIGNMENT, "system"),
        (orders_pb2.ORDER_STATUS_ASSIGNED, "system"),
    ]


# --- cancelling ------------------------------------------------------------------------------


def test_cancelling_while_fulfilment_and_membership_are_down_gives_stock_points_and_coupon_back_once(
    p: Platform, ops: Metadata
) -> None:
    open_store(p, ops, "OUT-CANCEL-1", "longjing", 10)
    customer = p.identity.ResolveCustomer(
        identity_pb2.ResolveCustomerRequest(account=account("member-cancel-1")), metadata=ops
    ).customer
    membership = p.membership
    member = membership.Enroll(
        membership_pb2.EnrollRequest(customer_id=customer.customer_id, channel=common_pb2.CHANNEL_APP),
        metadata=ops,
    ).member
    balance = membership.EarnPoints(
        membership_pb2.EarnPointsRequest(
            member_id=member.member_id, source_id="cancel-1-welcome", spend_cents=50_000
        ),
        metadata=ops,
    ).member.points_balance
    assert balance >= 300
    expiry = Timestamp(seconds=int(time.time()) + 86_400)
    coupon = membership.IssueCoupon(
        membership_pb2.IssueCouponRequest(
            member_id=member.member_id, discount_cents=1_000, expire_time=expiry, request_id="cancel-1-coupon"
        ),
        metadata=ops,
    ).coupon
    order = p.orders.CreateOrder(
        delivery("cancel-1", "member-cancel-1", "longjing", 3, coupon_code=coupon.code, points_to_redeem=300),
        metadata=ops,
    ).order
    assert order.status == orders_pb2.ORDER_STATUS_ASSIGNED
    assert (order.discount_cents, order.points_redeemed) == (1_000, 300)
    assert stock(p, ops, "OUT-CANCEL-1", "longjing").reserved == 3
    assert_drained(p, ops)

    p.stop("fulfilment")
    p.stop("membership")
    cancelled = p.orders.CancelOrder(
        orders_pb2.CancelOrderRequest(order_id=order.order_id, reason="customer changed their mind"),
        metadata=ops,
        timeout=PROMPTLY,
    ).order
    assert cancelled.status == orders_pb2.ORDER_STATUS_CANCELLED
    assert_lagging(p, ops)

    p.start("fulfilment")
    p.start("membership")
    assert_drained(p, ops)
    level = stock(p, ops, "OUT-CANCEL-1", "longjing")
    assert (level.on_hand, level.reserved, level.available) == (10, 0, 10)
    membership = p.membership
    entries = ledger(p, ops, member.member_id, order.order_id)
    assert sorted((entry.kind, entry.points) for entry in entries) == [(REDEEM, -300), (REVERSAL, 300)]
    assert (
        membership.GetMember(
            membership_pb2.GetMemberRequest(member_id=member.member_id), metadata=ops
        ).member.points_balance
        == balance
    )
    # The coupon is the member's again: another order may redeem it.
    reused = membership.RedeemCoupon(
        membership_pb2.RedeemCouponRequest(
            code=coupon.code, member_id=member.member_id, order_id="cancel-1-next", order_amount_cents=20_000
        ),
        metadata=ops,
    )
    assert reused.discount_cents == 1_000
    assert reused.coupon.redeemed_order_id == "cancel-1-next"


# --- watching the lag ------------------------------------------------------------------------


def test_the_outbox_status_shows_the_lag_while_fulfilment_is_down_and_none_once_it_catches_up(
    p: Platform, ops: Metadata
) -> None:
    open_store(p, ops, "OUT-TILL-1", "baozi", 20)
    assert_drained(p, ops)

    p.stop("fulfilment")
    # A sale at the till needs no store choice: it completes at once, its stock taken later.
    sale = p.orders.CreateOrder(
        orders_pb2.CreateOrderRequest(
            request_id="till-1",
            phone="+86 138 0013 8001",
            channel=common_pb2.CHANNEL_STORE_POS,
            fulfilment_type=common_pb2.FULFILMENT_TYPE_IN_STORE,
            lines=[common_pb2.Line(sku="baozi", quantity=5, unit_price_cents=UNIT_PRICE)],
            origin_store_id="OUT-TILL-1",
        ),
        metadata=ops,
        timeout=PROMPTLY,
    ).order
    assert sale.status == orders_pb2.ORDER_STATUS_COMPLETED
    # Membership is up, and its effects travel apart from fulfilment's: the points arrive while
    # the stock waits.
    assert eventually(order_of(p, ops, sale.order_id), lambda o: o.points_earned > 0, "the points arrive")
    first = outbox(p, ops)
    assert first.undelivered > 0
    assert first.lag_seconds > 0
    # The lag grows while the effect waits.
    later = eventually(
        lambda: outbox(p, ops), lambda s: s.lag_seconds > first.lag_seconds, "the lag grows", within=10
    )
    assert later.undelivered == first.undelivered
    assert later.oldest_undelivered_time == first.oldest_undelivered_time
    assert later.failed == 0

    p.start("fulfilment")
    assert_drained(p, ops)
    level = stock(p, ops, "OUT-TILL-1", "baozi")
    assert (level.on_hand, level.reserved) == (15, 0)


# --- the relay behind a hung service ---------------------------------------------------------


def test_an_effect_waiting_behind_a_hung_delivery_is_leased_from_when_its_turn_comes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pass that spends longer than a lease on one hung call still leases the next effect for
    a full lease, so another replica's relay does not take it while it is being delivered."""
    clock = [datetime(2026, 11, 18, 6, 0, tzinfo=UTC)]
    monkeypatch.setattr(outbox_module, "utcnow", lambda: clock[0])
    table = outbox_module.outbox_table(new_metadata())
    database = Database(f"sqlite:///{tmp_path / 'outbox.db'}", pool_size=1)
    table.metadata.create_all(database.engine)
    leases: list[datetime | None] = []

    def hung(_: dict[str, Any]) -> None:
        clock[0] += outbox_module.LEASE + timedelta(seconds=1)  # the call ran out of time
        raise Unavailable("membership is unavailable (DEADLINE_EXCEEDED)", reason="MEMBERSHIP_UNAVAILABLE")

    def next_in_line(payload: dict[str, Any]) -> None:
        with database.snapshot() as connection:
            leases.append(
                connection.execute(
                    select(table.c.lease_until).where(table.c.effect_id == payload["effect"])
                ).scalar_one()
            )

    with database.transaction() as connection:
        outbox_module.add_effect(connection, table, "hung", {"effect": 1}, clock[0])
        outbox_module.add_effect(connection, table, "next", {"effect": 2}, clock[0])
    relay = outbox_module.OutboxRelay(database, table, {"hung": hung, "next": next_in_line})
    try:
        assert relay.deliver_due() == 1
    finally:
        database.dispose()
    assert leases == [clock[0] + outbox_module.LEASE]
