"""Who is held out, the keys that make a grant happen once, and the arithmetic of limits and
budgets (storage enforces it with conditional updates; the rule is stated here once)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from services.marketing.domain.values import ActionKind, GrantCost, Limits

HOLDOUT_BUCKETS = 100
MAX_KEY_LENGTH = 128
GRANT_KEY_PREFIX = "mkt_"
# A chain of merges longer than this is a cycle in the data, not a history.
MAX_MERGE_HOPS = 64


def holdout_draw(campaign_id: str, member_id: str) -> int:
    """The member's draw for the campaign, uniform in 0..99 and the same on every replica, run and
    version: sha256 of the pair, its first eight bytes as a number, modulo 100. (2**64 is not a
    multiple of 100; the bias that leaves is below 1e-17, far under any sampling error.)

    Editing a campaign does not reshuffle its control group: a member drawn out stays out."""
    digest = hashlib.sha256(f"holdout\x1f{campaign_id}\x1f{member_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % HOLDOUT_BUCKETS


def is_held_out(campaign_id: str, member_id: str, holdout_percent: int) -> bool:
    return holdout_draw(campaign_id, member_id) < holdout_percent


def grant_key(campaign_id: str, version: int, member_id: str, occurrence_id: str) -> str:
    """The idempotency key of one grant: a member reached once per occurrence of the trigger under
    one version of the campaign. A digest, so ids of any length make a key of 68 characters; the
    parts are joined by a separator no id holds, so no two tuples spell one key."""
    material = "\x1f".join((campaign_id, str(version), member_id, occurrence_id))
    return GRANT_KEY_PREFIX + hashlib.sha256(material.encode()).hexdigest()


def occurrence_slot(campaign_id: str, member_id: str, occurrence_id: str) -> str:
    """The one grant a member may have per occurrence of a campaign's trigger, whatever the
    version: the unique key of the grants table. The grant key handed to membership is made from
    the version recorded in that row, so an event delivered again after the campaign was edited
    finds its row and repeats the same key instead of making a second grant under the new one."""
    material = "\x1f".join((campaign_id, member_id, occurrence_id))
    return "occ_" + hashlib.sha256(material.encode()).hexdigest()


def action_key(grant_key_: str, index: int, kind: ActionKind) -> str:
    """The key one action of a grant hands membership: the coupon's request_id, the points'
    source_id, the tag change's request. The action's place keeps two coupons of one grant apart."""
    key = f"{grant_key_}.{index}.{kind.value}"
    assert len(key) <= MAX_KEY_LENGTH
    return key


def occurrence_of_event(event_id: str) -> str:
    """An event's occurrence is the event itself: delivered twice, it is one occurrence."""
    return f"event:{event_id}"


def limit_holder(member_id: str, survivor_of: Callable[[str], str | None]) -> str:
    """Whose counters a grant to `member_id` counts against: the member a merge folded them into,
    followed to the end of the chain (A into B, B into C: C)."""
    current = member_id
    for _ in range(MAX_MERGE_HOPS):
        survivor = survivor_of(current)
        if survivor is None or survivor == current:
            return current
        current = survivor
    return current


def member_window_start(limits: Limits, campaign_start: datetime | None, at: datetime) -> datetime | None:
    """Where the per-member count starts: `per_member_period_days` back from `at`, or the
    campaign's start (None: all of its life) when the period is 0."""
    if limits.per_member_period_days > 0:
        return at - timedelta(days=limits.per_member_period_days)
    return campaign_start


def count_in_window(grant_times: Iterable[datetime], window_start: datetime | None) -> int:
    """Grants counted against the member: those after the window's start."""
    return sum(1 for t in grant_times if window_start is None or t > window_start)


class Verdict(StrEnum):
    GRANTED = "GRANTED"
    LIMIT_REACHED = "LIMIT_REACHED"
    BUDGET_EXHAUSTED = "BUDGET_EXHAUSTED"


@dataclass(frozen=True)
class Counters:
    """What the campaign has given so far, and what this member (their survivor) has had in the
    window."""

    member_grants: int = 0
    grants: int = 0
    points: int = 0
    coupon_cents: int = 0


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    limit: str = ""  # the Limits field that refused, for the results and the explanation

    @property
    def granted(self) -> bool:
        return self.verdict is Verdict.GRANTED


def fits(cap: int, spent: int, cost: int) -> bool:
    """A cap of 0 is none; otherwise spending `cost` more keeps the total within it. This is the
    condition of the storage's conditional update: SET spent = spent + cost WHERE cap = 0 OR
    spent + cost <= cap."""
    return cap == 0 or cost == 0 or spent + cost <= cap


def decide(limits: Limits, counters: Counters, cost: GrantCost) -> Decision:
    """GRANTED, or the first limit in the way: the member's own before the campaign's, so a member
    who has had their share hears that rather than that the budget ran out."""
    if counters.member_grants >= limits.grants_per_member:
        return Decision(Verdict.LIMIT_REACHED, "per_member_max")
    if not fits(limits.max_grants, counters.grants, 1):
        return Decision(Verdict.BUDGET_EXHAUSTED, "max_grants")
    if not fits(limits.points_budget, counters.points, cost.points):
        return Decision(Verdict.BUDGET_EXHAUSTED, "points_budget")
    if not fits(limits.coupon_budget_cents, counters.coupon_cents, cost.coupon_cents):
        return Decision(Verdict.BUDGET_EXHAUSTED, "coupon_budget_cents")
    return Decision(Verdict.GRANTED)


def after(counters: Counters, cost: GrantCost) -> Counters:
    """The counters once a grant is made."""
    return Counters(
        member_grants=counters.member_grants + 1,
        grants=counters.grants + 1,
        points=counters.points + cost.points,
        coupon_cents=counters.coupon_cents + cost.coupon_cents,
    )


@dataclass(frozen=True)
class MostCost:
    grants: int
    points: int
    coupon_cents: int


def most_cost(limits: Limits, cost: GrantCost, members_reached: int) -> MostCost:
    """The most one round of the campaign could cost (a preview's figure): every member outside
    the holdout granted their per-member share, cut by max_grants and then by the budgets."""
    grants = members_reached * limits.grants_per_member
    if limits.max_grants:
        grants = min(grants, limits.max_grants)
    if limits.points_budget and cost.points:
        grants = min(grants, limits.points_budget // cost.points)
    if limits.coupon_budget_cents and cost.coupon_cents:
        grants = min(grants, limits.coupon_budget_cents // cost.coupon_cents)
    return MostCost(grants=grants, points=grants * cost.points, coupon_cents=grants * cost.coupon_cents)
