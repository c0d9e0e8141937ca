"""What marketing's use cases need from outside: the stores of one transaction (storage/
implements them), with the records they return where the domain has no type of its own."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from quanyu.audit_record import AuditTrail
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
    grant_key,
    occurrence_slot,
)


class Outcome(StrEnum):
    """What a member got of one occurrence: a grant, the control group, or a refusal."""

    GRANTED = "GRANTED"
    HELD_OUT = "HELD_OUT"
    LIMIT_REACHED = "LIMIT_REACHED"
    BUDGET_EXHAUSTED = "BUDGET_EXHAUSTED"


@dataclass(frozen=True)
class GrantRecord:
    """The decision for one member and occurrence of a campaign, kept under its slot."""

    slot: str
    grant_key: str
    campaign_id: str
    version: int
    member_id: str
    holder_id: str
    occurrence_id: str
    outcome: Outcome
    grant_time: datetime
    limit_name: str = ""
    points: int = 0
    coupon_cents: int = 0

    @classmethod
    def decided(
        cls,
        campaign: Campaign,
        member_id: str,
        occurrence_id: str,
        outcome: Outcome,
        *,
        holder_id: str,
        at: datetime,
        limit_name: str = "",
    ) -> GrantRecord:
        """The record of one decision under the campaign's current version: its slot and grant
        key follow from (campaign, version, member, occurrence), and a grant carries its cost."""
        granted = outcome is Outcome.GRANTED
        cost = campaign.cost
        return cls(
            slot=occurrence_slot(campaign.campaign_id, member_id, occurrence_id),
            grant_key=grant_key(campaign.campaign_id, campaign.version, member_id, occurrence_id),
            campaign_id=campaign.campaign_id,
            version=campaign.version,
            member_id=member_id,
            holder_id=holder_id,
            occurrence_id=occurrence_id,
            outcome=outcome,
            grant_time=at,
            limit_name=limit_name,
            points=cost.points if granted else 0,
            coupon_cents=cost.coupon_cents if granted else 0,
        )


@dataclass(frozen=True)
class CampaignTotals:
    """A campaign's counters as its results show them."""

    grants: int = 0
    points: int = 0
    coupon_cents: int = 0
    messages_suppressed: int = 0
    exhausted_limit: str = ""
    exhaust_time: datetime | None = None


class MessageStatus(StrEnum):
    PENDING = "PENDING"
    DELIVERED = "DELIVERED"
    SUPPRESSED = "SUPPRESSED"


@dataclass(frozen=True)
class Message:
    message_id: str
    campaign_id: str
    grant_key: str
    customer_id: str
    member_id: str
    channel: Channel
    account: str
    text: str
    create_time: datetime
    send_at: datetime
    status: MessageStatus = MessageStatus.PENDING
    lease_until: datetime | None = None
    pulls: int = 0
    deliver_time: datetime | None = None
    status_reason: str = ""
    # The request id of the coupon whose code the text awaits (not pulled until it is filled in).
    awaits_coupon: str = ""


@dataclass(frozen=True)
class IssuedCoupon:
    """A coupon membership issued for a grant's action: its code, for the grant's messages."""

    grant_key: str
    request_id: str
    code: str
    campaign_id: str = ""
    member_id: str = ""


@dataclass(frozen=True)
class Profile:
    """The member as marketing last heard of them: the audience's facts and what only marketing
    keeps (the customer, accounts per channel, a merge, orders seen)."""

    facts: MemberFacts
    customer_id: str
    accounts: Mapping[Channel, str] = field(default_factory=dict)
    survivor_id: str = ""
    last_order_time: datetime | None = None
    first_purchase_time: datetime | None = None


@dataclass(frozen=True)
class CompletedOrder:
    order_id: str
    member_id: str
    customer_id: str
    store_id: str
    total_cents: int
    complete_time: datetime


@dataclass(frozen=True)
class Reach:
    """A member of one arm of a campaign, when they were first reached or held out, and the
    completed orders they placed from then on (for conversion and revenue)."""

    member_id: str
    reach_time: datetime
    orders: tuple[tuple[datetime, int], ...] = ()


@dataclass(frozen=True)
class RunClaim:
    campaign_id: str
    run_key: str
    claimed_by: str
    lease_until: datetime
    cursor: str
    done: bool
    attempts: int


class Campaigns(Protocol):
    def add(self, campaign: Campaign, now: datetime, *, request_id: str = "", fingerprint: str = "") -> None:
        """Store a new campaign with its first version."""
        ...

    def by_request(self, request_id: str) -> tuple[str, str] | None:
        """(campaign id, request fingerprint) of the campaign a CreateCampaign request made."""
        ...

    def get(self, campaign_id: str) -> Campaign | None: ...

    def version(self, campaign_id: str, version: int) -> Campaign | None:
        """The campaign as it was at `version`, whatever it is now."""
        ...

    def save(self, campaign: Campaign, now: datetime) -> None:
        """Save its state and, when it moved on, its new version; `ConcurrentChange` when its state
        or version is no longer what was loaded."""
        ...

    def page(
        self, states: Sequence[CampaignState], after: tuple[datetime, str] | None, limit: int
    ) -> list[Campaign]:
        """Oldest first, after (create time, campaign id)."""
        ...

    def running_for(self, event: TriggerEvent) -> list[Campaign]: ...

    def running_scheduled(self) -> list[Campaign]: ...


