"""Fulfilment's `Stores` and `Catalogue` kept in memory, for use cases tested without a database.

They keep the promises of ports.py as storage/ does: a line that cannot be reserved raises
ConcurrentChange before anything is taken, states are ReservationState.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from quanyu.unit_of_work import ConcurrentChange
from services.fulfilment.domain.assignment import Assignment, Availability, Line
from services.fulfilment.domain.catalogue import CatalogueSnapshot, StoreCatalogue
from services.fulfilment.domain.reservations import DecisionRecord, ReservationState, StockLevel
from services.fulfilment.domain.stores import Store
from tests.trail import MemoryAudit


@dataclass
class _Line:
    store_id: str
    sku: str
    quantity: int
    unit_price_cents: int
    line_no: int
    distance_m: float
    state: ReservationState


class MemoryStores:
    """Every table of fulfilment as dicts; one object is the stores of every transaction."""

    def __init__(self) -> None:
        self.by_id: dict[str, Store] = {}
        self.open_orders: dict[str, int] = {}
        self.units: dict[tuple[str, str], list[int]] = {}  # (store, sku) -> [on hand, reserved]
        self.orders: dict[str, ReservationState] = {}
        self.assigned_at: dict[str, datetime] = {}
        self.lines: dict[str, list[_Line]] = {}
        self.decisions: list[DecisionRecord] = []
        self.audit = MemoryAudit()

    # Stores: this one object plays every repository.
    @property
    def stores(self) -> MemoryStores:
        return self

    @property
    def stock(self) -> MemoryStores:
        return self

    @property
    def reservations(self) -> MemoryStores:
        return self

    @property
    def load(self) -> MemoryStores:
        return self

    # --- StoreRecords
    def upsert(self, batch: Sequence[Store], now: datetime) -> None:
        for store in batch:
            self.by_id[store.store_id] = store
            self.open_orders.setdefault(store.store_id, 0)

    def get(self, store_id: str) -> Store | None:
        return self.by_id.get(store_id)

    def exists(self, store_id: str) -> bool:
        return store_id in self.by_id

    def page(self, after: str, limit: int) -> list[Store]:
        return [self.by_id[key] for key in sorted(self.by_id) if key > after][:limit]

    # --- StockRecords
    def levels(self, store_id: str, skus: Sequence[str] = ()) -> list[StockLevel]:
        return [
            StockLevel(store, sku, on_hand, reserved)
            for (store, sku), (on_hand, reserved) in sorted(self.units.items())
            if store == store_id and (not skus or sku in skus)
        ]

    def set_on_hand(self, store_id: str, on_hand: Mapping[str, int], now: datetime) -> list[str]:
        below = [sku for sku, units in on_hand.items() if units < self.units.get((store_id, sku), [0, 0])[1]]
        if not below:
            for sku, units in on_hand.items():
                self.units.setdefault((store_id, sku), [0, 0])[0] = units
        return below

    # --- StoreLoad
    def availability(self, store_ids: Sequence[str], skus: Sequence[str]) -> Mapping[str, Availability]:
        return {
            store_id: Availability(
                self.open_orders.get(store_id, 0),
                {sku: self._available(store_id, sku) for sku in skus if (store_id, sku) in self.units},
            )
            for store_id in store_ids
        }

    def _available(self, store_id: str, sku: str) -> int:
        on_hand, reserved = self.units.get((store_id, sku), [0, 0])
        return on_hand - reserved

    # --- ReservationRecords
    def active_orders(self) -> int:
        return sum(1 for state in self.orders.values() if state is ReservationState.ACTIVE)

    def oldest_active(self) -> datetime | None:
        held = [self.assigned_at[o] for o, state in self.orders.items() if state is ReservationState.ACTIVE]
        return min(held, default=None)

    def state_of(self, order_id: str) -> ReservationState | None:
        return self.orders.get(order_id)

    def held(self, order_id: str) -> list[Assignment]:
        kept = [ln for ln in self.lines.get(order_id, []) if ln.state is not ReservationState.RELEASED]
        by_store: dict[str, list[_Line]] = {}
        for line in sorted(kept, key=lambda ln: (ln.distance_m, ln.store_id, ln.line_no)):
            by_store.setdefault(line.store_id, []).append(line)
        return [
            Assignment(
                store_id,
                group[0].distance_m,
                tuple(Line(g.sku, g.quantity, g.unit_price_cents) for g in group),
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
        wanted: dict[tuple[str, str], int] = {}
        for assignment in plan:
            store = self.by_id[assignment.store_id]
            limit = store.max_active_orders
            if limit and self.open_orders[store.store_id] >= limit:
                raise ConcurrentChange(f"capacity at store {store.store_id}")
            for line in assignment.lines:
                key = (assignment.store_id, line.sku)
                wanted[key] = wanted.get(key, 0) + line.quantity
        if any(self._available(*key) < units for key, units in wanted.items()):
            raise ConcurrentChange("stock")
        kept = [ln for ln in self.lines.get(order_id, []) if ln.store_id not in {a.store_id for a in plan}]
        for assignment in plan:
            self.open_orders[assignment.store_id] += 1
            for line_no, line in enumerate(assignment.lines):
                self.units[(assignment.store_id, line.sku)][1] += line.quantity
                kept.append(
                    _Line(
                        assignment.store_id,
                        line.sku,
                        line.quantity,
                        line.unit_price_cents,
                        line_no,
                        assignment.distance_m,
                        ReservationState.ACTIVE,
                    )
                )
        self.lines[order_id] = kept
        self.orders[order_id] = ReservationState.ACTIVE
        self.assigned_at.setdefault(order_id, now)
        if record is not None:
            self.record(record)

    def release(self, order_id: str, store_id: str, now: datetime) -> int:
        return self._finish(order_id, store_id, ReservationState.RELEASED)

    def commit(self, order_id: str, now: datetime) -> tuple[int, int]:
        lines = self.lines.get(order_id, [])
        already = sum(1 for ln in lines if ln.state is ReservationState.COMMITTED)
        return self._finish(order_id, "", ReservationState.COMMITTED), already

    def _finish(self, order_id: str, store_id: str, state: ReservationState) -> int:
        lines = self.lines.get(order_id, [])
        finishing = [
            ln
            for ln in lines
            if ln.state is ReservationState.ACTIVE and (not store_id or ln.store_id == store_id)
        ]
        for store in {ln.store_id for ln in finishing}:
            self.open_orders[store] -= 1
        for line in finishing:
            units = self.units[(line.store_id, line.sku)]
            units[1] -= line.quantity
            if state is ReservationState.COMMITTED:
                units[0] -= line.quantity
            line.state = state
        if order_id in self.orders:
            self.orders[order_id] = ReservationState.of_order(ln.state for ln in lines)
        return len(finishing)

    def record(self, record: DecisionRecord) -> None:
        self.decisions.append(copy.deepcopy(record))

    def latest_decision(self, order_id: str) -> DecisionRecord | None:
        found = [d for d in self.decisions if d.order_id == order_id]
        return copy.deepcopy(found[-1]) if found else None


class MemoryCatalogue:
    """The catalogue of the stores in memory, rebuilt on refresh."""

    def __init__(self, stores: MemoryStores) -> None:
        self._stores = stores
        self.snapshot: CatalogueSnapshot = StoreCatalogue().build(stores.by_id.values())

    def refresh(self) -> None:
        self.snapshot = StoreCatalogue().build(self._stores.by_id.values())
