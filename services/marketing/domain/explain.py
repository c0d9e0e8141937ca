"""Why a member did or did not get a campaign, in reasons a person can act on, from facts the
service gathered: the campaign's state, the member's standing in its audience and draw, the
limits, and what became of its messages.

Each reason's `code` is one of the contract's names, exactly (GRANTED, HELD_OUT,
NOT_IN_AUDIENCE:tier, LIMIT_REACHED, BUDGET_EXHAUSTED, NO_CONSENT, DEFERRED_QUIET_HOURS...), so a
client may match it; its `detail` says which limit, channel or state, for people."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from services.marketing.domain.campaign import Campaign
from services.marketing.domain.grants import Decision, is_held_out
from services.marketing.domain.messages import Delivery, Outcome
from services.marketing.domain.values import CampaignState, Channel, MemberFacts, OrderFacts

GRANTED = "GRANTED"
HELD_OUT = "HELD_OUT"
NOT_LIVE = "NOT_LIVE"
NOT_TRIGGERED = "NOT_TRIGGERED"
# Every gate passed and no grant recorded yet: the grant is queued or in flight.
PENDING = "PENDING"
MERGED_INTO = "MERGED_INTO"
# Marketing has heard nothing of the member: no event named them.
UNKNOWN_MEMBER = "UNKNOWN_MEMBER"


@dataclass(frozen=True)
class Reason:
    code: str
    detail: str = ""


@dataclass(frozen=True)
class MessageFact:
    channel: Channel
    delivery: Delivery


@dataclass(frozen=True)
class ExplainFacts:
    """What the service knows of the member and the campaign.

    `granted` is whether a grant is recorded for the member; `decision` the limits' answer for a
    member not granted (None when the limits were never asked); `triggered` whether any
    occurrence of the trigger concerned the member; `survivor_id` the member a merge folded them
    into, whose limits they share."""

    member: MemberFacts
    at: datetime
    order: OrderFacts | None = None
    granted: bool = False
    triggered: bool = True
    decision: Decision | None = None
    messages: Sequence[MessageFact] = field(default=())
    survivor_id: str = ""


def explain(campaign: Campaign, facts: ExplainFacts) -> list[Reason]:
    """The reasons, most decisive first. A grant on record says GRANTED, then what held or stopped
    its messages; otherwise the first gate the member did not pass, in the order the service
    applies them: live, audience, holdout, triggered, limits. A merged member's survivor comes
    last, as the context of the limits."""
    if facts.granted:
        reasons = [Reason(GRANTED), *_message_reasons(facts.messages)]
    else:
        reasons = [_first_gate(campaign, facts)]
    if facts.survivor_id and facts.survivor_id != facts.member.member_id:
        reasons.append(Reason(MERGED_INTO, facts.survivor_id))
    return reasons


def codes(reasons: Sequence[Reason]) -> list[str]:
    return [reason.code for reason in reasons]


def _first_gate(campaign: Campaign, facts: ExplainFacts) -> Reason:
    not_live = _not_live(campaign, facts.at)
    if not_live:
        return Reason(NOT_LIVE, not_live)
    outside = campaign.audience.why_not(facts.member, facts.order)
    if outside is not None:
        return Reason(outside)
    if is_held_out(campaign.campaign_id, facts.member.member_id, campaign.holdout_percent):
        return Reason(HELD_OUT, f"{campaign.holdout_percent} % of members are kept as the control group")
    if not facts.triggered:
        return Reason(NOT_TRIGGERED)
    if facts.decision is not None and not facts.decision.granted:
        return Reason(facts.decision.verdict.value, facts.decision.limit)
    return Reason(PENDING)


def _not_live(campaign: Campaign, at: datetime) -> str:
    if campaign.state is not CampaignState.RUNNING:
        return f"the campaign is {campaign.state.value.lower()}"
    if campaign.start_time is not None and at < campaign.start_time:
        return f"the campaign starts at {campaign.start_time.isoformat()}"
    if campaign.end_time is not None and at >= campaign.end_time:
        return f"the campaign ended at {campaign.end_time.isoformat()}"
    return ""


def _message_reasons(messages: Sequence[MessageFact]) -> list[Reason]:
    return [
        Reason(fact.delivery.outcome.value, fact.channel.value)
        for fact in messages
        if fact.delivery.outcome is not Outcome.SEND
    ]
