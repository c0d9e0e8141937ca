"""The decision a grant use case makes, spelled over the ports, so the storage's tests run it as
the use cases will."""

from __future__ import annotations

from datetime import datetime

from quanyu.unit_of_work import Transaction
from services.marketing.domain import Campaign, limit_holder, member_window_start, occurrence_slot
from services.marketing.ports import GrantRecord, Outcome, Stores


def decide_grant(
    tx: Transaction[Stores], campaign: Campaign, member_id: str, occurrence_id: str, now: datetime
) -> GrantRecord:
    """The member's grant for the occurrence: the one already recorded, or a new decision taken
    against the member's and the campaign's limits."""
    stores = tx.stores
    slot = occurrence_slot(campaign.campaign_id, member_id, occurrence_id)
    if (found := stores.grants.get(slot)) is not None:
        return found
    holder = limit_holder(member_id, stores.facts.survivor_of)
    stores.grants.lock_member(campaign.campaign_id, holder)
    # Asked again under the member's lock: a concurrent delivery of the same occurrence that got
    # there first has committed its row by now, and is answered instead of failing on the key.
    if (found := stores.grants.get(slot)) is not None:
        return found
    since = member_window_start(campaign.limits, campaign.start_time, now)
    outcome, limit = Outcome.GRANTED, ""
    cost = campaign.cost
    if stores.grants.count_for(campaign.campaign_id, holder, since) >= campaign.limits.grants_per_member:
        outcome, limit = Outcome.LIMIT_REACHED, "per_member_max"
    else:
        decision = stores.budgets.take(campaign.campaign_id, campaign.limits, cost, now)
        if not decision.granted:
            outcome, limit = Outcome(decision.verdict.value), decision.limit
    record = GrantRecord.decided(
        campaign, member_id, occurrence_id, outcome, holder_id=holder, at=now, limit_name=limit
    )
    stores.grants.add(record)
    return record