class Budgets(Protocol):
    def lock_counters(self, campaign_ids: Sequence[str]) -> None:
        """Hold these campaigns' counters for the rest of the transaction, taken in campaign id
        order, the order a transaction granting several campaigns spends them in."""
        ...

    def take(self, campaign_id: str, limits: Limits, cost: GrantCost, now: datetime) -> Decision:
        """Spend one grant's cost if every cap allows it, by one conditional update; otherwise
        GRANTED is not answered and the refusal names the first limit in the way."""
        ...

    def totals(self, campaign_id: str) -> CampaignTotals: ...

    def count_suppressed(self, campaign_id: str, messages: int) -> None: ...

    def take_up_to(
        self, campaign_id: str, limits: Limits, cost: GrantCost, count: int, now: datetime
    ) -> tuple[int, Decision]:
        """Spend up to `count` grants' cost at once: all of them by one conditional update when
        every cap allows it, otherwise as many as still fit; how many were taken, and the refusal
        in the way of the rest (GRANTED when all were taken)."""
        ...


class Grants(Protocol):
    def get(self, slot: str) -> GrantRecord | None: ...

    def add(self, grant: GrantRecord) -> None:
        """Record a decision; a concurrent one for the same slot makes the transaction retry."""
        ...

    def lock_member(self, campaign_id: str, holder_id: str) -> None:
        """Hold the member's turn for the rest of the transaction, so their grants are counted one
        decision at a time."""
        ...

    def lock_members(self, campaign_id: str, holder_ids: Sequence[str]) -> None:
        """lock_member for many members at once, taken in member id order."""
        ...

    def decided(self, slots: Sequence[str]) -> set[str]:
        """Those of the slots that already have a decision."""
        ...

    def counts_for(
        self, campaign_id: str, holder_ids: Sequence[str], since: datetime | None
    ) -> dict[str, int]:
        """count_for of many holders in one query; a holder with none is absent."""
        ...

    def reached(self, campaign_id: str, holder_ids: Sequence[str]) -> set[str]:
        """Of the holders, those the campaign already granted or held out, on any occurrence."""
        ...

    def add_many(self, grants: Sequence[GrantRecord]) -> None:
        """Record many decisions in one statement; a slot taken concurrently makes it retry."""
        ...

    def count_for(self, campaign_id: str, holder_id: str, since: datetime | None) -> int:
        """Grants counted against the holder after `since` (None: all)."""
        ...

    def move_holder(self, holder_id: str, survivor_id: str) -> int:
        """Grants counted against a member merged away count against its survivor from now on,
        in every campaign; how many moved."""
        ...

    def counters(self, campaign_id: str, holder_id: str, since: datetime | None) -> Counters: ...

    def of_member(self, campaign_id: str, member_id: str) -> list[GrantRecord]: ...

    def count(self, campaign_id: str, outcome: Outcome) -> int:
        """Distinct members with the outcome (members_reached, members_held_out...)."""
        ...

    def reaches(self, campaign_id: str, outcome: Outcome, window: timedelta) -> list[Reach]:
        """Each member of the arm, first reached at, and their completed orders within `window`."""
        ...


class Messages(Protocol):
    def add(self, message: Message) -> bool:
        """Queue a message; False when the grant already queued one on the channel."""
        ...

    def get(self, message_id: str) -> Message | None: ...

    def pull(self, channel: Channel, now: datetime, lease: timedelta, limit: int) -> list[Message]:
        """Lease due messages of the channel not leased by anyone else, for `lease`."""
        ...

    def ack(self, channel: Channel, message_ids: Iterable[str], now: datetime) -> int:
        """Mark pulled messages delivered; how many were still pending."""
        ...

    def fill_coupon_codes(self, issued: Sequence[IssuedCoupon]) -> int:
        """Put each coupon's code into the messages awaiting it and let them be pulled, in one
        statement; how many messages were freed."""
        ...

    def suppress_unpulled(self, customer_id: str, channel: Channel, reason: str) -> int: ...

    def rivals(self, message: Message, moment: timedelta) -> list[Message]:
        """Other campaigns' messages to the same customer on the same channel, pending and never
        pulled, due within `moment` of it: those it reaches the member at once with."""
        ...

    def suppress(self, message_ids: Sequence[str], reason: str) -> int:
        """Stop pending messages never pulled, keeping why; how many were stopped."""
        ...

    def sent_times(self, customer_id: str, channel: Channel, since: datetime) -> list[datetime]:
        """When messages not suppressed go, or went, to the customer on the channel since `since`."""
        ...

    def count(self, campaign_id: str, status: MessageStatus) -> int: ...

    def of_member(self, campaign_id: str, member_id: str) -> list[Message]:
        """The campaign's messages to the member, sent, waiting or suppressed."""
        ...

    def backlog(self, now: datetime) -> dict[Channel, tuple[int, datetime]]:
        """Messages due by `now` and not yet acknowledged, per channel: how many, and the
        earliest time one of them was due (a gauge for ops)."""
        ...


