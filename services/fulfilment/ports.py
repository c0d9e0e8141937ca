"""What fulfilment's use cases need from outside: the repositories of one transaction (storage/
and the in-memory fakes implement them) and the catalogue of stores the spatial index serves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Protocol

from quanyu.audit_record import AuditTrail
from services.fulfilment.domain.assignment import Assignment, StoreLoad
from services.fulfilment.domain.catalogue import CatalogueSnapshot
from services.fulfilment.domain.reservations import DecisionRecord, ReservationState, StockLevel
from services.fulfilment.domain.stores import Store


class StoreRecords(Protocol):
    def upsert(self, batch: Sequence[Store], now: datetime) -> None: ...

    def get(self, store_id: str) -> Store | None: ...

    def exists(self, store_id: str) -> bool: ...

    def page(self, after: str, limit: int) -> list[Store]:
        """Stores in order of id, after `after`."""
        ...


class StockRecords(Protocol):
    def levels(self, store_id: str, skus: Sequence[str] = ()) -> list[StockLevel]:
        """The store's levels of these SKUs (none named: all), in order of SKU."""
        ...

    def set_on_hand(self, store_id: str, on_hand: Mapping[str, int], now: datetime) -> list[str]:
        """Set absolute on-hand counts, unless some would fall below what is reserved: then
        change nothing and answer those SKUs."""
        ...


class ReservationRecords(Protocol):
    def active_orders(self) -> int: ...

    def oldest_active(self) -> datetime | None:
        """When the longest-held reservation still holding stock was made (a gauge for ops)."""
        ...

    def state_of(self, order_id: str) -> ReservationState | None:
        """The order's state; calls for one order take turns from here to the commit."""
        ...

    def held(self, order_id: str) -> list[Assignment]:
        """The order's assignments while it holds active or committed reservations."""
        ...

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
        """Reserve every line; ConcurrentChange when stock or capacity ran out since it was read.
        `record`: the decision that chose the plan, written with it (as record() would)."""
        ...

    def release(self, order_id: str, store_id: str, now: datetime) -> int:
        """Give back the order's active lines (at one store, or all); how many."""
        ...

    def commit(self, order_id: str, now: datetime) -> tuple[int, int]:
        """Stock leaves the shelf; (lines committed now, lines committed before)."""
        ...

    def record(self, record: DecisionRecord) -> None: ...

    def latest_decision(self, order_id: str) -> DecisionRecord | None: ...


class Stores(Protocol):
    """The repositories of one transaction."""

    @property
    def stores(self) -> StoreRecords: ...

    @property
    def stock(self) -> StockRecords: ...

    @property
    def reservations(self) -> ReservationRecords: ...

    @property
    def load(self) -> StoreLoad: ...

    @property
    def audit(self) -> AuditTrail: ...


class Catalogue(Protocol):
    """The stores as the spatial index holds them: a snapshot, refreshed after a write."""

    @property
    def snapshot(self) -> CatalogueSnapshot: ...

    def refresh(self) -> None: ...
