"""Audience, holdout draw, grant keys, limits and budgets."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.marketing.domain import (
    Action,
    ActionKind,
    Audience,
    Counters,
    GrantCost,
    Limits,
    OrderFacts,
    Stage,
    Verdict,
    action_key,
    after,
    count_in_window,
    decide,
    fits,
    grant_key,
    holdout_draw,
    is_held_out,
    limit_holder,
    member_window_start,
    most_cost,
    occurrence_of_event,
    occurrence_slot,
)
from tests.marketing.factory import T0, campaign, coupon, member

ids = st.text(min_size=1, max_size=200)


# Audience


def test_an_empty_audience_is_everyone() -> None:
    assert Audience().why_not(member(), None) is None
    assert Audience().why_not(member(tier="", tags=frozenset(), stage=Stage.UNSPECIFIED), None) is None


@pytest.mark.parametrize(
    ("audience", "reason"),
    [
        (Audience(tiers=("PLATINUM",)), "NOT_IN_AUDIENCE:tier"),
        (Audience(tags=("new",)), "NOT_IN_AUDIENCE:tag"),
        (Audience(stages=(Stage.LOYALTY,)), "NOT_IN_AUDIENCE:stage"),
        (Audience(home_store_ids=("sto_2",)), "NOT_IN_AUDIENCE:home_store"),
        (Audience(guide_ids=("gd_2",)), "NOT_IN_AUDIENCE:guide"),
        (Audience(min_order_cents=50_001), "NOT_IN_AUDIENCE:min_order"),
        (Audience(skus=("SKU-9",)), "NOT_IN_AUDIENCE:sku"),
    ],
)
def test_each_field_names_itself_when_it_excludes(audience: Audience, reason: str) -> None:
    assert audience.why_not(member(), OrderFacts(50_000, frozenset({"SKU-1"}))) == reason


def test_every_list_matches_on_any_of_its_values() -> None:
    audience = Audience(
        tiers=("SILVER", "GOLD"),
        tags=("lapsed", "vip"),
        stages=(Stage.PURCHASE,),
        home_store_ids=("sto_1",),
        guide_ids=("gd_1",),
        min_order_cents=50_000,
        skus=("SKU-2", "SKU-1"),
    )
    assert audience.why_not(member(), OrderFacts(50_000, frozenset({"SKU-1", "SKU-3"}))) is None


def test_the_first_failing_field_is_the_one_named() -> None:
    audience = Audience(tiers=("SILVER",), home_store_ids=("sto_9",), min_order_cents=1)
    assert audience.why_not(member(), None) == "NOT_IN_AUDIENCE:tier"


def test_order_conditions_without_an_order_exclude() -> None:
    assert Audience(min_order_cents=1).why_not(member(), None) == "NOT_IN_AUDIENCE:min_order"
    assert Audience(skus=("A",)).why_not(member(), None) == "NOT_IN_AUDIENCE:sku"


# Holdout


def test_the_draw_is_stable_and_independent_of_the_version() -> None:
    c = campaign(holdout_percent=30)
    draws = [holdout_draw(c.campaign_id, f"mem_{i}") for i in range(50)]
    c.version = 7
    assert draws == [holdout_draw(c.campaign_id, f"mem_{i}") for i in range(50)]
    # A pinned value: a change of the hash would reshuffle every running campaign's control group.
    assert (
        holdout_draw("cmp_1", "mem_1")
        == int.from_bytes(hashlib.sha256(b"holdout\x1fcmp_1\x1fmem_1").digest()[:8], "big") % 100
    )


@given(ids, ids)
def test_the_draw_is_in_0_to_99(campaign_id: str, member_id: str) -> None:
    assert 0 <= holdout_draw(campaign_id, member_id) <= 99


@given(ids, ids, st.integers(0, 50))
def test_held_out_is_the_draw_below_the_percent(campaign_id: str, member_id: str, percent: int) -> None:
    assert is_held_out(campaign_id, member_id, percent) == (holdout_draw(campaign_id, member_id) < percent)


def test_no_one_is_held_out_at_0_percent() -> None:
    assert not any(is_held_out("cmp_1", f"mem_{i}", 0) for i in range(1000))


@pytest.mark.parametrize("percent", [5, 10, 50])
def test_the_held_out_share_is_close_to_the_percent(percent: int) -> None:
    n = 100_000
    held = sum(is_held_out("cmp_share", f"mem_{i:08d}", percent) for i in range(n))
    # Binomial sd at 50 % over 100,000 is 158; five of them is far beyond chance.
    assert abs(held - n * percent / 100) < 5 * (n * 0.25) ** 0.5


def test_the_draw_is_uniform_over_the_buckets() -> None:
    n = 100_000
    counts = [0] * 100
    for i in range(n):
        counts[holdout_draw("cmp_u", f"mem_{i}")] += 1
    chi2 = sum((c - n / 100) ** 2 / (n / 100) for c in counts)
    # 99 degrees of freedom: the 99.9th percentile of chi-square is 148.2.
    assert chi2 < 148.2


def test_two_campaigns_draw_independently() -> None:
    both = sum(is_held_out("cmp_a", f"m{i}", 50) and is_held_out("cmp_b", f"m{i}", 50) for i in range(20_000))
    assert abs(both - 5000) < 5 * (20_000 * 0.25 * 0.75) ** 0.5


# Keys


def test_a_grant_key_is_deterministic_bounded_and_distinct_per_part() -> None:
    key = grant_key("cmp_1", 1, "mem_1", "event:evt_1")
    assert key == grant_key("cmp_1", 1, "mem_1", "event:evt_1")
    assert re.fullmatch(r"mkt_[0-9a-f]{64}", key)
    others = {
        grant_key("cmp_2", 1, "mem_1", "event:evt_1"),
        grant_key("cmp_1", 2, "mem_1", "event:evt_1"),
        grant_key("cmp_1", 1, "mem_2", "event:evt_1"),
        grant_key("cmp_1", 1, "mem_1", "event:evt_2"),
    }
    assert key not in others
    assert len(others) == 4


@given(ids, st.integers(1, 10**6), ids, ids)
def test_every_key_fits_membership_s_128_characters(
    campaign_id: str, version: int, member_id: str, occurrence: str
) -> None:
    key = grant_key(campaign_id, version, member_id, occurrence)
    assert len(key) <= 128
    for index in range(10):
        for kind in ActionKind:
            assert len(action_key(key, index, kind)) <= 128


def test_an_occurrence_has_one_slot_whatever_the_version_while_its_keys_name_the_version() -> None:
    slot = occurrence_slot("cmp_1", "mem_1", occurrence_of_event("evt_1"))
    assert slot == occurrence_slot("cmp_1", "mem_1", "event:evt_1")
    assert slot != occurrence_slot("cmp_1", "mem_2", "event:evt_1")
    assert slot != occurrence_slot("cmp_1", "mem_1", "event:evt_2")
    assert len(slot) <= 128


def test_joining_the_parts_cannot_make_two_tuples_one_key() -> None:
    assert grant_key("a", 1, "b:c", "d") != grant_key("a", 1, "b", "c:d")


def test_action_keys_tell_the_actions_of_one_grant_apart() -> None:
    key = grant_key("cmp_1", 1, "mem_1", "event:evt_1")
    keys = {
        action_key(key, i, kind)
        for i, kind in enumerate([ActionKind.ISSUE_COUPON, ActionKind.ISSUE_COUPON, ActionKind.GRANT_POINTS])
    }
    assert len(keys) == 3
    assert all(k.startswith(key) for k in keys)


# Limits and budgets


def test_per_member_max_of_0_means_1() -> None:
    assert decide(Limits(), Counters(member_grants=0), GrantCost()).granted
    assert decide(Limits(), Counters(member_grants=1), GrantCost()).verdict is Verdict.LIMIT_REACHED
    assert decide(Limits(per_member_max=3), Counters(member_grants=2), GrantCost()).granted
    refused = decide(Limits(per_member_max=3), Counters(member_grants=3), GrantCost())
    assert (refused.verdict, refused.limit) == (Verdict.LIMIT_REACHED, "per_member_max")


@pytest.mark.parametrize(
    ("limits", "counters", "limit"),
    [
        (Limits(max_grants=10), Counters(grants=10), "max_grants"),
        (Limits(points_budget=1000), Counters(points=901), "points_budget"),
        (Limits(coupon_budget_cents=10_000), Counters(coupon_cents=8001), "coupon_budget_cents"),
    ],
)
def test_a_budget_that_cannot_pay_for_the_grant_refuses_it(
    limits: Limits, counters: Counters, limit: str
) -> None:
    decision = decide(limits, counters, GrantCost(points=100, coupon_cents=2000))
    assert (decision.verdict, decision.limit) == (Verdict.BUDGET_EXHAUSTED, limit)


def test_a_budget_spent_exactly_to_its_cap_is_allowed() -> None:
    cost = GrantCost(points=100, coupon_cents=2000)
    limits = Limits(max_grants=10, points_budget=1000, coupon_budget_cents=10_000)
    assert decide(limits, Counters(grants=9, points=900, coupon_cents=8000), cost).granted


def test_a_budget_is_no_matter_to_a_campaign_that_does_not_spend_from_it() -> None:
    assert fits(100, 100, 0)
    assert decide(Limits(points_budget=10), Counters(points=10), GrantCost(coupon_cents=5)).granted


def test_the_member_s_own_limit_is_named_before_the_campaign_s() -> None:
    decision = decide(Limits(max_grants=1), Counters(member_grants=1, grants=1), GrantCost())
    assert decision.verdict is Verdict.LIMIT_REACHED


@given(st.integers(0, 30), st.integers(0, 5000), st.integers(0, 500), st.integers(1, 300), st.integers(0, 3))
def test_granting_until_refused_never_overruns_a_cap(
    max_grants: int, points_budget: int, points: int, members: int, per_member: int
) -> None:
    limits = Limits(per_member_max=per_member, max_grants=max_grants, points_budget=points_budget)
    cost = GrantCost(points=points)
    total = Counters()
    for _ in range(members):
        mine = Counters(0, total.grants, total.points, total.coupon_cents)
        while decide(limits, mine, cost).granted:
            mine = after(mine, cost)
        assert mine.member_grants <= limits.grants_per_member
        total = Counters(0, mine.grants, mine.points, mine.coupon_cents)
    assert max_grants == 0 or total.grants <= max_grants
    assert points_budget == 0 or total.points <= points_budget


def test_the_cost_of_a_grant_adds_its_points_and_coupon_face_values() -> None:
    c = campaign(
        actions=(
            coupon(2000),
            coupon(500),
            Action(grant_points=300),
        )
    )
    assert c.cost == GrantCost(points=300, coupon_cents=2500)


def test_the_member_window_is_the_period_or_the_campaign_s_life() -> None:
    at = T0 + timedelta(days=40)
    assert member_window_start(Limits(per_member_period_days=30), T0, at) == T0 + timedelta(days=10)
    assert member_window_start(Limits(), T0, at) == T0
    assert member_window_start(Limits(), None, at) is None
    times = [T0 + timedelta(days=d) for d in (1, 10, 11, 39)]
    assert count_in_window(times, T0 + timedelta(days=10)) == 2
    assert count_in_window(times, None) == 4


def test_a_merged_member_counts_as_the_survivor_to_the_end_of_the_chain() -> None:
    merges = {"mem_a": "mem_b", "mem_b": "mem_c"}
    assert limit_holder("mem_a", merges.get) == "mem_c"
    assert limit_holder("mem_c", merges.get) == "mem_c"
    assert limit_holder("mem_x", merges.get) == "mem_x"


def test_a_cycle_of_merges_ends() -> None:
    cycle = {"a": "b", "b": "a"}
    assert limit_holder("a", cycle.get) in {"a", "b"}


def test_the_most_a_campaign_can_cost_is_cut_by_its_caps() -> None:
    cost = GrantCost(points=100, coupon_cents=2000)
    assert most_cost(Limits(), cost, 50).grants == 50
    assert most_cost(Limits(per_member_max=2), cost, 50).grants == 100
    assert most_cost(Limits(max_grants=10), cost, 50).points == 1000
    capped = most_cost(Limits(coupon_budget_cents=9_999), cost, 50)
    assert (capped.grants, capped.coupon_cents) == (4, 8000)
