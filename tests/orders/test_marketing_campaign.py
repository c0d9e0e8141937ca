"""The whole platform as real processes, marketing included: a campaign on completed orders acts
on the member whose order completed, so orders' event reached marketing and marketing acted
through membership. Marketing down meanwhile delays that, and nothing else."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from quanyu.auth import Role
from quanyu.marketing.v1 import marketing_pb2, marketing_pb2_grpc
from quanyu.membership.v1 import membership_pb2
from quanyu.orders.v1 import orders_pb2
from tests.orders.platform import Platform, platform
from tests.orders.test_outages import PROMPTLY, delivery, eventually, open_store, ready_order


@pytest.fixture(scope="module")
def p(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with platform(tmp_path_factory.mktemp("campaign"), QUANYU_ORDERS_ACCEPT_WINDOW_SECONDS="3600") as running:
        yield running


def test_a_campaign_on_completed_orders_tags_the_member_once_marketing_hears_of_the_order(
    p: Platform,
) -> None:
    ops = p.token(Role.OPS)
    marketing = marketing_pb2_grpc.MarketingServiceStub(p.channel("marketing"))
    campaign = marketing.CreateCampaign(
        marketing_pb2.CreateCampaignRequest(
            campaign=marketing_pb2.Campaign(
                name="Thank a buyer",
                trigger=marketing_pb2.Trigger(event=marketing_pb2.TRIGGER_EVENT_ORDER_COMPLETED),
                actions=[marketing_pb2.Action(add_tag="bought")],
            ),
            request_id="thank-a-buyer",
        ),
        metadata=ops,
    ).campaign
    marketing.StartCampaign(
        marketing_pb2.StartCampaignRequest(campaign_id=campaign.campaign_id), metadata=ops
    )
    open_store(p, ops, "CM-1", "TEA", 100)

    p.stop("marketing")
    ready = ready_order(p, ops, delivery("cm-1", "cm-ext-1", "TEA", 1))
    completed = p.orders.CompleteOrder(
        orders_pb2.CompleteOrderRequest(order_id=ready.order_id), metadata=ops, timeout=PROMPTLY
    ).order
    assert completed.status == orders_pb2.ORDER_STATUS_COMPLETED

    def tags() -> list[str]:
        member = p.membership.GetMember(
            membership_pb2.GetMemberRequest(member_id=completed.member_id), metadata=ops
        ).member
        return list(member.tags)

    # The points arrive while marketing is down; the tag cannot.
    eventually(
        lambda: (
            p.membership.GetMember(
                membership_pb2.GetMemberRequest(member_id=completed.member_id), metadata=ops
            ).member.points_balance
        ),
        lambda points: points > 0,
        "the points arrive",
    )
    assert "bought" not in tags()

    p.start("marketing")
    assert "bought" in eventually(tags, lambda found: "bought" in found, "the campaign tags the buyer")
