"""The scheduled runs as the service runs them: marketing's bootstrap passes over its campaigns
periodically beside a real fulfilment server whose stores give members their zones, and a run
reaches each member at their own local time over the wire, its message addressed to the account
identity linked."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from quanyu.auth import Role
from quanyu.config import Settings
from quanyu.fulfilment.v1 import fulfilment_pb2, fulfilment_pb2_grpc
from quanyu.marketing.v1 import marketing_pb2 as pb
from services.fulfilment import bootstrap as fulfilment_bootstrap
from services.marketing import bootstrap
from services.marketing.config import MarketingSettings
from tests.conftest import TokenFactory, bearer, running, served
from tests.marketing.test_downstream import store
from tests.marketing.test_grpc import APP, START, Clock, Marketing, Stub, campaign, enrolled, linked
from tests.processes import poll


@pytest.fixture
def m(settings: Settings, database_url: str, token: TokenFactory, tmp_path: Path) -> Iterator[Marketing]:
    settings.fulfilment.database_url = f"sqlite:///{tmp_path / 'fulfilment.db'}"
    fulfilment_bootstrap.migrate(settings)
    with served(fulfilment_bootstrap.build_app(settings), settings) as fulfilment:
        settings.service("fulfilment").target = fulfilment.target
        fulfilment_pb2_grpc.FulfilmentServiceStub(fulfilment.channel).UpsertStore(
            fulfilment_pb2.UpsertStoreRequest(store=store("sto_kashgar", "Asia/Urumqi")),
            metadata=bearer(token(Role.OPS)),
        )
        settings.marketing.database_url = database_url
        bootstrap.migrate(settings)
        clock = Clock(START)
        often = MarketingSettings(run_interval_seconds=0.05, store_zone_refresh_seconds=0.5)
        with running(bootstrap.build_app(settings, often, clock=clock), settings) as channel:
            yield Marketing(
                Stub(channel),
                clock,
                ops=bearer(token(Role.OPS)),
                service=bearer(token(Role.SERVICE, subject="membership")),
                app=bearer(token(Role.CHANNEL, channel="CHANNEL_APP")),
                tmall=bearer(token(Role.CHANNEL, channel="CHANNEL_TMALL")),
                store=lambda store_id: bearer(token(Role.STORE, store_id=store_id)),
            )


def test_the_service_runs_a_daily_campaign_at_each_members_local_time(m: Marketing) -> None:
    # START is 12:00 in Shanghai and 10:00 in Ürümqi.
    daily = pb.Trigger(schedule=pb.Schedule(kind=pb.SCHEDULE_KIND_DAILY, local_time="11:00"))
    m.ingest(linked("cus-sh"))
    m.stub.SetContactPreferences(
        pb.SetContactPreferencesRequest(customer_id="cus-sh", channel=APP, marketing_consent=True),
        metadata=m.app,
    )
    m.ingest(enrolled("mem-sh", "cus-sh"), enrolled("mem-ur", "cus-ur", home_store_id="sto_kashgar"))
    # Started once its members are in: a day's run is over once it has been through its audience,
    # and a member who joins later that day is reached the next.
    # No membership runs here to issue coupons, so the greeting names no coupon code (a message
    # naming one waits for its coupon).
    greeting = pb.Action(send_message=pb.MessageAction(channel=APP, template="Hi {display_name}"))
    campaign_id = m.running(campaign(trigger=daily, actions=[greeting]))

    def reached() -> int:
        answer = m.stub.GetCampaignResults(
            pb.GetCampaignResultsRequest(campaign_id=campaign_id), metadata=m.ops
        )
        return int(answer.members_reached)

    poll(reached, lambda n: n == 1, "Shanghai's member reached at Shanghai's 11:00", within=30)
    explained = m.stub.ExplainMember(
        pb.ExplainMemberRequest(campaign_id=campaign_id, member_id="mem-sh"), metadata=m.ops
    )
    assert explained.reasons[0] == "GRANTED"
    pulled = m.stub.PullMessages(pb.PullMessagesRequest(), metadata=m.app).messages
    assert [(p.customer_id, p.account.external_id) for p in pulled] == [("cus-sh", f"acct-cus-sh-{APP}")]

    # The Kashgar store's member waits for Ürümqi's 11:00.
    assert reached() == 1
    m.clock.now = START + timedelta(hours=1)
    poll(reached, lambda n: n == 2, "Ürümqi's member reached at Ürümqi's 11:00", within=30)
