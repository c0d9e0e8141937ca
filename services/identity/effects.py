"""How identity's outbox effects reach the services they are for."""

from __future__ import annotations

from typing import Any

import grpc

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
