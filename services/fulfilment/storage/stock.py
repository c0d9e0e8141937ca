"""Stock as a till or ERP sets it and reads it back, and the live load assignment weighs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import Connection

from services.fulfilment.domain.assignment import Availability
from services.fulfilment.domain.reservations import StockLevel
from services.fulfilment.storage.tables import stock, stores

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
