"""Reservations: every line reserved by a conditional UPDATE that fails when stock or capacity
ran out since it was read (ConcurrentChange: the use case decides again), and the record of each
decision."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.engine import Connection

from quanyu.unit_of_work import ConcurrentChange
from services.fulfilment.domain.assignment import Assignment, Line, Verdict
from services.fulfilment.domain.reservations import DecisionRecord, ReservationState
from services.fulfilment.storage.tables import assignments, decisions, reservations, stock, stores

ACTIVE, RELEASED, COMMITTED = ReservationState.ACTIVE, ReservationState.RELEASED, ReservationState.COMMITTED


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


# A new order's reservation lines, its key and the decision that chose them in one statement on
# PostgreSQL (the lines' and the decision's inserts in a WITH): one round trip where there were
# three. Built once per number of lines (and with or without the decision), for the numbers
# nearly every order has; a larger plan takes a statement each.
_RESERVING_SHAPES = 16
_reservings: dict[tuple[int, bool], Any] = {}
_DECISION = "decision_"


def _reserving(key: dict[str, Any], lines: list[dict[str, Any]], decision: dict[str, Any] | None) -> Any:
    if not 0 < len(lines) <= _RESERVING_SHAPES:
        return None
    shape = (len(lines), decision is not None)
    statement = _reservings.get(shape)
    if statement is None:
        rows = [
            {name: bindparam(f"line{number}_{name}", type_=reservations.c[name].type) for name in lines[0]}
            for number in range(len(lines))
        ]
        statement = (
            insert(assignments)
            .values({name: bindparam(name, type_=assignments.c[name].type) for name in key})
            .add_cte(insert(reservations).values(rows).cte("new_lines"))
        )
        if decision is not None:
            recorded = {
                name: bindparam(f"{_DECISION}{name}", type_=decisions.c[name].type) for name in decision
            }
            statement = statement.add_cte(insert(decisions).values(recorded).cte("new_decision"))
        _reservings[shape] = statement
    return statement


class ReservationRepository:
    def __init__(self, connection: Connection) -> None:
        self._db = connection

    def active_orders(self) -> int:
        return int(
            self._db.execute(
                select(func.count()).select_from(assignments).where(assignments.c.state == ACTIVE)
            ).scalar_one()
        )

    def oldest_active(self) -> datetime | None:
        query = (
            select(assignments.c.create_time)
            .where(assignments.c.state == ACTIVE)
            .order_by(assignments.c.create_time)
            .limit(1)
        )
        found: datetime | None = self._db.execute(query).scalar_one_or_none()
        return found

    def state_of(self, order_id: str) -> ReservationState | None:
        """The order's assignment state, its row locked so calls for one order take turns."""
        state = self._db.execute(_STATE_OF, {"order": order_id}).scalar_one_or_none()
        return None if state is None else ReservationState(state)

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
        self,
        order_id: str,
        plan: Sequence[Assignment],
        fulfilment_type: str,
        now: datetime,
        *,
        known: bool,
        record: DecisionRecord | None = None,
    ) -> None:
        """Reserve every line of the plan; ConcurrentChange (the use case rolls back and decides
        again) when stock or capacity ran out since it was read. `known`: the order was assigned
        before (and released); `record`: the decision that chose the plan, written with it."""
        # On PostgreSQL a new order's lines, its key and its decision are written by one
        # statement at the end.
        together = not known and self._db.dialect.name == "postgresql"
        lines: list[dict[str, Any]] = []
        for assignment in plan:
            if self._db.execute(_TAKE_CAPACITY, {"store": assignment.store_id}).rowcount != 1:
                raise ConcurrentChange(f"stock or capacity at store {assignment.store_id}")
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
                raise ConcurrentChange(f"stock or capacity at store {assignment.store_id}")
            if known:
                # Lines of an earlier, released reservation at this store make way for the new.
                self._db.execute(
                    delete(reservations).where(
                        reservations.c.order_id == order_id, reservations.c.store_id == assignment.store_id
                    )
                )
            rows = [
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
            ]
            if together:
                lines.extend(rows)
            else:
                self._db.execute(_RESERVE_LINES, rows)
        if known:
            self._set_state(order_id, ACTIVE, now)
            if record is not None:
                self.record(record)
            return
        key = {
            "order_id": order_id,
            "state": ACTIVE,
            "fulfilment_type": fulfilment_type,
            "create_time": now,
            "update_time": now,
        }
        self._take_key(key, lines, None if record is None else _decision_row(record), together=together)

    def _take_key(
        self,
        key: dict[str, Any],
        lines: list[dict[str, Any]],
        decision: dict[str, Any] | None,
        *,
        together: bool,
    ) -> None:
        """Write a new order's key, with the lines reserve() held back and its decision."""
        reserving = _reserving(key, lines, decision) if together else None
        if reserving is None:
            if lines:
                self._db.execute(_RESERVE_LINES, lines)
            # The order's key is taken last: a concurrent call for the same order fails here and
            # its retry finds these reservations.
            self._db.execute(_NEW_ASSIGNMENT, key)
            if decision is not None:
                self._db.execute(_RECORD, decision)
            return
        values = dict(key)
        for number, row in enumerate(lines):
            values.update({f"line{number}_{name}": value for name, value in row.items()})
        if decision is not None:
            values.update({f"{_DECISION}{name}": value for name, value in decision.items()})
        # The same, in one statement: a concurrent call for the same order fails on either key.
        self._db.execute(reserving, values)

    def release(self, order_id: str, store_id: str, now: datetime) -> int:
        """Give back the order's active reservations (at one store, or all); how many lines."""
        return self._finish(order_id, store_id, RELEASED, now)

    def commit(self, order_id: str, now: datetime) -> tuple[int, int]:
        """Stock leaves the shelf for every active line; (lines committed, lines already committed)."""
        already = self._db.execute(_COMMITTED_LINES, {"order": order_id}).scalar_one()
        return self._finish(order_id, "", COMMITTED, now), int(already)

    def _finish(self, order_id: str, store_id: str, state: ReservationState, now: datetime) -> int:
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
        remaining = self._db.execute(_LINES_NOT_RELEASED, {"order": order_id}).scalars()
        self._set_state(order_id, ReservationState.of_order(map(ReservationState, remaining)), now)
        return len(rows)

    def _set_state(self, order_id: str, state: ReservationState, now: datetime) -> None:
        self._db.execute(_SET_STATE, {"order": order_id, "to": state, "at": now})

    def record(self, record: DecisionRecord) -> None:
        self._db.execute(_RECORD, _decision_row(record))

    def latest_decision(self, order_id: str) -> DecisionRecord | None:
        row = self._db.execute(
            select(decisions)
            .where(decisions.c.order_id == order_id)
            .order_by(decisions.c.decision_id.desc())
            .limit(1)
        ).one_or_none()
        if row is None:
            return None
        placed, verdicts = _detail_from(json.loads(row.detail))
        location = (row.latitude, row.longitude) if row.latitude is not None else None
        return DecisionRecord(
            order_id, row.decide_time, row.fulfilment_type, location, placed, verdicts, row.outcome_reason
        )


def _decision_row(record: DecisionRecord) -> dict[str, Any]:
    """The decisions table's row for a decision: its outcome, and what it weighed as JSON."""
    detail = {
        "assignments": [
            {
                "store_id": a.store_id,
                "distance_m": a.distance_m,
                "lines": [[ln.sku, ln.quantity, ln.unit_price_cents] for ln in a.lines],
            }
            for a in record.assignments
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
            for v in record.verdicts
        ],
    }
    return {
        "order_id": record.order_id,
        "decide_time": record.decide_time,
        "fulfilment_type": record.fulfilment_type,
        "latitude": record.location[0] if record.location else None,
        "longitude": record.location[1] if record.location else None,
        "outcome_reason": record.outcome_reason,
        "detail": json.dumps(detail),
    }


def _detail_from(detail: Mapping[str, Any]) -> tuple[list[Assignment], list[Verdict]]:
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
