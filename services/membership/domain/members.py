"""A member and what changes them: enrolment, the AIPL stage, a purchase (lifetime spend, tier,
stage), engagement, tags, and a merge folding one member into another; the guides of stores and
the short-lived codes a member's app shows at a till."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime

from quanyu.errors import InvalidArgument, PermissionDenied
from services.membership.domain.programme import Programme
from services.membership.domain.stages import Stage, stage_after_event, stage_after_purchase


@dataclass
class Member:
    member_id: str
    customer_id: str
    tier: str
    home_store_id: str
    guide_id: str
    enrolled_channel: str
    enroll_time: datetime
    referrer_member_id: str
    points_balance: int = 0
    stage: Stage = Stage.AWARENESS
    lifetime_spend_cents: int = 0
    last_purchase_time: datetime | None = None
    stage_times: dict[Stage, datetime | None] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    birthday: str = ""  # "MM-DD"; empty when unknown

    @classmethod
    def enrolled(
        cls,
        member_id: str,
        customer_id: str,
        *,
        programme: Programme,
        home_store_id: str,
        guide_id: str,
        channel: str,
        referrer_member_id: str,
        at: datetime,
        birthday: str = "",
    ) -> Member:
        """A new member: the entry tier, no points, aware of the brand from now."""
        return cls(
            member_id,
            customer_id,
            programme.entry_tier,
            home_store_id,
            guide_id,
            channel,
            at,
            referrer_member_id,
            stage_times={Stage.AWARENESS: at},
            birthday=birthday,
        )

    def enter(self, stage: Stage, at: datetime) -> None:
        """Move forward to `stage`, remembering when each stage passed on the way was entered."""
        for step in Stage:
            if self.stage < step <= stage and self.stage_times.get(step) is None:
                self.stage_times[step] = at
        self.stage = max(self.stage, stage)

    def engage(self, at: datetime) -> bool:
        """An engagement event (a view, a follow...): interest, once; whether anything changed."""
        if self.stage >= Stage.INTEREST:
            return False
        self.enter(stage_after_event(self.stage), at)
        return True

    def purchase(
        self, spend_cents: int, at: datetime, programme: Programme, rolling_spend_cents: int
    ) -> None:
        """A spend counted: lifetime spend, a tier the rolling spend (this one included) reaches at
        once, and the stage a purchase leads to."""
        self.tier = programme.upgraded(self.tier, rolling_spend_cents)
        self.lifetime_spend_cents += spend_cents
        self.enter(stage_after_purchase(self.stage, self.last_purchase_time, at, programme), at)
        self.last_purchase_time = at

    def reevaluate_tier(self, programme: Programme, rolling_spend_cents: int) -> bool:
        """The tier the rolling spend earns, down as well as up; whether it changed."""
        tier = programme.tier_for(rolling_spend_cents).name
        if tier == self.tier:
            return False
        self.tier = tier
        return True

    def absorb(self, merged: Member, programme: Programme, rolling_spend_cents: int) -> None:
        """Fold `merged` (one person with this member) in: balances and spend add up, what this
        member lacks is taken from the other, each stage counts from the earlier of the two, and
        the tier is the higher one's, raised by the combined rolling spend."""
        self.points_balance += merged.points_balance
        self.lifetime_spend_cents += merged.lifetime_spend_cents
        self.home_store_id = self.home_store_id or merged.home_store_id
        self.guide_id = self.guide_id or merged.guide_id
        self.referrer_member_id = self.referrer_member_id or merged.referrer_member_id
        self.birthday = self.birthday or merged.birthday
        purchases = [t for t in (self.last_purchase_time, merged.last_purchase_time) if t is not None]
        self.last_purchase_time = max(purchases, default=None)
        for stage in Stage:
            times = [t for t in (self.stage_times.get(stage), merged.stage_times.get(stage)) if t is not None]
            if times:
                self.stage_times[stage] = min(times)
        self.stage = max(self.stage, merged.stage)
        self.tier = programme.upgraded(programme.higher(self.tier, merged.tier), rolling_spend_cents)


_BIRTHDAY = re.compile(r"([0-9]{2})-([0-9]{2})")


def is_birthday(text: str) -> bool:
    """Whether `text` is a birthday as "MM-DD": a day of some year's calendar, 02-29 included."""
    matched = _BIRTHDAY.fullmatch(text)
    if matched is None:
        return False
    try:
        date(2024, int(matched[1]), int(matched[2]))  # a leap year: 02-29 is someone's birthday
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class MergeRecord:
    """A merge done, under the caller's request id: a retry answers with its survivor."""

    request_id: str
    survivor_customer_id: str
    merged_customer_id: str
    survivor_member_id: str

    def require_same(self, survivor_customer_id: str, merged_customer_id: str) -> None:
        if (self.survivor_customer_id, self.merged_customer_id) != (survivor_customer_id, merged_customer_id):
            raise InvalidArgument("request_id", "was used for another merge", reason="REQUEST_ID_REUSED")


@dataclass(frozen=True)
class Guide:
    """A store's guide (导购): members and orders are credited only to a guide of their store."""

    guide_id: str
    store_id: str
    name: str
    active: bool

    def may_look_after(self, home_store_id: str, till_store_id: str) -> bool:
        """Whether the guide may be named for a member of `home_store_id` (empty: any, as the
        guide's own store becomes the home) by a till of `till_store_id` (empty: not a till)."""
        return (
            self.active
            and (not home_store_id or self.store_id == home_store_id)
            and (not till_store_id or self.store_id == till_store_id)
        )


def invalid_member_code() -> PermissionDenied:
    """One answer for every way a code can fail (unknown, expired, another member's, shown at
    another store), so that trying codes teaches nothing."""
    return PermissionDenied(
        "the member code is not valid for this member here; ask the member to show a fresh one",
        reason="MEMBER_CODE_INVALID",
    )


@dataclass(frozen=True)
class MemberCode:
    """A short-lived code a member's own app shows at the till (会员码): it lets the store it is
    first shown at, and only that store, read the member and spend their value until it expires."""

    member_id: str
    expire_time: datetime
    store_id: str  # the store it was first used at; empty until then

    def admits(self, member_root: str, code_root: str | None, store_id: str, now: datetime) -> bool:
        if code_root is None or code_root != member_root or self.expire_time <= now:
            return False
        return not self.store_id or not store_id or self.store_id == store_id

    def binds_to(self, store_id: str, now: datetime) -> bool:
        """Whether showing the code at `store_id` now ties it to that store: its first showing."""
        return bool(store_id) and not self.store_id and self.expire_time > now
