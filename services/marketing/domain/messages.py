"""Messages to members: the text a template renders to, and the contact policy every campaign
shares: consent and an account on the channel, at most a few messages a week, none in quiet hours
(held until they end, not dropped), and one campaign at a time when several want one member."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from quanyu.phones import mask_phones
from services.marketing.domain.schedules import instant, parse_local_time, zone_of
from services.marketing.domain.validation import PLACEHOLDER, PLACEHOLDERS
from services.marketing.domain.values import Contact, MemberFacts

DEFAULT_MAX_PER_WEEK = 3
FREQUENCY_WINDOW = timedelta(days=7)
DEFAULT_MOMENT = timedelta(minutes=10)
DEFAULT_QUIET_START = "21:00"
DEFAULT_QUIET_END = "09:00"


# Left in a message's text until membership has issued the coupon it names; filled in then.
CODE_PLACEHOLDER = "{coupon_code}"


def placeholder_values(member: MemberFacts, coupon_code: str = "") -> dict[str, str]:
    return {
        "display_name": member.display_name,
        "tier": member.tier,
        "points_balance": str(member.points_balance),
        "coupon_code": coupon_code,
    }


def render(template: str, values: Mapping[str, str]) -> str:
    """The template with each known placeholder replaced (an unknown one stays as written; a
    checked campaign has none). The result passes through the phone masking, so a display name
    that is a phone number, or one typed into the template, never leaves in clear."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        return values.get(name, match.group(0)) if name in PLACEHOLDERS else match.group(0)

    return mask_phones(PLACEHOLDER.sub(value, template))


class Outcome(StrEnum):
    SEND = "SEND"
    DEFERRED_QUIET_HOURS = "DEFERRED_QUIET_HOURS"
    NO_CONSENT = "NO_CONSENT"
    NO_ACCOUNT = "NO_ACCOUNT"
    FREQUENCY_CAPPED = "FREQUENCY_CAPPED"
    SUPPRESSED_BY_PRIORITY = "SUPPRESSED_BY_PRIORITY"


@dataclass(frozen=True)
class Delivery:
    """What becomes of one message: sent at `send_at` (later than asked when quiet hours held it),
    or not sent, and why."""

    outcome: Outcome
    send_at: datetime | None = None

    @property
    def sent(self) -> bool:
        return self.send_at is not None


@dataclass(frozen=True)
class ContactPolicy:
    max_per_window: int = DEFAULT_MAX_PER_WEEK
    window: timedelta = FREQUENCY_WINDOW
    quiet_start: str = DEFAULT_QUIET_START
    quiet_end: str = DEFAULT_QUIET_END
    # Messages of different campaigns due this close together reach the member "at once": one
    # sends, the others are suppressed by priority. Events of one order (its completion, the
    # first purchase, the stage it moves) and schedules at the same local time arrive apart by
    # seconds or minutes; what quiet hours held arrives together when they end.
    moment: timedelta = DEFAULT_MOMENT

    def quiet_until(self, at: datetime, time_zone: str) -> datetime | None:
        """When the quiet hours holding `at` end, as a UTC instant; None when `at` is not in
        them. A window whose start is later than its end (21:00–09:00) runs over midnight;
        start == end is no quiet hours at all."""
        zone = zone_of(time_zone)
        start, end = parse_local_time(self.quiet_start), parse_local_time(self.quiet_end)
        local = at.astimezone(zone)
        clock = local.time().replace(tzinfo=None)
        if start == end:
            return None
        if start < end:
            return instant(local.date(), end, zone) if start <= clock < end else None
        if clock >= start:
            return instant(local.date() + timedelta(days=1), end, zone)
        if clock < end:
            return instant(local.date(), end, zone)
        return None

    def sent_in_window(self, sent_times: Iterable[datetime], at: datetime) -> int:
        """Messages sent within the window before `at` (and any already due after it)."""
        return sum(1 for t in sent_times if t > at - self.window)

    def deliver(self, contact: Contact, at: datetime, time_zone: str) -> Delivery:
        """The fate of a message due at `at`: not sent without an account or consent on the
        channel or past the week's allowance; otherwise sent then, or when quiet hours end.

        The allowance is counted at the moment of sending, so a message held overnight counts in
        the week of the morning it goes out."""
        if not contact.has_account:
            return Delivery(Outcome.NO_ACCOUNT)
        if not contact.consent:
            return Delivery(Outcome.NO_CONSENT)
        held = self.quiet_until(at, time_zone)
        send_at = held or at
        if self.sent_in_window(contact.sent_times, send_at) >= self.max_per_window:
            return Delivery(Outcome.FREQUENCY_CAPPED)
        return Delivery(Outcome.DEFERRED_QUIET_HOURS if held else Outcome.SEND, send_at)


@dataclass(frozen=True)
class Contender:
    """A campaign wanting to message one member on one channel at one moment."""

    campaign_id: str
    priority: int
    create_time: datetime


def arbitrate(contenders: Sequence[Contender]) -> tuple[Contender | None, tuple[Contender, ...]]:
    """The one campaign that messages the member, and those suppressed (counted in their results):
    the higher priority wins; of equal priority the older campaign, then the smaller id, so every
    replica picks the same one."""
    if not contenders:
        return None, ()
    ranked = sorted(contenders, key=lambda c: (-c.priority, c.create_time, c.campaign_id))
    return ranked[0], tuple(ranked[1:])
