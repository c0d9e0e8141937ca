"""Events delivered from any service's outbox to a service that takes them in batches: each
outbox row holds one event message in its JSON form, and a lane's run of them goes in one ingest
call. The receiver takes each event once (by its id or its version), so a batch delivered again
changes nothing.

Marketing hears what happened (`IngestEvents`); orders hears which customer and member an
account, a phone or a merged customer stands for (`IngestCustomerEvents`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from quanyu.marketing.v1 import marketing_pb2, marketing_pb2_grpc
from quanyu.orders.v1 import orders_pb2, orders_pb2_grpc
from quanyu.outbox import BatchDeliverer, Deliver, refusals_are_final

# IngestEvents' and IngestCustomerEvents' cap on events a call.
MAX_EVENTS = 500
# Events an outbox sends a call. Marketing applies a call's events in one transaction and
# commits once, so a call of 100 ends within its 5 s deadline on a busy node (when each event
# had a transaction of its own, even 500 a call outlasted it and was retried after a doubling
# backoff while marketing sat idle with the work done). A lane that keeps up sends what fell due
# during its previous call, a few events; this bounds a call when a backlog is worked off.
EVENTS_PER_CALL = 100

Payloads = Sequence[Mapping[str, Any]]


def messages(payloads: Payloads, kind: type[Message]) -> list[Any]:
    """The outbox's JSON payloads as the receiver's event messages, in order."""
    return [json_format.ParseDict(dict(payload), kind()) for payload in payloads]


def ingest_request(payloads: Payloads) -> marketing_pb2.IngestEventsRequest:
    return marketing_pb2.IngestEventsRequest(events=messages(payloads, marketing_pb2.Event))


def batch_deliverers(
    service: str, ingest: Callable[[Payloads], None], *, size: int = MAX_EVENTS
) -> tuple[Deliver, BatchDeliverer]:
    """The deliverers of one kind of event bound for `service`: one event a call (for a batch
    the receiver refused, so only the bad event is left for ops) and a lane's run of them in one
    `ingest` call."""
    return (
        refusals_are_final(service, lambda payload: ingest([payload])),
        BatchDeliverer(refusals_are_final(service, ingest), size=size),
    )


def to_marketing(marketing: marketing_pb2_grpc.MarketingServiceStub) -> tuple[Deliver, BatchDeliverer]:
    """The deliverers of MARKETING_EVENT (marketing's `Event`s)."""
    return batch_deliverers(
        "marketing", lambda payloads: marketing.IngestEvents(ingest_request(payloads)), size=EVENTS_PER_CALL
    )


def to_orders(orders: orders_pb2_grpc.OrderServiceStub) -> tuple[Deliver, BatchDeliverer]:
    """The deliverers of ORDERS_CUSTOMER_EVENT (orders' `CustomerEvent`s)."""
    return batch_deliverers(
        "orders",
        lambda payloads: orders.IngestCustomerEvents(
            orders_pb2.IngestCustomerEventsRequest(events=messages(payloads, orders_pb2.CustomerEvent))
        ),
    )
