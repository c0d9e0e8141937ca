"""How identity's outbox effects reach the services they are for."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grpc
from google.protobuf import json_format

from quanyu.marketing.v1 import marketing_pb2, marketing_pb2_grpc
from quanyu.membership.v1 import membership_pb2, membership_pb2_grpc
from quanyu.outbox import Deliver, refusals_are_final


def merge_members(membership: membership_pb2_grpc.MembershipServiceStub) -> Deliver:
    def deliver(payload: dict[str, Any]) -> None:
        try:
            membership.MergeMembers(
                membership_pb2.MergeMembersRequest(
                    survivor_customer_id=payload["survivor_customer_id"],
                    merged_customer_id=payload["merged_customer_id"],
                    request_id=payload["request_id"],
                )
            )
        except grpc.RpcError as error:
            if error.code() is not grpc.StatusCode.NOT_FOUND:
                raise
            # Neither customer is a member: there is nothing to merge, and that is done.

    return refusals_are_final("membership", deliver)


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
