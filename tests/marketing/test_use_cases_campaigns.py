"""Campaigns through the use cases on the database: created once per request id, checked whole,
listed by state, changed only while a draft or paused (each change a new version, the old one
kept), and moved through DRAFT → RUNNING ⇄ PAUSED → ENDED."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from quanyu.audit_record import Actor
from quanyu.db import Database
from quanyu.errors import FailedPrecondition, InvalidArgument, NotFound
from quanyu.unit_of_work import SqlUnitOfWork
from services.marketing.domain import Audience, CampaignState, Limits
from services.marketing.storage import SqlStores
from tests.marketing.factory import campaign
from tests.marketing.use_case_support import Clock, make_cases
from tests.trail import kept_records

Uow = SqlUnitOfWork[SqlStores]


def test_a_request_id_makes_one_campaign(uow: Uow) -> None:
    campaigns, _ = make_cases(uow, Clock())

    first = campaigns.create_campaign(campaign(), request_id="req_1")
    again = campaigns.create_campaign(campaign(), request_id="req_1")

    assert again.campaign_id == first.campaign_id
    assert (first.state, first.version) == (CampaignState.DRAFT, 1)
    with pytest.raises(InvalidArgument, match="request_id"):
        campaigns.create_campaign(campaign(name="Another"), request_id="req_1")
    assert campaigns.create_campaign(campaign()).campaign_id != first.campaign_id


def test_a_campaign_naming_an_unknown_tier_is_refused(uow: Uow) -> None:
    campaigns, _ = make_cases(uow, Clock())

    with pytest.raises(InvalidArgument) as refused:
        campaigns.create_campaign(campaign(audience=Audience(tiers=("DIAMOND",)), holdout_percent=60))

    fields = {v.field for v in refused.value.violations}
    assert fields == {"campaign.audience.tiers[0]", "campaign.holdout_percent"}
    assert campaigns.list_campaigns()[0] == []


def test_the_lifecycle_runs_draft_running_paused_ended(uow: Uow) -> None:
    campaigns, _ = make_cases(uow, Clock())
    made = campaigns.create_campaign(campaign())
    cid = made.campaign_id

    assert campaigns.start_campaign(cid).state is CampaignState.RUNNING
    assert campaigns.start_campaign(cid).state is CampaignState.RUNNING  # a retried call
    assert campaigns.pause_campaign(cid).state is CampaignState.PAUSED
    assert campaigns.start_campaign(cid).state is CampaignState.RUNNING
    assert campaigns.end_campaign(cid).state is CampaignState.ENDED
    with pytest.raises(FailedPrecondition) as refused:
        campaigns.start_campaign(cid)
    assert refused.value.reason == "INVALID_TRANSITION"
    assert campaigns.get_campaign(cid).state is CampaignState.ENDED


def test_a_draft_cannot_be_paused_and_an_unknown_campaign_is_not_found(uow: Uow) -> None:
    campaigns, _ = make_cases(uow, Clock())
    made = campaigns.create_campaign(campaign())

    with pytest.raises(FailedPrecondition):
        campaigns.pause_campaign(made.campaign_id)
    with pytest.raises(NotFound):
        campaigns.start_campaign("cmp_missing")


def test_updates_make_new_versions_and_keep_the_old(uow: Uow) -> None:
    campaigns, _ = make_cases(uow, Clock())
    cid = campaigns.create_campaign(campaign(limits=Limits(max_grants=5))).campaign_id

    changed = campaigns.update_campaign(cid, campaign(name="Renamed", limits=Limits(max_grants=9)), ["name"])
    campaigns.start_campaign(cid)
    with pytest.raises(FailedPrecondition) as refused:
        campaigns.update_campaign(cid, campaign(name="While running"), ["name"])
    campaigns.pause_campaign(cid)
    nested = campaigns.update_campaign(cid, campaign(limits=Limits(max_grants=9)), ["limits.max_grants"])

    assert refused.value.reason == "INVALID_TRANSITION"
    assert (changed.version, changed.name, changed.limits.max_grants) == (2, "Renamed", 5)
    assert (nested.version, nested.name, nested.limits.max_grants) == (3, "Renamed", 9)
    first = uow.read(lambda tx: tx.stores.campaigns.version(cid, 1))
    assert first is not None
    assert (first.name, first.limits.max_grants) == ("First purchase coupon", 5)


def test_an_update_is_checked_whole(uow: Uow) -> None:
    campaigns, _ = make_cases(uow, Clock())
    cid = campaigns.create_campaign(campaign()).campaign_id

    with pytest.raises(InvalidArgument, match="holdout_percent"):
        campaigns.update_campaign(cid, campaign(holdout_percent=51), ["holdout_percent"])
    with pytest.raises(InvalidArgument, match="update_mask"):
        campaigns.update_campaign(cid, campaign(), ["state"])
    assert campaigns.get_campaign(cid).version == 1


def test_campaigns_are_listed_by_state_a_page_at_a_time(uow: Uow) -> None:
    clock = Clock()
    campaigns, _ = make_cases(uow, clock)
    made = []
    for n in range(5):
        made.append(campaigns.create_campaign(campaign(name=f"c{n}")).campaign_id)
        clock.now += timedelta(seconds=1)
    for cid in made[:3]:
        campaigns.start_campaign(cid)

    page, after = campaigns.list_campaigns([CampaignState.RUNNING], requested=2)
    rest, end = campaigns.list_campaigns([CampaignState.RUNNING], requested=2, after=after)
    drafts, _ = campaigns.list_campaigns([CampaignState.DRAFT])

    assert [c.campaign_id for c in page + rest] == made[:3]
    assert end is None
    assert [c.campaign_id for c in drafts] == made[3:]


def test_a_campaign_moves_with_its_audit_record_or_not_at_all(uow: Uow, database: Database) -> None:
    campaigns, _ = make_cases(uow, Clock())
    cid = campaigns.create_campaign(campaign()).campaign_id
    alice = Actor("ops/alice", "req-start")

    campaigns.start_campaign(cid, alice)
    assert kept_records(database) == [("CAMPAIGN_STARTED", f"campaign:{cid}", "ops/alice", "req-start")]

    # With no trail to write to, the pause is not kept either: the record commits with the move.
    with database.transaction() as connection:
        connection.execute(text("DROP TABLE audit_records"))
    with pytest.raises(DBAPIError):
        campaigns.pause_campaign(cid, alice)
    assert campaigns.get_campaign(cid).state is CampaignState.RUNNING
