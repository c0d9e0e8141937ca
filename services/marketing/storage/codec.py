"""A campaign's definition as the JSON a version row keeps, and back: the whole campaign but its
state, which belongs to the campaign rather than to a version."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from services.marketing.domain import (
    Action,
    Audience,
    Campaign,
    CampaignState,
    Channel,
    CouponAction,
    Limits,
    MessageAction,
    Schedule,
    ScheduleKind,
    Stage,
    Trigger,
    TriggerEvent,
)


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _action(action: Action) -> dict[str, Any]:
    coupon, message = action.issue_coupon, action.send_message
    return {
        "issue_coupon": None
        if coupon is None
        else [coupon.discount_cents, coupon.min_spend_cents, coupon.valid_days],
        "grant_points": action.grant_points,
        "add_tag": action.add_tag,
        "remove_tag": action.remove_tag,
        "send_message": None if message is None else [message.channel.value, message.template],
    }


def _parse_action(data: dict[str, Any]) -> Action:
    coupon, message = data["issue_coupon"], data["send_message"]
    return Action(
        issue_coupon=None if coupon is None else CouponAction(*coupon),
        grant_points=data["grant_points"],
        add_tag=data["add_tag"],
        remove_tag=data["remove_tag"],
        send_message=None if message is None else MessageAction(Channel(message[0]), message[1]),
    )


def dump(campaign: Campaign) -> str:
    trigger, audience, limits = campaign.trigger, campaign.audience, campaign.limits
    schedule = trigger.schedule
    return json.dumps(
        {
            "name": campaign.name,
            "event": trigger.event.value if trigger.event is not None else None,
            "schedule": None
            if schedule is None
            else [schedule.kind.value, schedule.local_time, schedule.days],
            "audience": {
                "tiers": list(audience.tiers),
                "tags": list(audience.tags),
                "stages": [s.value for s in audience.stages],
                "home_store_ids": list(audience.home_store_ids),
                "guide_ids": list(audience.guide_ids),
                "min_order_cents": audience.min_order_cents,
                "skus": list(audience.skus),
            },
            "actions": [_action(a) for a in campaign.actions],
            "limits": [
                limits.per_member_max,
                limits.per_member_period_days,
                limits.max_grants,
                limits.points_budget,
                limits.coupon_budget_cents,
            ],
            "holdout_percent": campaign.holdout_percent,
            "start_time": _time(campaign.start_time),
            "end_time": _time(campaign.end_time),
            "priority": campaign.priority,
            "create_time": _time(campaign.create_time),
        },
        separators=(",", ":"),
        sort_keys=True,
    )


def load(campaign_id: str, version: int, state: CampaignState, definition: str) -> Campaign:
    data = json.loads(definition)
    schedule = data["schedule"]
    audience = data["audience"]
    return Campaign(
        campaign_id=campaign_id,
        name=data["name"],
        trigger=Trigger(
            event=TriggerEvent(data["event"]) if data["event"] is not None else None,
            schedule=None
            if schedule is None
            else Schedule(ScheduleKind(schedule[0]), schedule[1], schedule[2]),
        ),
        audience=Audience(
            tiers=tuple(audience["tiers"]),
            tags=tuple(audience["tags"]),
            stages=tuple(Stage(s) for s in audience["stages"]),
            home_store_ids=tuple(audience["home_store_ids"]),
            guide_ids=tuple(audience["guide_ids"]),
            min_order_cents=audience["min_order_cents"],
            skus=tuple(audience["skus"]),
        ),
        actions=tuple(_parse_action(a) for a in data["actions"]),
        limits=Limits(*data["limits"]),
        holdout_percent=data["holdout_percent"],
        start_time=_parse_time(data["start_time"]),
        end_time=_parse_time(data["end_time"]),
        priority=data["priority"],
        version=version,
        state=state,
        create_time=_parse_time(data["create_time"]),
    )
