"""Why a member did or did not get a campaign: the first gate they did not pass, or GRANTED and what
became of its messages; each code one of the contract's names exactly."""

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
    Reason,
    Verdict,
    codes,
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


def test_a_granted_member_hears_granted_and_what_held_or_stopped_its_messages() -> None:
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
        Reason("GRANTED"),
        Reason("DEFERRED_QUIET_HOURS", "APP"),
        Reason("NO_CONSENT", "WECHAT_MINI_PROGRAM"),
    ]


def test_a_campaign_not_running_or_outside_its_window_is_not_live() -> None:
    facts = ExplainFacts(member=someone(held_out=False), at=AT)
    assert explain(campaign(), facts) == [Reason("NOT_LIVE", "the campaign is draft")]
    later = explain(running(start_time=AT + timedelta(hours=1)), facts)
    assert codes(later) == ["NOT_LIVE"]
    assert "starts" in later[0].detail
    ended = explain(running(end_time=AT), facts)
    assert codes(ended) == ["NOT_LIVE"]
    assert "ended" in ended[0].detail


def test_outside_the_audience_names_the_field() -> None:
    facts = ExplainFacts(member=someone(held_out=True), at=AT, order=OrderFacts(100))
    assert codes(explain(running(audience=Audience(tiers=("PLATINUM",))), facts)) == ["NOT_IN_AUDIENCE:tier"]
    assert codes(explain(running(audience=Audience(min_order_cents=500)), facts)) == [
        "NOT_IN_AUDIENCE:min_order"
    ]


def test_a_member_drawn_into_the_control_group_is_held_out() -> None:
    assert codes(explain(running(), ExplainFacts(member=someone(held_out=True), at=AT))) == ["HELD_OUT"]


def test_limits_and_budgets_say_which() -> None:
    base = someone(held_out=False)
    limit = ExplainFacts(member=base, at=AT, decision=Decision(Verdict.LIMIT_REACHED, "per_member_max"))
    assert explain(running(), limit) == [Reason("LIMIT_REACHED", "per_member_max")]
    budget = ExplainFacts(member=base, at=AT, decision=Decision(Verdict.BUDGET_EXHAUSTED, "points_budget"))
    assert explain(running(), budget) == [Reason("BUDGET_EXHAUSTED", "points_budget")]


def test_a_member_no_trigger_concerned_or_whose_grant_is_on_its_way() -> None:
    base = someone(held_out=False)
    assert codes(explain(running(), ExplainFacts(member=base, at=AT, triggered=False))) == ["NOT_TRIGGERED"]
    assert codes(explain(running(), ExplainFacts(member=base, at=AT))) == ["PENDING"]


def test_a_merged_member_is_told_whose_limits_they_share() -> None:
    facts = ExplainFacts(member=someone(held_out=False), at=AT, granted=True, survivor_id="mem_survivor")
    assert explain(running(), facts) == [Reason("GRANTED"), Reason("MERGED_INTO", "mem_survivor")]
