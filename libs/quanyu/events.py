"""Events for marketing, delivered from any service's outbox: each outbox row holds one
`quanyu.marketing.v1.Event` in its JSON form, and a lane's run of them goes in one IngestEvents
call. Marketing takes each event once by its id, so a batch delivered again changes nothing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf import json_format

from quanyu.marketing.v1 import marketing_pb2, marketing_pb2_grpc
from quanyu.outbox import BatchDeliverer, Deliver, refusals_are_final

# IngestEvents' cap on events a call.
MAX_EVENTS = 500
# Events an outbox sends a call. Marketing applies each event in a transaction of its own, a few
# milliseconds each, tens on a busy node: a call of 500 outlasted its 5 s deadline, was tried
# again after a backoff that doubles each time, and the lane fell minutes behind while marketing
# sat idle with the work done. A lane that keeps up sends what fell due during its previous call,
# a few events; this bounds a call when a backlog is worked off.
EVENTS_PER_CALL = 25


def ingest_request(payloads: Sequence[Mapping[str, Any]]) -> marketing_pb2.IngestEventsRequest:
    return marketing_pb2.IngestEventsRequest(
        events=[json_format.ParseDict(dict(payload), marketing_pb2.Event()) for payload in payloads]
    )


def to_marketing(marketing: marketing_pb2_grpc.MarketingServiceStub) -> tuple[Deliver, BatchDeliverer]:
    """The deliverers of MARKETING_EVENT: one event a call (for a batch marketing refused, so
    only the bad event is left for ops) and a lane's run of them in one call."""

    def ingest(payloads: Sequence[Mapping[str, Any]]) -> None:
        marketing.IngestEvents(ingest_request(payloads))

    return (
        refusals_are_final("marketing", lambda payload: ingest([payload])),
        BatchDeliverer(refusals_are_final("marketing", ingest), size=EVENTS_PER_CALL),
    )
