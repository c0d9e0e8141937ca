"""Marketing's messages and its domain's values, each way. The request checks the domain cannot make
(how many entries a repeated field may carry, an event's required ids) are made here, every problem
named by its field's path; the campaign's own values are checked by the domain's validation."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

from quanyu.common.v1 import common_pb2
from quanyu.errors import InvalidArgument, Violations
from quanyu.marketing.v1 import marketing_pb2 as pb
from quanyu.membership.v1 import membership_pb2
from quanyu.wire import from_timestamp, to_timestamp
from services.marketing.domain import (
    Action,
    Audience,
    Campaign,
    CampaignState,
    Channel,
    CouponAction,
    Expiry,
    Limits,
    MemberFacts,
    MessageAction,
    OrderFacts,
    Schedule,
    ScheduleKind,
    Stage,
    Trigger,
    TriggerEvent,
)
from services.marketing.handlers import EventIn, EventKind
from services.marketing.ports import Message, MessageStatus

E = TypeVar("E", bound=StrEnum)

# Caps of the contract's repeated fields: what one call may carry.
MAX_AUDIENCE_ENTRIES = 100
MAX_STATES = 4
MAX_EVENTS = 500
MAX_SKUS = 100
MAX_COUPON_CODE_LENGTH = 32
MAX_TAGS = 100
MAX_EXPIRIES = 100
MAX_MESSAGE_IDS = 1000
MAX_ID_LENGTH = 64
MAX_REQUEST_ID_LENGTH = 128
MAX_ACCOUNT_LENGTH = 128
MAX_LOCAL_TIME_LENGTH = 5
MAX_NAME_LENGTH = 128
MAX_ACTIONS = 10
MAX_TEMPLATE_LENGTH = 1000


def _pairs(enum: type[E], names: Mapping[str, int], prefix: str) -> dict[int, E]:
    """Wire numbers to the domain's words, by name: `CAMPAIGN_STATE_DRAFT` is DRAFT."""
    return {number: enum(name.removeprefix(prefix)) for name, number in names.items()}


_STATES = _pairs(CampaignState, dict(pb.CampaignState.items()), "CAMPAIGN_STATE_")
_EVENTS = _pairs(TriggerEvent, dict(pb.TriggerEvent.items()), "TRIGGER_EVENT_")
_KINDS = _pairs(ScheduleKind, dict(pb.ScheduleKind.items()), "SCHEDULE_KIND_")
_STAGES = _pairs(Stage, dict(membership_pb2.LifecycleStage.items()), "LIFECYCLE_STAGE_")
_CHANNELS = _pairs(Channel, dict(common_pb2.Channel.items()), "CHANNEL_")
_STATUSES = {
    MessageStatus.PENDING: pb.MESSAGE_STATUS_PENDING,
    MessageStatus.DELIVERED: pb.MESSAGE_STATUS_DELIVERED,
    MessageStatus.SUPPRESSED: pb.MESSAGE_STATUS_SUPPRESSED,
}


def _number(pairs: Mapping[int, E], value: E) -> int:
    return next(number for number, word in pairs.items() if word is value)


def channel_of(number: int) -> Channel:
    """A wire channel in the domain's words; a number no channel has is UNSPECIFIED, for the
    checks to name."""
    return _CHANNELS.get(number, Channel.UNSPECIFIED)


def channel_number(channel: Channel) -> int:
    return _number(_CHANNELS, channel)


_BY_TOKEN_NAME = {name: _CHANNELS[number] for name, number in common_pb2.Channel.items()}


def token_channel(name: str) -> Channel:
    """The channel a channel token names (`CHANNEL_APP`)."""
    return _BY_TOKEN_NAME.get(name, Channel.UNSPECIFIED)


def state_of(number: int) -> CampaignState:
    return _STATES.get(number, CampaignState.UNSPECIFIED)


# --- campaigns ----------------------------------------------------------------------------------


