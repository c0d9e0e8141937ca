"""The grant of one occurrence of a campaign's trigger to one member, and the events that fire
them: each event taken once by its id, its facts kept, and every live campaign it triggers
granted in the same transaction, so an event delivered again, to any replica, acts once."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from datetime import datetime
from enum import StrEnum

from quanyu.errors import NotFound
from quanyu.unit_of_work import Clock, Transaction, UnitOfWork
from services.marketing.domain import (
    Campaign,
    Channel,
    ContactPolicy,
    Expiry,
    MemberFacts,
    OrderFacts,
    Stage,
    TriggerEvent,
    is_held_out,
    limit_holder,
    member_window_start,
    occurrence_of_event,
    occurrence_slot,
)
from services.marketing.handlers.effects import WantedMessage, record_effects, send_messages
from services.marketing.metrics import EVENTS_INGESTED, GRANT_DECISIONS
from services.marketing.ports import CompletedOrder, GrantRecord, Outcome, Profile, Stores

Tx = Transaction[Stores]


class EventKind(StrEnum):
    """What orders and membership tell marketing through their outboxes."""

    ORDER_COMPLETED = "ORDER_COMPLETED"
    ORDER_CANCELLED = "ORDER_CANCELLED"
    MEMBER_ENROLLED = "MEMBER_ENROLLED"
    TIER_CHANGED = "TIER_CHANGED"
    STAGE_CHANGED = "STAGE_CHANGED"
    ENGAGEMENT = "ENGAGEMENT"
    CUSTOMER_MERGED = "CUSTOMER_MERGED"
    # The member as they stand after a change; a TIER_CHANGED or STAGE_CHANGED trigger when it says.
    MEMBER_CHANGED = "MEMBER_CHANGED"
    # Identity: the customer holds an account on a channel (no member: keyed by customer).
    ACCOUNT_LINKED = "ACCOUNT_LINKED"


@dataclass(frozen=True)
class EventIn:
    """One event as it arrives; the fields its kind does not use stay empty."""

    event_id: str
    kind: EventKind
    member_id: str
    # None when the sender did not say: it happened as marketing takes it in.
    occur_time: datetime | None
    customer_id: str = ""
    facts: MemberFacts | None = None  # the member as enrolled
    accounts: Mapping[Channel, str] = field(default_factory=dict)
    tier: str = ""
    stage: Stage = Stage.UNSPECIFIED
    order_id: str = ""
    order: OrderFacts | None = None
    coupon_code: str = ""  # the coupon a completed order redeemed
    survivor_id: str = ""
    tier_changed: bool = False
    stage_changed: bool = False
    # The member's unspent points by expiry, as membership reported them; None: not reported.
    expiries: tuple[Expiry, ...] | None = None
    display_name: str = ""


@dataclass(frozen=True)
class Ingested:
    accepted: int = 0
    duplicates: int = 0
    grants: tuple[GrantRecord, ...] = ()


@dataclass
class TriggerCases:
    uow: UnitOfWork[Stores]
    _: KW_ONLY
    clock: Clock
    policy: ContactPolicy = field(default_factory=ContactPolicy)

    # --- one occurrence ------------------------------------------------------------------------

    def trigger(
        self, campaign_id: str, member_id: str, occurrence_id: str, order: OrderFacts | None = None
    ) -> GrantRecord | None:
        """The member's grant for the occurrence (None when the campaign is not live or the
        member is outside its audience now), decided once whoever asks again."""

        def work(tx: Tx) -> GrantRecord | None:
            campaign = tx.stores.campaigns.get(campaign_id)
            if campaign is None:
                raise NotFound("campaign", campaign_id)
            now = self.clock()
            if not campaign.is_live(now):
                return tx.stores.grants.get(occurrence_slot(campaign_id, member_id, occurrence_id))
            return self.grant(tx, campaign, member_id, occurrence_id, order=order, now=now)

        return self.uow.run(work)

    def grant(
        self,
        tx: Tx,
        campaign: Campaign,
        member_id: str,
        occurrence_id: str,
        *,
        order: OrderFacts | None,
        now: datetime,
        messages: list[WantedMessage] | None = None,
    ) -> GrantRecord | None:
        """The decision for one member and occurrence, taken in the caller's transaction: the
        member's turn first, then the campaign's counters, then the grant's row, the one order
        every grant takes its locks in, so concurrent grants queue rather than deadlock. With
        `messages`, the grant's messages are left there for the caller to arbitrate with those of
        other campaigns granted at the same moment; otherwise they are queued at once."""
        stores = tx.stores
        slot = occurrence_slot(campaign.campaign_id, member_id, occurrence_id)
        if (found := stores.grants.get(slot)) is not None:
            return found
        profile = stores.facts.profile(member_id)
        # The audience as the member stands now: one who left it before the trigger is not reached.
        if profile is None or campaign.audience.why_not(profile.facts, order) is not None:
            return None
        holder = limit_holder(member_id, stores.facts.survivor_of)
        stores.grants.lock_member(campaign.campaign_id, holder)
        # Asked again under the member's lock: a concurrent delivery of the same occurrence that
        # got there first has committed its row by now, and is answered instead of a second one.
        if (found := stores.grants.get(slot)) is not None:
            return found
        outcome, limit = self._outcome(stores, campaign, member_id, holder, now)
        granted = outcome is Outcome.GRANTED
        record = GrantRecord.decided(
            campaign, member_id, occurrence_id, outcome, holder_id=holder, at=now, limit_name=limit
        )
        stores.grants.add(record)
        # Counted once committed: an attempt rolled back and run again must not count twice.
        tx.after_commit(GRANT_DECISIONS.labels(outcome.value).inc)
        if granted:
            wanted = record_effects(stores, campaign, record, profile)
            if messages is None:
                send_messages(stores, wanted, policy=self.policy)
            else:
                messages.extend(wanted)
        return record

    @staticmethod
    def _outcome(
        stores: Stores, campaign: Campaign, member_id: str, holder: str, now: datetime
    ) -> tuple[Outcome, str]:
        # The control group is drawn before any limit: a held-out member spends no budget, and is
        # recorded so the results compare them with those reached.
        if is_held_out(campaign.campaign_id, member_id, campaign.holdout_percent):
            return Outcome.HELD_OUT, ""
        since = member_window_start(campaign.limits, campaign.start_time, now)
        if stores.grants.count_for(campaign.campaign_id, holder, since) >= campaign.limits.grants_per_member:
            return Outcome.LIMIT_REACHED, "per_member_max"
        decision = stores.budgets.take(campaign.campaign_id, campaign.limits, campaign.cost, now)
        if not decision.granted:
            return Outcome(decision.verdict.value), decision.limit
        return Outcome.GRANTED, ""

    # --- events --------------------------------------------------------------------------------

    def ingest(self, events: Sequence[EventIn]) -> Ingested:
        """A call's events in one transaction, in the order sent: one commit a call rather than
        one an event, so a call of hundreds stays well within its deadline. Each event is taken
        once by its id (one already seen, or sent twice in the call, is skipped), and a grant
        refused by a limit is recorded as such without holding back the other events' grants;
        a conflict runs the whole call again, which each event's claim makes harmless."""
        return self.uow.run(functools.partial(self._ingest_all, events=events))

    def _ingest_all(self, tx: Tx, *, events: Sequence[EventIn]) -> Ingested:
        now = self.clock()
        # The first of an id sent twice in one call is the one acted on, as if sent one by one.
        first: dict[str, EventIn] = {}
        for event in events:
            first.setdefault(event.event_id, event)
        claimed = tx.stores.facts.claim_events({i: e.kind.value for i, e in first.items()}, now)
        taken = [e for i, e in first.items() if i in claimed]
        # The running campaigns each trigger may fire, read once a call rather than once an
        # event (reading and parsing them was a large part of an event's cost), and read where
        # their counters are locked, so that no campaign started meanwhile is acted on with its
        # counter unlocked and taken out of order.
        running = _take_turns(tx.stores, taken)
        # Every profile the events will move on, read in one statement once their turns are held,
        # rather than one read an event.
        tx.stores.facts.profiles_of(e.member_id for e in taken)
        accepted, duplicates, grants = 0, 0, list[GrantRecord]()
        for event in events:
            if event.event_id not in claimed:
                duplicates += 1
                continue
            # A later copy of this id in the same call is a duplicate.
            claimed.discard(event.event_id)
            accepted += 1
            grants.extend(self._ingest_one(tx, event=event, now=now, running=running))
        tx.after_commit(functools.partial(EVENTS_INGESTED.labels("new").inc, accepted))
        tx.after_commit(functools.partial(EVENTS_INGESTED.labels("duplicate").inc, duplicates))
        return Ingested(accepted=accepted, duplicates=duplicates, grants=tuple(grants))

    def _ingest_one(
        self, tx: Tx, *, event: EventIn, now: datetime, running: dict[TriggerEvent, list[Campaign]]
    ) -> list[GrantRecord]:
        """One claimed event: the member's facts moved on, and every live campaign it triggers
        granted (or its refusal recorded). `running` holds the campaigns each trigger the call's
        events may fire, their counters locked."""
        stores = tx.stores
        fired = self._apply(stores, event, now)
        occurrence = occurrence_of_event(event.event_id)
        grants: list[GrantRecord] = []
        wanted: list[WantedMessage] = []
        triggered = [c for trigger in fired for c in running.get(trigger, ())]
        for campaign in self._live(triggered, now):
            record = self.grant(
                tx, campaign, event.member_id, occurrence, order=event.order, now=now, messages=wanted
            )
            if record is not None:
                grants.append(record)
        # Every campaign this event granted wants the member at the same moment: one message each
        # channel, the highest priority's.
        send_messages(stores, wanted, policy=self.policy)
        return grants

    @staticmethod
    def _live(campaigns: Iterable[Campaign], now: datetime) -> list[Campaign]:
        # One order for every transaction that grants several campaigns (whichever trigger events
        # found them), so their counters are locked in the same sequence everywhere.
        return sorted((c for c in campaigns if c.is_live(now)), key=lambda c: c.campaign_id)

    def _apply(self, stores: Stores, event: EventIn, now: datetime) -> list[TriggerEvent]:
        """The member's facts moved on by the event, and the trigger events it amounts to."""
        facts = stores.facts
        kind = event.kind
        if kind is EventKind.CUSTOMER_MERGED:
            facts.merge(event.member_id, event.survivor_id, now)
            # What the merged member was given counts toward the survivor's limits from now on.
            stores.grants.move_holder(event.member_id, event.survivor_id)
            return []
        if kind is EventKind.ACCOUNT_LINKED:
            for channel, account in sorted(event.accounts.items()):
                facts.link_account(event.customer_id, channel, account, event.display_name, now)
            return []
        profile = _moved_on(
            facts.profile(event.member_id)
            or Profile(facts=MemberFacts(member_id=event.member_id), customer_id=event.customer_id),
            event,
        )
        facts.put_profile(profile, now)
        if event.expiries is not None:
            facts.set_expiries(event.member_id, event.expiries)
        if kind is EventKind.MEMBER_CHANGED:
            return [
                *([TriggerEvent.TIER_CHANGED] if event.tier_changed else []),
                *([TriggerEvent.STAGE_CHANGED] if event.stage_changed else []),
            ]
        if kind is EventKind.ORDER_COMPLETED:
            return _completed(stores, event, profile, now)
        if kind is EventKind.ORDER_CANCELLED:
            facts.cancel_order(event.order_id)
            return [TriggerEvent.ORDER_CANCELLED]
        return [_TRIGGERED[kind]]


