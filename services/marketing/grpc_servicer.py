"""MarketingService over gRPC: messages in, checked and decoded (services.marketing.wire), the use
cases called for the caller's role, messages out. No rules live here."""

from __future__ import annotations

import grpc

from quanyu.auth import Principal, Role, current_principal
from quanyu.errors import InvalidArgument, PermissionDenied, Violations
from quanyu.marketing.v1 import marketing_pb2 as pb
from quanyu.marketing.v1 import marketing_pb2_grpc
from quanyu.paging import check_page_token
from quanyu.server import Servicer, current_actor, rpc_policy
from quanyu.wire import to_timestamp
from services.marketing.domain import Channel, codes
from services.marketing.handlers.service import MarketingService
from services.marketing.wire import (
    MAX_ID_LENGTH,
    MAX_MESSAGE_IDS,
    MAX_REQUEST_ID_LENGTH,
    MAX_STATES,
    campaign_message,
    campaign_of,
    channel_of,
    check_campaign_message,
    events_of,
    message_message,
    state_of,
    token_channel,
)

SERVICE = pb.DESCRIPTOR.services_by_name["MarketingService"]
_OPS = (Role.OPS,)
POLICY = rpc_policy(
    SERVICE,
    {
        "CreateCampaign": _OPS,
        "GetCampaign": _OPS,
        "ListCampaigns": _OPS,
        "UpdateCampaign": _OPS,
        "StartCampaign": _OPS,
        "PauseCampaign": _OPS,
        "EndCampaign": _OPS,
        "PreviewCampaign": _OPS,
        "GetCampaignResults": (Role.OPS, Role.STORE),
        "ExplainMember": _OPS,
        "SetContactPreferences": (Role.CHANNEL, Role.OPS),
        "PullMessages": (Role.CHANNEL,),
        "AckMessages": (Role.CHANNEL,),
        "IngestEvents": (Role.SERVICE,),
    },
)


def _campaign_id(value: str, name: str = "campaign_id") -> str:
    violations = Violations()
    violations.text(value, name, max_length=MAX_ID_LENGTH)
    violations.raise_if_any()
    return value


def _own_channel(principal: Principal) -> Channel:
    """The channel a channel token acts for."""
    return token_channel(principal.channel)


