"""What marketing is told of members, as its Events in their JSON form: a member enrolled, a
member changed (tier, stage, tags or points) with the member as they are now, an engagement, and
a merge. Each event's id follows from its cause, so a transaction run again, or a retried
request that changes nothing, never tells marketing twice."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.membership.domain.ledger import Lot
from services.membership.domain.members import Member
from services.membership.domain.stages import EngagementEvent, Stage

MARKETING_EVENT = "marketing_event"
# Marketing's limits: event ids, and the expiry times of a member's points it takes.
MAX_EVENT_ID_LENGTH = 64
MAX_EXPIRING = 100
MAX_TAGS = 100


def event_id(cause: str) -> str:
    """A membership event's id for `cause`: readable while it fits, else a digest of it."""
    readable = f"membership/{cause}"
    if len(readable) <= MAX_EVENT_ID_LENGTH:
        return readable
    return "membership/" + hashlib.sha256(cause.encode()).hexdigest()[:40]


@dataclass(frozen=True)
class Before:
    """What a member's change is measured against: their tier, stage and tags before it."""

    tier: str
    stage: Stage
    tags: tuple[str, ...]

    @classmethod
    def of(cls, member: Member) -> Before:
        return cls(member.tier, member.stage, tuple(sorted(member.tags)))

    def moved(self, member: Member) -> tuple[bool, bool, bool]:
        """Whether the tier, the stage and the tags moved."""
        return member.tier != self.tier, member.stage != self.stage, tuple(sorted(member.tags)) != self.tags


def profile(member: Member, lots: Sequence[Lot], now: datetime) -> dict[str, Any]:
    """Marketing's MemberProfile of the member as they are now."""
    return {
        "member_id": member.member_id,
        "customer_id": member.customer_id,
        "tier": member.tier,
        "tags": sorted(member.tags)[:MAX_TAGS],
        "stage": f"LIFECYCLE_STAGE_{member.stage.name}",
        "home_store_id": member.home_store_id,
        "guide_id": member.guide_id,
        "birthday": member.birthday,
        "points_balance": member.points_balance,
        "expiring_points": [
            {"points": points, "expire_time": at.isoformat()} for at, points in _expiring_by_time(lots, now)
        ],
    }


def _expiring_by_time(lots: Sequence[Lot], now: datetime) -> list[tuple[datetime, int]]:
    by_time: dict[datetime, int] = {}
    for lot in lots:
        if lot.remaining > 0 and lot.expire_time > now:
            by_time[lot.expire_time] = by_time.get(lot.expire_time, 0) + lot.remaining
    return sorted(by_time.items())[:MAX_EXPIRING]


def enrolled(member: Member, now: datetime) -> dict[str, Any]:
    return {
        "event_id": event_id(f"{member.member_id}/enrolled"),
        "occur_time": now.isoformat(),
        "member_enrolled": {"member": profile(member, (), now)},
    }


def changed(
    cause: str, member: Member, lots: Sequence[Lot], now: datetime, *, tier_changed: bool, stage_changed: bool
) -> dict[str, Any]:
    """The member after a change `cause` names (a ledger entry, a tag update...)."""
    return {
        "event_id": event_id(cause),
        "occur_time": now.isoformat(),
        "member_changed": {
            "member": profile(member, lots, now),
            "tier_changed": tier_changed,
            "stage_changed": stage_changed,
        },
    }


def engaged(cause: str, member: Member, event_type: EngagementEvent, now: datetime) -> dict[str, Any]:
    return {
        "event_id": event_id(cause),
        "occur_time": now.isoformat(),
        "engagement": {
            "member_id": member.member_id,
            "customer_id": member.customer_id,
            "event_type": f"EVENT_TYPE_{event_type.value}",
        },
    }


def merged(request_id: str, merged_member_id: str, survivor_member_id: str, now: datetime) -> dict[str, Any]:
    return {
        "event_id": event_id(f"merge/{request_id}"),
        "occur_time": now.isoformat(),
        "member_merged": {"member_id": merged_member_id, "survivor_member_id": survivor_member_id},
    }
