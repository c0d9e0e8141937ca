"""The words of a campaign: its states, triggers, audience, actions and limits, and the facts about
a member and an order that the rules are asked about. Values only; the rules live beside them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class CampaignState(StrEnum):
    UNSPECIFIED = "UNSPECIFIED"
    DRAFT = "DRAFT"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    ENDED = "ENDED"


class TriggerEvent(StrEnum):
    UNSPECIFIED = "UNSPECIFIED"
    MEMBER_ENROLLED = "MEMBER_ENROLLED"
    ORDER_COMPLETED = "ORDER_COMPLETED"
    FIRST_PURCHASE = "FIRST_PURCHASE"
    TIER_CHANGED = "TIER_CHANGED"
    STAGE_CHANGED = "STAGE_CHANGED"
    ORDER_CANCELLED = "ORDER_CANCELLED"
    ENGAGEMENT = "ENGAGEMENT"


# Only these events carry an order, so only they can be narrowed by an order's total or SKUs.
ORDER_EVENTS = frozenset(
    {TriggerEvent.ORDER_COMPLETED, TriggerEvent.FIRST_PURCHASE, TriggerEvent.ORDER_CANCELLED}
)


class ScheduleKind(StrEnum):
    UNSPECIFIED = "UNSPECIFIED"
    ONCE = "ONCE"
    DAILY = "DAILY"
    BIRTHDAY = "BIRTHDAY"
    INACTIVE_DAYS = "INACTIVE_DAYS"
    POINTS_EXPIRING = "POINTS_EXPIRING"


# Kinds that pick members by a number of days, which they cannot do without one.
KINDS_NEEDING_DAYS = frozenset({ScheduleKind.INACTIVE_DAYS, ScheduleKind.POINTS_EXPIRING})


class Stage(StrEnum):
    """membership.v1.LifecycleStage, in the words marketing filters by."""

    UNSPECIFIED = "UNSPECIFIED"
    AWARENESS = "AWARENESS"
    INTEREST = "INTEREST"
    PURCHASE = "PURCHASE"
    LOYALTY = "LOYALTY"


class Channel(StrEnum):
    """common.v1.Channel: where a message is delivered."""

    UNSPECIFIED = "UNSPECIFIED"
    WECHAT_MINI_PROGRAM = "WECHAT_MINI_PROGRAM"
    WECHAT_OFFICIAL_ACCOUNT = "WECHAT_OFFICIAL_ACCOUNT"
    APP = "APP"
    WEB = "WEB"
    TMALL = "TMALL"
    JD = "JD"
    DOUYIN = "DOUYIN"
    STORE_POS = "STORE_POS"
    WECOM = "WECOM"


@dataclass(frozen=True)
class Schedule:
    kind: ScheduleKind
    local_time: str = ""  # "HH:MM" in the member's time zone
    days: int = 0


@dataclass(frozen=True)
class Trigger:
    """One of an event or a schedule (a oneof on the wire)."""

    event: TriggerEvent | None = None
    schedule: Schedule | None = None


@dataclass(frozen=True)
class MemberFacts:
    """What membership knows of a member at the moment a trigger is evaluated."""

    member_id: str
    tier: str = ""
    tags: frozenset[str] = frozenset()
    stage: Stage = Stage.UNSPECIFIED
    home_store_id: str = ""
    guide_id: str = ""
    display_name: str = ""
    points_balance: int = 0
    time_zone: str = ""  # the home store's IANA zone; empty for Asia/Shanghai
    birthday: str = ""  # "MM-DD", empty when unknown


@dataclass(frozen=True)
class OrderFacts:
    """The order an order event is about."""

    total_cents: int
    skus: frozenset[str] = frozenset()
    store_id: str = ""


@dataclass(frozen=True)
class Audience:
    """Every non-empty list must match; an empty list (and a zero minimum) lets everyone through."""

    tiers: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    stages: tuple[Stage, ...] = ()
    home_store_ids: tuple[str, ...] = ()
    guide_ids: tuple[str, ...] = ()
    min_order_cents: int = 0
    skus: tuple[str, ...] = ()

    @property
    def uses_order(self) -> bool:
        return self.min_order_cents > 0 or bool(self.skus)

    def why_not(self, member: MemberFacts, order: OrderFacts | None) -> str | None:
        """The first reason the member is outside, as NOT_IN_AUDIENCE:<field>; None when inside.

        The member's fields are asked first, in the contract's order, then the order's: a member
        outside by tier is told so even when the order would not have qualified either. A tag list
        matches a member holding any one of its tags. Order conditions with no order at hand (a
        schedule) fail: they cannot be shown to hold."""
        # Each check is a thunk, so a later one (an order's SKUs) is not evaluated once an earlier
        # one has failed.
        checks: tuple[tuple[str, Callable[[], bool]], ...] = (
            ("tier", lambda: not self.tiers or member.tier in self.tiers),
            ("tag", lambda: not self.tags or bool(member.tags.intersection(self.tags))),
            ("stage", lambda: not self.stages or member.stage in self.stages),
            ("home_store", lambda: not self.home_store_ids or member.home_store_id in self.home_store_ids),
            ("guide", lambda: not self.guide_ids or member.guide_id in self.guide_ids),
            (
                "min_order",
                lambda: (
                    self.min_order_cents <= 0
                    or (order is not None and order.total_cents >= self.min_order_cents)
                ),
            ),
            (
                "sku",
                lambda: not self.skus or (order is not None and bool(order.skus.intersection(self.skus))),
            ),
        )
        return next((f"NOT_IN_AUDIENCE:{name}" for name, holds in checks if not holds()), None)


@dataclass(frozen=True)
class CouponAction:
    discount_cents: int
    min_spend_cents: int = 0
    valid_days: int = 0


@dataclass(frozen=True)
class MessageAction:
    channel: Channel
    template: str


class ActionKind(StrEnum):
    ISSUE_COUPON = "issue_coupon"
    GRANT_POINTS = "grant_points"
    ADD_TAG = "add_tag"
    REMOVE_TAG = "remove_tag"
    SEND_MESSAGE = "send_message"


@dataclass(frozen=True)
class Action:
    """One of its fields set (a oneof on the wire); `kinds` lists those that are, so a check can
    say when none or several are."""

    issue_coupon: CouponAction | None = None
    grant_points: int | None = None
    add_tag: str | None = None
    remove_tag: str | None = None
    send_message: MessageAction | None = None

    @property
    def kinds(self) -> tuple[ActionKind, ...]:
        return tuple(kind for kind in ActionKind if getattr(self, kind.value) is not None)

    @property
    def kind(self) -> ActionKind | None:
        kinds = self.kinds
        return kinds[0] if len(kinds) == 1 else None


@dataclass(frozen=True)
class Limits:
    per_member_max: int = 0  # 0 = 1
    per_member_period_days: int = 0  # 0 = the campaign's life
    max_grants: int = 0  # 0 = no cap
    points_budget: int = 0  # 0 = no cap
    coupon_budget_cents: int = 0  # 0 = no cap

    @property
    def grants_per_member(self) -> int:
        return max(1, self.per_member_max)


@dataclass(frozen=True)
class Window:
    """When a campaign may act: from `start` (None: as soon as it runs) until before `end` (None:
    for ever)."""

    start: datetime | None = None
    end: datetime | None = None

    def holds(self, at: datetime) -> bool:
        return (self.start is None or self.start <= at) and (self.end is None or at < self.end)


@dataclass(frozen=True)
class GrantCost:
    """What one grant of a campaign spends: points, and coupons' face value."""

    points: int = 0
    coupon_cents: int = 0

    @classmethod
    def of(cls, actions: Sequence[Action]) -> GrantCost:
        points = sum(a.grant_points for a in actions if a.grant_points is not None)
        cents = sum(a.issue_coupon.discount_cents for a in actions if a.issue_coupon is not None)
        return cls(points=points, coupon_cents=cents)


@dataclass(frozen=True)
class Expiry:
    """Points of a member that lapse at `expire_time` unless spent."""

    points: int
    expire_time: datetime


@dataclass(frozen=True)
class Contact:
    """One member's standing on a channel: an account there, their consent, and the times marketing
    messages were sent to them on it."""

    channel: Channel
    has_account: bool
    consent: bool
    sent_times: tuple[datetime, ...] = field(default=())