class MarketingServicer(
    Servicer[MarketingService], marketing_pb2_grpc.MarketingServiceServicer, service=SERVICE, policy=POLICY
):
    # --- campaigns -------------------------------------------------------------------------------

    def CreateCampaign(
        self, request: pb.CreateCampaignRequest, context: grpc.ServicerContext
    ) -> pb.CreateCampaignResponse:
        violations = Violations()
        violations.text(request.request_id, "request_id", max_length=MAX_REQUEST_ID_LENGTH, required=False)
        if not request.HasField("campaign"):
            violations.add("campaign", "is required")
        check_campaign_message(violations.within("campaign"), request.campaign)
        campaign = campaign_of(request.campaign, violations)
        violations.raise_if_any()
        made = self._service.campaigns.create_campaign(campaign, request.request_id)
        return pb.CreateCampaignResponse(campaign=campaign_message(made))

    def GetCampaign(
        self, request: pb.GetCampaignRequest, context: grpc.ServicerContext
    ) -> pb.GetCampaignResponse:
        found = self._service.campaigns.get_campaign(_campaign_id(request.campaign_id))
        return pb.GetCampaignResponse(campaign=campaign_message(found))

    def ListCampaigns(
        self, request: pb.ListCampaignsRequest, context: grpc.ServicerContext
    ) -> pb.ListCampaignsResponse:
        violations = Violations()
        violations.check(len(request.states) <= MAX_STATES, "states", f"must hold at most {MAX_STATES}")
        states = [state_of(s) for s in request.states[:MAX_STATES]]
        for i, state in enumerate(states):
            violations.within("states", i).check(state.value != "UNSPECIFIED", "", "must name a state")
        violations.check(request.page_size >= 0, "page_size", "must not be negative")
        check_page_token(request.page_token, violations)
        violations.raise_if_any()
        found, token = self._service.list_campaigns(
            states, request.page_size, request.page_token, current_principal().name
        )
        return pb.ListCampaignsResponse(campaigns=[campaign_message(c) for c in found], next_page_token=token)

    def UpdateCampaign(
        self, request: pb.UpdateCampaignRequest, context: grpc.ServicerContext
    ) -> pb.UpdateCampaignResponse:
        violations = Violations()
        if not request.HasField("campaign"):
            violations.add("campaign", "is required")
        violations.text(request.campaign.campaign_id, "campaign.campaign_id", max_length=MAX_ID_LENGTH)
        paths = list(request.update_mask.paths)
        violations.check(bool(paths), "update_mask", "must name the fields to change")
        violations.check(len(paths) <= 32, "update_mask", "must name at most 32 fields")
        check_campaign_message(violations.within("campaign"), request.campaign)
        changes = campaign_of(request.campaign, violations)
        violations.raise_if_any()
        updated = self._service.campaigns.update_campaign(request.campaign.campaign_id, changes, paths)
        return pb.UpdateCampaignResponse(campaign=campaign_message(updated))

    def StartCampaign(
        self, request: pb.StartCampaignRequest, context: grpc.ServicerContext
    ) -> pb.StartCampaignResponse:
        started = self._service.campaigns.start_campaign(_campaign_id(request.campaign_id), current_actor())
        return pb.StartCampaignResponse(campaign=campaign_message(started))

    def PauseCampaign(
        self, request: pb.PauseCampaignRequest, context: grpc.ServicerContext
    ) -> pb.PauseCampaignResponse:
        paused = self._service.campaigns.pause_campaign(_campaign_id(request.campaign_id), current_actor())
        return pb.PauseCampaignResponse(campaign=campaign_message(paused))

    def EndCampaign(
        self, request: pb.EndCampaignRequest, context: grpc.ServicerContext
    ) -> pb.EndCampaignResponse:
        ended = self._service.campaigns.end_campaign(_campaign_id(request.campaign_id), current_actor())
        return pb.EndCampaignResponse(campaign=campaign_message(ended))

    # --- insight ---------------------------------------------------------------------------------

    def PreviewCampaign(
        self, request: pb.PreviewCampaignRequest, context: grpc.ServicerContext
    ) -> pb.PreviewCampaignResponse:
        preview = self._service.insight.preview_campaign(_campaign_id(request.campaign_id))
        return pb.PreviewCampaignResponse(
            audience_size=preview.audience_size,
            holdout_size=preview.held_out,
            sample_member_ids=preview.sample,
            max_points_cost=preview.most_cost.points,
            max_coupon_cost_cents=preview.most_cost.coupon_cents,
        )

    def GetCampaignResults(
        self, request: pb.GetCampaignResultsRequest, context: grpc.ServicerContext
    ) -> pb.GetCampaignResultsResponse:
        campaign_id = _campaign_id(request.campaign_id)
        principal = current_principal()
        found = (
            self._service.store_results(campaign_id, principal.store_id)
            if principal.role is Role.STORE
            else self._service.results.campaign_results(campaign_id)
        )
        compared, totals = found.comparison, found.totals
        return pb.GetCampaignResultsResponse(
            members_reached=found.members_reached,
            members_held_out=found.members_held_out,
            grants=totals.grants,
            points_granted=totals.points,
            coupons_issued=found.coupons_issued,
            coupons_redeemed=found.coupons_redeemed,
            messages_sent=self._service.messages_sent(campaign_id),
            messages_suppressed=totals.messages_suppressed,
            reached_conversion=compared.reached_conversion,
            holdout_conversion=compared.holdout_conversion,
            uplift=compared.uplift,
            uplift_low=compared.uplift_low,
            uplift_high=compared.uplift_high,
            reached_revenue_cents=compared.reached_revenue_cents,
            holdout_revenue_cents=compared.holdout_revenue_cents,
            exhausted_limit=totals.exhausted_limit,
            exhaust_time=to_timestamp(totals.exhaust_time),
        )

    def ExplainMember(
        self, request: pb.ExplainMemberRequest, context: grpc.ServicerContext
    ) -> pb.ExplainMemberResponse:
        violations = Violations()
        violations.text(request.campaign_id, "campaign_id", max_length=MAX_ID_LENGTH)
        violations.text(request.member_id, "member_id", max_length=MAX_ID_LENGTH)
        violations.raise_if_any()
        reasons = self._service.insight.explain_member(request.campaign_id, request.member_id)
        return pb.ExplainMemberResponse(reasons=codes(reasons))

    # --- messages --------------------------------------------------------------------------------

    def SetContactPreferences(
        self, request: pb.SetContactPreferencesRequest, context: grpc.ServicerContext
    ) -> pb.SetContactPreferencesResponse:
        violations = Violations()
        violations.text(request.customer_id, "customer_id", max_length=MAX_ID_LENGTH)
        channel = channel_of(request.channel)
        violations.check(channel is not Channel.UNSPECIFIED, "channel", "must name a channel")
        violations.raise_if_any()
        principal = current_principal()
        on_own_channel = principal.role is Role.CHANNEL
        if on_own_channel and channel is not _own_channel(principal):
            raise PermissionDenied("a channel sets consent on its own channel only", reason="OTHER_CHANNEL")
        self._service.set_consent(
            request.customer_id, channel, request.marketing_consent, on_own_channel=on_own_channel
        )
        return pb.SetContactPreferencesResponse()

    def PullMessages(
        self, request: pb.PullMessagesRequest, context: grpc.ServicerContext
    ) -> pb.PullMessagesResponse:
        if request.max_messages < 0:
            raise InvalidArgument("max_messages", "must not be negative")
        pulled = self._service.messages.pull_messages(_own_channel(current_principal()), request.max_messages)
        return pb.PullMessagesResponse(messages=[message_message(m) for m in pulled])

    def AckMessages(
        self, request: pb.AckMessagesRequest, context: grpc.ServicerContext
    ) -> pb.AckMessagesResponse:
        violations = Violations()
        ids = request.message_ids
        violations.check(len(ids) <= MAX_MESSAGE_IDS, "message_ids", f"must hold at most {MAX_MESSAGE_IDS}")
        for i, message_id in enumerate(ids[:MAX_MESSAGE_IDS]):
            violations.within("message_ids", i).text(message_id, "", max_length=MAX_ID_LENGTH)
        violations.raise_if_any()
        # The store acknowledges only the caller's channel's messages: another's id changes nothing.
        self._service.messages.ack_messages(_own_channel(current_principal()), list(ids))
        return pb.AckMessagesResponse()

    # --- events ----------------------------------------------------------------------------------

    def IngestEvents(
        self, request: pb.IngestEventsRequest, context: grpc.ServicerContext
    ) -> pb.IngestEventsResponse:
        violations = Violations()
        events = events_of(request.events, violations)
        violations.raise_if_any()
        done = self._service.ingest(events)
        return pb.IngestEventsResponse(accepted=done.accepted, duplicates=done.duplicates)