def check_campaign_message(violations: Violations, message: pb.Campaign) -> None:
    """What a campaign's message may carry before it is read: bounded lists and strings, each
    named whatever else is wrong with the request (the domain checks the values themselves)."""
    violations.text(message.campaign_id, "campaign_id", max_length=MAX_ID_LENGTH, required=False)
    violations.text(message.name, "name", max_length=MAX_NAME_LENGTH, required=False)
    audience = violations.within("audience")
    for name in ("tiers", "tags", "home_store_ids", "guide_ids", "skus"):
        _list(audience, getattr(message.audience, name), name, MAX_AUDIENCE_ENTRIES)
    stages = len(message.audience.stages)
    audience.check(stages <= MAX_AUDIENCE_ENTRIES, "stages", f"must hold at most {MAX_AUDIENCE_ENTRIES}")
    schedule = message.trigger.schedule
    violations.within("trigger", "schedule").text(
        schedule.local_time, "local_time", max_length=MAX_LOCAL_TIME_LENGTH, required=False
    )
    violations.check(len(message.actions) <= MAX_ACTIONS, "actions", f"must hold at most {MAX_ACTIONS}")
    for i, action in enumerate(message.actions[:MAX_ACTIONS]):
        inside = violations.within("actions", i)
        inside.text(action.add_tag, "add_tag", max_length=MAX_ID_LENGTH, required=False)
        inside.text(action.remove_tag, "remove_tag", max_length=MAX_ID_LENGTH, required=False)
        inside.within("send_message").text(
            action.send_message.template, "template", max_length=MAX_TEMPLATE_LENGTH, required=False
        )


def campaign_of(message: pb.Campaign, violations: Violations) -> Campaign:
    """The campaign a message describes; its times checked under `campaign.`."""
    inside = violations.within("campaign")
    trigger = message.trigger
    chosen = trigger.WhichOneof("kind")
    if chosen == "event":
        made_trigger = Trigger(event=_EVENTS.get(trigger.event, TriggerEvent.UNSPECIFIED))
    elif chosen == "schedule":
        s = trigger.schedule
        made_trigger = Trigger(
            schedule=Schedule(_KINDS.get(s.kind, ScheduleKind.UNSPECIFIED), s.local_time, s.days)
        )
    else:
        made_trigger = Trigger()
    a = message.audience
    audience = Audience(
        tiers=tuple(a.tiers),
        tags=tuple(a.tags),
        stages=tuple(_STAGES.get(s, Stage.UNSPECIFIED) for s in a.stages),
        home_store_ids=tuple(a.home_store_ids),
        guide_ids=tuple(a.guide_ids),
        min_order_cents=a.min_order_cents,
        skus=tuple(a.skus),
    )
    limits = message.limits
    return Campaign(
        campaign_id=message.campaign_id,
        name=message.name,
        trigger=made_trigger,
        audience=audience,
        actions=tuple(_action_of(action) for action in message.actions),
        limits=Limits(
            per_member_max=limits.per_member_max,
            per_member_period_days=limits.per_member_period_days,
            max_grants=limits.max_grants,
            points_budget=limits.points_budget,
            coupon_budget_cents=limits.coupon_budget_cents,
        ),
        holdout_percent=message.holdout_percent,
        start_time=_time(message, "start_time", inside),
        end_time=_time(message, "end_time", inside),
        priority=message.priority,
    )


def _time(message: Any, name: str, violations: Violations) -> datetime | None:
    """The time in field `name`; a time out of range is kept with the request's other problems."""
    try:
        return from_timestamp(getattr(message, name), field_name=name, present=message.HasField(name))
    except InvalidArgument as exc:
        for found in exc.violations:
            violations.add(found.field, found.description)
        return None


def _action_of(message: pb.Action) -> Action:
    chosen = message.WhichOneof("kind")
    if chosen == "issue_coupon":
        c = message.issue_coupon
        return Action(issue_coupon=CouponAction(c.discount_cents, c.min_spend_cents, c.valid_days))
    if chosen == "grant_points":
        return Action(grant_points=message.grant_points)
    if chosen == "add_tag":
        return Action(add_tag=message.add_tag)
    if chosen == "remove_tag":
        return Action(remove_tag=message.remove_tag)
    if chosen == "send_message":
        m = message.send_message
        return Action(send_message=MessageAction(channel_of(m.channel), m.template))
    return Action()


def campaign_message(campaign: Campaign) -> pb.Campaign:
    trigger = pb.Trigger()
    if campaign.trigger.event is not None:
        trigger.event = _number(_EVENTS, campaign.trigger.event)  # type: ignore[assignment]
    elif campaign.trigger.schedule is not None:
        s = campaign.trigger.schedule
        trigger.schedule.CopyFrom(
            pb.Schedule(kind=_number(_KINDS, s.kind), local_time=s.local_time, days=s.days)  # type: ignore[arg-type]
        )
    a = campaign.audience
    limits = campaign.limits
    return pb.Campaign(
        campaign_id=campaign.campaign_id,
        name=campaign.name,
        state=_number(_STATES, campaign.state),  # type: ignore[arg-type]
        trigger=trigger,
        audience=pb.Audience(
            tiers=a.tiers,
            tags=a.tags,
            stages=[_number(_STAGES, s) for s in a.stages],  # type: ignore[misc]
            home_store_ids=a.home_store_ids,
            guide_ids=a.guide_ids,
            min_order_cents=a.min_order_cents,
            skus=a.skus,
        ),
        actions=[_action_message(action) for action in campaign.actions],
        limits=pb.Limits(
            per_member_max=limits.per_member_max,
            per_member_period_days=limits.per_member_period_days,
            max_grants=limits.max_grants,
            points_budget=limits.points_budget,
            coupon_budget_cents=limits.coupon_budget_cents,
        ),
        holdout_percent=campaign.holdout_percent,
        start_time=to_timestamp(campaign.start_time),
        end_time=to_timestamp(campaign.end_time),
        priority=campaign.priority,
        version=campaign.version,
    )


