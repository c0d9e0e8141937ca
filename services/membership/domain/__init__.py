"""Membership's domain, free of gRPC, the database and the clock: the programme and its rules,
members and their stages, the points ledger with its lots, coupons, and the checks of each
request's values."""

from services.membership.domain.coupons import Coupon
from services.membership.domain.ledger import (
    Clawback,
    Entry,
    EntryKind,
    Lot,
    PointsAccount,
    Posting,
    claw_back,
    draw_oldest_first,
)
from services.membership.domain.members import Guide, Member, MemberCode, MergeRecord, invalid_member_code
from services.membership.domain.programme import (
    DEFAULT_TIERS,
    Programme,
    RedemptionWindow,
    Tier,
    add_months,
)
from services.membership.domain.requests import TagChange
from services.membership.domain.stages import (
    EngagementEvent,
    Funnel,
    Stage,
    conversion_rates,
    stage_after_event,
    stage_after_purchase,
)

__all__ = [
    "DEFAULT_TIERS",
    "Clawback",
    "Coupon",
    "EngagementEvent",
    "Entry",
    "EntryKind",
    "Funnel",
    "Guide",
    "Lot",
    "Member",
    "MemberCode",
    "MergeRecord",
    "PointsAccount",
    "Posting",
    "Programme",
    "RedemptionWindow",
    "Stage",
    "TagChange",
    "Tier",
    "add_months",
    "claw_back",
    "conversion_rates",
    "draw_oldest_first",
    "invalid_member_code",
    "stage_after_event",
    "stage_after_purchase",
]
