"""Fulfilment's storage: the tables, the repositories that load and save stores, stock and
reservations on one connection (`SqlStores`, the `Stores` of SqlUnitOfWork), and the cached
catalogue of stores the spatial index is built from."""

from __future__ import annotations

from sqlalchemy.engine import Connection

from quanyu.audit import AuditRecords
from services.fulfilment.storage.catalogue import CachedCatalogue
from services.fulfilment.storage.reservations import ReservationRepository
from services.fulfilment.storage.stock import LiveLoad, StockRepository
from services.fulfilment.storage.stores import StoreRepository, store_from_row
from services.fulfilment.storage.tables import (
    assignments,
    audit_records,
    decisions,
    metadata,
    reservations,
    stock,
    store_revision,
    stores,
)


class SqlStores:
    """The repositories of one transaction's connection."""

    def __init__(self, connection: Connection) -> None:
        self.stores = StoreRepository(connection)
        self.stock = StockRepository(connection)
        self.reservations = ReservationRepository(connection)
        self.load = LiveLoad(connection)
        self.audit = AuditRecords(connection, audit_records)


__all__ = [
    "CachedCatalogue",
    "LiveLoad",
    "ReservationRepository",
    "SqlStores",
    "StockRepository",
    "StoreRepository",
    "assignments",
    "decisions",
    "metadata",
    "reservations",
    "stock",
    "store_from_row",
    "store_revision",
    "stores",
]