def _take_turns(stores: Stores, events: Sequence[EventIn]) -> dict[TriggerEvent, list[Campaign]]:
    """Every lock the call's events will take, taken before the first is applied and in the one
    order every call takes them in: the turns of the members, customers and coupons they write,
    by key, then the counters of each running campaign they could trigger, by campaign id. Two
    calls sharing any of them queue on the first they share instead of each holding one the other
    waits for; calls sharing none run side by side, on any replica. The running campaigns of each
    trigger, as their counters were locked."""
    stores.facts.take_turns(
        members={key for e in events for key in (e.member_id, e.survivor_id)},
        customers={e.customer_id for e in events if e.kind is EventKind.ACCOUNT_LINKED},
        coupons={e.coupon_code for e in events},
    )
    triggers = sorted({trigger for e in events for trigger in _MAY_FIRE[e.kind]})
    running = {t: stores.campaigns.running_for(t) for t in triggers}
    stores.budgets.lock_counters([c.campaign_id for campaigns in running.values() for c in campaigns])
    return running


def _moved_on(profile: Profile, event: EventIn) -> Profile:
    """The member's profile as the event leaves it."""
    kind = event.kind
    if kind is EventKind.MEMBER_ENROLLED:
        enrolled = event.facts or profile.facts
        return dataclasses.replace(
            profile,
            facts=dataclasses.replace(enrolled, member_id=event.member_id),
            customer_id=event.customer_id or profile.customer_id,
            accounts={**profile.accounts, **event.accounts},
        )
    if kind is EventKind.MEMBER_CHANGED and event.facts is not None:
        # What membership does not know (the name, the home store's zone) stays as it was.
        kept = profile.facts
        return dataclasses.replace(
            profile,
            facts=dataclasses.replace(
                event.facts,
                member_id=event.member_id,
                display_name=event.facts.display_name or kept.display_name,
                time_zone=event.facts.time_zone or kept.time_zone,
            ),
            customer_id=event.customer_id or profile.customer_id,
        )
    if kind is EventKind.TIER_CHANGED:
        return dataclasses.replace(profile, facts=dataclasses.replace(profile.facts, tier=event.tier))
    if kind is EventKind.STAGE_CHANGED:
        return dataclasses.replace(profile, facts=dataclasses.replace(profile.facts, stage=event.stage))
    if event.customer_id and not profile.customer_id:
        return dataclasses.replace(profile, customer_id=event.customer_id)
    return profile