class Consents(Protocol):
    def set(self, customer_id: str, channel: Channel, consent: bool, now: datetime) -> None: ...

    def of(self, customer_id: str) -> dict[Channel, bool]:
        """The customer's answer per channel; a channel never answered is absent (no consent)."""
        ...


class Facts(Protocol):
    def claim_events(self, kinds: Mapping[str, str], now: datetime) -> set[str]:
        """The ids among `kinds` (event id to its kind) seen for the first time, now recorded;
        those processed already are left out."""
        ...

    def take_turns(self, members: Iterable[str], customers: Iterable[str], coupons: Iterable[str]) -> None:
        """Hold the turns of these members, customers and coupons for the rest of the transaction,
        taken in one fixed order, so two transactions sharing some queue rather than deadlock."""
        ...

    def put_profile(self, profile: Profile, now: datetime) -> None: ...

    def profile(self, member_id: str) -> Profile | None:
        """The member's profile, with the accounts linked to their customer."""
        ...

    def profiles_of(self, member_ids: Iterable[str]) -> dict[str, Profile]:
        """Each of the members' profiles, as `profile` gives it, for those that have one."""
        ...

    def link_account(
        self, customer_id: str, channel: Channel, account: str, display_name: str, now: datetime
    ) -> None:
        """Keep the customer's account on a channel (and their name, when known), whichever of
        their members it is later needed for."""
        ...

    def accounts_of(self, customer_id: str) -> dict[Channel, str]:
        """The customer's account on each channel identity linked."""
        ...

    def profiles_after(self, cursor: str, limit: int) -> list[Profile]:
        """Standing members (not merged away) in member id order after `cursor`."""
        ...

    def time_zones(self) -> set[str]:
        """The distinct zones members' profiles name (empty: none named)."""
        ...

    def expiries_of(self, member_ids: Sequence[str]) -> dict[str, list[Expiry]]:
        """expiries of many members in one query; a member with none is absent."""
        ...

    def merge(self, member_id: str, survivor_id: str, now: datetime) -> None: ...

    def survivor_of(self, member_id: str) -> str | None: ...

    def record_order(self, order: CompletedOrder) -> bool:
        """Keep a completed order and move the member's last order time and first purchase on;
        True when it was the member's first purchase."""
        ...

    def cancel_order(self, order_id: str) -> None: ...

    def set_expiries(self, member_id: str, expiries: Iterable[Expiry]) -> None: ...

    def expiries(self, member_id: str) -> list[Expiry]: ...


class Runs(Protocol):
    def claim(
        self, campaign_id: str, run_key: str, who: str, now: datetime, lease: timedelta
    ) -> RunClaim | None:
        """The run for `who` if nobody holds it and it is not done; None otherwise."""
        ...

    def advance(self, claim: RunClaim, cursor: str, now: datetime, lease: timedelta) -> RunClaim:
        """Record progress and extend the lease; `ConcurrentChange` when the run was taken over."""
        ...

    def finish(self, claim: RunClaim, now: datetime) -> None: ...

    def get(self, campaign_id: str, run_key: str) -> RunClaim | None: ...


class Coupons(Protocol):
    """The coupons membership issued for the campaigns' grants, and which orders redeemed them."""

    def add_issued(self, issued: Sequence[IssuedCoupon], now: datetime) -> None:
        """Keep each coupon once by its code, however often its delivery is answered."""
        ...

    def redeem(self, code: str, order_id: str) -> bool:
        """Mark a campaign's coupon redeemed by the order; False for a code no campaign issued."""
        ...

    def counts(self, campaign_id: str) -> tuple[int, int]:
        """(coupons issued, of them redeemed) for the campaign."""
        ...


class Outbox(Protocol):
    def add(
        self, kind: str, payload: Mapping[str, Any], now: datetime, *, delay: timedelta = timedelta(0)
    ) -> None:
        """Record an effect on membership, delivered once the transaction commits."""
        ...

    def add_many(self, effects: Sequence[tuple[str, Mapping[str, Any]]], now: datetime) -> None:
        """Record many effects, (kind, payload) each, in one statement."""
        ...


class Stores(Protocol):
    @property
    def campaigns(self) -> Campaigns: ...

    @property
    def budgets(self) -> Budgets: ...

    @property
    def grants(self) -> Grants: ...

    @property
    def messages(self) -> Messages: ...

    @property
    def consents(self) -> Consents: ...

    @property
    def facts(self) -> Facts: ...

    @property
    def runs(self) -> Runs: ...

    @property
    def coupons(self) -> Coupons: ...

    @property
    def outbox(self) -> Outbox: ...

    @property
    def audit(self) -> AuditTrail: ...
