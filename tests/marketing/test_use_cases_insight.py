"""Previews and explanations through the use cases: a dry run counts today's audience and its
control group without granting anything, and a member is told why they did or did not get it."""

from __future__ import annotations

from quanyu.db import Database
from quanyu.unit_of_work import SqlUnitOfWork
from services.marketing.domain import Audience, Limits, codes, is_held_out
from services.marketing.handlers import InsightCases
from services.marketing.storage import SqlStores
from tests.marketing.factory import campaign, message
from tests.marketing.test_use_cases_grants import held_out_member
from tests.marketing.use_case_support import Clock, effects, enrolled, make_cases, order_completed, running

Uow = SqlUnitOfWork[SqlStores]


def test_a_preview_counts_the_audience_and_grants_nothing(uow: Uow, database: Database) -> None:
    clock = Clock()
    campaigns, triggers = make_cases(uow, clock)
    draft = campaigns.create_campaign(
        campaign(audience=Audience(tiers=("GOLD",), min_order_cents=5000), holdout_percent=20)
    )
    triggers.ingest([enrolled(f"mem_{n:02d}") for n in range(30)])
    triggers.ingest([enrolled(f"sil_{n:02d}", tier="SILVER") for n in range(5)])

    preview = InsightCases(uow, clock=clock).preview_campaign(draft.campaign_id)

    assert preview.audience_size == 30
    assert 0 < preview.held_out < 30
    assert len(preview.sample) == 10
    assert preview.most_cost.coupon_cents == (30 - preview.held_out) * 2000
    assert effects(database) == []


def test_a_member_is_told_why(uow: Uow) -> None:
    clock = Clock()
    campaigns, triggers = make_cases(uow, clock)
    live = running(
        campaigns,
        campaign(holdout_percent=50, audience=Audience(tiers=("GOLD",)), limits=Limits(max_grants=1)),
    )
    first = held_out_member(live.campaign_id, 50, held=False)
    second = next(
        f"mem_{n}"
        for n in range(1000)
        if f"mem_{n}" != first and not is_held_out(live.campaign_id, f"mem_{n}", 50)
    )
    held = held_out_member(live.campaign_id, 50, held=True)
    members = [first, second, held]
    triggers.ingest([enrolled(m) for m in members] + [enrolled("sil_1", tier="SILVER")])
    triggers.ingest([order_completed(m, f"evt_{m}") for m in [*members, "sil_1"]])
    insight = InsightCases(uow, clock=clock)

    def why(member_id: str) -> list[str]:
        return codes(insight.explain_member(live.campaign_id, member_id))

    # Granted, and its message (the factory's campaign sends one) not sent: no consent given.
    assert why(first) == ["GRANTED", "NO_CONSENT"]
    assert why(second) == ["BUDGET_EXHAUSTED"]
    assert why(held) == ["HELD_OUT"]
    assert why("sil_1") == ["NOT_IN_AUDIENCE:tier"]


def test_a_member_granted_is_told_what_became_of_the_message(uow: Uow) -> None:
    clock = Clock()
    campaigns, triggers = make_cases(uow, clock)
    live = running(campaigns, campaign(actions=(message("Hello {display_name}"),), holdout_percent=0))
    # The member holds an app account and never said yes to marketing on it.
    triggers.ingest([enrolled("mem_quiet"), order_completed("mem_quiet", "evt_quiet")])

    reasons = codes(InsightCases(uow, clock=clock).explain_member(live.campaign_id, "mem_quiet"))

    assert reasons == ["GRANTED", "NO_CONSENT"]
