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
        BatchDeliverer(refusals_are_final("marketing", ingest), size=MAX_EVENTS),
    )
