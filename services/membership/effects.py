"""How membership's outbox effects reach the services they are for: marketing hears what
happened to members."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from google.protobuf import json_format

from quanyu.marketing.v1 import marketing_pb2, marketing_pb2_grpc
from quanyu.outbox import Deliver, refusals_are_final


def ingest_events(
    marketing: marketing_pb2_grpc.MarketingServiceStub,
) -> Callable[[Sequence[dict[str, Any]]], None]:
    """One IngestEvents call for events in their Event JSON form, in order (at most 500)."""

    def ingest(payloads: Sequence[dict[str, Any]]) -> None:
        marketing.IngestEvents(
            marketing_pb2.IngestEventsRequest(
                events=[json_format.ParseDict(payload, marketing_pb2.Event()) for payload in payloads]
            )
        )

    return ingest


def tell_marketing(marketing: marketing_pb2_grpc.MarketingServiceStub) -> Deliver:
    """Marketing's events one a call for now; ingest_events takes a lane's run of them at once."""
    ingest = ingest_events(marketing)
    return refusals_are_final("marketing", lambda payload: ingest([payload]))
