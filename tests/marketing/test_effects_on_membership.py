"""Marketing's grants take effect on a real membership service, through marketing's outbox and
membership's RPCs, with marketing's own service token: the coupon, the points and the tag of a
grant arrive once, however often the event that made it is delivered."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import pytest

from quanyu.auth import Role
from quanyu.common.v1 import common_pb2
from quanyu.config import Settings
from quanyu.identity.v1 import identity_pb2, identity_pb2_grpc
from quanyu.marketing.v1 import marketing_pb2 as pb
from quanyu.marketing.v1 import marketing_pb2_grpc
from quanyu.membership.v1 import membership_pb2, membership_pb2_grpc
from services.identity import bootstrap as identity_bootstrap
from services.marketing import bootstrap
from services.membership import bootstrap as membership_bootstrap
from tests.conftest import TokenFactory, bearer, served
from tests.processes import poll

Meta = tuple[tuple[str, str]]


@dataclass
class Platform:
    marketing: marketing_pb2_grpc.MarketingServiceStub
    membership: membership_pb2_grpc.MembershipServiceStub
    member_id: str
    ops: Meta
    service: Meta


@pytest.fixture
def platform(settings: Settings, database_url: str, token: TokenFactory) -> Iterator[Platform]:
    settings.marketing.database_url = database_url
    bootstrap.migrate(settings)
    identity_bootstrap.migrate(settings)
    membership_bootstrap.migrate(settings)
    ops, service = bearer(token(Role.OPS)), bearer(token(Role.SERVICE, subject="orders"))
    with ExitStack() as stack:
        identity = stack.enter_context(served(identity_bootstrap.build_app(settings), settings))
        settings.identity.target = identity.target
        membership = stack.enter_context(served(membership_bootstrap.build_app(settings), settings))
        settings.membership.target = membership.target
        marketing = stack.enter_context(served(bootstrap.build_app(settings), settings))
        account = common_pb2.ChannelAccount(channel=common_pb2.CHANNEL_APP, external_id="app-user-1")
        customer = (
            identity_pb2_grpc.IdentityServiceStub(identity.channel)
            .ResolveCustomer(identity_pb2.ResolveCustomerRequest(account=account), metadata=ops)
            .customer
        )
        members = membership_pb2_grpc.MembershipServiceStub(membership.channel)
        member = members.Enroll(
            membership_pb2.EnrollRequest(customer_id=customer.customer_id), metadata=service
        ).member
        yield Platform(
            marketing_pb2_grpc.MarketingServiceStub(marketing.channel),
            members,
            member.member_id,
            ops,
            service,
        )


def test_a_grant_issues_its_coupon_grants_its_points_and_tags_the_member_once(platform: Platform) -> None:
    p = platform
    made = p.marketing.CreateCampaign(
        pb.CreateCampaignRequest(
            campaign=pb.Campaign(
                name="Thank you",
                trigger=pb.Trigger(event=pb.TRIGGER_EVENT_ORDER_COMPLETED),
                actions=[
                    pb.Action(issue_coupon=pb.CouponAction(discount_cents=1500, valid_days=30)),
                    pb.Action(grant_points=70),
                    pb.Action(add_tag="thanked"),
                ],
            )
        ),
        metadata=p.ops,
    ).campaign
    p.marketing.StartCampaign(pb.StartCampaignRequest(campaign_id=made.campaign_id), metadata=p.ops)
    event = pb.Event(
        event_id="orders/effect-1",
        order_completed=pb.OrderCompleted(order_id="o-1", member_id=p.member_id, total_cents=9000),
    )
    for _ in range(3):
        p.marketing.IngestEvents(pb.IngestEventsRequest(events=[event]), metadata=p.service)

    def coupons() -> list[membership_pb2.Coupon]:
        answer = p.membership.ListCoupons(
            membership_pb2.ListCouponsRequest(member_id=p.member_id), metadata=p.ops
        )
        return list(answer.coupons)

    def member() -> membership_pb2.Member:
        got: membership_pb2.Member = p.membership.GetMember(
            membership_pb2.GetMemberRequest(member_id=p.member_id), metadata=p.ops
        ).member
        return got

    issued = poll(coupons, lambda found: len(found) > 0, "the campaign's coupon", within=30)
    now = poll(
        member, lambda m: "thanked" in m.tags and m.points_balance > 0, "the points and the tag", within=30
    )
    assert [(c.discount_cents, c.campaign_id) for c in issued] == [(1500, made.campaign_id)]
    assert now.points_balance == 70

    # One grant for the three deliveries, so one of each effect was ever put in the outbox; the
    # coupon counts as issued once membership's answer has been kept.
    def results() -> pb.GetCampaignResultsResponse:
        answer: pb.GetCampaignResultsResponse = p.marketing.GetCampaignResults(
            pb.GetCampaignResultsRequest(campaign_id=made.campaign_id), metadata=p.ops
        )
        return answer

    counted = poll(results, lambda r: r.coupons_issued > 0, "the coupon counted as issued", within=30)
    assert (counted.grants, counted.coupons_issued, counted.coupons_redeemed, counted.points_granted) == (
        1,
        1,
        0,
        70,
    )
    # An order redeeming another coupon is not the campaign's; one redeeming its coupon is.
    for n, code in enumerate(["NOT-OURS", issued[0].code]):
        p.marketing.IngestEvents(
            pb.IngestEventsRequest(
                events=[
                    pb.Event(
                        event_id=f"orders/o-{n + 2}/completed",
                        order_completed=pb.OrderCompleted(
                            order_id=f"o-{n + 2}", member_id=p.member_id, total_cents=9000, coupon_code=code
                        ),
                    )
                ]
            ),
            metadata=p.service,
        )
        assert results().coupons_redeemed == n
