"""Membership's rules, free of gRPC and the database: the programme (tiers, points, member day,
expiry, redemption windows, referrals), the AIPL stages, and how points are spent and taken back."""

from __future__ import annotations

import calendar
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import IntEnum, StrEnum
from zoneinfo import ZoneInfo

from quanyu.auth import Principal, Role
from quanyu.errors import PermissionDenied, Violations

MAX_TAG_LENGTH = 64
MAX_TAGS_PER_CALL = 50
MAX_ID_LENGTH = 64
MAX_SOURCE_ID_LENGTH = 128
MAX_MEMBER_CODE_LENGTH = 32
CENTS_PER_YUAN = 100


class Stage(IntEnum):
    """AIPL: a member only ever moves forward through these."""

    AWARENESS = 1
    INTEREST = 2
    PURCHASE = 3
    LOYALTY = 4


class EngagementEvent(StrEnum):
    """What a member did that shows interest (membership.RecordEvent)."""

    VIEW = "VIEW"
    FOLLOW = "FOLLOW"
    ADD_TO_CART = "ADD_TO_CART"
    SHARE = "SHARE"


class EntryKind(StrEnum):
    EARN = "EARN"
    REDEEM = "REDEEM"
    REVERSAL = "REVERSAL"
    EXPIRE = "EXPIRE"
    ADJUST = "ADJUST"
    REFERRAL_BONUS = "REFERRAL_BONUS"


@dataclass(frozen=True)
class Tier:
    name: str
    threshold_cents: int  # rolling 12-month spend that reaches this tier
    multiplier: float


@dataclass(frozen=True)
class RedemptionWindow:
    """A yearly span of days in which points may be redeemed, e.g. 11-01..11-30; may wrap the year."""

    start: tuple[int, int]  # (month, day)
    end: tuple[int, int]

    def contains(self, day: date) -> bool:
        key = (day.month, day.day)
        if self.start <= self.end:
            return self.start <= key <= self.end
        return key >= self.start or key <= self.end

    @classmethod
    def parse(cls, text: str) -> RedemptionWindow:
        """ "11-01..11-30" (month-day to month-day, both included)."""
        start, _, end = text.partition("..")
        window = cls(_month_day(start), _month_day(end))
        return window


def _month_day(text: str) -> tuple[int, int]:
    month, _, day = text.strip().partition("-")
    parsed = (int(month), int(day))
    date(2024, *parsed)  # a leap year, so 02-29 is allowed; raises ValueError otherwise
    return parsed


DEFAULT_TIERS = (
    Tier("BRONZE", 0, 1.0),
    Tier("SILVER", 100_000, 1.2),
    Tier("GOLD", 500_000, 1.5),
    Tier("PLATINUM", 2_000_000, 2.0),
)


