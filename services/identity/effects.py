"""How identity's outbox effects reach the services they are for."""

from __future__ import annotations

from typing import Any

import grpc

from quanyu.membership.v1 import membership_pb2, membership_pb2_grpc
from quanyu.outbox import PermanentFailure

# Answers that say the request itself is wrong: retrying the same effect cannot succeed.
_REFUSALS = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
)


def merge_members(membership: membership_pb2_grpc.MembershipServiceStub) -> Any:
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
            if error.code() is grpc.StatusCode.NOT_FOUND:
                return  # neither customer is a member: there is nothing to merge
            if error.code() in _REFUSALS:
                raise PermanentFailure(f"{error.code().name}: {error.details()}") from error
            raise

    return deliver
