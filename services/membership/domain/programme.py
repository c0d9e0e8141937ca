"""The loyalty programme a deployment runs: tiers, the earning formula, the member day, how long
points last, when they may be redeemed, and the caps that keep a wrong amount from minting points."""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from quanyu.errors import FailedPrecondition

CENTS_PER_YUAN = 100


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
        return cls(_month_day(start), _month_day(end))


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

    # --- tiers ---------------------------------------------------------------------------------

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

    def higher(self, *names: str) -> str:
        """The highest of these tiers."""
        return max(names, key=lambda name: self.tier(name).threshold_cents)

    def spend_window_start(self, at: datetime) -> datetime:
        return add_months(at, -self.spend_window_months)

    # --- earning -------------------------------------------------------------------------------

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

    def referral_bonus(self, earned_today: int, bonuses_today: int) -> int:
        """What a referrer is credited for a referred member's first purchase: nothing once the
        referrer's day holds its cap of bonuses (a till enrolling made-up customers naming one
        referrer would otherwise mint points for them without end), else the bonus within the
        day's cap of points."""
        if self.referral_bonus_points <= 0 or bonuses_today >= self.max_referral_bonuses_per_member_day:
            return 0
        return self.earnable(self.referral_bonus_points, earned_today)

    def day_start(self, at: datetime) -> datetime:
        """Midnight of `at`'s day in the programme's time zone: a member's day of earning."""
        local = self.local(at)
        return local.replace(hour=0, minute=0, second=0, microsecond=0)

    def expiry(self, earned_at: datetime) -> datetime:
        return add_months(earned_at, self.validity_months)

    # --- redeeming -----------------------------------------------------------------------------

    def may_redeem(self, at: datetime) -> bool:
        if not self.redemption_windows:
            return True
        day = self.local(at).date()
        return any(window.contains(day) for window in self.redemption_windows)

    def require_redemption_window(self, at: datetime) -> None:
        if not self.may_redeem(at):
            raise FailedPrecondition(
                "points can be redeemed only in the programme's redemption windows",
                reason="OUTSIDE_REDEMPTION_WINDOW",
            )


def add_months(at: datetime, months: int) -> datetime:
    """The same moment `months` later (or earlier); a day past the month's end becomes its last."""
    month_index = at.month - 1 + months
    year, month = at.year + month_index // 12, month_index % 12 + 1
    day = min(at.day, calendar.monthrange(year, month)[1])
    return at.replace(year=year, month=month, day=day)
