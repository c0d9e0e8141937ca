"""MembershipService over gRPC: messages in, use cases called, messages out. No rules live here."""

from __future__ import annotations

from collections.abc import Sequence, Sized
from typing import Any, TypeVar

import grpc

from quanyu.audit_record import Actor
from quanyu.auth import Role, current_principal
from quanyu.common.v1 import common_pb2
from quanyu.errors import InvalidArgument
from quanyu.membership.v1 import membership_pb2, membership_pb2_grpc
from quanyu.server import Servicer, current_actor, rpc_policy
from quanyu.wire import from_timestamp, to_timestamp
from services.membership.domain import (
    Coupon,
    EngagementEvent,
    Entry,
    EntryKind,
    Guide,
    Member,
    Stage,
    requests,
)
from services.membership.handlers import MembershipService

_Posted = TypeVar(
    "_Posted",
    membership_pb2.EarnPointsResponse,
    membership_pb2.RedeemPointsResponse,
    membership_pb2.GrantPointsResponse,
)

SERVICE = membership_pb2.DESCRIPTOR.services_by_name["MembershipService"]
_FRONT = (Role.CHANNEL, Role.STORE, Role.SERVICE, Role.OPS)
_BACK = (Role.SERVICE, Role.OPS)
POLICY = rpc_policy(
    SERVICE,
    {
        "Enroll": _FRONT,
        "GetMember": _FRONT,
        "CreateMemberCode": (Role.CHANNEL, Role.OPS),
        "EarnPoints": _BACK,
        "RedeemPoints": _FRONT,
        "ReversePoints": _FRONT,
        "ListLedgerEntries": _FRONT,
        "GrantPoints": _BACK,
        "IssueCoupon": _BACK,
        "ListCoupons": _FRONT,
        "RedeemCoupon": _FRONT,
        "ReleaseCoupon": _BACK,
        "RecordEvent": _FRONT,
        "ListMembers": (Role.OPS, Role.STORE),
        "UpdateTags": _BACK,
        "BatchIssueCoupons": _BACK,
        "BatchGrantPoints": _BACK,
        "BatchUpdateTags": _BACK,
        "BatchEarnPoints": _BACK,
        "GetFunnel": (Role.OPS, Role.STORE),
        "MergeMembers": _BACK,
        "UpsertGuide": (Role.OPS, Role.STORE),
        "GetGuide": (Role.OPS, Role.SERVICE, Role.STORE),
        "ListGuides": (Role.OPS, Role.STORE),
    },
)

_STAGES = {
    Stage.AWARENESS: membership_pb2.LIFECYCLE_STAGE_AWARENESS,
    Stage.INTEREST: membership_pb2.LIFECYCLE_STAGE_INTEREST,
    Stage.PURCHASE: membership_pb2.LIFECYCLE_STAGE_PURCHASE,
    Stage.LOYALTY: membership_pb2.LIFECYCLE_STAGE_LOYALTY,
}
_STAGES_IN = {v: k for k, v in _STAGES.items()}
_EVENTS = {membership_pb2.EventType.Value(f"EVENT_TYPE_{event.value}"): event for event in EngagementEvent}
_KINDS = {kind: membership_pb2.EntryKind.Value(f"ENTRY_KIND_{kind.value}") for kind in EntryKind}


def member_message(member: Member) -> membership_pb2.Member:
    channel = (
        common_pb2.Channel.Value(member.enrolled_channel)
        if member.enrolled_channel in common_pb2.Channel.keys()  # noqa: SIM118 - an enum wrapper, not a dict
        else common_pb2.CHANNEL_UNSPECIFIED
    )
    return membership_pb2.Member(
        **_same_named(member, _MEMBER_FIELDS),
        enrolled_channel=channel,
        enroll_time=to_timestamp(member.enroll_time),
        stage=_STAGES[member.stage],
    )


def entry_message(entry: Entry) -> membership_pb2.LedgerEntry:
    return membership_pb2.LedgerEntry(
        **_same_named(entry, _ENTRY_FIELDS),
        kind=_KINDS[entry.kind],
        create_time=to_timestamp(entry.create_time),
        expire_time=to_timestamp(entry.expire_time),
    )


def coupon_message(coupon: Coupon) -> membership_pb2.Coupon:
    return membership_pb2.Coupon(
        **_same_named(coupon, _COUPON_FIELDS),
        expire_time=to_timestamp(coupon.expire_time),
        redeemed=coupon.redeemed_order_id is not None,
        redeemed_order_id=coupon.redeemed_order_id or "",
    )


