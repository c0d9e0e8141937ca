"""Orders' repository: the order aggregate with its lines, rejections and status history, loaded
and saved in one transaction; and the outbox its effects are recorded in."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, case, func, insert, select, update
from sqlalchemy.engine import Connection

from quanyu.db import from_row, joined_sum, wide_sum
from quanyu.outbox import add_effect
from quanyu.unit_of_work import ConcurrentChange
from services.orders.domain import Effect, FulfilmentType, Line, Order, Price, Status, StatusChange
from services.orders.ports import GuideFigures, Page, StoreFigures
from services.orders.storage.known import KnownRepository
from services.orders.storage.tables import order_lines, order_rejections, orders, outbox, status_changes

# What every CreateOrder runs, built once: only the parameters change per call, and a statement
# built per call (each value coerced into a bound parameter) costs more than running it.
_NEW_ORDER = insert(orders)
_NEW_LINES = insert(order_lines)
_NEW_CHANGE = insert(status_changes)
# A request id is looked up under its caller and, for orders placed before request ids had
# owners, in the shared namespace (owner ""): both rows come back in one round trip.
_SHARED = ""
_FINGERPRINTS = select(orders.c.request_owner, orders.c.order_id, orders.c.request_fingerprint).where(
    orders.c.request_id == bindparam("request"),
    orders.c.request_owner.in_([bindparam("owner"), bindparam("shared")]),
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
_NEW_REJECTION = insert(order_rejections)
# What a change of an order may touch; the status only from where it was loaded.
_SAVE = update(orders).where(orders.c.order_id == bindparam("key"))
_MOVE = _SAVE.where(orders.c.status == bindparam("was"))


def _change_rows(order: Order) -> list[dict[str, Any]]:
    return [
        {
            "order_id": order.order_id,
            "from_status": c.from_status,
            "to_status": c.to_status,
            "actor": c.actor,
            "reason": c.reason,
            "store_id": c.store_id,
            "change_time": c.change_time,
        }
        for c in order.changes
    ]


# A new order, its lines and its first status changes in one statement on PostgreSQL (a WITH of
# inserts): one round trip where there were three. Built once per shape, for the shapes nearly
# every order has; a larger order takes the three statements.
_PLACING_SHAPES = 16
_placings: dict[tuple[int, int], Any] = {}


def _placing(row: dict[str, Any], lines: int, changes: int) -> Any:
    if not 0 < lines <= _PLACING_SHAPES or changes > _PLACING_SHAPES:
        return None
    statement = _placings.get((lines, changes))
    if statement is None:

        def rows(table: Any, prefix: str, count: int) -> list[dict[str, Any]]:
            return [
                {
                    c.name: bindparam(f"{prefix}{i}_{c.name}", type_=c.type)
                    for c in table.c
                    if c.name != "change_id"
                }
                for i in range(count)
            ]

        statement = insert(orders).values({name: bindparam(name, type_=orders.c[name].type) for name in row})
        statement = statement.add_cte(
            insert(order_lines).values(rows(order_lines, "line", lines)).cte("new_lines")
        )
        if changes:
            new_changes = insert(status_changes).values(rows(status_changes, "change", changes))
            statement = statement.add_cte(new_changes.cte("new_changes"))
        _placings[(lines, changes)] = statement
    return statement


class OrderRepository:
    def __init__(self, connection: Connection) -> None:
        self._db = connection
        # (owner, request id) -> what fingerprint() found, for this transaction's later asks.
        self._fingerprints: dict[tuple[str, str], tuple[str, str] | None] = {}

    def add(self, order: Order, fingerprint: str, *, owner: str) -> None:
        self._fingerprints.clear()
        location = order.delivery_location
        row = {
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
            "pickup_store_id": order.pickup_store_id,
            "fulfilling_store_id": order.fulfilling_store_id,
            "guide_id": order.guide_id,
            "status": order.status.value,
            "status_reason": order.status_reason,
            "coupon_code": order.coupon_code,
            "points_earned": order.points_earned,
            "origin_open": order.origin_open,
            "accept_deadline": order.accept_deadline,
            "create_time": order.create_time,
            "update_time": order.update_time,
            "complete_time": order.complete_time,
        }
        lines = [
            {
                "order_id": order.order_id,
                "line_no": i,
                "sku": ln.sku,
                "quantity": ln.quantity,
                "unit_price_cents": ln.unit_price_cents,
            }
            for i, ln in enumerate(order.lines)
        ]
        placing = (
            _placing(row, len(lines), len(order.changes)) if self._db.dialect.name == "postgresql" else None
        )
        if placing is None:
            self._db.execute(_NEW_ORDER, row)
            self._db.execute(_NEW_LINES, lines)
            self._saved_history(order)
            return
        values: dict[str, Any] = dict(row)
        for i, line in enumerate(lines):
            values.update({f"line{i}_{name}": value for name, value in line.items()})
        for i, change in enumerate(_change_rows(order)):
            values.update({f"change{i}_{name}": value for name, value in change.items()})
        self._db.execute(placing, values)
        order.changes.clear()

    def fingerprint(self, owner: str, request_id: str) -> tuple[str, str] | None:
        """(order id, fingerprint) of the order placed under `request_id` by `owner`. The shared
        namespace's answer is read in the same statement and kept: a new request asks for both."""
        key = (owner, request_id)
        if key not in self._fingerprints:
            rows = self._db.execute(_FINGERPRINTS, {"request": request_id, "owner": owner, "shared": _SHARED})
            self._fingerprints[key] = self._fingerprints[(_SHARED, request_id)] = None
            for row in rows:
                self._fingerprints[(row.request_owner, request_id)] = (row.order_id, row.request_fingerprint)
        return self._fingerprints[key]

    def get(self, order_id: str, *, lock: bool = False) -> Order | None:
        key = {"key": order_id}
        row = self._db.execute(_ORDER_LOCKED if lock else _ORDER, key).one_or_none()
        if row is None:
            return None
        lines = self._db.execute(_LINES, key).all()
        rejected = self._db.execute(_REJECTED, key).scalars().all()
        return _order(row, [Line(ln.sku, ln.quantity, ln.unit_price_cents) for ln in lines], list(rejected))

    def save(self, order: Order) -> None:
        """What changed on `order` since it was loaded. A change of status is saved only if the
        order is still where it was loaded; otherwise ConcurrentChange, and the use case runs
        again on the order as it now is."""
        values = {
            "key": order.order_id,
            "status": order.status.value,
            "status_reason": order.status_reason,
            "fulfilling_store_id": order.fulfilling_store_id,
            "accept_deadline": order.accept_deadline,
            "update_time": order.update_time,
            "complete_time": order.complete_time,
            "points_earned": order.points_earned,
            "origin_open": order.origin_open,
        }
        if order.changes:
            moved = self._db.execute(_MOVE, {**values, "was": order.changes[0].from_status})
        else:
            moved = self._db.execute(_SAVE, values)
        if moved.rowcount != 1:
            raise ConcurrentChange(f"order {order.order_id}")
        if order.rejections:
            self._db.execute(
                _NEW_REJECTION,
                [
                    {
                        "order_id": order.order_id,
                        "store_id": r.store_id,
                        "reason": r.reason,
                        "reject_time": r.reject_time,
                    }
                    for r in order.rejections
                ],
            )
            order.rejections.clear()
        self._saved_history(order)

    def _saved_history(self, order: Order) -> None:
        if order.changes:
            self._db.execute(_NEW_CHANGE, _change_rows(order))
            order.changes.clear()

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

    def page(self, page: Page) -> list[Order]:
        query = select(orders.c.order_id)
        if page.customer_id:
            query = query.where(orders.c.customer_id == page.customer_id)
        if page.store_id:
            query = query.where(orders.c.fulfilling_store_id == page.store_id)
        if page.channel:
            query = query.where(orders.c.channel == page.channel)
        if page.statuses:
            query = query.where(orders.c.status.in_([s.value for s in page.statuses]))
        if page.before is not None:
            time, order_id = page.before
            query = query.where(
                (orders.c.create_time < time)
                | ((orders.c.create_time == time) & (orders.c.order_id < order_id))
            )
        ids = self._db.execute(
            query.order_by(orders.c.create_time.desc(), orders.c.order_id.desc()).limit(page.limit)
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

    def store_report(self, store_id: str, start: datetime, end: datetime) -> StoreFigures:
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
        counts = [int(value) for value in row[:4]]
        return StoreFigures(counts[0], counts[1], counts[2], counts[3], joined_sum(*row[4:]))

    def guide_report(
        self, guide_id: str, start: datetime, end: datetime, origin_store_id: str
    ) -> GuideFigures:
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
        members, count, online, in_store = (int(value) for value in row[:4])
        return GuideFigures(members, count, online, in_store, joined_sum(*row[4:]))


def _order(row: Any, lines: list[Line], rejected: list[str]) -> Order:
    location = None
    if row.delivery_latitude is not None:
        location = (row.delivery_latitude, row.delivery_longitude, int(row.delivery_system or 0))
    return from_row(
        Order,
        row,
        fulfilment_type=FulfilmentType(row.fulfilment_type),
        lines=lines,
        price=Price(row.subtotal_cents, row.discount_cents, row.points_redeemed),
        delivery_location=location,
        status=Status(row.status),
        rejected_store_ids=rejected,
    )


class EffectLog:
    """The outbox: effects recorded in the transaction of the change that has them."""

    def __init__(self, connection: Connection) -> None:
        self._db = connection

    def add(self, effect: Effect, now: datetime, *, delay: timedelta = timedelta(0)) -> None:
        add_effect(self._db, outbox, effect.kind, effect.payload(), now, delay=delay)


class SqlStores:
    """The stores of one connection, for SqlUnitOfWork."""

    def __init__(self, connection: Connection) -> None:
        self.orders = OrderRepository(connection)
        self.outbox = EffectLog(connection)
        self.known = KnownRepository(connection)