def _action_message(action: Action) -> pb.Action:
    if action.issue_coupon is not None:
        c = action.issue_coupon
        return pb.Action(
            issue_coupon=pb.CouponAction(
                discount_cents=c.discount_cents, min_spend_cents=c.min_spend_cents, valid_days=c.valid_days
            )
        )
    if action.grant_points is not None:
        return pb.Action(grant_points=action.grant_points)
    if action.add_tag is not None:
        return pb.Action(add_tag=action.add_tag)
    if action.remove_tag is not None:
        return pb.Action(remove_tag=action.remove_tag)
    if action.send_message is not None:
        m = action.send_message
        return pb.Action(
            send_message=pb.MessageAction(channel=channel_number(m.channel), template=m.template)  # type: ignore[arg-type]
        )
    return pb.Action()


# --- messages -----------------------------------------------------------------------------------


def message_message(message: Message) -> pb.Message:
    return pb.Message(
        message_id=message.message_id,
        campaign_id=message.campaign_id,
        customer_id=message.customer_id,
        account=common_pb2.ChannelAccount(
            channel=channel_number(message.channel),  # type: ignore[arg-type]
            external_id=message.account,
        ),
        text=message.text,
        create_time=to_timestamp(message.create_time),
        status=_STATUSES[message.status],
    )


# --- events -------------------------------------------------------------------------------------


def events_of(events: Sequence[pb.Event], violations: Violations) -> list[EventIn]:
    """Each event in the words of the use cases, every problem of every event named (`events[3].
    order_completed.member_id`); none is read when any is wrong, so a batch acts whole or not."""
    if len(events) > MAX_EVENTS:
        violations.add("events", f"must hold at most {MAX_EVENTS}")
        return []
    made = [_event_of(event, violations.within("events", i)) for i, event in enumerate(events)]
    return [event for event in made if event is not None]


def _id(violations: Violations, value: str, name: str, *, required: bool = True) -> None:
    violations.text(value, name, max_length=MAX_ID_LENGTH, required=required)


def _member_id(violations: Violations, value: str, name: str) -> None:
    """A member id membership made, which never has blanks at its ends. One that does names
    nobody, and an event about nobody would be acted on as far as membership, which refuses its
    effects for good: refused here, the call names the field instead."""
    _id(violations, value, name)
    violations.check(value == value.strip(), name, "must not begin or end with a blank")


def _event_of(event: pb.Event, violations: Violations) -> EventIn | None:
    _id(violations, event.event_id, "event_id")
    base = {"event_id": event.event_id, "occur_time": _time(event, "occur_time", violations)}
    kind = event.WhichOneof("kind")
    if kind is None:
        violations.add("kind", "must be one of the event kinds")
        return None
    return _READERS[kind](getattr(event, kind), violations.within(kind), base)


Base = Mapping[str, Any]


def _order_completed(o: pb.OrderCompleted, inside: Violations, base: Base) -> EventIn:
    _ids(inside, o, ("order_id", "customer_id", "store_id"))
    _member_id(inside, o.member_id, "member_id")
    _list(inside, o.skus, "skus", MAX_SKUS)
    inside.text(o.coupon_code, "coupon_code", max_length=MAX_COUPON_CODE_LENGTH, required=False)
    return _made(
        base,
        kind=EventKind.ORDER_COMPLETED,
        member_id=o.member_id,
        customer_id=o.customer_id,
        order_id=o.order_id,
        order=OrderFacts(total_cents=o.total_cents, skus=frozenset(o.skus), store_id=o.store_id),
        coupon_code=o.coupon_code,
    )


def _order_cancelled(c: pb.OrderCancelled, inside: Violations, base: Base) -> EventIn:
    _ids(inside, c, ("order_id", "customer_id"))
    _member_id(inside, c.member_id, "member_id")
    return _made(
        base,
        kind=EventKind.ORDER_CANCELLED,
        member_id=c.member_id,
        customer_id=c.customer_id,
        order_id=c.order_id,
    )


