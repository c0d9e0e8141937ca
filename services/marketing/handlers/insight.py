"""Dry runs and explanations: what a campaign would reach and cost on today's members, and why a
member did or did not get it. Both only read."""

from __future__ import annotations

import dataclasses
from dataclasses import KW_ONLY, dataclass

from quanyu.errors import NotFound
from quanyu.unit_of_work import Clock, Transaction, UnitOfWork
from services.marketing.domain import (
    UNKNOWN_MEMBER,
    Campaign,
    Decision,
    Delivery,
    ExplainFacts,
    MessageFact,
    MostCost,
    Reason,
    Verdict,
    explain,
    is_held_out,
    limit_holder,
    most_cost,
)
from services.marketing.domain import Outcome as Sending
from services.marketing.handlers.messages import CONSENT_WITHDRAWN
from services.marketing.ports import Message, Outcome, Stores

Tx = Transaction[Stores]

PREVIEW_BATCH = 1000
PREVIEW_SAMPLE = 10


@dataclass(frozen=True)
class Preview:
    audience_size: int
    held_out: int
    sample: tuple[str, ...]
    most_cost: MostCost


def _campaign(stores: Stores, campaign_id: str) -> Campaign:
    found = stores.campaigns.get(campaign_id)
    if found is None:
        raise NotFound("campaign", campaign_id)
    return found


@dataclass
class InsightCases:
    uow: UnitOfWork[Stores]
    _: KW_ONLY
    clock: Clock

    def preview_campaign(self, campaign_id: str) -> Preview:
        """The members in the campaign's audience now, those its draw would hold out, a few it
        would reach, and the most one round could cost. Grants and sends nothing.

        An order's total or SKUs are known only when an order triggers the campaign, so the
        preview counts the members who stand in the rest of the audience: the most it could reach."""

        def read(tx: Tx) -> Preview:
            campaign = _campaign(tx.stores, campaign_id)
            audience = dataclasses.replace(campaign.audience, min_order_cents=0, skus=())
            size, held, sample, cursor = 0, 0, list[str](), ""
            while batch := tx.stores.facts.profiles_after(cursor, PREVIEW_BATCH):
                cursor = batch[-1].facts.member_id
                for profile in batch:
                    if audience.why_not(profile.facts, None) is not None:
                        continue
                    size += 1
                    if is_held_out(campaign.campaign_id, profile.facts.member_id, campaign.holdout_percent):
                        held += 1
                    elif len(sample) < PREVIEW_SAMPLE:
                        sample.append(profile.facts.member_id)
            cost = most_cost(campaign.limits, campaign.cost, size - held)
            return Preview(audience_size=size, held_out=held, sample=tuple(sample), most_cost=cost)

        return self.uow.read(read)

    def explain_member(self, campaign_id: str, member_id: str) -> list[Reason]:
        """Why the member did or did not get the campaign, most decisive reason first."""

        def read(tx: Tx) -> list[Reason]:
            stores = tx.stores
            campaign = _campaign(stores, campaign_id)
            profile = stores.facts.profile(member_id)
            if profile is None:
                # The contract answers a member no event named with a reason, not an error: the
                # campaign exists, and what ops learn is that marketing never heard of them.
                return [Reason(UNKNOWN_MEMBER)]
            records = stores.grants.of_member(campaign_id, member_id)
            refused = [r for r in records if r.outcome in (Outcome.LIMIT_REACHED, Outcome.BUDGET_EXHAUSTED)]
            decision = (
                Decision(Verdict(refused[-1].outcome.value), refused[-1].limit_name) if refused else None
            )
            facts = ExplainFacts(
                member=profile.facts,
                at=self.clock(),
                granted=any(r.outcome is Outcome.GRANTED for r in records),
                # A member outside the audience leaves no record; one inside always does.
                triggered=bool(records),
                decision=decision,
                survivor_id=limit_holder(member_id, stores.facts.survivor_of),
                # What became of the grant's messages: held for quiet hours, or not sent and why.
                messages=[_message_fact(m) for m in stores.messages.of_member(campaign_id, member_id)],
            )
            return explain(campaign, facts)

        return self.uow.read(read)


def _message_fact(message: Message) -> MessageFact:
    """What became of a message, as the explanation takes it: consent withdrawn before the message
    was pulled stopped it as no consent would have."""
    sending = (
        Sending.NO_CONSENT if message.status_reason == CONSENT_WITHDRAWN else Sending(message.status_reason)
    )
    return MessageFact(message.channel, Delivery(sending, message.send_at))
