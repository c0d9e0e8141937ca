"""Fulfilment's tables and repositories: stores, stock, reservations and decision records.

The database is the arbiter of stock: CHECK constraints keep on-hand and reserved sane, and
every reservation is a conditional UPDATE, so two replicas can never reserve the same unit.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
    and_,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection

from quanyu.db import UtcDateTime, new_metadata
from services.fulfilment.domain.assignment import Assignment, Availability, Decision, Line, Verdict
from services.fulfilment.domain.hours import OpeningHours
from services.fulfilment.domain.stores import Store, StoreStatus

metadata = new_metadata()

stores = Table(
    "stores",
    metadata,
    Column("store_id", String(64), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("latitude", Float, nullable=False),
    Column("longitude", Float, nullable=False),
    Column("status", String(16), nullable=False),
    Column("delivery_radius_m", Float, nullable=False),
    Column("delivery_zone_geojson", Text, nullable=False),
    Column("opening_hours", Text, nullable=False),  # JSON [[weekday, "HH:MM", "HH:MM"], ...]
    Column("timezone", String(64), nullable=False),
    Column("max_active_orders", Integer, nullable=False),
    Column("priority", Integer, nullable=False),
    # Orders holding an active reservation here; the capacity check is a conditional update.
    Column("open_orders", Integer, nullable=False, server_default="0"),
    # Taken from store_revision in the writing transaction, so replicas refreshing their
    # catalogue read changes in commit order: "everything after revision N".
    Column("revision", BigInteger, nullable=False, index=True),
    Column("create_time", UtcDateTime(), nullable=False),
    Column("update_time", UtcDateTime(), nullable=False),
    CheckConstraint("open_orders >= 0", name="open_orders_not_negative"),
)

store_revision = Table(
    "store_revision",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("revision", BigInteger, nullable=False),
)

stock = Table(
    "stock",
    metadata,
    Column("store_id", String(64), primary_key=True),
    Column("sku", String(64), primary_key=True),
    Column("on_hand", BigInteger, nullable=False),
    Column("reserved", BigInteger, nullable=False, server_default="0"),
    Column("update_time", UtcDateTime(), nullable=False),
    CheckConstraint("on_hand >= 0", name="on_hand_not_negative"),
    CheckConstraint("reserved >= 0", name="reserved_not_negative"),
    CheckConstraint("reserved <= on_hand", name="reserved_within_on_hand"),
)

# One row per order that was ever assigned: its key serialises concurrent calls for one order.
assignments = Table(
    "assignments",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("state", String(16), nullable=False),  # ACTIVE, RELEASED, COMMITTED
    Column("fulfilment_type", String(16), nullable=False),
    Column("create_time", UtcDateTime(), nullable=False),
    Column("update_time", UtcDateTime(), nullable=False),
)

reservations = Table(
    "reservations",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("store_id", String(64), primary_key=True),
    Column("sku", String(64), primary_key=True),
    Column("quantity", BigInteger, nullable=False),
    Column("unit_price_cents", BigInteger, nullable=False),
    Column("line_no", Integer, nullable=False),
    Column("distance_m", Float, nullable=False),
    Column("state", String(16), nullable=False),  # ACTIVE, RELEASED, COMMITTED
    Column("update_time", UtcDateTime(), nullable=False),
    Index("ix_reservations_store_id_state", "store_id", "state"),
    CheckConstraint("quantity > 0", name="quantity_positive"),
)

decisions = Table(
    "assignment_decisions",
    metadata,
    Column("decision_id", Integer, primary_key=True, autoincrement=True),
    Column("order_id", String(64), nullable=False, index=True),
    Column("decide_time", UtcDateTime(), nullable=False),
    Column("fulfilment_type", String(16), nullable=False),
    Column("latitude", Float, nullable=True),
    Column("longitude", Float, nullable=True),
    Column("outcome_reason", String(32), nullable=False),  # "" when assigned
    Column("detail", Text, nullable=False),  # JSON: assignments and verdicts
)

ACTIVE, RELEASED, COMMITTED = "ACTIVE", "RELEASED", "COMMITTED"


def store_from_row(row: Any) -> Store:
    return Store(
        store_id=row.store_id,
        name=row.name,
        latitude=row.latitude,
        longitude=row.longitude,
        status=StoreStatus(row.status),
        delivery_radius_m=row.delivery_radius_m,
        delivery_zone_geojson=row.delivery_zone_geojson,
        opening_hours=_hours_from_json(row.opening_hours),
        timezone=sys.intern(row.timezone),
        max_active_orders=row.max_active_orders,
        priority=row.priority,
    )


def _hours_to_json(hours: Iterable[OpeningHours]) -> str:
    return json.dumps([[h.weekday, h.open.strftime("%H:%M"), h.close.strftime("%H:%M")] for h in hours])


@functools.lru_cache(maxsize=4096)
def _hours_from_json(text: str) -> tuple[OpeningHours, ...]:
    # Stores share a few hundred weekly patterns. Reading stores back (the catalogue refresh
    # after every import call reads the whole batch) parsed the same ones over and over, a
    # fifth of the time a bulk import took; parsed hours are immutable, so they can be shared.
    from services.fulfilment.domain.hours import parse_hours

    return tuple(parse_hours([(int(w), str(o), str(c)) for w, o, c in json.loads(text)]))


@dataclass(frozen=True)
class StockLevel:
    store_id: str
    sku: str
    on_hand: int
    reserved: int

    @property
    def available(self) -> int:
        return max(0, self.on_hand - self.reserved)


class StoreRepository:
    def __init__(self, connection: Connection) -> None:
        self._db = connection

    def next_revision(self) -> int:
        """Take the next store revision; the row lock orders writers by commit."""
        bumped = self._db.execute(
            update(store_revision)
            .where(store_revision.c.id == 1)
            .values(revision=store_revision.c.revision + 1)
        )
        if bumped.rowcount == 0:
            self._db.execute(insert(store_revision).values(id=1, revision=1))
        return int(
            self._db.execute(select(store_revision.c.revision).where(store_revision.c.id == 1)).scalar_one()
        )

    def upsert(self, batch: Sequence[Store], now: datetime) -> None:
        if not batch:
            return
        revision = self.next_revision()
        ids = [s.store_id for s in batch]
        existing = set(
            self._db.execute(select(stores.c.store_id).where(stores.c.store_id.in_(ids))).scalars()
        )
        rows = [self._row(s, revision, now) for s in batch]
        new_rows = [r for r in rows if r["store_id"] not in existing]
        if new_rows:
            self._db.execute(insert(stores), [{**r, "create_time": now, "open_orders": 0} for r in new_rows])
        replaced = [
            {"key": r["store_id"], **{k: v for k, v in r.items() if k != "store_id"}}
            for r in rows
            if r["store_id"] in existing
        ]
        if replaced:
            # One executemany for the batch: a statement per store made re-importing 100,000
            # stores take tens of seconds. The SET clause is every column given but the key.
            self._db.execute(update(stores).where(stores.c.store_id == bindparam("key")), replaced)

    @staticmethod
    def _row(store: Store, revision: int, now: datetime) -> dict[str, Any]:
        return {
            "store_id": store.store_id,
            "name": store.name,
            "latitude": store.latitude,
            "longitude": store.longitude,
            "status": store.status.value,
            "delivery_radius_m": store.delivery_radius_m,
            "delivery_zone_geojson": store.delivery_zone_geojson,
            "opening_hours": _hours_to_json(store.opening_hours),
            "timezone": store.timezone,
            "max_active_orders": store.max_active_orders,
            "priority": store.priority,
            "revision": revision,
            "update_time": now,
        }

    def get(self, store_id: str) -> Store | None:
        row = self._db.execute(select(stores).where(stores.c.store_id == store_id)).one_or_none()
        return store_from_row(row) if row else None

    def exists(self, store_id: str) -> bool:
        return (
            self._db.execute(select(stores.c.store_id).where(stores.c.store_id == store_id)).first()
            is not None
        )

    def page(self, after: str, limit: int) -> list[Store]:
        rows = self._db.execute(
            select(stores).where(stores.c.store_id > after).order_by(stores.c.store_id).limit(limit)
        ).all()
        return [store_from_row(r) for r in rows]

    def changed_since(self, revision: int) -> tuple[list[Store], int]:
        """Stores written after `revision`, and the newest revision seen."""
        rows = self._db.execute(select(stores).where(stores.c.revision > revision)).all()
        newest = max((r.revision for r in rows), default=revision)
        return [store_from_row(r) for r in rows], newest

    def all(self) -> tuple[list[Store], int]:
        rows = self._db.execute(select(stores)).all()
        return [store_from_row(r) for r in rows], max((r.revision for r in rows), default=0)


# Stock as a till or ERP sets it and reads it back.
_LEVELS = select(stock).where(stock.c.store_id == bindparam("store")).order_by(stock.c.sku)
_LEVELS_OF = _LEVELS.where(stock.c.sku.in_(bindparam("items", expanding=True)))
# Locked while the new counts are checked against what is reserved and written, so that no
# reservation lands in between (on SQLite the write lock already keeps it out). In code-point
# order of SKU, as reserve() takes them: a database collated for a language (en_US) would sort
# "a" before "B", and two transactions taking the same rows in different orders can deadlock.
# ("C" is code-point order on a UTF-8 database, as Python's sorted() is.)
_LEVELS_OF_LOCKED = _LEVELS_OF.order_by(None).order_by(stock.c.sku.collate("C")).with_for_update()
_NEW_LEVELS = insert(stock)
_SET_ON_HAND = (
    update(stock)
    .where(stock.c.store_id == bindparam("store"), stock.c.sku == bindparam("item"))
    .values(on_hand=bindparam("units"), update_time=bindparam("at"))
)


class StockRepository:
    def __init__(self, connection: Connection) -> None:
        self._db = connection

    def levels(self, store_id: str, skus: Sequence[str] = ()) -> list[StockLevel]:
        if skus:
            rows = self._db.execute(_LEVELS_OF, {"store": store_id, "items": list(skus)})
        else:
            rows = self._db.execute(_LEVELS, {"store": store_id})
        return [StockLevel(r.store_id, r.sku, r.on_hand, r.reserved) for r in rows]

    def set_on_hand(self, store_id: str, on_hand: Mapping[str, int], now: datetime) -> list[str]:
        """Set absolute on-hand counts; the SKUs whose count would fall below what is reserved."""
        # SQLite has no "C" collation and no row locks, and its write lock already keeps orders out.
        locking = _LEVELS_OF_LOCKED if self._db.dialect.name == "postgresql" else _LEVELS_OF
        locked = self._db.execute(locking, {"store": store_id, "items": list(on_hand)})
        reserved = {row.sku: row.reserved for row in locked}
        below = [sku for sku, units in on_hand.items() if sku in reserved and units < reserved[sku]]
        if below:
            return below
        new = [
            {"store_id": store_id, "sku": sku, "on_hand": u, "reserved": 0, "update_time": now}
            for sku, u in on_hand.items()
            if sku not in reserved
        ]
        if new:
            self._db.execute(_NEW_LEVELS, new)
        known = [
            {"store": store_id, "item": sku, "units": units, "at": now}
            for sku, units in sorted(on_hand.items())
            if sku in reserved
        ]
        if known:
            self._db.execute(_SET_ON_HAND, known)
        return []


class LiveLoad:
    """Open orders and available stock of candidate stores, read in the current transaction."""

    def __init__(self, connection: Connection) -> None:
        self._db = connection

    def availability(self, store_ids: Sequence[str], skus: Sequence[str]) -> dict[str, Availability]:
        if not store_ids:
            return {}
        # One round trip: each store's open orders, with its stock of the wanted SKUs beside it.
        rows = self._db.execute(_LIVE_LOAD, {"stores": list(store_ids), "items": list(skus)})
        opened: dict[str, int] = {}
        units: dict[str, dict[str, int]] = {store_id: {} for store_id in store_ids}
        for store_id, open_orders, sku, available in rows:
            opened[store_id] = int(open_orders)
            if sku is not None:
                units[store_id][sku] = int(available)
        return {store_id: Availability(opened.get(store_id, 0), units[store_id]) for store_id in store_ids}


_LIVE_LOAD = (
    select(stores.c.store_id, stores.c.open_orders, stock.c.sku, stock.c.on_hand - stock.c.reserved)
    .select_from(
        stores.outerjoin(
            stock,
            (stock.c.store_id == stores.c.store_id) & stock.c.sku.in_(bindparam("items", expanding=True)),
        )
    )
    .where(stores.c.store_id.in_(bindparam("stores", expanding=True)))
)


class Contended(Exception):
    """Stock or capacity read a moment ago was taken by another transaction: decide again."""


# Built once: AssignStore runs these on every call, so only their parameters change.
_STATE_OF = select(assignments.c.state).where(assignments.c.order_id == bindparam("order")).with_for_update()
_HELD = (
    select(reservations)
    .where(reservations.c.order_id == bindparam("order"), reservations.c.state.in_((ACTIVE, COMMITTED)))
    .order_by(reservations.c.distance_m, reservations.c.store_id, reservations.c.line_no)
)
_RESERVE_LINES = insert(reservations)
_NEW_ASSIGNMENT = insert(assignments)
_RECORD = insert(decisions)
_TAKE_CAPACITY = (
    update(stores)
    .where(
        stores.c.store_id == bindparam("store"),
        (stores.c.max_active_orders == 0) | (stores.c.open_orders < stores.c.max_active_orders),
    )
    .values(open_orders=stores.c.open_orders + 1)
)
_HOLD_STOCK = (
    update(stock)
    .where(
        stock.c.store_id == bindparam("store"),
        stock.c.sku == bindparam("item"),
        stock.c.on_hand - stock.c.reserved >= bindparam("units"),
    )
    .values(reserved=stock.c.reserved + bindparam("units"), update_time=bindparam("at"))
)
# And what committing or releasing a reservation runs (each order's completion or cancellation).
_COMMITTED_LINES = (
    select(func.count())
    .select_from(reservations)
    .where(reservations.c.order_id == bindparam("order"), reservations.c.state == COMMITTED)
)
_ACTIVE_LINES = select(reservations).where(
    reservations.c.order_id == bindparam("order"), reservations.c.state == ACTIVE
)
_ACTIVE_LINES_AT_STORE = _ACTIVE_LINES.where(reservations.c.store_id == bindparam("store"))
_STOCK_OF_LINE = (
    stock.c.store_id == bindparam("store"),
    stock.c.sku == bindparam("item"),
)
_RELEASE_STOCK = (
    update(stock)
    .where(*_STOCK_OF_LINE)
    .values(reserved=stock.c.reserved - bindparam("units"), update_time=bindparam("at"))
)
_SHIP_STOCK = (
    update(stock)
    .where(*_STOCK_OF_LINE)
    .values(
        reserved=stock.c.reserved - bindparam("units"),
        on_hand=stock.c.on_hand - bindparam("units"),
        update_time=bindparam("at"),
    )
)
_GIVE_BACK_CAPACITY = (
    update(stores).where(stores.c.store_id == bindparam("store")).values(open_orders=stores.c.open_orders - 1)
)
_FINISH_LINE = (
    update(reservations)
    .where(
        reservations.c.order_id == bindparam("order"),
        reservations.c.state == ACTIVE,
        reservations.c.store_id == bindparam("store"),
        reservations.c.sku == bindparam("item"),
    )
    .values(state=bindparam("to"), update_time=bindparam("at"))
)
_LINES_NOT_RELEASED = select(reservations.c.state).where(
    reservations.c.order_id == bindparam("order"), reservations.c.state != RELEASED
)
_SET_STATE = (
    update(assignments)
    .where(assignments.c.order_id == bindparam("order"))
    .values(state=bindparam("to"), update_time=bindparam("at"))
)


class ReservationRepository:
    def __init__(self, connection: Connection) -> None:
        self._db = connection

    def active_orders(self) -> int:
        return int(
            self._db.execute(
                select(func.count()).select_from(assignments).where(assignments.c.state == ACTIVE)
            ).scalar_one()
        )

    def state_of(self, order_id: str) -> str | None:
        """The order's assignment state, its row locked so calls for one order take turns."""
        state: str | None = self._db.execute(_STATE_OF, {"order": order_id}).scalar_one_or_none()
        return state

    def held(self, order_id: str) -> list[Assignment]:
        """The order's assignments while it holds active or committed reservations."""
        rows = self._db.execute(_HELD, {"order": order_id}).all()
        by_store: dict[str, list[Any]] = {}
        for row in rows:
            by_store.setdefault(row.store_id, []).append(row)
        return [
            Assignment(
                store_id,
                group[0].distance_m,
                tuple(Line(r.sku, r.quantity, r.unit_price_cents) for r in group),
            )
            for store_id, group in by_store.items()
        ]

    def reserve(
        self, order_id: str, plan: Sequence[Assignment], fulfilment_type: str, now: datetime, *, known: bool
    ) -> None:
        """Reserve every line of the plan; Contended (the caller rolls back) when stock or capacity
        ran out since it was read. `known`: the order was assigned before (and released)."""
        for assignment in plan:
            if self._db.execute(_TAKE_CAPACITY, {"store": assignment.store_id}).rowcount != 1:
                raise Contended(assignment.store_id)
            merged: dict[str, tuple[int, int, int]] = {}
            for line_no, line in enumerate(assignment.lines):
                units, price, first = merged.get(line.sku, (0, line.unit_price_cents, line_no))
                merged[line.sku] = (units + line.quantity, price, first)
            # By SKU, as finishing a reservation takes them (after the store's row, above):
            # transactions that lock shared rows in one order cannot each wait on the other.
            held = self._db.execute(
                _HOLD_STOCK,
                [
                    {"store": assignment.store_id, "item": sku, "units": units, "at": now}
                    for sku, (units, _, _) in sorted(merged.items())
                ],
            )
            if held.rowcount != len(merged):
                raise Contended(assignment.store_id)
            if known:
                # Lines of an earlier, released reservation at this store make way for the new.
                self._db.execute(
                    delete(reservations).where(
                        reservations.c.order_id == order_id, reservations.c.store_id == assignment.store_id
                    )
                )
            self._db.execute(
                _RESERVE_LINES,
                [
                    {
                        "order_id": order_id,
                        "store_id": assignment.store_id,
                        "sku": sku,
                        "quantity": units,
                        "unit_price_cents": price,
                        "line_no": line_no,
                        "distance_m": assignment.distance_m,
                        "state": ACTIVE,
                        "update_time": now,
                    }
                    for sku, (units, price, line_no) in merged.items()
                ],
            )
        if known:
            self._set_state(order_id, ACTIVE, now)
        else:
            # The order's key is taken last: a concurrent call for the same order fails here and
            # its retry finds these reservations.
            self._db.execute(
                _NEW_ASSIGNMENT,
                {
                    "order_id": order_id,
                    "state": ACTIVE,
                    "fulfilment_type": fulfilment_type,
                    "create_time": now,
                    "update_time": now,
                },
            )

    def release(self, order_id: str, store_id: str, now: datetime) -> int:
        """Give back the order's active reservations (at one store, or all); how many lines."""
        return self._finish(order_id, store_id, RELEASED, now)

    def commit(self, order_id: str, now: datetime) -> tuple[int, int]:
        """Stock leaves the shelf for every active line; (lines committed, lines already committed)."""
        already = self._db.execute(_COMMITTED_LINES, {"order": order_id}).scalar_one()
        return self._finish(order_id, "", COMMITTED, now), int(already)

    def _finish(self, order_id: str, store_id: str, state: str, now: datetime) -> int:
        if store_id:
            rows = self._db.execute(_ACTIVE_LINES_AT_STORE, {"order": order_id, "store": store_id}).all()
        else:
            rows = self._db.execute(_ACTIVE_LINES, {"order": order_id}).all()
        if rows:
            # The store's row first, then its stock rows by SKU: the order reserve() takes them
            # in, so a reservation and a release at one store never each hold what the other
            # waits for.
            stores_left = sorted({r.store_id for r in rows})
            self._db.execute(_GIVE_BACK_CAPACITY, [{"store": store} for store in stores_left])
            ordered = sorted(rows, key=lambda r: (r.store_id, r.sku))
            self._db.execute(
                _SHIP_STOCK if state == COMMITTED else _RELEASE_STOCK,
                [{"store": r.store_id, "item": r.sku, "units": r.quantity, "at": now} for r in ordered],
            )
            self._db.execute(
                _FINISH_LINE,
                [
                    {"order": order_id, "store": r.store_id, "item": r.sku, "to": state, "at": now}
                    for r in ordered
                ],
            )
        remaining = self._db.execute(_LINES_NOT_RELEASED, {"order": order_id}).scalars().all()
        overall = COMMITTED if COMMITTED in remaining else (ACTIVE if ACTIVE in remaining else RELEASED)
        self._set_state(order_id, overall, now)
        return len(rows)

    def _set_state(self, order_id: str, state: str, now: datetime) -> None:
        self._db.execute(_SET_STATE, {"order": order_id, "to": state, "at": now})

    def record(
        self,
        order_id: str,
        fulfilment_type: str,
        location: tuple[float, float] | None,
        decision: Decision,
        now: datetime,
    ) -> None:
        detail = {
            "assignments": [
                {
                    "store_id": a.store_id,
                    "distance_m": a.distance_m,
                    "lines": [[ln.sku, ln.quantity, ln.unit_price_cents] for ln in a.lines],
                }
                for a in decision.assignments
            ],
            "verdicts": [
                {
                    "store_id": v.store_id,
                    "latitude": v.latitude,
                    "longitude": v.longitude,
                    "distance_m": v.distance_m,
                    "chosen": v.chosen,
                    "reasons": list(v.reasons),
                }
                for v in decision.verdicts
            ],
        }
        self._db.execute(
            _RECORD,
            {
                "order_id": order_id,
                "decide_time": now,
                "fulfilment_type": fulfilment_type,
                "latitude": location[0] if location else None,
                "longitude": location[1] if location else None,
                "outcome_reason": decision.outcome.value if decision.outcome else "",
                "detail": json.dumps(detail),
            },
        )

    def latest_decision(self, order_id: str) -> Any | None:
        return self._db.execute(
            select(decisions)
            .where(decisions.c.order_id == order_id)
            .order_by(decisions.c.decision_id.desc())
            .limit(1)
        ).one_or_none()


def verdicts_from(detail: Mapping[str, Any]) -> tuple[list[Assignment], list[Verdict]]:
    placed = [
        Assignment(a["store_id"], a["distance_m"], tuple(Line(s, q, p) for s, q, p in a["lines"]))
        for a in detail["assignments"]
    ]
    verdicts = [
        Verdict(
            v["store_id"], v["latitude"], v["longitude"], v["distance_m"], v["chosen"], list(v["reasons"])
        )
        for v in detail["verdicts"]
    ]
    return placed, verdicts


_ = and_
