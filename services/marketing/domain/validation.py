"""A campaign's values checked in one pass: every problem named by its field's path
(`campaign.actions[1].issue_coupon.valid_days`), all of them in one answer."""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence

from quanyu.errors import Violations
from services.marketing.domain.campaign import Campaign
from services.marketing.domain.values import (
    KINDS_NEEDING_DAYS,
    ORDER_EVENTS,
    Action,
    ActionKind,
    Audience,
    Channel,
    CouponAction,
    Limits,
    MessageAction,
    ScheduleKind,
    Stage,
    Trigger,
    TriggerEvent,
)

MAX_NAME_LENGTH = 128
MAX_ID_LENGTH = 64
MAX_TAG_LENGTH = 64
MAX_TIER_LENGTH = 64
MAX_SKU_LENGTH = 64
# Each audience list: enough for a region's stores, few enough to match in memory per event.
MAX_AUDIENCE_VALUES = 100
MAX_ACTIONS = 10
MAX_TEMPLATE_LENGTH = 1000
# The contract's bounds of one grant (membership's GrantPoints takes as many points); a campaign's
# budgets are what keep its total in check.
MAX_COUPON_CENTS = 100_000_000
MAX_POINTS_PER_GRANT = 100_000_000
MAX_VALID_DAYS = 3650
MAX_SCHEDULE_DAYS = 3650
MAX_PER_MEMBER = 1000
MAX_PERIOD_DAYS = 3660
MAX_BUDGET = 10**12
MAX_HOLDOUT_PERCENT = 50
MAX_PRIORITY = 1000
MAX_ORDER_CENTS = 10**10

PLACEHOLDERS = frozenset({"display_name", "tier", "points_balance", "coupon_code"})
# Anything between braces is read as a placeholder, so a misspelt one is an error, not literal text.
PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
# ASCII digits only: re's \d would also take full-width ones.
LOCAL_TIME = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")


def validate_campaign(campaign: Campaign, *, known_tiers: Collection[str]) -> None:
    """Raises InvalidArgument naming every problem under `campaign.`."""
    violations = Violations()
    check_campaign(violations.within("campaign"), campaign, known_tiers=known_tiers)
    violations.raise_if_any()


def check_campaign(violations: Violations, campaign: Campaign, *, known_tiers: Collection[str]) -> None:
    violations.text(campaign.name, "name", max_length=MAX_NAME_LENGTH)
    event = _trigger(violations.within("trigger"), campaign.trigger)
    _audience(violations.within("audience"), campaign.audience, known_tiers, event)
    _actions(violations, campaign.actions)
    _limits(violations.within("limits"), campaign.limits)
    violations.check(
        0 <= campaign.holdout_percent <= MAX_HOLDOUT_PERCENT,
        "holdout_percent",
        f"must be from 0 to {MAX_HOLDOUT_PERCENT}",
    )
    violations.check(0 <= campaign.priority <= MAX_PRIORITY, "priority", f"must be from 0 to {MAX_PRIORITY}")
    for name in ("start_time", "end_time"):
        moment = getattr(campaign, name)
        violations.check(moment is None or moment.tzinfo is not None, name, "must carry its time zone")
    start, end = campaign.start_time, campaign.end_time
    if start is not None and end is not None and start.tzinfo and end.tzinfo:
        violations.check(end > start, "end_time", "must be after start_time")


def is_local_time(value: str) -> bool:
    return LOCAL_TIME.fullmatch(value) is not None


def _trigger(violations: Violations, trigger: Trigger) -> TriggerEvent | None:
    """The trigger's event when it is one (the audience's order fields depend on it)."""
    if (trigger.event is None) == (trigger.schedule is None):
        violations.add("", "must be one of an event or a schedule")
        return None
    if trigger.event is not None:
        violations.check(
            isinstance(trigger.event, TriggerEvent) and trigger.event is not TriggerEvent.UNSPECIFIED,
            "event",
            "must name an event",
        )
        return trigger.event
    schedule = trigger.schedule
    assert schedule is not None
    inside = violations.within("schedule")
    if not isinstance(schedule.kind, ScheduleKind) or schedule.kind is ScheduleKind.UNSPECIFIED:
        inside.add("kind", "must name a schedule kind")
    if schedule.kind is not ScheduleKind.ONCE or schedule.local_time:
        inside.check(is_local_time(schedule.local_time), "local_time", 'must be a time of day as "HH:MM"')
    if schedule.kind in KINDS_NEEDING_DAYS:
        inside.check(schedule.days > 0, "days", "must be greater than zero for this kind")
    else:
        inside.check(schedule.days >= 0, "days", "must not be negative")
    inside.check(schedule.days <= MAX_SCHEDULE_DAYS, "days", f"must be at most {MAX_SCHEDULE_DAYS}")
    return None


def _texts(violations: Violations, name: str, values: Sequence[str], max_length: int) -> None:
    violations.check(len(values) <= MAX_AUDIENCE_VALUES, name, f"must hold at most {MAX_AUDIENCE_VALUES}")
    for i, value in enumerate(values[:MAX_AUDIENCE_VALUES]):
        violations.within(name, i).text(value, "", max_length=max_length)


