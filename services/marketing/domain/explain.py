"""Why a member did or did not get a campaign, in reasons a person can act on, from facts the
service gathered: the campaign's state, the member's standing in its audience and draw, the
limits, and what became of its messages."""

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
NOT_STARTED = "NOT_STARTED"
ALREADY_ENDED = "ENDED"
NOT_TRIGGERED = "NOT_TRIGGERED"
# Every gate passed and no grant recorded yet: the grant is queued or in flight.
PENDING = "PENDING"
MERGED_INTO = "MERGED_INTO"


@dataclass(frozen=True)
class MessageFact:
    channel: Channel
    delivery: Delivery


@dataclass(frozen=True)
class ExplainFacts:
    """What the service knows of the member and the campaign.

    `granted` is whether a grant is recorded for the member; `decision` the limits' answer for a
    member not granted (None when the limits were never asked: no trigger reached them yet);
    `triggered` whether any occurrence of the trigger concerned the member."""

    member: MemberFacts
    at: datetime
    order: OrderFacts | None = None
    granted: bool = False
    triggered: bool = True
    decision: Decision | None = None
    messages: Sequence[MessageFact] = field(default=())
    survivor_id: str = ""


def explain(campaign: Campaign, facts: ExplainFacts) -> list[str]:
    """The reasons, most decisive first. A grant on record says GRANTED first, then what happened
    to its messages; otherwise the first gate the member did not pass, in the order the service
    applies them: live, triggered, audience, holdout, limits."""
    reasons: list[str] = []
    if facts.survivor_id and facts.survivor_id != facts.member.member_id:
        reasons.append(f"{MERGED_INTO}:{facts.survivor_id}")
    if facts.granted:
        reasons.append(GRANTED)
        reasons += _message_reasons(facts.messages)
        return reasons
    return [*reasons, _first_gate(campaign, facts)]


def _first_gate(campaign: Campaign, facts: ExplainFacts) -> str:
    not_live = _not_live(campaign, facts.at)
    if not_live:
        return not_live
    outside = campaign.audience.why_not(facts.member, facts.order)
    if outside is not None:
        return outside
    if is_held_out(campaign.campaign_id, facts.member.member_id, campaign.holdout_percent):
        return HELD_OUT
    if not facts.triggered:
        return NOT_TRIGGERED
    if facts.decision is not None and not facts.decision.granted:
        detail = f":{facts.decision.limit}" if facts.decision.limit else ""
        return f"{facts.decision.verdict.value}{detail}"
    return PENDING


def _not_live(campaign: Campaign, at: datetime) -> str | None:
    if campaign.state is not CampaignState.RUNNING:
        return f"{NOT_LIVE}:{campaign.state.value}"
    if campaign.start_time is not None and at < campaign.start_time:
        return f"{NOT_LIVE}:{NOT_STARTED}"
    if campaign.end_time is not None and at >= campaign.end_time:
        return f"{NOT_LIVE}:{ALREADY_ENDED}"
    return None


def _message_reasons(messages: Sequence[MessageFact]) -> list[str]:
    reasons = []
    for fact in messages:
        outcome = fact.delivery.outcome
        if outcome is not Outcome.SEND:
            reasons.append(f"{outcome.value}:{fact.channel.value}")
    return reasons
