"""Campaigns and members for the domain's tests: valid by default, changed where a test is about."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from services.marketing.domain import (
    Action,
    Audience,
    Campaign,
    Channel,
    CouponAction,
    MemberFacts,
    MessageAction,
    Schedule,
    ScheduleKind,
    Stage,
    Trigger,
    TriggerEvent,
)

TIERS = ("SILVER", "GOLD", "PLATINUM")
T0 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)


def coupon(discount_cents: int = 2000, min_spend_cents: int = 10000, valid_days: int = 30) -> Action:
    return Action(issue_coupon=CouponAction(discount_cents, min_spend_cents, valid_days))


def message(
    template: str = "Hi {display_name}, your code {coupon_code}", channel: Channel = Channel.APP
) -> Action:
    return Action(send_message=MessageAction(channel, template))


def campaign(**changes: Any) -> Campaign:
    values: dict[str, Any] = {
        "campaign_id": "cmp_1",
        "name": "First purchase coupon",
        "trigger": Trigger(event=TriggerEvent.FIRST_PURCHASE),
        "audience": Audience(),
        "actions": (coupon(), message()),
        "holdout_percent": 10,
        "create_time": T0,
    }
    values.update(changes)
    return Campaign(**values)


def scheduled(kind: ScheduleKind, local_time: str = "10:00", days: int = 0, **changes: Any) -> Campaign:
    return campaign(trigger=Trigger(schedule=Schedule(kind, local_time, days)), **changes)


def member(**changes: Any) -> MemberFacts:
    values: dict[str, Any] = {
        "member_id": "mem_1",
        "tier": "GOLD",
        "tags": frozenset({"vip"}),
        "stage": Stage.PURCHASE,
        "home_store_id": "sto_1",
        "guide_id": "gd_1",
        "display_name": "Li Lei",
        "points_balance": 1200,
    }
    values.update(changes)
    return MemberFacts(**values)
