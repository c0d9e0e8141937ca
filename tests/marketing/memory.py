"""Marketing's stores kept in memory (services.marketing.ports.Stores), for use cases tested
without a database over quanyu.unit_of_work.InMemoryUnitOfWork. One caller at a time: the
database's tests are where concurrency is shown."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from quanyu.unit_of_work import ConcurrentChange
from services.marketing.domain import (
    Campaign,
    CampaignState,
    Channel,
    Counters,
    Decision,
    Expiry,
    GrantCost,
    Limits,
    MemberFacts,
    TriggerEvent,
    Verdict,
    decide,
    fits,
)
from services.marketing.ports import (
    CampaignTotals,
    CompletedOrder,
    GrantRecord,
    IssuedCoupon,
    Outcome,
    Profile,
    Reach,
)
from tests.marketing.memory_queues import MemoryConsents, MemoryMessages, MemoryRuns
from tests.trail import MemoryAudit


class MemoryCampaigns:
    def __init__(self, world: MemoryStores) -> None:
        self._world = world
        self._rows: dict[str, Campaign] = {}
        self._versions: dict[tuple[str, int], Campaign] = {}
        self._requests: dict[str, tuple[str, str]] = {}

    def add(self, campaign: Campaign, now: datetime, *, request_id: str = "", fingerprint: str = "") -> None:
        if campaign.create_time is None:
            campaign.create_time = now
        if request_id:
            self._requests[request_id] = (campaign.campaign_id, fingerprint)
        self._rows[campaign.campaign_id] = copy.deepcopy(campaign)
        self._versions[campaign.campaign_id, campaign.version] = copy.deepcopy(campaign)
        self._world.budgets.open(campaign.campaign_id)

    def by_request(self, request_id: str) -> tuple[str, str] | None:
        return self._requests.get(request_id)

    def get(self, campaign_id: str) -> Campaign | None:
        found = self._rows.get(campaign_id)
        return copy.deepcopy(found) if found else None

    def version(self, campaign_id: str, version: int) -> Campaign | None:
        found = self._versions.get((campaign_id, version))
        return copy.deepcopy(found) if found else None

    def save(self, campaign: Campaign, now: datetime) -> None:
        stored = self._rows.get(campaign.campaign_id)
        # A save whose version is behind the stored one lost a race, as the database's would.
        if stored is None or campaign.version < stored.version:
            raise ConcurrentChange(f"campaign {campaign.campaign_id}")
        self._rows[campaign.campaign_id] = copy.deepcopy(campaign)
        self._versions.setdefault((campaign.campaign_id, campaign.version), copy.deepcopy(campaign))

    def page(
        self, states: Sequence[CampaignState], after: tuple[datetime, str] | None, limit: int
    ) -> list[Campaign]:
        rows = sorted(self._rows.values(), key=_position)
        chosen = [
            c for c in rows if (not states or c.state in states) and (after is None or _position(c) > after)
        ]
        return [copy.deepcopy(c) for c in chosen[:limit]]

    def running_for(self, event: TriggerEvent) -> list[Campaign]:
        return [
            copy.deepcopy(c)
            for c in self._rows.values()
            if c.state is CampaignState.RUNNING and c.trigger.event == event
        ]

    def running_scheduled(self) -> list[Campaign]:
        return [
            copy.deepcopy(c)
            for c in self._rows.values()
            if c.state is CampaignState.RUNNING and c.trigger.schedule is not None
        ]


def _position(campaign: Campaign) -> tuple[datetime, str]:
    assert campaign.create_time is not None
    return campaign.create_time, campaign.campaign_id


class MemoryBudgets:
    def __init__(self) -> None:
        self._totals: dict[str, CampaignTotals] = {}

    def open(self, campaign_id: str) -> None:
        self._totals[campaign_id] = CampaignTotals()

    def lock_counters(self, campaign_ids: Sequence[str]) -> None:
        # One caller at a time: nothing to wait for.
        return None

    def take(self, campaign_id: str, limits: Limits, cost: GrantCost, now: datetime) -> Decision:
        t = self._totals[campaign_id]
        if (
            fits(limits.max_grants, t.grants, 1)
            and fits(limits.points_budget, t.points, cost.points)
            and fits(limits.coupon_budget_cents, t.coupon_cents, cost.coupon_cents)
        ):
            self._totals[campaign_id] = replace(
                t,
                grants=t.grants + 1,
                points=t.points + cost.points,
                coupon_cents=t.coupon_cents + cost.coupon_cents,
            )
            return Decision(Verdict.GRANTED)
        decision = decide(
            limits, Counters(grants=t.grants, points=t.points, coupon_cents=t.coupon_cents), cost
        )
        if not t.exhausted_limit:
            self._totals[campaign_id] = replace(t, exhausted_limit=decision.limit, exhaust_time=now)
        return decision

    def take_up_to(
        self, campaign_id: str, limits: Limits, cost: GrantCost, count: int, now: datetime
    ) -> tuple[int, Decision]:
        for taken in range(count):
            decision = self.take(campaign_id, limits, cost, now)
            if not decision.granted:
                return taken, decision
        return count, Decision(Verdict.GRANTED)

    def totals(self, campaign_id: str) -> CampaignTotals:
        return self._totals.get(campaign_id, CampaignTotals())

    def count_suppressed(self, campaign_id: str, messages: int) -> None:
        t = self._totals[campaign_id]
        self._totals[campaign_id] = replace(t, messages_suppressed=t.messages_suppressed + messages)


class MemoryGrants:
    def __init__(self, world: MemoryStores) -> None:
        self._world = world
        self._rows: dict[str, GrantRecord] = {}

    def get(self, slot: str) -> GrantRecord | None:
        return self._rows.get(slot)

    def add(self, grant: GrantRecord) -> None:
        if grant.slot in self._rows:
            raise ConcurrentChange(f"grant {grant.slot}")
        self._rows[grant.slot] = grant

    def lock_member(self, campaign_id: str, holder_id: str) -> None:
        # One caller at a time: nothing to wait for.
        return None

    def lock_members(self, campaign_id: str, holder_ids: Sequence[str]) -> None:
        return None

    def decided(self, slots: Sequence[str]) -> set[str]:
        return {slot for slot in slots if slot in self._rows}

    def counts_for(
        self, campaign_id: str, holder_ids: Sequence[str], since: datetime | None
    ) -> dict[str, int]:
        counts = {h: self.count_for(campaign_id, h, since) for h in holder_ids}
        return {h: n for h, n in counts.items() if n}

    def reached(self, campaign_id: str, holder_ids: Sequence[str]) -> set[str]:
        wanted = set(holder_ids)
        return {
            g.holder_id
            for g in self._rows.values()
            if g.campaign_id == campaign_id
            and g.holder_id in wanted
            and g.outcome in (Outcome.GRANTED, Outcome.HELD_OUT)
        }

    def add_many(self, grants: Sequence[GrantRecord]) -> None:
        if len({g.slot for g in grants}) != len(grants) or any(g.slot in self._rows for g in grants):
            raise ConcurrentChange("grants")
        for grant in grants:
            self._rows[grant.slot] = grant

    def count_for(self, campaign_id: str, holder_id: str, since: datetime | None) -> int:
        return sum(
            1
            for g in self._rows.values()
            if g.campaign_id == campaign_id
            and g.holder_id == holder_id
            and g.outcome is Outcome.GRANTED
            and (since is None or g.grant_time > since)
        )

    def move_holder(self, holder_id: str, survivor_id: str) -> int:
        moving = [g for g in self._rows.values() if g.holder_id == holder_id]
        for g in moving:
            self._rows[g.slot] = replace(g, holder_id=survivor_id)
        return len(moving)

    def counters(self, campaign_id: str, holder_id: str, since: datetime | None) -> Counters:
        t = self._world.budgets.totals(campaign_id)
        return Counters(self.count_for(campaign_id, holder_id, since), t.grants, t.points, t.coupon_cents)

    def of_member(self, campaign_id: str, member_id: str) -> list[GrantRecord]:
        found = [g for g in self._rows.values() if g.campaign_id == campaign_id and g.member_id == member_id]
        return sorted(found, key=lambda g: (g.grant_time, g.slot))

    def count(self, campaign_id: str, outcome: Outcome) -> int:
        return len(
            {
                g.member_id
                for g in self._rows.values()
                if g.campaign_id == campaign_id and g.outcome is outcome
            }
        )

    def reaches(self, campaign_id: str, outcome: Outcome, window: timedelta) -> list[Reach]:
        first: dict[str, datetime] = {}
        for g in self._rows.values():
            if g.campaign_id == campaign_id and g.outcome is outcome:
                first[g.member_id] = min(first.get(g.member_id, g.grant_time), g.grant_time)
        orders = self._world.facts.orders
        return [
            Reach(
                member_id,
                at,
                tuple(
                    sorted(
                        (o.complete_time, o.total_cents)
                        for o in orders.values()
                        if o.member_id == member_id
                        and o.order_id not in self._world.facts.cancelled
                        and at <= o.complete_time < at + window
                    )
                ),
            )
            for member_id, at in sorted(first.items())
        ]


class MemoryFacts:
    def __init__(self) -> None:
        self.events: dict[str, str] = {}
        self.profiles: dict[str, Profile] = {}
        self.orders: dict[str, CompletedOrder] = {}
        self.cancelled: set[str] = set()
        self._expiries: dict[str, list[Expiry]] = {}
        self.linked: dict[str, dict[Channel, tuple[str, str]]] = {}

    def take_turns(self, members: Iterable[str], customers: Iterable[str], coupons: Iterable[str]) -> None:
        return None

    def claim_events(self, kinds: Mapping[str, str], now: datetime) -> set[str]:
        new = {event_id: kind for event_id, kind in kinds.items() if event_id not in self.events}
        self.events.update(new)
        return set(new)

    def put_profile(self, profile: Profile, now: datetime) -> None:
        self.profiles[profile.facts.member_id] = profile

    def profile(self, member_id: str) -> Profile | None:
        found = self.profiles.get(member_id)
        if found is None or not (linked := self.linked.get(found.customer_id)):
            return found
        names = [name for _, name in sorted(linked.values()) if name]
        facts = found.facts
        if not facts.display_name and names:
            facts = replace(facts, display_name=names[0])
        return replace(found, facts=facts, accounts={**found.accounts, **self.accounts_of(found.customer_id)})

    def profiles_of(self, member_ids: Iterable[str]) -> dict[str, Profile]:
        return {m: p for m in member_ids if (p := self.profile(m)) is not None}

    def link_account(
        self, customer_id: str, channel: Channel, account: str, display_name: str, now: datetime
    ) -> None:
        self.linked.setdefault(customer_id, {})[channel] = (account, display_name)

    def accounts_of(self, customer_id: str) -> dict[Channel, str]:
        return {channel: account for channel, (account, _) in self.linked.get(customer_id, {}).items()}

    def profiles_after(self, cursor: str, limit: int) -> list[Profile]:
        standing = sorted(m for m, p in self.profiles.items() if m > cursor and not p.survivor_id)
        return [p for m in standing[:limit] if (p := self.profile(m)) is not None]

    def time_zones(self) -> set[str]:
        return {p.facts.time_zone for p in self.profiles.values() if p.facts.time_zone}

    def expiries_of(self, member_ids: Sequence[str]) -> dict[str, list[Expiry]]:
        return {m: self.expiries(m) for m in member_ids if self._expiries.get(m)}

    def merge(self, member_id: str, survivor_id: str, now: datetime) -> None:
        found = self.profiles.get(member_id)
        if found is None:
            found = Profile(facts=MemberFacts(member_id=member_id), customer_id="")
        self.profiles[member_id] = replace(found, survivor_id=survivor_id)

    def survivor_of(self, member_id: str) -> str | None:
        found = self.profiles.get(member_id)
        return (found.survivor_id or None) if found else None

    def record_order(self, order: CompletedOrder) -> bool:
        if order.order_id in self.orders:
            return False
        self.orders[order.order_id] = order
        found = self.profiles.get(order.member_id)
        if found is None:
            return False
        last = found.last_order_time
        first = found.first_purchase_time is None
        self.profiles[order.member_id] = replace(
            found,
            last_order_time=order.complete_time if last is None or last < order.complete_time else last,
            first_purchase_time=order.complete_time if first else found.first_purchase_time,
        )
        return first

    def cancel_order(self, order_id: str) -> None:
        self.cancelled.add(order_id)

    def set_expiries(self, member_id: str, expiries: Iterable[Expiry]) -> None:
        self._expiries[member_id] = sorted(expiries, key=lambda e: e.expire_time)

    def expiries(self, member_id: str) -> list[Expiry]:
        return list(self._expiries.get(member_id, []))


@dataclass
class MemoryOutbox:
    effects: list[tuple[str, dict[str, Any], datetime]] = field(default_factory=list)

    def add(
        self, kind: str, payload: Mapping[str, Any], now: datetime, *, delay: timedelta = timedelta(0)
    ) -> None:
        self.effects.append((kind, dict(payload), now + delay))

    def add_many(self, effects: Sequence[tuple[str, Mapping[str, Any]]], now: datetime) -> None:
        self.effects.extend((kind, dict(payload), now) for kind, payload in effects)


@dataclass
class MemoryCoupons:
    issued: dict[str, tuple[IssuedCoupon, str]] = field(default_factory=dict)

    def add_issued(self, issued: Sequence[IssuedCoupon], now: datetime) -> None:
        for coupon in issued:
            self.issued.setdefault(coupon.code, (coupon, ""))

    def redeem(self, code: str, order_id: str) -> bool:
        if code not in self.issued:
            return False
        self.issued[code] = (self.issued[code][0], order_id)
        return True

    def counts(self, campaign_id: str) -> tuple[int, int]:
        mine = [order for coupon, order in self.issued.values() if coupon.campaign_id == campaign_id]
        return len(mine), sum(1 for order in mine if order)


@dataclass
class MemoryStores:
    campaigns: MemoryCampaigns = field(init=False)
    budgets: MemoryBudgets = field(default_factory=MemoryBudgets)
    grants: MemoryGrants = field(init=False)
    messages: MemoryMessages = field(default_factory=MemoryMessages)
    consents: MemoryConsents = field(default_factory=MemoryConsents)
    facts: MemoryFacts = field(default_factory=MemoryFacts)
    runs: MemoryRuns = field(default_factory=MemoryRuns)
    outbox: MemoryOutbox = field(default_factory=MemoryOutbox)
    coupons: MemoryCoupons = field(default_factory=MemoryCoupons)
    audit: MemoryAudit = field(default_factory=MemoryAudit)

    def __post_init__(self) -> None:
        self.campaigns = MemoryCampaigns(self)
        self.grants = MemoryGrants(self)
