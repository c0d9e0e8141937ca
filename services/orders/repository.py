"""Orders' repository: orders with their lines, rejections and status history, one transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, case, func, insert, select, update
from sqlalchemy.engine import Connection

from quanyu.db import joined_sum, wide_sum
from services.orders.domain import FulfilmentType, Line, Order, Price, Status
from services.orders.storage import order_lines, order_rejections, orders, status_changes


@dataclass(frozen=True)
class StatusChange:
    from_status: str
    to_status: str
    actor: str
    reason: str
    store_id: str
    change_time: datetime


# What every CreateOrder runs, built once: only the parameters change per call, and a statement
# built per call (each value coerced into a bound parameter) costs more than running it.
_NEW_ORDER = insert(orders)
_NEW_LINES = insert(order_lines)
_NEW_CHANGE = insert(status_changes)
_FINGERPRINT = select(orders.c.order_id, orders.c.request_fingerprint).where(
    orders.c.request_owner == bindparam("owner"), orders.c.request_id == bindparam("request")
)
# And what every read of an order and every change of its status runs (each store's queue reads
# a page of orders one by one). The updates name no values: each call's parameters besides `key`
# and `was` are the columns it sets.
_ORDER = select(orders).where(orders.c.order_id == bindparam("key"))
_ORDER_LOCKED = _ORDER.with_for_update()
_LINES = select(order_lines).where(order_lines.c.order_id == bindparam("key")).order_by(order_lines.c.line_no)
_REJECTED = (
    select(order_rejections.c.store_id)
    .where(order_rejections.c.order_id == bindparam("key"))
    .order_by(order_rejections.c.reject_time, order_rejections.c.store_id)
)
_POINTS_EARNED = select(orders.c.points_earned).where(orders.c.order_id == bindparam("key"))
_FULFILLING_STORE = select(orders.c.fulfilling_store_id).where(orders.c.order_id == bindparam("key"))
_SET_FIELDS = update(orders).where(orders.c.order_id == bindparam("key"))
_MOVE = _SET_FIELDS.where(orders.c.status == bindparam("was"))


def _columns(fields: dict[str, Any]) -> dict[str, Any]:
    """`fields`, each named after a column of orders: the updates above would leave a misspelt
    one out of their SET clause without a word."""
    unknown = fields.keys() - orders.c.keys()
    if unknown:
        raise TypeError(f"orders has no column {', '.join(sorted(unknown))}")
    return fields


class OrderRepository:
    def __init__(self, connection: Connection) -> None:
        self._db = connection

    def insert(self, order: Order, fingerprint: str, *, owner: str, actor: str) -> None:
        location = order.delivery_location
        self._db.execute(
            _NEW_ORDER,
            {
                "order_id": order.order_id,
                "request_owner": owner,
                "request_id": order.request_id,
                "request_fingerprint": fingerprint,
                "customer_id": order.customer_id,
                "member_id": order.member_id,
                "channel": order.channel,
                "fulfilment_type": order.fulfilment_type.value,
                "subtotal_cents": order.price.subtotal_cents,
                "discount_cents": order.price.discount_cents,
                "points_redeemed": order.price.points_redeemed,
                "total_cents": order.price.total_cents,
                "delivery_latitude": location[0] if location else None,
                "delivery_longitude": location[1] if location else None,
                "delivery_system": location[2] if location else None,
                "delivery_address": order.delivery_address,
                "origin_store_id": order.origin_store_id,
                "fulfilling_store_id": order.fulfilling_store_id,
                "guide_id": order.guide_id,
                "status": order.status.value,
                "status_reason": order.status_reason,
                "coupon_code": order.coupon_code,
                "points_earned": 0,
                "origin_open": None,
                "accept_deadline": order.accept_deadline,
                "create_time": order.create_time,
                "update_time": order.update_time,
                "complete_time": order.create_time if order.status is Status.COMPLETED else None,
            },
        )
        self._db.execute(
            _NEW_LINES,
            [
                {
                    "order_id": order.order_id,
                    "line_no": i,
                    "sku": ln.sku,
                    "quantity": ln.quantity,
                    "unit_price_cents": ln.unit_price_cents,
                }
                for i, ln in enumerate(order.lines)
            ],
        )
        self.record_change(
            order.order_id,
            "",
            order.status.value,
            actor=actor,
            reason=order.status_reason,
            store_id=order.fulfilling_store_id,
            now=order.create_time,
        )

    def fingerprint(self, owner: str, request_id: str) -> tuple[str, str] | None:
        row = self._db.execute(_FINGERPRINT, {"owner": owner, "request": request_id}).one_or_none()
        return (row.order_id, row.request_fingerprint) if row else None

    def get(self, order_id: str, *, lock: bool = False) -> Order | None:
        key = {"key": order_id}
        row = self._db.execute(_ORDER_LOCKED if lock else _ORDER, key).one_or_none()
        if row is None:
            return None
        lines = self._db.execute(_LINES, key).all()
        rejected = self._db.execute(_REJECTED, key).scalars().all()
        return _order(row, [Line(ln.sku, ln.quantity, ln.unit_price_cents) for ln in lines], list(rejected))

    def points_earned(self, order_id: str) -> int:
        return int(self._db.execute(_POINTS_EARNED, {"key": order_id}).scalar_one())

    def move(
        self,
        order_id: str,
        from_status: Status,
        to_status: Status,
        *,
        actor: str,
        reason: str,
        now: datetime,
        **fields: Any,
    ) -> bool:
        """Change status only if the order is still where the caller saw it; False otherwise."""
        moved = self._db.execute(
            _MOVE,
            {
                "key": order_id,
                "was": from_status.value,
                "status": to_status.value,
                "status_reason": reason,
                "update_time": now,
                **_columns(fields),
            },
        )
        if moved.rowcount != 1:
            return False
        store = fields.get("fulfilling_store_id")
        if store is None:
            store = self._db.execute(_FULFILLING_STORE, {"key": order_id}).scalar_one()
        self.record_change(
            order_id, from_status.value, to_status.value, actor=actor, reason=reason, store_id=store, now=now
        )
        return True

    def set_fields(self, order_id: str, **fields: Any) -> None:
        self._db.execute(_SET_FIELDS, {"key": order_id, **_columns(fields)})

    def reject(self, order_id: str, store_id: str, reason: str, now: datetime) -> None:
        self._db.execute(
            insert(order_rejections).values(
                order_id=order_id, store_id=store_id, reason=reason, reject_time=now
            )
        )

    def record_change(
        self,
        order_id: str,
        from_status: str,
        to_status: str,
        *,
        actor: str,
        reason: str,
        store_id: str,
        now: datetime,
    ) -> None:
        self._db.execute(
            _NEW_CHANGE,
            {
                "order_id": order_id,
                "from_status": from_status,
                "to_status": to_status,
                "actor": actor,
                "reason": reason[:256],
                "store_id": store_id,
                "change_time": now,
            },
        )

    def history(self, order_id: str) -> list[StatusChange]:
        rows = self._db.execute(
            select(status_changes)
            .where(status_changes.c.order_id == order_id)
            .order_by(status_changes.c.change_id)
        )
        return [
            StatusChange(r.from_status, r.to_status, r.actor, r.reason, r.store_id, r.change_time)
            for r in rows
        ]

    def page(
        self,
        *,
        customer_id: str,
        store_id: str,
        channel: str,
        statuses: Sequence[Status],
        before: tuple[datetime, str] | None,
        limit: int,
    ) -> list[Order]:
        query = select(orders.c.order_id)
        if customer_id:
            query = query.where(orders.c.customer_id == customer_id)
        if store_id:
            query = query.where(orders.c.fulfilling_store_id == store_id)
        if channel:
            query = query.where(orders.c.channel == channel)
        if statuses:
            query = query.where(orders.c.status.in_([s.value for s in statuses]))
        if before is not None:
            time, order_id = before
            query = query.where(
                (orders.c.create_time < time)
                | ((orders.c.create_time == time) & (orders.c.order_id < order_id))
            )
        ids = self._db.execute(
            query.order_by(orders.c.create_time.desc(), orders.c.order_id.desc()).limit(limit)
        )
        found = [self.get(order_id) for order_id in ids.scalars()]
        return [order for order in found if order is not None]

    def count_by_status(self) -> dict[str, float]:
        rows = self._db.execute(select(orders.c.status, func.count()).group_by(orders.c.status))
        return {status: float(count) for status, count in rows}

    def due_for_timeout(self, now: datetime, limit: int) -> list[tuple[str, str]]:
        """(order, store) of ASSIGNED orders whose store let the accept window pass."""
        rows = self._db.execute(
            select(orders.c.order_id, orders.c.fulfilling_store_id)
            .where(orders.c.status == Status.ASSIGNED.value, orders.c.accept_deadline < now)
            .order_by(orders.c.accept_deadline)
            .limit(limit)
        )
        return [(r.order_id, r.fulfilling_store_id) for r in rows]

    def store_report(self, store_id: str, start: datetime, end: datetime) -> dict[str, int]:
        live = (
            (orders.c.create_time >= start)
            & (orders.c.create_time < end)
            & (orders.c.status != Status.CANCELLED.value)
        )
        fulfilled = (orders.c.fulfilling_store_id == store_id) & (orders.c.status == Status.COMPLETED.value)
        originated = orders.c.origin_store_id == store_id
        row = self._db.execute(
            select(
                func.coalesce(func.sum(case((originated, 1), else_=0)), 0),
                func.coalesce(func.sum(case((fulfilled, 1), else_=0)), 0),
                func.coalesce(
                    func.sum(
                        case(
                            (
                                fulfilled
                                & (orders.c.origin_store_id != store_id)
                                & (orders.c.origin_store_id != ""),
                                1,
                            ),
                            else_=0,
                        )
                    ),
                    0,
                ),
                func.coalesce(
                    func.sum(case((originated & (orders.c.origin_open.is_(False)), 1), else_=0)), 0
                ),
                *wide_sum(case((fulfilled, orders.c.total_cents), else_=0)),
            ).where(live, originated | (orders.c.fulfilling_store_id == store_id))
        ).one()
        keys = ("originated", "fulfilled", "for_others", "while_closed")
        figures = {key: int(value) for key, value in zip(keys, row[:4], strict=True)}
        figures["revenue"] = joined_sum(*row[4:])
        return figures

    def guide_report(
        self, guide_id: str, start: datetime, end: datetime, origin_store_id: str
    ) -> dict[str, int]:
        query = select(
            func.count(func.distinct(orders.c.member_id)),
            func.count(),
            func.coalesce(
                func.sum(case((orders.c.fulfilment_type != FulfilmentType.IN_STORE.value, 1), else_=0)), 0
            ),
            func.coalesce(
                func.sum(case((orders.c.fulfilment_type == FulfilmentType.IN_STORE.value, 1), else_=0)), 0
            ),
            *wide_sum(orders.c.total_cents),
        ).where(
            orders.c.guide_id == guide_id,
            orders.c.create_time >= start,
            orders.c.create_time < end,
            orders.c.status != Status.CANCELLED.value,
        )
        if origin_store_id:
            query = query.where(orders.c.origin_store_id == origin_store_id)
        row = self._db.execute(query).one()
        keys = ("members", "orders", "online", "in_store")
        figures = {key: int(value) for key, value in zip(keys, row[:4], strict=True)}
        figures["revenue"] = joined_sum(*row[4:])
        return figures


def _order(row: Any, lines: list[Line], rejected: list[str]) -> Order:
    location = None
    if row.delivery_latitude is not None:
        location = (row.delivery_latitude, row.delivery_longitude, int(row.delivery_system or 0))
    return Order(
        order_id=row.order_id,
        request_id=row.request_id,
        customer_id=row.customer_id,
        member_id=row.member_id,
        channel=row.channel,
        fulfilment_type=FulfilmentType(row.fulfilment_type),
        lines=lines,
        price=Price(row.subtotal_cents, row.discount_cents, row.points_redeemed),
        delivery_location=location,
        delivery_address=row.delivery_address,
        origin_store_id=row.origin_store_id,
        fulfilling_store_id=row.fulfilling_store_id,
        guide_id=row.guide_id,
        status=Status(row.status),
        status_reason=row.status_reason,
        coupon_code=row.coupon_code,
        points_earned=row.points_earned,
        create_time=row.create_time,
        update_time=row.update_time,
        rejected_store_ids=rejected,
        accept_deadline=row.accept_deadline,
    )