def _audience(
    violations: Violations, audience: Audience, known_tiers: Collection[str], event: TriggerEvent | None
) -> None:
    _texts(violations, "tiers", audience.tiers, MAX_TIER_LENGTH)
    for i, tier in enumerate(audience.tiers[:MAX_AUDIENCE_VALUES]):
        if tier and tier not in known_tiers:
            violations.within("tiers", i).add(
                "", f"names no tier of the programme ({', '.join(known_tiers)})"
            )
    _texts(violations, "tags", audience.tags, MAX_TAG_LENGTH)
    _texts(violations, "home_store_ids", audience.home_store_ids, MAX_ID_LENGTH)
    _texts(violations, "guide_ids", audience.guide_ids, MAX_ID_LENGTH)
    _texts(violations, "skus", audience.skus, MAX_SKU_LENGTH)
    violations.check(
        len(audience.stages) <= MAX_AUDIENCE_VALUES, "stages", f"must hold at most {MAX_AUDIENCE_VALUES}"
    )
    for i, stage in enumerate(audience.stages[:MAX_AUDIENCE_VALUES]):
        violations.within("stages", i).check(
            isinstance(stage, Stage) and stage is not Stage.UNSPECIFIED, "", "must name a stage"
        )
    violations.check(
        0 <= audience.min_order_cents <= MAX_ORDER_CENTS,
        "min_order_cents",
        "must be from 0 to " + str(MAX_ORDER_CENTS),
    )
    if event not in ORDER_EVENTS:
        reason = "applies to order triggers only (ORDER_COMPLETED, FIRST_PURCHASE, ORDER_CANCELLED)"
        violations.check(audience.min_order_cents <= 0, "min_order_cents", reason)
        violations.check(not audience.skus, "skus", reason)


def _actions(violations: Violations, actions: Sequence[Action]) -> None:
    violations.check(len(actions) <= MAX_ACTIONS, "actions", f"must hold at most {MAX_ACTIONS}")
    coupon_before = False
    for i, action in enumerate(actions[:MAX_ACTIONS]):
        inside = violations.within("actions", i)
        if len(action.kinds) != 1:
            inside.add(
                "", "must be exactly one of issue_coupon, grant_points, add_tag, remove_tag, send_message"
            )
        if action.issue_coupon is not None:
            _coupon(inside.within("issue_coupon"), action.issue_coupon)
            coupon_before = True
        if action.grant_points is not None:
            inside.check(action.grant_points > 0, "grant_points", "must be greater than zero")
            inside.check(
                action.grant_points <= MAX_POINTS_PER_GRANT,
                "grant_points",
                f"must be at most {MAX_POINTS_PER_GRANT}",
            )
        for kind in (ActionKind.ADD_TAG, ActionKind.REMOVE_TAG):
            tag = getattr(action, kind.value)
            if tag is not None:
                inside.text(tag, kind.value, max_length=MAX_TAG_LENGTH)
        if action.send_message is not None:
            _message(inside.within("send_message"), action.send_message, coupon_before=coupon_before)


def _coupon(violations: Violations, coupon: CouponAction) -> None:
    violations.check(
        coupon.discount_cents > 0, "discount_cents", "must be greater than zero: a coupon needs a value"
    )
    violations.check(
        coupon.discount_cents <= MAX_COUPON_CENTS, "discount_cents", f"must be at most {MAX_COUPON_CENTS}"
    )
    violations.check(coupon.min_spend_cents >= 0, "min_spend_cents", "must not be negative")
    violations.check(
        coupon.min_spend_cents <= MAX_ORDER_CENTS, "min_spend_cents", f"must be at most {MAX_ORDER_CENTS}"
    )
    violations.check(
        0 < coupon.valid_days <= MAX_VALID_DAYS, "valid_days", f"must be from 1 to {MAX_VALID_DAYS}"
    )


def _message(violations: Violations, message: MessageAction, *, coupon_before: bool) -> None:
    violations.check(
        isinstance(message.channel, Channel) and message.channel is not Channel.UNSPECIFIED,
        "channel",
        "must name a channel",
    )
    violations.text(message.template, "template", max_length=MAX_TEMPLATE_LENGTH)
    for name in dict.fromkeys(PLACEHOLDER.findall(message.template)):
        if name not in PLACEHOLDERS:
            allowed = " ".join(f"{{{p}}}" for p in sorted(PLACEHOLDERS))
            violations.add("template", f"names an unknown placeholder {{{name}}} (known: {allowed})")
        elif name == "coupon_code" and not coupon_before:
            violations.add("template", "names {coupon_code} but no issue_coupon action comes before it")


def _limits(violations: Violations, limits: Limits) -> None:
    violations.check(
        0 <= limits.per_member_max <= MAX_PER_MEMBER, "per_member_max", f"must be from 0 to {MAX_PER_MEMBER}"
    )
    violations.check(
        0 <= limits.per_member_period_days <= MAX_PERIOD_DAYS,
        "per_member_period_days",
        f"must be from 0 to {MAX_PERIOD_DAYS}",
    )
    for name in ("max_grants", "points_budget", "coupon_budget_cents"):
        violations.check(0 <= getattr(limits, name) <= MAX_BUDGET, name, f"must be from 0 to {MAX_BUDGET}")