def _completed(stores: Stores, event: EventIn, profile: Profile, now: datetime) -> list[TriggerEvent]:
    """A completed order kept for the results, the campaign's coupon it redeemed marked, and
    whether it was the member's first purchase."""
    order = event.order or OrderFacts(total_cents=0)
    first = stores.facts.record_order(
        CompletedOrder(
            order_id=event.order_id,
            member_id=event.member_id,
            customer_id=profile.customer_id,
            store_id=order.store_id,
            total_cents=order.total_cents,
            complete_time=event.occur_time or now,
        )
    )
    if event.coupon_code:
        # One of the campaigns' coupons, or another (then nothing is marked).
        stores.coupons.redeem(event.coupon_code, event.order_id)
    return [TriggerEvent.ORDER_COMPLETED, *([TriggerEvent.FIRST_PURCHASE] if first else [])]


_TRIGGERED = {
    EventKind.MEMBER_ENROLLED: TriggerEvent.MEMBER_ENROLLED,
    EventKind.TIER_CHANGED: TriggerEvent.TIER_CHANGED,
    EventKind.STAGE_CHANGED: TriggerEvent.STAGE_CHANGED,
    EventKind.ENGAGEMENT: TriggerEvent.ENGAGEMENT,
}

# The triggers an event of each kind may fire, whatever the member's facts turn out to be.
_MAY_FIRE: dict[EventKind, tuple[TriggerEvent, ...]] = {
    **{kind: (trigger,) for kind, trigger in _TRIGGERED.items()},
    EventKind.ORDER_COMPLETED: (TriggerEvent.ORDER_COMPLETED, TriggerEvent.FIRST_PURCHASE),
    EventKind.ORDER_CANCELLED: (TriggerEvent.ORDER_CANCELLED,),
    EventKind.MEMBER_CHANGED: (TriggerEvent.TIER_CHANGED, TriggerEvent.STAGE_CHANGED),
    EventKind.CUSTOMER_MERGED: (),
    EventKind.ACCOUNT_LINKED: (),
}
