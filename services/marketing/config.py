"""Marketing's own settings, read from QUANYU_MARKETING_*."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from quanyu.errors import InvalidArgument
from services.marketing.domain import ContactPolicy, parse_local_time
from services.marketing.domain.results import DEFAULT_CONVERSION_DAYS


class MarketingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QUANYU_MARKETING_", extra="ignore")

    # The programme's tier names an audience may name, as membership runs them (its
    # QUANYU_MEMBERSHIP_TIERS); comma-separated.
    tiers: str = "BRONZE,SILVER,GOLD,PLATINUM"
    # An order placed this many days after a member was reached (or held out) counts as theirs.
    conversion_window_days: int = Field(default=DEFAULT_CONVERSION_DAYS, ge=1, le=365)
    # At most this many marketing messages per customer and channel in the window.
    contact_max_messages: int = Field(default=3, ge=1, le=1000)
    contact_window_days: int = Field(default=7, ge=1, le=365)
    # Campaigns' messages due within this many minutes of each other reach a member at once: the
    # higher priority sends, the others are suppressed.
    contact_moment_minutes: int = Field(default=10, ge=0, le=24 * 60)
    # Messages falling in these local hours wait until they end ("HH:MM"; equal: no quiet hours).
    quiet_start: str = "21:00"
    quiet_end: str = "09:00"
    # A pulled message not acknowledged within this long is pulled again.
    ack_deadline_seconds: float = Field(default=60.0, gt=0, le=3600)

    # How often each replica looks for scheduled runs due, members granted per transaction of a
    # run, and how long a claim on a run holds without a page committed (a replica killed
    # mid-run is taken over once it lapses).
    run_interval_seconds: float = Field(default=30.0, gt=0, le=3600)
    run_page_size: int = Field(default=2000, ge=1, le=5000)
    run_lease_seconds: float = Field(default=120.0, gt=0, le=3600)
    # How often fulfilment's stores are read again for their time zones.
    store_zone_refresh_seconds: float = Field(default=300.0, gt=0, le=86400)

    @field_validator("quiet_start", "quiet_end")
    @classmethod
    def _local_time(cls, value: str) -> str:
        try:
            parse_local_time(value)
        except InvalidArgument as exc:
            raise ValueError(exc.message) from exc
        return value

    def known_tiers(self) -> frozenset[str]:
        return frozenset(filter(None, (name.strip() for name in self.tiers.split(","))))

    def contact_policy(self) -> ContactPolicy:
        return ContactPolicy(
            max_per_window=self.contact_max_messages,
            window=timedelta(days=self.contact_window_days),
            quiet_start=self.quiet_start,
            quiet_end=self.quiet_end,
            moment=timedelta(minutes=self.contact_moment_minutes),
        )

    @property
    def ack_deadline(self) -> timedelta:
        return timedelta(seconds=self.ack_deadline_seconds)

    @property
    def run_lease(self) -> timedelta:
        return timedelta(seconds=self.run_lease_seconds)
