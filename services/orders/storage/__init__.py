"""Orders' storage: the tables, and the repositories that load and save orders on one
connection (`SqlStores`, the `Stores` of SqlUnitOfWork)."""

from services.orders.storage.orders import EffectLog, OrderRepository, SqlStores
from services.orders.storage.tables import (
    metadata,
    order_lines,
    order_rejections,
    orders,
    outbox,
    status_changes,
)

__all__ = [
    "EffectLog",
    "OrderRepository",
    "SqlStores",
    "metadata",
    "order_lines",
    "order_rejections",
    "orders",
    "outbox",
    "status_changes",
]