def guide_message(guide: Guide) -> membership_pb2.Guide:
    return membership_pb2.Guide(**_same_named(guide, ("guide_id", "store_id", "name", "active")))


# The fields a message carries as the domain has them, under the same names.
_MEMBER_FIELDS = (
    "member_id",
    "customer_id",
    "tier",
    "points_balance",
    "home_store_id",
    "guide_id",
    "tags",
    "lifetime_spend_cents",
    "referrer_member_id",
    "birthday",
)
_ENTRY_FIELDS = (
    "entry_id",
    "member_id",
    "points",
    "balance_after",
    "source_id",
    "store_id",
)
_COUPON_FIELDS = (
    "code",
    "member_id",
    "discount_cents",
    "min_spend_cents",
    "campaign_id",
)


def _same_named(value: object, names: Sequence[str]) -> dict[str, Any]:
    return {name: getattr(value, name) for name in names}


def channel_name(value: int) -> str:
    if value == common_pb2.CHANNEL_UNSPECIFIED:
        return ""
    if value not in common_pb2.Channel.values():
        raise InvalidArgument("channel", "is not a known channel")
    return common_pb2.Channel.Name(common_pb2.Channel.ValueType(value))


class MembershipServicer(
    Servicer[MembershipService], membership_pb2_grpc.MembershipServiceServicer, service=SERVICE, policy=POLICY
):
    def Enroll(
        self, request: membership_pb2.EnrollRequest, context: grpc.ServicerContext
    ) -> membership_pb2.EnrollResponse:
        member, created = self._service.enroll(
            current_principal(),
            request.customer_id,
            home_store_id=request.home_store_id,
            guide_id=request.guide_id,
            channel=channel_name(request.channel),
            referrer_member_id=request.referrer_member_id,
            birthday=request.birthday,
        )
        return membership_pb2.EnrollResponse(member=member_message(member), created=created)

    def GetMember(
        self, request: membership_pb2.GetMemberRequest, context: grpc.ServicerContext
    ) -> membership_pb2.GetMemberResponse:
        key = request.WhichOneof("key")
        member = self._service.find_member(current_principal(), key, getattr(request, key) if key else "")
        return membership_pb2.GetMemberResponse(member=member_message(member))

    def CreateMemberCode(
        self, request: membership_pb2.CreateMemberCodeRequest, context: grpc.ServicerContext
    ) -> membership_pb2.CreateMemberCodeResponse:
        code, expire = self._service.create_member_code(current_principal(), request.member_id)
        return membership_pb2.CreateMemberCodeResponse(code=code, expire_time=to_timestamp(expire))

    def EarnPoints(
        self, request: membership_pb2.EarnPointsRequest, context: grpc.ServicerContext
    ) -> membership_pb2.EarnPointsResponse:
        posted = self._service.earn(
            request.member_id, request.source_id, request.spend_cents, request.store_id
        )
        return _posted(membership_pb2.EarnPointsResponse, *posted)

    def RedeemPoints(
        self, request: membership_pb2.RedeemPointsRequest, context: grpc.ServicerContext
    ) -> membership_pb2.RedeemPointsResponse:
        posted = self._service.redeem(
            current_principal(),
            request.member_id,
            request.points,
            request.source_id,
            store_id=request.store_id,
            member_code=request.member_code,
        )
        return _posted(membership_pb2.RedeemPointsResponse, *posted)

    def ReversePoints(
        self, request: membership_pb2.ReversePointsRequest, context: grpc.ServicerContext
    ) -> membership_pb2.ReversePointsResponse:
        entries = self._service.reverse(current_principal(), request.source_id, request.reason)
        return membership_pb2.ReversePointsResponse(entries=[entry_message(e) for e in entries])

    def ListLedgerEntries(
        self, request: membership_pb2.ListLedgerEntriesRequest, context: grpc.ServicerContext
    ) -> membership_pb2.ListLedgerEntriesResponse:
        entries, token = self._service.list_entries(
            current_principal(), request.member_id, request.page_size, request.page_token, request.member_code
        )
        return membership_pb2.ListLedgerEntriesResponse(
            entries=map(entry_message, entries), next_page_token=token
        )

    def GrantPoints(
        self, request: membership_pb2.GrantPointsRequest, context: grpc.ServicerContext
    ) -> membership_pb2.GrantPointsResponse:
        posted = self._service.grant(
            request.member_id, request.points, request.source_id, request.reason, _granting_by_hand()
        )
        return _posted(membership_pb2.GrantPointsResponse, *posted)

    def IssueCoupon(
        self, request: membership_pb2.IssueCouponRequest, context: grpc.ServicerContext
    ) -> membership_pb2.IssueCouponResponse:
        coupon = self._service.issue_coupon(
            request.member_id,
            request.discount_cents,
            request.min_spend_cents,
            from_timestamp(
                request.expire_time, field_name="expire_time", present=request.HasField("expire_time")
            ),
            request.request_id,
            campaign_id=request.campaign_id,
        )
        return membership_pb2.IssueCouponResponse(coupon=coupon_message(coupon))

    def ListCoupons(
        self, request: membership_pb2.ListCouponsRequest, context: grpc.ServicerContext
    ) -> membership_pb2.ListCouponsResponse:
        coupons, token = self._service.list_coupons(
            current_principal(),
            request.member_id,
            request.include_inactive,
            request.page_size,
            request.page_token,
        )
        return membership_pb2.ListCouponsResponse(coupons=map(coupon_message, coupons), next_page_token=token)

    def RedeemCoupon(
        self, request: membership_pb2.RedeemCouponRequest, context: grpc.ServicerContext
    ) -> membership_pb2.RedeemCouponResponse:
        coupon, discount = self._service.redeem_coupon(
            current_principal(),
            code=request.code,
            member_id=request.member_id,
            order_id=request.order_id,
            order_amount_cents=request.order_amount_cents,
            store_id=request.store_id,
            member_code=request.member_code,
        )
        return membership_pb2.RedeemCouponResponse(coupon=coupon_message(coupon), discount_cents=discount)

    def ReleaseCoupon(
        self, request: membership_pb2.ReleaseCouponRequest, context: grpc.ServicerContext
    ) -> membership_pb2.ReleaseCouponResponse:
        coupon = self._service.release_coupon(request.code, request.order_id)
        return membership_pb2.ReleaseCouponResponse(coupon=coupon_message(coupon))

    def RecordEvent(
        self, request: membership_pb2.RecordEventRequest, context: grpc.ServicerContext
    ) -> membership_pb2.RecordEventResponse:
        self._service.record_event(
            current_principal(),
            request.customer_id,
            request.store_id,
            _EVENTS.get(request.event_type),
            from_timestamp(
                request.occur_time, field_name="occur_time", present=request.HasField("occur_time")
            ),
        )
        return membership_pb2.RecordEventResponse()

    def ListMembers(
        self, request: membership_pb2.ListMembersRequest, context: grpc.ServicerContext
    ) -> membership_pb2.ListMembersResponse:
        if request.stage and request.stage not in _STAGES_IN:
            raise InvalidArgument("stage", "is not a known lifecycle stage")
        filters: dict[str, str | int] = {
            "tier": request.tier,
            "tag": request.tag,
            "stage": int(_STAGES_IN[request.stage]) if request.stage else 0,
            "home_store_id": request.home_store_id,
            "guide_id": request.guide_id,
        }
        members, token = self._service.list_members(
            current_principal(), filters, request.page_size, request.page_token
        )
        return membership_pb2.ListMembersResponse(members=map(member_message, members), next_page_token=token)

    def UpdateTags(
        self, request: membership_pb2.UpdateTagsRequest, context: grpc.ServicerContext
    ) -> membership_pb2.UpdateTagsResponse:
        member = self._service.update_tags(
            request.member_id, list(request.add_tags), list(request.remove_tags)
        )
        return membership_pb2.UpdateTagsResponse(member=member_message(member))

    def BatchIssueCoupons(
        self, request: membership_pb2.BatchIssueCouponsRequest, context: grpc.ServicerContext
    ) -> membership_pb2.BatchIssueCouponsResponse:
        _capped(request.requests)
        coupons = self._service.issue_coupons(
            [
                requests.CouponIssue(
                    each.member_id,
                    each.discount_cents,
                    each.min_spend_cents,
                    from_timestamp(
                        each.expire_time,
                        field_name=f"requests[{index}].expire_time",
                        present=each.HasField("expire_time"),
                    ),
                    each.request_id,
                    each.campaign_id,
                )
                for index, each in enumerate(request.requests)
            ]
        )
        return membership_pb2.BatchIssueCouponsResponse(coupons=map(coupon_message, coupons))

    def BatchGrantPoints(
        self, request: membership_pb2.BatchGrantPointsRequest, context: grpc.ServicerContext
    ) -> membership_pb2.BatchGrantPointsResponse:
        _capped(request.requests)
        entries = self._service.grant_many(
            [requests.PointsGrant(g.member_id, g.points, g.source_id, g.reason) for g in request.requests],
            _granting_by_hand(),
        )
        return membership_pb2.BatchGrantPointsResponse(entries=map(entry_message, entries))

    def BatchEarnPoints(
        self, request: membership_pb2.BatchEarnPointsRequest, context: grpc.ServicerContext
    ) -> membership_pb2.BatchEarnPointsResponse:
        _capped(request.requests)
        entries = self._service.earn_many(
            [
                requests.PointsEarn(e.member_id, e.source_id, e.spend_cents, e.store_id)
                for e in request.requests
            ]
        )
        return membership_pb2.BatchEarnPointsResponse(entries=map(entry_message, entries))

    def BatchUpdateTags(
        self, request: membership_pb2.BatchUpdateTagsRequest, context: grpc.ServicerContext
    ) -> membership_pb2.BatchUpdateTagsResponse:
        _capped(request.requests)
        members = self._service.update_tags_many(
            [requests.TagUpdate(u.member_id, list(u.add_tags), list(u.remove_tags)) for u in request.requests]
        )
        return membership_pb2.BatchUpdateTagsResponse(members=map(member_message, members))

    def GetFunnel(
        self, request: membership_pb2.GetFunnelRequest, context: grpc.ServicerContext
    ) -> membership_pb2.GetFunnelResponse:
        funnel = self._service.funnel(current_principal(), request.home_store_id)
        return membership_pb2.GetFunnelResponse(
            stages=[membership_pb2.StageCount(stage=_STAGES[s], members=n) for s, n in funnel.counts.items()],
            conversions=[
                membership_pb2.StageConversion(from_stage=_STAGES[a], to_stage=_STAGES[b], rate=rate)
                for a, b, rate in funnel.conversions
            ],
        )

    def MergeMembers(
        self, request: membership_pb2.MergeMembersRequest, context: grpc.ServicerContext
    ) -> membership_pb2.MergeMembersResponse:
        member = self._service.merge(
            request.survivor_customer_id, request.merged_customer_id, request.request_id
        )
        return membership_pb2.MergeMembersResponse(member=member_message(member))

    def UpsertGuide(
        self, request: membership_pb2.UpsertGuideRequest, context: grpc.ServicerContext
    ) -> membership_pb2.UpsertGuideResponse:
        given = request.guide
        guide = self._service.upsert_guide(
            current_principal(),
            Guide(given.guide_id, given.store_id, given.name, given.active)
            if request.HasField("guide")
            else None,
        )
        return membership_pb2.UpsertGuideResponse(guide=guide_message(guide))

    def GetGuide(
        self, request: membership_pb2.GetGuideRequest, context: grpc.ServicerContext
    ) -> membership_pb2.GetGuideResponse:
        guide = self._service.get_guide(current_principal(), request.guide_id)
        return membership_pb2.GetGuideResponse(guide=guide_message(guide))

    def ListGuides(
        self, request: membership_pb2.ListGuidesRequest, context: grpc.ServicerContext
    ) -> membership_pb2.ListGuidesResponse:
        guides, token = self._service.list_guides(
            current_principal(), request.store_id, request.page_size, request.page_token
        )
        return membership_pb2.ListGuidesResponse(guides=map(guide_message, guides), next_page_token=token)


def _capped(given: Sized) -> None:
    """A batch too long is refused before its requests are read (each may carry a timestamp to
    convert, and many thousands are no batch this service takes)."""
    if len(given) > requests.MAX_BATCH:
        raise InvalidArgument("requests", f"at most {requests.MAX_BATCH} requests a call")


def _posted(response: type[_Posted], entry: Entry, member: Member) -> _Posted:
    """The answer of every RPC that posts to the ledger: the entry and the member after it."""
    return response(entry=entry_message(entry), member=member_message(member))


def _granting_by_hand() -> Actor | None:
    """Who grants points by hand: ops, whose grants are audited; a campaign's grants (marketing's
    service token) are traced by marketing."""
    return current_actor() if current_principal().role is Role.OPS else None
