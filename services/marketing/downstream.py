"""Marketing's effects on membership, delivered from its outbox through membership's RPCs: each
carries the key the grant derived for it, so a delivery repeated (a relay that died after the call,
two replicas leasing in turn) changes nothing on membership's side. A refusal is final and left
for ops; an unanswered call is tried again later.

A campaign reaching a million members leaves a million effects, so they go to membership in
batches (BatchIssueCoupons, BatchGrantPoints, BatchUpdateTags: all of a batch or none); a batch
refused is delivered again one call an effect, so only the bad effect is left for ops. The codes
of the coupons membership issues are put into the grants' messages waiting for them, which the
channels may then pull."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from quanyu.membership.v1 import membership_pb2, membership_pb2_grpc
from quanyu.outbox import BatchDeliverer, Deliver, refusals_are_final
from quanyu.wire import to_timestamp
from services.marketing.handlers.effects import GRANT_POINTS, ISSUE_COUPON, UPDATE_TAGS
from services.marketing.ports import IssuedCoupon

# Every effect goes to membership, in the order its grants made them.
LANES = {"membership": (ISSUE_COUPON, GRANT_POINTS, UPDATE_TAGS)}
# How long one call to membership may take before the relay tries it again later.
CALL_TIMEOUT_SECONDS = 5.0
# Membership's cap on the requests of one batch call; a batch that large takes well under a second.
BATCH_SIZE = 500
BATCH_TIMEOUT_SECONDS = 30.0

FillCodes = Callable[[Sequence[IssuedCoupon]], object]


def _coupon(payload: dict[str, Any]) -> membership_pb2.IssueCouponRequest:
    return membership_pb2.IssueCouponRequest(
        member_id=payload["member_id"],
        discount_cents=payload["discount_cents"],
        min_spend_cents=payload["min_spend_cents"],
        expire_time=to_timestamp(datetime.fromisoformat(payload["expire_time"])),
        request_id=payload["request_id"],
        campaign_id=payload["campaign_id"],
    )


def _grant(payload: dict[str, Any]) -> membership_pb2.GrantPointsRequest:
    return membership_pb2.GrantPointsRequest(
        member_id=payload["member_id"],
        points=payload["points"],
        source_id=payload["source_id"],
        reason=f"campaign {payload['campaign_id']}",
    )


def _tags(payload: dict[str, Any]) -> membership_pb2.UpdateTagsRequest:
    return membership_pb2.UpdateTagsRequest(
        member_id=payload["member_id"],
        add_tags=payload.get("add_tags", []),
        remove_tags=payload.get("remove_tags", []),
    )


def _issued(
    payloads: Sequence[dict[str, Any]], coupons: Sequence[membership_pb2.Coupon]
) -> list[IssuedCoupon]:
    """Each coupon's code for its effect's grant: membership answers in the order it was asked."""
    return [
        IssuedCoupon(payload["grant_key"], payload["request_id"], coupon.code)
        for payload, coupon in zip(payloads, coupons, strict=True)
    ]


def deliverers(
    membership: membership_pb2_grpc.MembershipServiceStub, fill_codes: FillCodes
) -> dict[str, Deliver]:
    """One call an effect: each kind's delivery alone, and what a refused batch falls back to."""

    def issue_coupon(payload: dict[str, Any]) -> None:
        coupon = membership.IssueCoupon(_coupon(payload), timeout=CALL_TIMEOUT_SECONDS).coupon
        fill_codes(_issued([payload], [coupon]))

    def grant_points(payload: dict[str, Any]) -> None:
        membership.GrantPoints(_grant(payload), timeout=CALL_TIMEOUT_SECONDS)

    def update_tags(payload: dict[str, Any]) -> None:
        membership.UpdateTags(_tags(payload), timeout=CALL_TIMEOUT_SECONDS)

    plain: dict[str, Deliver] = {
        ISSUE_COUPON: issue_coupon,
        GRANT_POINTS: grant_points,
        UPDATE_TAGS: update_tags,
    }
    return {kind: refusals_are_final("membership", deliver) for kind, deliver in plain.items()}


def batched(
    membership: membership_pb2_grpc.MembershipServiceStub, fill_codes: FillCodes
) -> dict[str, BatchDeliverer]:
    """Up to BATCH_SIZE effects of a kind in one call; with `deliverers` for a refused batch."""

    def issue_coupons(payloads: list[dict[str, Any]]) -> None:
        request = membership_pb2.BatchIssueCouponsRequest(requests=[_coupon(p) for p in payloads])
        coupons = membership.BatchIssueCoupons(request, timeout=BATCH_TIMEOUT_SECONDS).coupons
        # Before the effects are marked delivered: should this fail, the batch is delivered
        # again, membership answers with the same coupons, and the codes are put in then.
        fill_codes(_issued(payloads, coupons))

    def grant_points(payloads: list[dict[str, Any]]) -> None:
        request = membership_pb2.BatchGrantPointsRequest(requests=[_grant(p) for p in payloads])
        membership.BatchGrantPoints(request, timeout=BATCH_TIMEOUT_SECONDS)

    def update_tags(payloads: list[dict[str, Any]]) -> None:
        request = membership_pb2.BatchUpdateTagsRequest(requests=[_tags(p) for p in payloads])
        membership.BatchUpdateTags(request, timeout=BATCH_TIMEOUT_SECONDS)

    many = {ISSUE_COUPON: issue_coupons, GRANT_POINTS: grant_points, UPDATE_TAGS: update_tags}
    return {
        kind: BatchDeliverer(refusals_are_final("membership", deliver), size=BATCH_SIZE)
        for kind, deliver in many.items()
    }
