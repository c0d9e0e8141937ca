"""The results of a campaign: the members reached against the control group, and what it cost."""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from datetime import timedelta

from quanyu.errors import NotFound
from quanyu.unit_of_work import Transaction, UnitOfWork
from services.marketing.domain import Campaign, Group, Results, results
from services.marketing.domain.results import DEFAULT_CONVERSION_DAYS
from services.marketing.ports import CampaignTotals, Outcome, Reach, Stores

Tx = Transaction[Stores]


@dataclass(frozen=True)
class CampaignResults:
    campaign: Campaign
    members_reached: int
    members_held_out: int
    comparison: Results
    totals: CampaignTotals
    coupons_issued: int = 0
    coupons_redeemed: int = 0


def _group(reaches: list[Reach]) -> Group:
    # The store keeps only the orders within the window of each member's reach, so one order is
    # a conversion, whichever arm the member is in.
    return Group(
        members=len(reaches),
        converted=sum(1 for r in reaches if r.orders),
        revenue_cents=sum(cents for r in reaches for _, cents in r.orders),
    )


@dataclass
class ResultCases:
    uow: UnitOfWork[Stores]
    _: KW_ONLY
    conversion_days: int = DEFAULT_CONVERSION_DAYS

    def campaign_results(self, campaign_id: str) -> CampaignResults:
        """Conversion and revenue of the reached and the held-out, their difference with its 95 %
        interval, and the campaign's spend and why it stopped granting, if it did; read from one
        snapshot, so the arms and the counters agree."""
        window = timedelta(days=self.conversion_days)

        def read(tx: Tx) -> CampaignResults:
            campaign = tx.stores.campaigns.get(campaign_id)
            if campaign is None:
                raise NotFound("campaign", campaign_id)
            reached = _group(tx.stores.grants.reaches(campaign_id, Outcome.GRANTED, window))
            held_out = _group(tx.stores.grants.reaches(campaign_id, Outcome.HELD_OUT, window))
            issued, redeemed = tx.stores.coupons.counts(campaign_id)
            return CampaignResults(
                coupons_issued=issued,
                coupons_redeemed=redeemed,
                campaign=campaign,
                members_reached=reached.members,
                members_held_out=held_out.members,
                comparison=results(reached, held_out),
                totals=tx.stores.budgets.totals(campaign_id),
            )

        return self.uow.read(read)