@dataclass(frozen=True)
class Programme:
    """A deployment's loyalty programme; the defaults are the contract's."""

    tiers: tuple[Tier, ...] = DEFAULT_TIERS
    member_weekday: int = 0  # 1 = Monday .. 7 = Sunday; 0 = none
    member_day_of_month: int = 0  # 1..31; 0 = none
    validity_months: int = 12
    spend_window_months: int = 12
    loyalty_window_months: int = 12
    redemption_windows: tuple[RedemptionWindow, ...] = ()  # none = redeem any day
    referral_bonus_points: int = 100
    timezone: str = "Asia/Shanghai"
    # Bounds that keep a wrong or forged amount from minting points: one spend at most this much
    # (any real order is far below), points of one earn and of one member's day at most these.
    max_spend_cents: int = 100_000_000
    max_points_per_earn: int = 500_000
    max_points_per_member_day: int = 1_000_000
    max_referral_bonuses_per_member_day: int = 20

    def __post_init__(self) -> None:
        if not self.tiers or self.tiers[0].threshold_cents != 0:
            raise ValueError("the first tier must start at 0 spend")
        if list(self.tiers) != sorted(self.tiers, key=lambda t: t.threshold_cents):
            raise ValueError("tiers must be in increasing order of spend")

    @property
    def entry_tier(self) -> str:
        return self.tiers[0].name

    def tier(self, name: str) -> Tier:
        for tier in self.tiers:
            if tier.name == name:
                return tier
        return self.tiers[0]

    def tier_for(self, rolling_spend_cents: int) -> Tier:
        reached = self.tiers[0]
        for tier in self.tiers:
            if rolling_spend_cents >= tier.threshold_cents:
                reached = tier
        return reached

    def upgraded(self, current: str, rolling_spend_cents: int) -> str:
        """A spend moves a member up at once, never down (downgrades wait for the evaluation)."""
        now = self.tier(current)
        reached = self.tier_for(rolling_spend_cents)
        return reached.name if reached.threshold_cents > now.threshold_cents else now.name

    def local(self, at: datetime) -> datetime:
        return at.astimezone(ZoneInfo(self.timezone))

    def is_member_day(self, at: datetime) -> bool:
        local = self.local(at)
        return local.isoweekday() == self.member_weekday or local.day == self.member_day_of_month

    def points_for(self, spend_cents: int, tier_name: str, at: datetime) -> int:
        """1 point per whole yuan, times the tier's multiplier, doubled on the member day."""
        whole_yuan = spend_cents // CENTS_PER_YUAN
        # Integer arithmetic on the multiplier in hundredths avoids 1.2 * 5 = 5.999… rounding down.
        points = whole_yuan * round(self.tier(tier_name).multiplier * 100) // 100
        return points * 2 if self.is_member_day(at) else points

    def earnable(self, points: int, earned_today: int) -> int:
        """Points an earn credits: what the spend earns, within the caps of one earn and of what
        is left of the member's day."""
        return max(0, min(points, self.max_points_per_earn, self.max_points_per_member_day - earned_today))

    def day_start(self, at: datetime) -> datetime:
        """Midnight of `at`'s day in the programme's time zone: a member's day of earning."""
        local = self.local(at)
        return local.replace(hour=0, minute=0, second=0, microsecond=0)

    def expiry(self, earned_at: datetime) -> datetime:
        return add_months(earned_at, self.validity_months)

    def may_redeem(self, at: datetime) -> bool:
        if not self.redemption_windows:
            return True
        day = self.local(at).date()
        return any(window.contains(day) for window in self.redemption_windows)

    def spend_window_start(self, at: datetime) -> datetime:
        return add_months(at, -self.spend_window_months)


def add_months(at: datetime, months: int) -> datetime:
    """The same moment `months` later (or earlier); a day past the month's end becomes its last."""
    month_index = at.month - 1 + months
    year, month = at.year + month_index // 12, month_index % 12 + 1
    day = min(at.day, calendar.monthrange(year, month)[1])
    return at.replace(year=year, month=month, day=day)


def stage_after_event(stage: Stage) -> Stage:
    return max(stage, Stage.INTEREST)


def stage_after_purchase(
    stage: Stage, previous_purchase: datetime | None, at: datetime, programme: Programme
) -> Stage:
    """PURCHASE after the first; LOYALTY once a purchase follows another within the window."""
    if previous_purchase is not None and previous_purchase >= add_months(
        at, -programme.loyalty_window_months
    ):
        return Stage.LOYALTY
    return max(stage, Stage.PURCHASE)


@dataclass(frozen=True)
class Lot:
    """Points earned together that expire together: what a redemption draws from, oldest first."""

    lot_id: str
    expire_time: datetime
    remaining: int


def draw_oldest_first(lots: Iterable[Lot], points: int, at: datetime) -> list[tuple[str, int]]:
    """Which live lots pay for `points`, soonest to expire first: [(lot_id, points taken)].

    The caller has checked the balance; lots already past their expiry are not drawn from (the
    expiry run writes them off).
    """
    taken: list[tuple[str, int]] = []
    left = points
    for lot in sorted(lots, key=lambda lot: (lot.expire_time, lot.lot_id)):
        if left == 0:
            break
        if lot.remaining <= 0 or lot.expire_time <= at:
            continue
        take = min(left, lot.remaining)
        taken.append((lot.lot_id, take))
        left -= take
    if left:
        raise ValueError(f"the live lots hold {points - left} points, not {points}")
    return taken


