"""The deliverer of a customer merge to membership, by what membership answers: done, refused for
good (recorded for ops), or not answered (tried again later)."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from quanyu.errors import Unavailable
from quanyu.outbox import PermanentFailure
from services.identity.effects import merge_members

PAYLOAD = {
    "survivor_customer_id": "cus_a",
    "merged_customer_id": "cus_b",
    "request_id": "customer-merge:cus_b:cus_a",
}


class Refused(grpc.RpcError, grpc.Call):  # type: ignore[misc]
    """A failed call as a stub raises it, with the ErrorInfo reason a Quanyu service attaches."""

    def __init__(self, code: grpc.StatusCode, reason: str = "") -> None:
        self._code = code
        detail = status_pb2.Status(code=getattr(code_pb2, code.name), message="refused")
        if reason:
            detail.details.add().Pack(error_details_pb2.ErrorInfo(reason=reason, domain="quanyu"))
        self._trailers = rpc_status.to_status(detail).trailing_metadata if reason else ()

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return "refused"

    def trailing_metadata(self) -> Any:
        return self._trailers

    def initial_metadata(self) -> Any:
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float | None:
        return None

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: Any) -> bool:
        return False


class Membership:
    def __init__(self, answer: Exception | None = None) -> None:
        self.answer = answer
        self.requests: list[Any] = []

    def MergeMembers(self, request: Any) -> None:  # noqa: N802 - the stub's method name
        self.requests.append(request)
        if self.answer is not None:
            raise self.answer


def test_a_merge_membership_carries_out_is_done_with_its_key() -> None:
    membership = Membership()
    merge_members(membership)(PAYLOAD)  # type: ignore[arg-type]
    assert [r.request_id for r in membership.requests] == ["customer-merge:cus_b:cus_a"]


def test_customers_who_are_not_members_have_nothing_to_merge_which_is_done() -> None:
    merge_members(Membership(Refused(grpc.StatusCode.NOT_FOUND, "MEMBER_NOT_FOUND")))(PAYLOAD)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        (grpc.StatusCode.FAILED_PRECONDITION, "MEMBERS_CONFLICT"),
        (grpc.StatusCode.PERMISSION_DENIED, "OTHER_CHANNEL"),
    ],
)
def test_a_refusal_is_final(code: grpc.StatusCode, reason: str) -> None:
    with pytest.raises(PermanentFailure):
        merge_members(Membership(Refused(code, reason)))(PAYLOAD)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (grpc.StatusCode.UNAVAILABLE, ""),
        (grpc.StatusCode.DEADLINE_EXCEEDED, ""),
        (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID"),  # our own token refused: keys out of step
        (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED"),  # our own role refused: a deployment fault
    ],
)
def test_an_unanswered_call_is_tried_again_later(code: grpc.StatusCode, reason: str) -> None:
    with pytest.raises(Unavailable):
        merge_members(Membership(Refused(code, reason)))(PAYLOAD)  # type: ignore[arg-type]
