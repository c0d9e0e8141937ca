"""A campaign's checks: every problem in one answer, each named by its field's path."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from quanyu.errors import InvalidArgument
from services.marketing.domain import (
    Action,
    Audience,
    Channel,
    Limits,
    Schedule,
    ScheduleKind,
    Stage,
    Trigger,
    TriggerEvent,
    validate_campaign,
)
from services.marketing.domain.validation import (
    MAX_ACTIONS,
    MAX_AUDIENCE_VALUES,
    MAX_NAME_LENGTH,
    MAX_POINTS_PER_GRANT,
    MAX_TEMPLATE_LENGTH,
)
from tests.marketing.factory import T0, TIERS, campaign, coupon, message, scheduled


def problems(**changes: Any) -> dict[str, str]:
    try:
        validate_campaign(campaign(**changes), known_tiers=TIERS)
    except InvalidArgument as error:
        return {v.field: v.description for v in error.violations}
    return {}


def test_a_sound_campaign_passes() -> None:
    assert problems() == {}


@pytest.mark.parametrize(("percent", "ok"), [(-1, False), (0, True), (50, True), (51, False)])
def test_holdout_is_from_0_to_50(percent: int, ok: bool) -> None:
    assert ("campaign.holdout_percent" not in problems(holdout_percent=percent)) is ok


def test_every_problem_is_named_in_one_answer() -> None:
    found = problems(
        name="",
        holdout_percent=60,
        actions=(coupon(), coupon(discount_cents=0, valid_days=0, min_spend_cents=-1), message("")),
        start_time=T0,
        end_time=T0 - timedelta(hours=1),
    )
    assert set(found) == {
        "campaign.name",
        "campaign.holdout_percent",
        "campaign.actions[1].issue_coupon.discount_cents",
        "campaign.actions[1].issue_coupon.valid_days",
        "campaign.actions[1].issue_coupon.min_spend_cents",
        "campaign.actions[2].send_message.template",
        "campaign.end_time",
    }
    assert "value" in found["campaign.actions[1].issue_coupon.discount_cents"]


def test_an_end_equal_to_the_start_is_refused_and_a_naive_time_is_too() -> None:
    assert "campaign.end_time" in problems(start_time=T0, end_time=T0)
    assert "campaign.start_time" in problems(start_time=T0.replace(tzinfo=None))


def test_a_name_is_bounded() -> None:
    assert problems(name="x" * MAX_NAME_LENGTH) == {}
    assert "campaign.name" in problems(name="x" * (MAX_NAME_LENGTH + 1))
    assert "campaign.name" in problems(name="a\nb")


@pytest.mark.parametrize("value", ["10:00", "00:00", "23:59", "09:05"])
def test_a_local_time_as_hh_mm_passes(value: str) -> None:
    assert problems(trigger=Trigger(schedule=Schedule(ScheduleKind.DAILY, value))) == {}


@pytest.mark.parametrize(
    "value", ["", "24:00", "9:00", "10:60", "10:00:00", "1000", " 10:00", "１０:００", "1０:00"]
)
def test_a_local_time_not_hh_mm_is_named(value: str) -> None:
    found = problems(trigger=Trigger(schedule=Schedule(ScheduleKind.BIRTHDAY, value)))
    assert set(found) == {"campaign.trigger.schedule.local_time"}


def test_a_once_schedule_needs_no_local_time() -> None:
    assert problems(trigger=Trigger(schedule=Schedule(ScheduleKind.ONCE))) == {}


@pytest.mark.parametrize("kind", [ScheduleKind.INACTIVE_DAYS, ScheduleKind.POINTS_EXPIRING])
def test_kinds_counting_days_need_days(kind: ScheduleKind) -> None:
    assert set(problems(trigger=Trigger(schedule=Schedule(kind, "10:00", 0)))) == {
        "campaign.trigger.schedule.days"
    }
    assert problems(trigger=Trigger(schedule=Schedule(kind, "10:00", 60))) == {}


def test_a_trigger_is_one_of_an_event_or_a_schedule_and_names_a_value() -> None:
    assert set(problems(trigger=Trigger())) == {"campaign.trigger"}
    both = Trigger(event=TriggerEvent.ORDER_COMPLETED, schedule=Schedule(ScheduleKind.ONCE))
    assert set(problems(trigger=both)) == {"campaign.trigger"}
    assert set(problems(trigger=Trigger(event=TriggerEvent.UNSPECIFIED))) == {"campaign.trigger.event"}
    unspecified = Trigger(schedule=Schedule(ScheduleKind.UNSPECIFIED, "10:00"))
    assert set(problems(trigger=unspecified)) == {"campaign.trigger.schedule.kind"}


def test_an_audience_naming_an_unknown_tier_is_named_by_its_place() -> None:
    found = problems(audience=Audience(tiers=("GOLD", "DIAMOND")))
    assert set(found) == {"campaign.audience.tiers[1]"}
    assert "DIAMOND" not in found["campaign.audience.tiers[1]"]
    assert "GOLD" in found["campaign.audience.tiers[1]"]


def test_an_unspecified_stage_is_named() -> None:
    assert set(problems(audience=Audience(stages=(Stage.LOYALTY, Stage.UNSPECIFIED)))) == {
        "campaign.audience.stages[1]"
    }


def test_audience_lists_are_capped() -> None:
    many = tuple(f"sto_{i}" for i in range(MAX_AUDIENCE_VALUES + 1))
    assert set(problems(audience=Audience(home_store_ids=many))) == {"campaign.audience.home_store_ids"}
    assert problems(audience=Audience(home_store_ids=many[:-1])) == {}
    assert set(problems(audience=Audience(tags=("ok", "")))) == {"campaign.audience.tags[1]"}


@pytest.mark.parametrize(
    "event", [TriggerEvent.ORDER_COMPLETED, TriggerEvent.FIRST_PURCHASE, TriggerEvent.ORDER_CANCELLED]
)
def test_order_fields_fit_order_triggers(event: TriggerEvent) -> None:
    audience = Audience(min_order_cents=10000, skus=("SKU-1",))
    assert problems(trigger=Trigger(event=event), audience=audience) == {}


@pytest.mark.parametrize(
    "event", [TriggerEvent.MEMBER_ENROLLED, TriggerEvent.TIER_CHANGED, TriggerEvent.ENGAGEMENT]
)
def test_order_fields_on_other_triggers_are_named(event: TriggerEvent) -> None:
    audience = Audience(min_order_cents=10000, skus=("SKU-1",))
    assert set(problems(trigger=Trigger(event=event), audience=audience)) == {
        "campaign.audience.min_order_cents",
        "campaign.audience.skus",
    }


def test_order_fields_on_a_schedule_are_named() -> None:
    found = problems(
        trigger=Trigger(schedule=Schedule(ScheduleKind.ONCE)), audience=Audience(skus=("SKU-1",))
    )
    assert set(found) == {"campaign.audience.skus"}


@pytest.mark.parametrize(
    ("points", "ok"),
    [(0, False), (-5, False), (1, True), (MAX_POINTS_PER_GRANT, True), (MAX_POINTS_PER_GRANT + 1, False)],
)
def test_points_are_positive_and_capped(points: int, ok: bool) -> None:
    found = problems(actions=(Action(grant_points=points),))
    assert ("campaign.actions[0].grant_points" not in found) is ok


def test_an_action_is_exactly_one_thing() -> None:
    assert set(problems(actions=(Action(),))) == {"campaign.actions[0]"}
    assert set(problems(actions=(Action(grant_points=5, add_tag="x"),))) == {"campaign.actions[0]"}


def test_tags_of_tag_actions_are_required_and_bounded() -> None:
    found = problems(actions=(Action(add_tag=""), Action(remove_tag="x" * 65)))
    assert set(found) == {"campaign.actions[0].add_tag", "campaign.actions[1].remove_tag"}


def test_actions_are_capped() -> None:
    assert set(problems(actions=(Action(grant_points=1),) * (MAX_ACTIONS + 1))) == {"campaign.actions"}


def test_a_template_naming_an_unknown_placeholder_is_named() -> None:
    found = problems(actions=(message("Hi {nmae}, you have {points_balance}"),))
    assert set(found) == {"campaign.actions[0].send_message.template"}
    assert "{nmae}" in found["campaign.actions[0].send_message.template"]


def test_a_coupon_code_needs_a_coupon_before_the_message() -> None:
    after = problems(actions=(message("Your code {coupon_code}"), coupon()))
    assert set(after) == {"campaign.actions[0].send_message.template"}
    assert "issue_coupon" in after["campaign.actions[0].send_message.template"]
    assert problems(actions=(coupon(), message("Your code {coupon_code}"))) == {}


def test_a_template_is_bounded_and_its_channel_named() -> None:
    assert problems(actions=(message("x" * MAX_TEMPLATE_LENGTH),)) == {}
    found = problems(actions=(message("x" * (MAX_TEMPLATE_LENGTH + 1), channel=Channel.UNSPECIFIED),))
    assert set(found) == {
        "campaign.actions[0].send_message.template",
        "campaign.actions[0].send_message.channel",
    }


def test_limits_are_not_negative() -> None:
    found = problems(
        limits=Limits(
            per_member_max=-1,
            per_member_period_days=-1,
            max_grants=-1,
            points_budget=-1,
            coupon_budget_cents=-1,
        )
    )
    assert set(found) == {
        f"campaign.limits.{name}"
        for name in (
            "per_member_max",
            "per_member_period_days",
            "max_grants",
            "points_budget",
            "coupon_budget_cents",
        )
    }


def test_a_scheduled_campaign_of_every_kind_passes() -> None:
    for kind in ScheduleKind:
        if kind is not ScheduleKind.UNSPECIFIED:
            c = scheduled(kind, days=30)
            validate_campaign(c, known_tiers=TIERS)