@dataclass(frozen=True)
class Clawback:
    """Taking back an earn: what is still unspent in its lot comes back; what was already spent
    (or expired) is recorded as the shortfall, so the balance never goes negative."""

    recovered: int
    shortfall: int


def claw_back(earned: int, unspent: int) -> Clawback:
    recovered = max(0, min(earned, unspent))
    return Clawback(recovered=recovered, shortfall=earned - recovered)


@dataclass
class TagChange:
    add: list[str] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)

    @classmethod
    def checked(
        cls, add: Sequence[str], remove: Sequence[str], violations: Violations | None = None
    ) -> TagChange:
        """The change, once every problem with it (and with the rest of the request, collected in
        `violations`) is found none."""
        violations = violations or Violations()
        for name, tags in (("add_tags", add), ("remove_tags", remove)):
            if len(tags) > MAX_TAGS_PER_CALL:
                violations.add(name, f"at most {MAX_TAGS_PER_CALL} tags a call")
                continue
            for index, tag in enumerate(tags):
                violations.text(tag, f"{name}[{index}]", max_length=MAX_TAG_LENGTH)
        both = sorted(set(add) & set(remove))
        if both:
            violations.add("remove_tags", f"a tag cannot be added and removed at once: {', '.join(both)}")
        violations.raise_if_any()
        return cls(sorted(set(add)), sorted(set(remove)))


def conversion_rates(counts: dict[Stage, int]) -> list[tuple[Stage, Stage, float]]:
    """For consecutive stages, the share of members at the earlier stage or beyond who reached the
    later one or beyond."""
    at_or_beyond = {stage: sum(n for s, n in counts.items() if s >= stage) for stage in Stage}
    rates = []
    for earlier, later in zip(list(Stage), list(Stage)[1:], strict=False):
        base = at_or_beyond[earlier]
        rates.append((earlier, later, at_or_beyond[later] / base if base else 0.0))
    return rates


def since(at: datetime, days: int) -> datetime:
    return at - timedelta(days=days)


# --- who reaches a member ------------------------------------------------------------------------


def sees(principal: Principal, home_store_id: str, *, holds_channel_account: Callable[[], bool]) -> bool:
    """Whether a caller may read a member (balance, ledger, coupons) without the member's code.

    A channel backend reads the members of its own customers (a customer holding an account on its
    channel); a store reads its own members (whose home store it is); ops and services read all.
    Whether the customer holds the account is asked only of a channel, and only when needed.
    """
    if principal.role is Role.CHANNEL:
        return holds_channel_account()
    if principal.role is Role.STORE:
        return bool(home_store_id) and home_store_id == principal.store_id
    return True


def require_code_to_spend(principal: Principal, member_code: str) -> None:
    """A till spends a member's points or coupons only with the code the member's app shows:
    a store token alone, whoever's member it is, never spends anyone's value."""
    if principal.role is Role.STORE and not member_code:
        raise PermissionDenied(
            "spending a member's points or coupons at the till needs the member code their app shows",
            reason="MEMBER_CODE_REQUIRED",
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


@dataclass(frozen=True)
class Guide:
    """A store's guide (导购): members and orders are credited only to a guide of their store."""

    guide_id: str
    store_id: str
    name: str
    active: bool


def validate_guide(guide: Guide, violations: Violations) -> None:
    violations.text(guide.guide_id, "guide.guide_id", max_length=MAX_ID_LENGTH)
    violations.text(guide.store_id, "guide.store_id", max_length=MAX_ID_LENGTH)
    violations.text(guide.name, "guide.name", max_length=MAX_ID_LENGTH, required=False)
