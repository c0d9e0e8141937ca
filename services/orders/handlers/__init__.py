"""Orders' use cases. A change of state and the effects it has on other services commit in one
transaction (the outbox); only placing an order calls other services before it answers."""

# The kinds of effect the reliability checks look for in the outbox, where they always were.
from services.orders.domain.events import EARN_POINTS, RELEASE_COUPON, REVERSE_POINTS
from services.orders.handlers.base import Behaviour
from services.orders.handlers.knowing import Knowing
from services.orders.handlers.placing import Placing
from services.orders.handlers.reading import Reading
from services.orders.handlers.store_work import StoreWork


class OrdersService(Placing, StoreWork, Reading, Knowing):
    """Every use case of orders, over one unit of work."""


__all__ = ["EARN_POINTS", "RELEASE_COUPON", "REVERSE_POINTS", "Behaviour", "OrdersService"]
