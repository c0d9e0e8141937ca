"""How orders' outbox effects are delivered: each calls another service by its idempotent
contract and, where the order shows the result, writes it back on the order."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from quanyu.errors import NotFound
from quanyu.events import EVENTS_PER_CALL
from quanyu.outbox import BatchDeliverer, Deliver, refusals_are_final
from services.orders.domain import events as kinds
from services.orders.handlers import OrdersService
from services.orders.ports import Downstream, Earn

# Earns a BatchEarnPoints call carries: each is a few statements in membership's one transaction,
# so a backlog is worked off in calls well inside their deadline (membership takes up to 500).
EARNS_PER_CALL = 100
# Stock commits a BatchCommitReservations call carries (fulfilment's cap): one call and one commit
# a till sale kept the fulfilment lane seconds behind at 130 orders a second.
COMMITS_PER_CALL = 100

# Effects bound for one service travel together and in order; a hung membership then holds up
# only points and coupons, never the stock that fulfilment should commit or release.
LANES = {
    "fulfilment": (
        kinds.ASSIGN,
        kinds.TAKE_IN_STORE_STOCK,
        kinds.COMMIT_STOCK,
        kinds.RELEASE_STOCK,
        kinds.RECORD_ORIGIN_HOURS,
    ),
    "membership": (kinds.EARN_POINTS, kinds.REVERSE_POINTS, kinds.RELEASE_COUPON),
    # Marketing only hears what happened: when it is down or slow, orders and their other
    # effects go on as ever and its events wait here.
    "marketing": (kinds.MARKETING_EVENT,),
}


def deliverers(orders: OrdersService, downstream: Downstream) -> dict[str, Deliver]:
    def assign(payload: dict[str, Any]) -> None:
        orders.reroute(payload["order_id"], payload.get("release_store_id", ""))

    def take_in_store_stock(payload: dict[str, Any]) -> None:
        # A till sale made while fulfilment was down: its stock leaves the shelf now.
        order = orders.order(payload["order_id"])
        if order is None:
            return
        downstream.assign(
            order.order_id, order.lines, order.fulfilment_type, order.where(), at=order.create_time
        )
        downstream.commit(order.order_id)

    def commit(payload: dict[str, Any]) -> None:
        downstream.commit(payload["order_id"])

    def release(payload: dict[str, Any]) -> None:
        downstream.release(payload["order_id"], payload.get("store_id", ""))

    def earn(payload: dict[str, Any]) -> None:
        points = downstream.earn_points(
            payload["member_id"], payload["order_id"], payload["spend_cents"], payload.get("store_id", "")
        )
        orders.note_points_earned(payload["order_id"], points)

    def unless_stored(payload: dict[str, Any]) -> bool:
        """A give-back for a refused order is void if a concurrent retry stored that order."""
        return bool(payload.get("unless_stored")) and orders.order(payload["order_id"]) is not None

    def reverse(payload: dict[str, Any]) -> None:
        if not unless_stored(payload):
            downstream.reverse_points(payload["order_id"], payload.get("reason", ""))

    def release_coupon(payload: dict[str, Any]) -> None:
        if unless_stored(payload):
            return
        try:
            downstream.release_coupon(payload["code"], payload["order_id"])
        except NotFound:
            return  # no coupon has the code: nothing was taken, nothing to give back

    def origin_hours(payload: dict[str, Any]) -> None:
        was_open = downstream.is_open(payload["store_id"], datetime.fromisoformat(payload["at"]))
        orders.note_origin_hours(payload["order_id"], was_open)

    plain: dict[str, Callable[[dict[str, Any]], None]] = {
        kinds.ASSIGN: assign,
        kinds.TAKE_IN_STORE_STOCK: take_in_store_stock,
        kinds.COMMIT_STOCK: commit,
        kinds.RELEASE_STOCK: release,
        kinds.EARN_POINTS: earn,
        kinds.REVERSE_POINTS: reverse,
        kinds.RELEASE_COUPON: release_coupon,
        kinds.RECORD_ORIGIN_HOURS: origin_hours,
        # For a batch marketing refused: one event a call, so only the bad one is left for ops.
        kinds.MARKETING_EVENT: lambda payload: downstream.ingest_events([payload]),
    }
    service = {kind: name for name, lane in LANES.items() for kind in lane}
    return {kind: refusals_are_final(service[kind], deliver) for kind, deliver in plain.items()}


def batched(orders: OrdersService, downstream: Downstream) -> dict[str, BatchDeliverer]:
    """Kinds a lane's run of goes in one call: marketing's events in one IngestEvents, points in
    one BatchEarnPoints whose answers are written back on their orders in one transaction, stock
    commits in one BatchCommitReservations. At 60 orders a second, one call and one commit a
    point each kept the lane seconds behind."""

    def earn_many(payloads: list[dict[str, Any]]) -> None:
        earns = [
            Earn(p["member_id"], p["order_id"], p["spend_cents"], p.get("store_id", "")) for p in payloads
        ]
        points = downstream.earn_points_many(earns)
        orders.note_points_earned_many({e.source_id: earned for e, earned in zip(earns, points, strict=True)})

    def commit_many(payloads: list[dict[str, Any]]) -> None:
        downstream.commit_many([p["order_id"] for p in payloads])

    return {
        kinds.MARKETING_EVENT: BatchDeliverer(
            refusals_are_final("marketing", downstream.ingest_events), size=EVENTS_PER_CALL
        ),
        kinds.EARN_POINTS: BatchDeliverer(refusals_are_final("membership", earn_many), size=EARNS_PER_CALL),
        kinds.COMMIT_STOCK: BatchDeliverer(
            refusals_are_final("fulfilment", commit_many), size=COMMITS_PER_CALL
        ),
    }
