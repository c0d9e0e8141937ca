"""Why a member did or did not get a campaign: the first gate they did not pass, or GRANTED and what
became of its messages."""

from __future__ import annotations

from datetime import timedelta

from services.marketing.domain import (
    Audience,
    Channel,
    Decision,
    Delivery,
    ExplainFacts,
    MemberFacts,
    MessageFact,
    OrderFacts,
    Outcome,
    Verdict,
    explain,
    is_held_out,
)
from services.marketing.domain.campaign import Campaign
from tests.marketing.factory import T0, campaign, member

AT = T0 + timedelta(days=1)


def running(**changes: object) -> Campaign:
    c = campaign(**changes)
    c.start()
    return c


def someone(held_out: bool, percent: int = 10) -> MemberFacts:
    member_id = next(
        f"mem_{i}" for i in range(10_000) if is_held_out("cmp_1", f"mem_{i}", percent) is held_out
    )
    return member(member_id=member_id)


def test_a_granted_member_hears_granted_and_what_held_its_messages() -> None:
    facts = ExplainFacts(
        member=someone(held_out=False),
        at=AT,
        granted=True,
        messages=(
            MessageFact(Channel.APP, Delivery(Outcome.DEFERRED_QUIET_HOURS, AT)),
            MessageFact(Channel.WECHAT_MINI_PROGRAM, Delivery(Outcome.NO_CONSENT)),
            MessageFact(Channel.WEB, Delivery(Outcome.SEND, AT)),
        ),
    )
    assert explain(running(), facts) == [
        "GRANTED",
        "DEFERRED_QUIET_HOURS:APP",
        "NO_CONSENT:WECHAT_MINI_PROGRAM",
    ]


def test_a_campaign_not_running_or_outside_its_window_is_not_live() -> None:
    facts = ExplainFacts(member=someone(held_out=False), at=AT)
    assert explain(campaign(), facts) == ["NOT_LIVE:DRAFT"]
    assert explain(running(start_time=AT + timedelta(hours=1)), facts) == ["NOT_LIVE:NOT_STARTED"]
    assert explain(running(end_time=AT), facts) == ["NOT_LIVE:ENDED"]


def test_outside_the_audience_names_the_field() -> None:
    facts = ExplainFacts(member=someone(held_out=True), at=AT, order=OrderFacts(100))
    assert explain(running(audience=Audience(tiers=("PLATINUM",))), facts) == ["NOT_IN_AUDIENCE:tier"]
    assert explain(running(audience=Audience(min_order_cents=500)), facts) == ["NOT_IN_AUDIENCE:min_order"]


def test_a_member_drawn_into_the_control_group_is_held_out() -> None:
    assert explain(running(), ExplainFacts(member=someone(held_out=True), at=AT)) == ["HELD_OUT"]


def test_limits_and_budgets_say_which() -> None:
    base = someone(held_out=False)
    limit = ExplainFacts(member=base, at=AT, decision=Decision(Verdict.LIMIT_REACHED, "per_member_max"))
    assert explain(running(), limit) == ["LIMIT_REACHED:per_member_max"]
    budget = ExplainFacts(member=base, at=AT, decision=Decision(Verdict.BUDGET_EXHAUSTED, "points_budget"))
    assert explain(running(), budget) == ["BUDGET_EXHAUSTED:points_budget"]


def test_a_member_no_trigger_concerned_or_whose_grant_is_on_its_way() -> None:
    base = someone(held_out=False)
    assert explain(running(), ExplainFacts(member=base, at=AT, triggered=False)) == ["NOT_TRIGGERED"]
    assert explain(running(), ExplainFacts(member=base, at=AT)) == ["PENDING"]


def test_a_merged_member_is_told_whose_limits_they_share() -> None:
    facts = ExplainFacts(member=someone(held_out=False), at=AT, granted=True, survivor_id="mem_survivor")
    assert explain(running(), facts) == ["MERGED_INTO:mem_survivor", "GRANTED"]
