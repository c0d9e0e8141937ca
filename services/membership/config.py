"""Membership's own settings: the programme a deployment runs, from QUANYU_MEMBERSHIP_*."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.membership.domain import DEFAULT_TIERS, Programme, RedemptionWindow, Tier

# Settings the programme takes as they are, under the same names.
_AS_THEY_ARE = (
    "member_weekday",
    "member_day_of_month",
    "referral_bonus_points",
    "timezone",
    "max_spend_cents",
    "max_points_per_earn",
    "max_points_per_member_day",
    "max_referral_bonuses_per_member_day",
)


class MembershipSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QUANYU_MEMBERSHIP_", extra="ignore")

    # "NAME:threshold_cents:multiplier,..." from the entry tier up.
    tiers: str = ",".join(f"{t.name}:{t.threshold_cents}:{t.multiplier}" for t in DEFAULT_TIERS)
    member_weekday: int = Field(default=0, ge=0, le=7)
    member_day_of_month: int = Field(default=0, ge=0, le=31)
    points_validity_months: int = Field(default=12, ge=1)
    # "MM-DD..MM-DD,..." in the programme's time zone; empty: points may be redeemed any day.
    redemption_windows: str = ""
    referral_bonus_points: int = Field(default=100, ge=0)
    timezone: str = "Asia/Shanghai"
    # Bounds against amounts no real sale has: a larger spend is refused, points beyond the caps
    # are not credited.
    max_spend_cents: int = Field(default=100_000_000, ge=1, le=10**12)
    max_points_per_earn: int = Field(default=500_000, ge=0, le=10**10)
    max_points_per_member_day: int = Field(default=1_000_000, ge=0, le=10**10)
    max_referral_bonuses_per_member_day: int = Field(default=20, ge=0, le=10_000)
    # How long a member code (会员码) is accepted at the till after the member's app asked for it.
    member_code_ttl_seconds: float = Field(default=120.0, gt=0, le=3600)
    # How often the service writes off lapsed points and re-evaluates tiers.
    expiry_interval_seconds: float = Field(default=3600.0, gt=0)
    tier_evaluation_interval_seconds: float = Field(default=86400.0, gt=0)

    @field_validator("tiers")
    @classmethod
    def _tiers_parse(cls, value: str) -> str:
        parse_tiers(value)
        return value

    @field_validator("redemption_windows")
    @classmethod
    def _windows_parse(cls, value: str) -> str:
        parse_windows(value)
        return value

    def programme(self) -> Programme:
        return Programme(
            tiers=parse_tiers(self.tiers),
            validity_months=self.points_validity_months,
            redemption_windows=parse_windows(self.redemption_windows),
            **{name: getattr(self, name) for name in _AS_THEY_ARE},
        )


def parse_tiers(text: str) -> tuple[Tier, ...]:
    tiers = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, threshold, multiplier = part.split(":")
        tiers.append(Tier(name.strip(), int(threshold), float(multiplier)))
    return tuple(tiers)


def parse_windows(text: str) -> tuple[RedemptionWindow, ...]:
    return tuple(RedemptionWindow.parse(part) for part in filter(None, (p.strip() for p in text.split(","))))
