"""How membership's outbox effects reach the services they are for: marketing hears what
happened to members, a lane's run of events in one call."""

from __future__ import annotations

from quanyu.events import to_marketing
from quanyu.marketing.v1 import marketing_pb2_grpc
from quanyu.outbox import BatchDeliverer, Deliver
from services.membership.domain.marketing import MARKETING_EVENT

# Marketing only hears what happened: its lane is its own should another ever join.
LANES = {"marketing": (MARKETING_EVENT,)}


def deliverers(
    marketing: marketing_pb2_grpc.MarketingServiceStub,
) -> tuple[dict[str, Deliver], dict[str, BatchDeliverer]]:
    """The relay's deliverers, one effect a call and batched."""
    one_event, events = to_marketing(marketing)
    return {MARKETING_EVENT: one_event}, {MARKETING_EVENT: events}