def _member_enrolled(e: pb.MemberEnrolled, inside: Violations, base: Base) -> EventIn | None:
    return _member(e, inside, base, EventKind.MEMBER_ENROLLED, tier_changed=False, stage_changed=False)


def _member_changed(c: pb.MemberChanged, inside: Violations, base: Base) -> EventIn | None:
    return _member(
        c, inside, base, EventKind.MEMBER_CHANGED, tier_changed=c.tier_changed, stage_changed=c.stage_changed
    )


def _member(
    holder: pb.MemberEnrolled | pb.MemberChanged,
    inside: Violations,
    base: Base,
    kind: EventKind,
    *,
    tier_changed: bool,
    stage_changed: bool,
) -> EventIn | None:
    if not holder.HasField("member"):
        inside.add("member", "is required")
        return None
    profile = holder.member
    facts, expiries = _profile_of(profile, inside.within("member"))
    return _made(
        base,
        kind=kind,
        member_id=profile.member_id,
        customer_id=profile.customer_id,
        facts=facts,
        expiries=expiries,
        tier_changed=tier_changed,
        stage_changed=stage_changed,
    )


def _engagement(g: pb.Engagement, inside: Violations, base: Base) -> EventIn:
    _member_id(inside, g.member_id, "member_id")
    _id(inside, g.customer_id, "customer_id", required=False)
    return _made(base, kind=EventKind.ENGAGEMENT, member_id=g.member_id, customer_id=g.customer_id)


def _member_merged(m: pb.MemberMerged, inside: Violations, base: Base) -> EventIn:
    _member_id(inside, m.member_id, "member_id")
    _member_id(inside, m.survivor_member_id, "survivor_member_id")
    return _made(
        base, kind=EventKind.CUSTOMER_MERGED, member_id=m.member_id, survivor_id=m.survivor_member_id
    )


def _account_linked(linked: pb.AccountLinked, inside: Violations, base: Base) -> EventIn:
    _id(inside, linked.customer_id, "customer_id")
    inside.text(linked.display_name, "display_name", max_length=MAX_ID_LENGTH, required=False)
    channel = channel_of(linked.account.channel)
    inside.check(channel is not Channel.UNSPECIFIED, "account.channel", "must name a channel")
    inside.text(linked.account.external_id, "account.external_id", max_length=MAX_ACCOUNT_LENGTH)
    return _made(
        base,
        kind=EventKind.ACCOUNT_LINKED,
        member_id="",
        customer_id=linked.customer_id,
        accounts={channel: linked.account.external_id},
        display_name=linked.display_name,
    )


# Each kind of the event's oneof, read by its own function.
_READERS: dict[str, Callable[[Any, Violations, Base], EventIn | None]] = {
    "order_completed": _order_completed,
    "order_cancelled": _order_cancelled,
    "member_enrolled": _member_enrolled,
    "member_changed": _member_changed,
    "engagement": _engagement,
    "member_merged": _member_merged,
    "account_linked": _account_linked,
}


def _made(base: Mapping[str, Any], **fields: Any) -> EventIn:
    return EventIn(**base, **fields)


def _ids(violations: Violations, message: Any, names: Sequence[str]) -> None:
    for name in names:
        _id(violations, getattr(message, name), name, required=False)


def _list(violations: Violations, values: Sequence[str], name: str, cap: int) -> None:
    violations.check(len(values) <= cap, name, f"must hold at most {cap}")
    for i, value in enumerate(values[:cap]):
        violations.within(name, i).text(value, "", max_length=MAX_ID_LENGTH)


def _profile_of(profile: pb.MemberProfile, violations: Violations) -> tuple[MemberFacts, tuple[Expiry, ...]]:
    _member_id(violations, profile.member_id, "member_id")
    _ids(violations, profile, ("customer_id", "tier", "home_store_id", "guide_id"))
    violations.text(profile.birthday, "birthday", max_length=5, required=False)
    _list(violations, profile.tags, "tags", MAX_TAGS)
    violations.check(
        len(profile.expiring_points) <= MAX_EXPIRIES, "expiring_points", f"must hold at most {MAX_EXPIRIES}"
    )
    expiries = []
    for i, point in enumerate(profile.expiring_points[:MAX_EXPIRIES]):
        at = _time(point, "expire_time", violations.within("expiring_points", i))
        if at is not None:
            expiries.append(Expiry(point.points, at))
    facts = MemberFacts(
        member_id=profile.member_id,
        tier=profile.tier,
        tags=frozenset(profile.tags),
        stage=_STAGES.get(profile.stage, Stage.UNSPECIFIED),
        home_store_id=profile.home_store_id,
        guide_id=profile.guide_id,
        points_balance=profile.points_balance,
        birthday=profile.birthday,
    )
    return facts, tuple(expiries)
