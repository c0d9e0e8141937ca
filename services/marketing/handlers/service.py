"""Marketing as its transport sees it: every use case in one place, with what the callers' roles
add to them (a channel sets consent only for a customer holding an account on it, a store reads
only its own store's campaigns), the campaign list's page tokens, and the relay woken once a grant
has left effects for membership."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field
from datetime import datetime

from quanyu.errors import NotFound
from quanyu.paging import PageTokens
from services.marketing.domain import Campaign, CampaignState, Channel
from services.marketing.handlers.campaigns import CampaignCases
from services.marketing.handlers.insight import InsightCases
from services.marketing.handlers.messages import MessageCases
from services.marketing.handlers.results import CampaignResults, ResultCases
from services.marketing.handlers.triggers import EventIn, Ingested, TriggerCases
from services.marketing.ports import MessageStatus


def _nothing() -> None:
    return None


@dataclass
class MarketingService:
    campaigns: CampaignCases
    triggers: TriggerCases
    messages: MessageCases
    results: ResultCases
    insight: InsightCases
    page_tokens: PageTokens
    _: KW_ONLY
    # Called once events have granted: the outbox relay delivers at once rather than at its poll.
    wake: Callable[[], None] = _nothing
    close: Callable[[], None] = field(default=_nothing)

    def list_campaigns(
        self, states: Sequence[CampaignState], requested: int, token: str, caller: str
    ) -> tuple[list[Campaign], str]:
        """A page of campaigns and the token of the next ("" after the last), the token bound to
        the states asked for and to the caller."""
        query = {"states": sorted(s.value for s in states)}
        position = self.page_tokens.decode(token, query=query, caller=caller)
        after = (datetime.fromisoformat(position["t"]), str(position["id"])) if position else None
        page, following = self.campaigns.list_campaigns(states, requested, after)
        if following is None:
            return page, ""
        at, campaign_id = following
        return page, self.page_tokens.encode(
            {"t": at.isoformat(), "id": campaign_id}, query=query, caller=caller
        )

    def store_results(self, campaign_id: str, store_id: str) -> CampaignResults:
        """The results of a campaign whose audience is the store's own customers alone; any other
        campaign is answered as not found, so a store learns nothing of the chain's others."""
        found = self.results.campaign_results(campaign_id)
        if found.campaign.audience.home_store_ids != (store_id,):
            raise NotFound("campaign", campaign_id)
        return found

    def messages_sent(self, campaign_id: str) -> int:
        """Messages of the campaign its channels acknowledged."""
        return self.messages.uow.read(
            lambda tx: tx.stores.messages.count(campaign_id, MessageStatus.DELIVERED)
        )

    def set_consent(self, customer_id: str, channel: Channel, consent: bool, *, on_own_channel: bool) -> None:
        """The customer's answer on the channel; a channel backend (`on_own_channel`) may give it
        only for a customer identity has linked an account of its channel to."""
        if on_own_channel:
            accounts = self.messages.uow.read(lambda tx: tx.stores.facts.accounts_of(customer_id))
            # Accounts are never unlinked, so one seen here still holds when the answer is saved.
            if channel not in accounts:
                raise NotFound("customer", customer_id)
        self.messages.set_contact_preferences(customer_id, {channel: consent})

    def ingest(self, events: Sequence[EventIn]) -> Ingested:
        done = self.triggers.ingest(events)
        if done.grants:
            self.wake()
        return done
