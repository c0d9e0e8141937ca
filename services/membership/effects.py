"""How membership's outbox effects reach the services they are for: marketing hears what
happened to members, a lane's run of events in one call."""

from __future__ import annotations

from quanyu.events import to_marketing, to_orders
from quanyu.marketing.v1 import marketing_pb2_grpc
from quanyu.orders.v1 import orders_pb2_grpc
from quanyu.outbox import BatchDeliverer, Deliver
from services.membership.domain.known import ORDERS_EVENT
from services.membership.domain.marketing import MARKETING_EVENT

# Each receiver has a lane of its own: marketing down never holds up what orders must hear.
LANES = {"marketing": (MARKETING_EVENT,), "orders": (ORDERS_EVENT,)}


def deliverers(
    marketing: marketing_pb2_grpc.MarketingServiceStub, orders: orders_pb2_grpc.OrderServiceStub
) -> tuple[dict[str, Deliver], dict[str, BatchDeliverer]]:
    """The relay's deliverers, one effect a call and batched."""
    one_event, events = to_marketing(marketing)
    one_state, states = to_orders(orders)
    return (
        {MARKETING_EVENT: one_event, ORDERS_EVENT: one_state},
        {MARKETING_EVENT: events, ORDERS_EVENT: states},
    )
