"""Orders' use cases. A change of state and the effects it has on other services commit in one
transaction (the outbox); only placing an order calls other services before it answers."""

from services.orders.domain import (
    ACCEPT_TIMEOUT,
    ASSIGN,
    COMMIT_STOCK,
    EARN_POINTS,
    RECORD_ORIGIN_HOURS,
    RELEASE_COUPON,
    RELEASE_STOCK,
    REVERSE_POINTS,
    SYSTEM,
    TAKE_IN_STORE_STOCK,
)
from services.orders.handlers.base import Settings
from services.orders.handlers.placing import Placing
from services.orders.handlers.reading import Reading
from services.orders.handlers.store_work import StoreWork


class OrdersService(Placing, StoreWork, Reading):
    """Every use case of orders, over one unit of work."""


__all__ = [
    "ACCEPT_TIMEOUT",
    "ASSIGN",
    "COMMIT_STOCK",
    "EARN_POINTS",
    "RECORD_ORIGIN_HOURS",
    "RELEASE_COUPON",
    "RELEASE_STOCK",
    "REVERSE_POINTS",
    "SYSTEM",
    "TAKE_IN_STORE_STOCK",
    "OrdersService",
    "Settings",
]
