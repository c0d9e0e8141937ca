"""How membership's outbox effects reach the services they are for: marketing hears what
happened to members."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf import json_format

from quanyu.marketing.v1 import marketing_pb2, marketing_pb2_grpc
from quanyu.outbox import Deliver, refusals_are_final


def tell_marketing(marketing: marketing_pb2_grpc.MarketingServiceStub) -> Deliver:
    """Marketing's events, each in its Event JSON form; one a call for now, though the call
    takes the events of a lane together."""

    def ingest(payloads: Sequence[dict[str, Any]]) -> None:
        marketing.IngestEvents(
            marketing_pb2.IngestEventsRequest(
                events=[json_format.ParseDict(payload, marketing_pb2.Event()) for payload in payloads]
            )
        )

    return refusals_are_final("marketing", lambda payload: ingest([payload]))
