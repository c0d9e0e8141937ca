"""Use cases of campaigns: creating one per request id, reading and listing them, changing a draft
or a paused one, and moving it through its life."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Collection, Sequence
from dataclasses import KW_ONLY, dataclass
from datetime import datetime

from quanyu.audit_record import Actor
from quanyu.errors import InvalidArgument, NotFound
from quanyu.ids import new_id
from quanyu.paging import page_size
from quanyu.unit_of_work import Clock, Transaction, UnitOfWork
from services.marketing.domain import Campaign, CampaignState, validate_campaign
from services.marketing.ports import Stores

Tx = Transaction[Stores]

# A campaign's life is a privileged action: each move is kept on the audit trail with the move.
CAMPAIGN_STARTED = "CAMPAIGN_STARTED"
CAMPAIGN_PAUSED = "CAMPAIGN_PAUSED"
CAMPAIGN_ENDED = "CAMPAIGN_ENDED"
_UNNAMED = Actor("unnamed", "")


def _fingerprint(campaign: Campaign) -> str:
    """What a CreateCampaign request asked for, so a retry of it is told apart from another
    campaign sent under the same request id."""
    asked = dataclasses.replace(campaign, campaign_id="", create_time=None)
    # A campaign's repr is made of values only (tuples, enums, numbers, times): stable across runs.
    return hashlib.sha256(repr(asked).encode()).hexdigest()


def _existing(stores: Stores, campaign_id: str) -> Campaign:
    found = stores.campaigns.get(campaign_id)
    if found is None:
        raise NotFound("campaign", campaign_id)
    return found


@dataclass
class CampaignCases:
    uow: UnitOfWork[Stores]
    # The programme's tiers, which an audience may name; membership owns them.
    known_tiers: Collection[str]
    _: KW_ONLY
    clock: Clock

    def create_campaign(self, campaign: Campaign, request_id: str = "") -> Campaign:
        """A new draft, checked whole. The same request id answers the campaign it made, however
        often it is sent; sent with another campaign it is refused."""
        draft = dataclasses.replace(campaign, version=1, state=CampaignState.DRAFT, create_time=None)
        validate_campaign(draft, known_tiers=self.known_tiers)
        fingerprint = _fingerprint(draft)

        def work(tx: Tx) -> Campaign:
            if request_id and (done := tx.stores.campaigns.by_request(request_id)) is not None:
                campaign_id, made_from = done
                if made_from != fingerprint:
                    raise InvalidArgument(
                        "request_id", "was used for a different campaign", reason="REQUEST_ID_REUSED"
                    )
                return _existing(tx.stores, campaign_id)
            # A fresh object per attempt: a retried transaction must not see the last one's id.
            made = dataclasses.replace(draft, campaign_id=new_id("cmp"))
            tx.stores.campaigns.add(made, self.clock(), request_id=request_id, fingerprint=fingerprint)
            return made

        return self.uow.run(work)

    def get_campaign(self, campaign_id: str) -> Campaign:
        return self.uow.read(lambda tx: _existing(tx.stores, campaign_id))

    def list_campaigns(
        self,
        states: Sequence[CampaignState] = (),
        requested: int = 0,
        after: tuple[datetime, str] | None = None,
    ) -> tuple[list[Campaign], tuple[datetime, str] | None]:
        """Oldest first, in the given states (every state for none): a page, and where the next
        starts (None after the last)."""
        size = page_size(requested)
        wanted = tuple(states) or tuple(s for s in CampaignState if s is not CampaignState.UNSPECIFIED)
        found = self.uow.read(lambda tx: tx.stores.campaigns.page(wanted, after, size + 1))
        page = found[:size]
        if len(found) <= size:
            return page, None
        last = page[-1]
        assert last.create_time is not None
        return page, (last.create_time, last.campaign_id)

    def update_campaign(self, campaign_id: str, changes: Campaign, paths: Sequence[str]) -> Campaign:
        """The named fields changed on a draft or a paused campaign, as a new version; the grants
        made under the old one keep recording it."""
        return self._change(campaign_id, lambda c: c.update(changes, paths, known_tiers=self.known_tiers))

    def start_campaign(self, campaign_id: str, actor: Actor = _UNNAMED) -> Campaign:
        return self._change(campaign_id, Campaign.start, actor, CAMPAIGN_STARTED)

    def pause_campaign(self, campaign_id: str, actor: Actor = _UNNAMED) -> Campaign:
        return self._change(campaign_id, Campaign.pause, actor, CAMPAIGN_PAUSED)

    def end_campaign(self, campaign_id: str, actor: Actor = _UNNAMED) -> Campaign:
        return self._change(campaign_id, Campaign.end, actor, CAMPAIGN_ENDED)

    def _change(
        self,
        campaign_id: str,
        change: Callable[[Campaign], None],
        actor: Actor | None = None,
        action: str = "",
    ) -> Campaign:
        """Apply `change` and save; with an `actor`, the move is kept on the audit trail as
        `action`, in the same transaction."""

        def work(tx: Tx) -> Campaign:
            campaign = _existing(tx.stores, campaign_id)
            change(campaign)
            now = self.clock()
            # Saved only if nobody moved it meanwhile; otherwise the whole change runs again.
            tx.stores.campaigns.save(campaign, now)
            if actor is not None:
                tx.stores.audit.add(actor.did(action, f"campaign:{campaign_id}", now))
            return campaign

        return self.uow.run(work)
