"""MarketingService over gRPC, called as ops, a store, a channel backend and the other services
would call it, on a clock the tests move: campaigns through their life, events that grant, the
messages a channel pulls and acknowledges, consent, results, and who may call what."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from quanyu.auth import Role
from quanyu.clients import error_reason, field_violations
from quanyu.common.v1 import common_pb2
from quanyu.config import Settings
from quanyu.marketing.v1 import marketing_pb2 as pb
from quanyu.marketing.v1 import marketing_pb2_grpc
from services.marketing import bootstrap
from tests.conftest import TokenFactory, bearer, running

Stub = marketing_pb2_grpc.MarketingServiceStub
Meta = tuple[tuple[str, str]]

# Noon in Shanghai: outside the quiet hours, so a queued message is due at once.
START = datetime(2026, 3, 10, 4, 0, tzinfo=UTC)
APP = common_pb2.CHANNEL_APP
TMALL = common_pb2.CHANNEL_TMALL


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Marketing:
    stub: Stub
    clock: Clock
    ops: Meta
    service: Meta
    app: Meta
    tmall: Meta
    store: Callable[[str], Meta]

    def create(self, campaign: pb.Campaign, request_id: str = "") -> pb.Campaign:
        answer: pb.CreateCampaignResponse = self.stub.CreateCampaign(
            pb.CreateCampaignRequest(campaign=campaign, request_id=request_id), metadata=self.ops
        )
        return answer.campaign

    def running(self, campaign: pb.Campaign) -> str:
        made = self.create(campaign)
        self.stub.StartCampaign(pb.StartCampaignRequest(campaign_id=made.campaign_id), metadata=self.ops)
        return str(made.campaign_id)

    def ingest(self, *events: pb.Event) -> pb.IngestEventsResponse:
        answer: pb.IngestEventsResponse = self.stub.IngestEvents(
            pb.IngestEventsRequest(events=events), metadata=self.service
        )
        return answer


@pytest.fixture
def m(settings: Settings, database_url: str, token: TokenFactory) -> Iterator[Marketing]:
    settings.marketing.database_url = database_url
    bootstrap.migrate(settings)
    clock = Clock(START)
    with running(bootstrap.build_app(settings, clock=clock), settings) as channel:
        yield Marketing(
            Stub(channel),
            clock,
            ops=bearer(token(Role.OPS)),
            service=bearer(token(Role.SERVICE, subject="orders")),
            app=bearer(token(Role.CHANNEL, channel="CHANNEL_APP")),
            tmall=bearer(token(Role.CHANNEL, channel="CHANNEL_TMALL")),
            store=lambda store_id: bearer(token(Role.STORE, store_id=store_id)),
        )


def stamp(at: datetime) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(at)
    return value


def campaign(**changes: Any) -> pb.Campaign:
    """A first-purchase coupon with a message on the app: valid unless a test changes it."""
    values: dict[str, Any] = {
        "name": "Welcome coupon",
        "trigger": pb.Trigger(event=pb.TRIGGER_EVENT_ORDER_COMPLETED),
        "actions": [
            pb.Action(issue_coupon=pb.CouponAction(discount_cents=2000, valid_days=30)),
            pb.Action(
                send_message=pb.MessageAction(channel=APP, template="Hi {display_name}: {coupon_code}")
            ),
        ],
    }
    values.update(changes)
    return pb.Campaign(**values)


def enrolled(member_id: str, customer_id: str, **profile: Any) -> pb.Event:
    member = pb.MemberProfile(member_id=member_id, customer_id=customer_id, tier="SILVER", **profile)
    return pb.Event(event_id=f"enrol/{member_id}", member_enrolled=pb.MemberEnrolled(member=member))


def linked(customer_id: str, channel: int = APP, name: str = "Mei") -> pb.Event:
    account = common_pb2.ChannelAccount(channel=channel, external_id=f"acct-{customer_id}-{channel}")  # type: ignore[arg-type]
    return pb.Event(
        event_id=f"link/{customer_id}/{channel}",
        account_linked=pb.AccountLinked(customer_id=customer_id, account=account, display_name=name),
    )


def completed(order_id: str, member_id: str, total_cents: int = 5000) -> pb.Event:
    return pb.Event(
        event_id=f"orders/{order_id}",
        occur_time=stamp(START),
        order_completed=pb.OrderCompleted(order_id=order_id, member_id=member_id, total_cents=total_cents),
    )


def failure(call: Callable[..., Any], request: Message, metadata: Meta) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, metadata=metadata)
    return caught.value


# --- campaigns ----------------------------------------------------------------------------------


def test_a_campaign_goes_through_its_life_over_the_wire(m: Marketing) -> None:
    made = m.create(campaign(), request_id="create-1")
    assert (made.state, made.version, made.name) == (pb.CAMPAIGN_STATE_DRAFT, 1, "Welcome coupon")
    assert m.create(campaign(), request_id="create-1").campaign_id == made.campaign_id
    reused = failure(
        m.stub.CreateCampaign,
        pb.CreateCampaignRequest(campaign=campaign(name="Other"), request_id="create-1"),
        m.ops,
    )
    assert (reused.code(), error_reason(reused)) == (grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_ID_REUSED")

    changed = m.stub.UpdateCampaign(
        pb.UpdateCampaignRequest(
            campaign=pb.Campaign(campaign_id=made.campaign_id, holdout_percent=10),
            update_mask=FieldMask(paths=["holdout_percent"]),
        ),
        metadata=m.ops,
    ).campaign
    assert (changed.holdout_percent, changed.version, changed.name) == (10, 2, "Welcome coupon")
    assert (
        m.stub.GetCampaign(pb.GetCampaignRequest(campaign_id=made.campaign_id), metadata=m.ops).campaign
        == changed
    )

    ids = pb.StartCampaignRequest(campaign_id=made.campaign_id)
    assert m.stub.StartCampaign(ids, metadata=m.ops).campaign.state == pb.CAMPAIGN_STATE_RUNNING
    assert m.stub.StartCampaign(ids, metadata=m.ops).campaign.state == pb.CAMPAIGN_STATE_RUNNING
    editing = failure(
        m.stub.UpdateCampaign,
        pb.UpdateCampaignRequest(
            campaign=pb.Campaign(campaign_id=made.campaign_id, priority=3),
            update_mask=FieldMask(paths=["priority"]),
        ),
        m.ops,
    )
    assert (editing.code(), error_reason(editing)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "INVALID_TRANSITION",
    )
    paused = m.stub.PauseCampaign(pb.PauseCampaignRequest(campaign_id=made.campaign_id), metadata=m.ops)
    assert paused.campaign.state == pb.CAMPAIGN_STATE_PAUSED
    ended = m.stub.EndCampaign(pb.EndCampaignRequest(campaign_id=made.campaign_id), metadata=m.ops)
    assert ended.campaign.state == pb.CAMPAIGN_STATE_ENDED
    again = failure(m.stub.StartCampaign, ids, m.ops)
    assert (again.code(), error_reason(again)) == (grpc.StatusCode.FAILED_PRECONDITION, "INVALID_TRANSITION")

    missing = failure(m.stub.GetCampaign, pb.GetCampaignRequest(campaign_id="cmp_none"), m.ops)
    assert missing.code() is grpc.StatusCode.NOT_FOUND


def test_campaigns_are_listed_oldest_first_a_page_at_a_time_by_state(m: Marketing) -> None:
    made = []
    for i in range(3):
        made.append(m.create(campaign(name=f"c{i}")).campaign_id)
        m.clock.now += timedelta(seconds=1)
    m.stub.StartCampaign(pb.StartCampaignRequest(campaign_id=made[1]), metadata=m.ops)
    seen, token = [], ""
    while True:
        page = m.stub.ListCampaigns(pb.ListCampaignsRequest(page_size=2, page_token=token), metadata=m.ops)
        seen += [c.campaign_id for c in page.campaigns]
        token = page.next_page_token
        if not token:
            break
    assert seen == made
    drafts = m.stub.ListCampaigns(pb.ListCampaignsRequest(states=[pb.CAMPAIGN_STATE_DRAFT]), metadata=m.ops)
    assert [c.campaign_id for c in drafts.campaigns] == [made[0], made[2]]
    first = m.stub.ListCampaigns(pb.ListCampaignsRequest(page_size=1), metadata=m.ops)
    # A token belongs to its query: used with other states it is refused.
    other = failure(
        m.stub.ListCampaigns,
        pb.ListCampaignsRequest(page_token=first.next_page_token, states=[pb.CAMPAIGN_STATE_RUNNING]),
        m.ops,
    )
    assert field_violations(other)[0][0] == "page_token"


# --- bad input ----------------------------------------------------------------------------------


def _schedule(local_time: str) -> pb.Trigger:
    return pb.Trigger(schedule=pb.Schedule(kind=pb.SCHEDULE_KIND_DAILY, local_time=local_time))


def _message(template: str) -> list[pb.Action]:
    return [pb.Action(send_message=pb.MessageAction(channel=APP, template=template))]


BAD_CAMPAIGNS = {
    "campaign.holdout_percent": campaign(holdout_percent=60),
    "campaign.actions[0].issue_coupon.discount_cents": campaign(
        actions=[pb.Action(issue_coupon=pb.CouponAction(valid_days=30))]
    ),
    "campaign.actions[0].issue_coupon.valid_days": campaign(
        actions=[pb.Action(issue_coupon=pb.CouponAction(discount_cents=500, valid_days=0))]
    ),
    "campaign.trigger.schedule.local_time": campaign(trigger=_schedule("25:00"), actions=_message("Hi")),
    "campaign.actions[0].send_message.template": campaign(actions=_message("")),
    "campaign.actions[0].send_message.template ": campaign(actions=_message("Your number {phone}")),
    "campaign.end_time": campaign(start_time=stamp(START), end_time=stamp(START - timedelta(days=1))),
    "campaign.audience.tiers[0]": campaign(audience=pb.Audience(tiers=["DIAMOND"])),
    "campaign.audience.tags": campaign(audience=pb.Audience(tags=[f"t{i}" for i in range(101)])),
    "campaign.name": campaign(name=""),
}


@pytest.mark.parametrize("field", BAD_CAMPAIGNS)
def test_a_bad_campaign_is_refused_naming_its_field(m: Marketing, field: str) -> None:
    error = failure(m.stub.CreateCampaign, pb.CreateCampaignRequest(campaign=BAD_CAMPAIGNS[field]), m.ops)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert field.strip() in [name for name, _ in field_violations(error)]


def test_bad_requests_of_the_other_rpcs_name_their_field(m: Marketing) -> None:
    cases: list[tuple[Callable[..., Any], Message, Meta, str]] = [
        (
            m.stub.IngestEvents,
            pb.IngestEventsRequest(events=[completed(f"o{i}", "m") for i in range(501)]),
            m.service,
            "events",
        ),
        (
            m.stub.IngestEvents,
            pb.IngestEventsRequest(events=[pb.Event(event_id="e1")]),
            m.service,
            "events[0].kind",
        ),
        (
            m.stub.IngestEvents,
            pb.IngestEventsRequest(events=[pb.Event(event_id="e1", order_completed=pb.OrderCompleted())]),
            m.service,
            "events[0].order_completed.member_id",
        ),
        (
            m.stub.IngestEvents,
            pb.IngestEventsRequest(
                events=[
                    pb.Event(
                        event_id="e1", order_completed=pb.OrderCompleted(member_id="m", skus=["s"] * 101)
                    )
                ]
            ),
            m.service,
            "events[0].order_completed.skus",
        ),
        (
            m.stub.IngestEvents,
            pb.IngestEventsRequest(events=[completed("o", "m" * 65)]),
            m.service,
            "events[0].order_completed.member_id",
        ),
        (
            m.stub.IngestEvents,
            pb.IngestEventsRequest(events=[completed("o", "mem-1 ")]),
            m.service,
            "events[0].order_completed.member_id",
        ),
        (m.stub.ListCampaigns, pb.ListCampaignsRequest(page_size=-1), m.ops, "page_size"),
        (m.stub.ListCampaigns, pb.ListCampaignsRequest(states=[1, 2, 3, 4, 1]), m.ops, "states"),  # type: ignore[list-item]
        (m.stub.ListCampaigns, pb.ListCampaignsRequest(page_token="forged"), m.ops, "page_token"),
        (m.stub.ExplainMember, pb.ExplainMemberRequest(campaign_id="cmp_x"), m.ops, "member_id"),
        (m.stub.GetCampaign, pb.GetCampaignRequest(), m.ops, "campaign_id"),
        (m.stub.PullMessages, pb.PullMessagesRequest(max_messages=-1), m.app, "max_messages"),
        (m.stub.AckMessages, pb.AckMessagesRequest(message_ids=["x"] * 1001), m.app, "message_ids"),
        (m.stub.AckMessages, pb.AckMessagesRequest(message_ids=["ok", ""]), m.app, "message_ids[1]"),
        (m.stub.SetContactPreferences, pb.SetContactPreferencesRequest(channel=APP), m.app, "customer_id"),
        (m.stub.SetContactPreferences, pb.SetContactPreferencesRequest(customer_id="c"), m.ops, "channel"),
        (
            m.stub.UpdateCampaign,
            pb.UpdateCampaignRequest(campaign=pb.Campaign(campaign_id="cmp_x")),
            m.ops,
            "update_mask",
        ),
    ]
    for call, request, metadata, field in cases:
        error = failure(call, request, metadata)
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, field
        assert field in [name for name, _ in field_violations(error)], (field, field_violations(error))


# --- events, messages, results --------------------------------------------------------------------


def test_an_order_grants_once_and_the_channel_pulls_and_acknowledges_its_message(m: Marketing) -> None:
    # A message naming its coupon's code waits for membership to issue it (tests/marketing/
    # test_delivery.py); no membership runs here, so this one names none.
    actions = [
        pb.Action(issue_coupon=pb.CouponAction(discount_cents=2000, valid_days=30)),
        pb.Action(send_message=pb.MessageAction(channel=APP, template="Hi {display_name}: a coupon for you")),
    ]
    campaign_id = m.running(campaign(actions=actions))
    assert m.ingest(linked("cus-1"), enrolled("mem-1", "cus-1")).accepted == 2
    m.stub.SetContactPreferences(
        pb.SetContactPreferencesRequest(customer_id="cus-1", channel=APP, marketing_consent=True),
        metadata=m.app,
    )
    assert m.ingest(completed("o1", "mem-1")) == pb.IngestEventsResponse(accepted=1)
    # The same event again, as an outbox retrying would send it: nothing more happens.
    assert m.ingest(completed("o1", "mem-1")) == pb.IngestEventsResponse(duplicates=1)

    assert m.stub.PullMessages(pb.PullMessagesRequest(), metadata=m.tmall).messages == []
    pulled = m.stub.PullMessages(pb.PullMessagesRequest(), metadata=m.app).messages
    assert len(pulled) == 1
    message = pulled[0]
    assert (message.campaign_id, message.customer_id, message.status) == (
        campaign_id,
        "cus-1",
        pb.MESSAGE_STATUS_PENDING,
    )
    assert message.account == common_pb2.ChannelAccount(channel=APP, external_id=f"acct-cus-1-{APP}")
    assert message.text.startswith("Hi Mei: ")

    def sent() -> int:
        results = m.stub.GetCampaignResults(
            pb.GetCampaignResultsRequest(campaign_id=campaign_id), metadata=m.ops
        )
        return int(results.messages_sent)

    # Another channel's acknowledgement of the id is ignored.
    m.stub.AckMessages(pb.AckMessagesRequest(message_ids=[message.message_id]), metadata=m.tmall)
    assert sent() == 0
    m.stub.AckMessages(pb.AckMessagesRequest(message_ids=[message.message_id, "msg_unknown"]), metadata=m.app)
    assert sent() == 1

    results = m.stub.GetCampaignResults(pb.GetCampaignResultsRequest(campaign_id=campaign_id), metadata=m.ops)
    # No membership runs here: the grant's coupon is not issued yet, and is not counted as issued.
    assert (results.members_reached, results.grants, results.coupons_issued) == (1, 1, 0)
    explained = m.stub.ExplainMember(
        pb.ExplainMemberRequest(campaign_id=campaign_id, member_id="mem-1"), metadata=m.ops
    )
    assert explained.reasons[0] == "GRANTED"
    stranger = m.stub.ExplainMember(
        pb.ExplainMemberRequest(campaign_id=campaign_id, member_id="mem-unheard-of"), metadata=m.ops
    )
    assert list(stranger.reasons) == ["UNKNOWN_MEMBER"]
    preview = m.stub.PreviewCampaign(pb.PreviewCampaignRequest(campaign_id=campaign_id), metadata=m.ops)
    assert (preview.audience_size, list(preview.sample_member_ids)) == (1, ["mem-1"])
    assert preview.max_coupon_cost_cents == 2000


def test_a_member_change_fires_tier_and_stage_triggers_only_when_it_says_so(m: Marketing) -> None:
    tier_campaign = m.running(
        campaign(
            trigger=pb.Trigger(event=pb.TRIGGER_EVENT_TIER_CHANGED), actions=[pb.Action(grant_points=50)]
        )
    )
    m.ingest(enrolled("mem-1", "cus-1"))

    def changed(event_id: str, *, tier_changed: bool) -> pb.Event:
        member = pb.MemberProfile(
            member_id="mem-1",
            customer_id="cus-1",
            tier="GOLD",
            tags=["vip"],
            points_balance=900,
            expiring_points=[pb.ExpiringPoints(points=300, expire_time=stamp(START + timedelta(days=5)))],
        )
        return pb.Event(
            event_id=event_id, member_changed=pb.MemberChanged(member=member, tier_changed=tier_changed)
        )

    m.ingest(changed("points/1", tier_changed=False))
    results = pb.GetCampaignResultsRequest(campaign_id=tier_campaign)
    assert m.stub.GetCampaignResults(results, metadata=m.ops).grants == 0
    m.ingest(changed("tier/1", tier_changed=True))
    answer = m.stub.GetCampaignResults(results, metadata=m.ops)
    assert (answer.grants, answer.points_granted) == (1, 50)


# --- who may do what ----------------------------------------------------------------------------


def test_a_channel_sets_consent_only_on_its_own_channel_for_its_own_customers(m: Marketing) -> None:
    m.ingest(linked("cus-app", APP), linked("cus-tmall", TMALL))
    elsewhere = failure(
        m.stub.SetContactPreferences,
        pb.SetContactPreferencesRequest(customer_id="cus-app", channel=TMALL, marketing_consent=True),
        m.app,
    )
    assert (elsewhere.code(), error_reason(elsewhere)) == (grpc.StatusCode.PERMISSION_DENIED, "OTHER_CHANNEL")
    stranger = failure(
        m.stub.SetContactPreferences,
        pb.SetContactPreferencesRequest(customer_id="cus-tmall", channel=APP, marketing_consent=True),
        m.app,
    )
    assert stranger.code() is grpc.StatusCode.NOT_FOUND
    m.stub.SetContactPreferences(
        pb.SetContactPreferencesRequest(customer_id="cus-app", channel=APP, marketing_consent=True),
        metadata=m.app,
    )
    m.stub.SetContactPreferences(
        pb.SetContactPreferencesRequest(customer_id="cus-tmall", channel=APP, marketing_consent=False),
        metadata=m.ops,
    )


def test_a_store_reads_the_results_of_its_own_stores_campaigns_only(m: Marketing) -> None:
    own = m.create(campaign(audience=pb.Audience(home_store_ids=["s1"]))).campaign_id
    shared = m.create(campaign(audience=pb.Audience(home_store_ids=["s1", "s2"]))).campaign_id
    chain = m.create(campaign()).campaign_id
    m.stub.GetCampaignResults(pb.GetCampaignResultsRequest(campaign_id=own), metadata=m.store("s1"))
    for campaign_id, store in ((own, "s2"), (shared, "s1"), (chain, "s1")):
        error = failure(
            m.stub.GetCampaignResults, pb.GetCampaignResultsRequest(campaign_id=campaign_id), m.store(store)
        )
        assert error.code() is grpc.StatusCode.NOT_FOUND


def test_each_rpc_refuses_the_roles_it_does_not_serve(m: Marketing) -> None:
    draft = m.create(campaign()).campaign_id
    refused: list[tuple[Callable[..., Any], Message, Meta]] = [
        (m.stub.CreateCampaign, pb.CreateCampaignRequest(campaign=campaign()), m.app),
        (m.stub.CreateCampaign, pb.CreateCampaignRequest(campaign=campaign()), m.store("s1")),
        (m.stub.CreateCampaign, pb.CreateCampaignRequest(campaign=campaign()), m.service),
        (m.stub.StartCampaign, pb.StartCampaignRequest(campaign_id=draft), m.app),
        (m.stub.StartCampaign, pb.StartCampaignRequest(campaign_id=draft), m.store("s1")),
        (m.stub.ExplainMember, pb.ExplainMemberRequest(campaign_id=draft, member_id="m"), m.store("s1")),
        (m.stub.IngestEvents, pb.IngestEventsRequest(events=[completed("o", "m")]), m.ops),
        (m.stub.IngestEvents, pb.IngestEventsRequest(events=[completed("o", "m")]), m.app),
        (m.stub.IngestEvents, pb.IngestEventsRequest(events=[completed("o", "m")]), m.store("s1")),
        (m.stub.PullMessages, pb.PullMessagesRequest(), m.ops),
        (m.stub.AckMessages, pb.AckMessagesRequest(), m.service),
        (
            m.stub.SetContactPreferences,
            pb.SetContactPreferencesRequest(customer_id="c", channel=APP),
            m.store("s1"),
        ),
    ]
    for call, request, metadata in refused:
        assert failure(call, request, metadata).code() is grpc.StatusCode.PERMISSION_DENIED, call
    assert (
        m.stub.GetCampaign(pb.GetCampaignRequest(campaign_id=draft), metadata=m.ops).campaign.state
        == pb.CAMPAIGN_STATE_DRAFT
    )
