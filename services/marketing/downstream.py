"""Marketing's effects on membership, delivered from its outbox through membership's RPCs: each
carries the key the grant derived for it, so a delivery repeated (a relay that died after the call,
two replicas leasing in turn) changes nothing on membership's side. A refusal is final and left
for ops; an unanswered call is tried again later."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from quanyu.membership.v1 import membership_pb2, membership_pb2_grpc
from quanyu.outbox import Deliver, refusals_are_final
from quanyu.wire import to_timestamp
from services.marketing.handlers.effects import GRANT_POINTS, ISSUE_COUPON, UPDATE_TAGS

# Every effect goes to membership, in the order its grants made them.
LANES = {"membership": (ISSUE_COUPON, GRANT_POINTS, UPDATE_TAGS)}
# How long one call to membership may take before the relay tries it again later.
CALL_TIMEOUT_SECONDS = 5.0


def deliverers(membership: membership_pb2_grpc.MembershipServiceStub) -> dict[str, Deliver]:
    def issue_coupon(payload: dict[str, Any]) -> None:
        membership.IssueCoupon(
            membership_pb2.IssueCouponRequest(
                member_id=payload["member_id"],
                discount_cents=payload["discount_cents"],
                min_spend_cents=payload["min_spend_cents"],
                expire_time=to_timestamp(datetime.fromisoformat(payload["expire_time"])),
                request_id=payload["request_id"],
                campaign_id=payload["campaign_id"],
            ),
            timeout=CALL_TIMEOUT_SECONDS,
        )

    def grant_points(payload: dict[str, Any]) -> None:
        membership.GrantPoints(
            membership_pb2.GrantPointsRequest(
                member_id=payload["member_id"],
                points=payload["points"],
                source_id=payload["source_id"],
                reason=f"campaign {payload['campaign_id']}",
            ),
            timeout=CALL_TIMEOUT_SECONDS,
        )

    def update_tags(payload: dict[str, Any]) -> None:
        membership.UpdateTags(
            membership_pb2.UpdateTagsRequest(
                member_id=payload["member_id"],
                add_tags=payload.get("add_tags", []),
                remove_tags=payload.get("remove_tags", []),
            ),
            timeout=CALL_TIMEOUT_SECONDS,
        )

    plain: dict[str, Deliver] = {
        ISSUE_COUPON: issue_coupon,
        GRANT_POINTS: grant_points,
        UPDATE_TAGS: update_tags,
    }
    return {kind: refusals_are_final("membership", deliver) for kind, deliver in plain.items()}
