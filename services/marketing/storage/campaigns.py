"""Campaigns with every version kept, and the counters their limits are taken from."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, and_, or_, select, true, update
from sqlalchemy.engine import Connection

from quanyu.unit_of_work import ConcurrentChange
from services.marketing.domain import (
    Campaign,
    CampaignState,
    Counters,
    Decision,
    GrantCost,
    Limits,
    TriggerEvent,
    Verdict,
    decide,
)
from services.marketing.ports import CampaignTotals
from services.marketing.storage.codec import dump, load
from services.marketing.storage.tables import campaign_counters, campaign_versions, campaigns


class CampaignRepository:
    def __init__(self, connection: Connection) -> None:
        self._db = connection
        # (state, version) of each campaign as loaded, which a save must still find.
        self._loaded: dict[str, tuple[CampaignState, int]] = {}

    def add(self, campaign: Campaign, now: datetime, *, request_id: str = "", fingerprint: str = "") -> None:
        if campaign.create_time is None:
            campaign.create_time = now
        self._db.execute(
            campaigns.insert().values(
                campaign_id=campaign.campaign_id,
                request_id=request_id or None,
                request_fingerprint=fingerprint,
                create_time=campaign.create_time,
                **self._columns(campaign, now),
            )
        )
        self._add_version(campaign, now)
        self._db.execute(
            campaign_counters.insert().values(
                campaign_id=campaign.campaign_id,
                grants=0,
                points=0,
                coupon_cents=0,
                messages_suppressed=0,
                exhausted_limit="",
            )
        )
        self._loaded[campaign.campaign_id] = (campaign.state, campaign.version)

    def by_request(self, request_id: str) -> tuple[str, str] | None:
        row = self._db.execute(
            select(campaigns.c.campaign_id, campaigns.c.request_fingerprint).where(
                campaigns.c.request_id == request_id
            )
        ).first()
        return (row.campaign_id, row.request_fingerprint) if row else None

    def get(self, campaign_id: str) -> Campaign | None:
        found = self._load(campaigns.c.campaign_id == campaign_id)
        return found[0] if found else None

    def version(self, campaign_id: str, version: int) -> Campaign | None:
        row = self._db.execute(
            select(campaign_versions.c.definition, campaigns.c.state)
            .join(campaigns, campaigns.c.campaign_id == campaign_versions.c.campaign_id)
            .where(campaign_versions.c.campaign_id == campaign_id, campaign_versions.c.version == version)
        ).first()
        return load(campaign_id, version, CampaignState(row.state), row.definition) if row else None

    def save(self, campaign: Campaign, now: datetime) -> None:
        state, version = self._loaded.get(campaign.campaign_id, (campaign.state, campaign.version))
        changed = self._db.execute(
            update(campaigns)
            .where(
                campaigns.c.campaign_id == campaign.campaign_id,
                campaigns.c.state == state.value,
                campaigns.c.version == version,
            )
            .values(**self._columns(campaign, now))
        )
        if changed.rowcount != 1:
            raise ConcurrentChange(f"campaign {campaign.campaign_id}")
        if campaign.version != version:
            self._add_version(campaign, now)
        self._loaded[campaign.campaign_id] = (campaign.state, campaign.version)

    def page(
        self, states: Sequence[CampaignState], after: tuple[datetime, str] | None, limit: int
    ) -> list[Campaign]:
        conditions: list[ColumnElement[bool]] = []
        if states:
            conditions.append(campaigns.c.state.in_([s.value for s in states]))
        if after is not None:
            time, campaign_id = after
            conditions.append(
                or_(
                    campaigns.c.create_time > time,
                    and_(campaigns.c.create_time == time, campaigns.c.campaign_id > campaign_id),
                )
            )
        return self._load(*conditions, limit=limit)

    def running_for(self, event: TriggerEvent) -> list[Campaign]:
        return self._load(
            campaigns.c.state == CampaignState.RUNNING.value, campaigns.c.trigger_event == event.value
        )

    def running_scheduled(self) -> list[Campaign]:
        return self._load(campaigns.c.state == CampaignState.RUNNING.value, campaigns.c.schedule_kind != "")

    def _load(self, *conditions: ColumnElement[bool], limit: int | None = None) -> list[Campaign]:
        query = (
            select(
                campaigns.c.campaign_id,
                campaigns.c.state,
                campaigns.c.version,
                campaign_versions.c.definition,
            )
            .join(
                campaign_versions,
                and_(
                    campaign_versions.c.campaign_id == campaigns.c.campaign_id,
                    campaign_versions.c.version == campaigns.c.version,
                ),
            )
            .where(*conditions)
            .order_by(campaigns.c.create_time, campaigns.c.campaign_id)
        )
        if limit is not None:
            query = query.limit(limit)
        found = []
        for row in self._db.execute(query):
            state = CampaignState(row.state)
            found.append(load(row.campaign_id, row.version, state, row.definition))
            self._loaded[row.campaign_id] = (state, row.version)
        return found

    def _columns(self, campaign: Campaign, now: datetime) -> dict[str, object]:
        trigger = campaign.trigger
        return {
            "name": campaign.name,
            "state": campaign.state.value,
            "version": campaign.version,
            "trigger_event": trigger.event.value if trigger.event is not None else "",
            "schedule_kind": trigger.schedule.kind.value if trigger.schedule is not None else "",
            "priority": campaign.priority,
            "start_time": campaign.start_time,
            "end_time": campaign.end_time,
            "update_time": now,
        }

    def _add_version(self, campaign: Campaign, now: datetime) -> None:
        self._db.execute(
            campaign_versions.insert().values(
                campaign_id=campaign.campaign_id,
                version=campaign.version,
                definition=dump(campaign),
                create_time=now,
            )
        )


class BudgetRepository:
    def __init__(self, connection: Connection) -> None:
        self._db = connection

    def lock_counters(self, campaign_ids: Sequence[str]) -> None:
        # SQLite lets one writer in at a time, which already gives every counter its turn.
        if self._db.dialect.name != "postgresql" or not campaign_ids:
            return
        c = campaign_counters.c
        self._db.execute(
            select(c.campaign_id)
            .where(c.campaign_id.in_(sorted(set(campaign_ids))))
            .order_by(c.campaign_id)
            .with_for_update()
        ).all()

    def take(self, campaign_id: str, limits: Limits, cost: GrantCost, now: datetime) -> Decision:
        c = campaign_counters.c
        # domain.fits, as the update's condition: the database checks and spends in one step, so
        # concurrent grants on every replica are counted against one figure.
        taken = self._db.execute(
            update(campaign_counters)
            .where(
                c.campaign_id == campaign_id,
                _fits(limits.max_grants, c.grants, 1),
                _fits(limits.points_budget, c.points, cost.points),
                _fits(limits.coupon_budget_cents, c.coupon_cents, cost.coupon_cents),
            )
            .values(
                grants=c.grants + 1,
                points=c.points + cost.points,
                coupon_cents=c.coupon_cents + cost.coupon_cents,
            )
        )
        if taken.rowcount == 1:
            return Decision(Verdict.GRANTED)
        totals = self.totals(campaign_id)
        decision = decide(
            limits,
            Counters(grants=totals.grants, points=totals.points, coupon_cents=totals.coupon_cents),
            cost,
        )
        if decision.granted:  # no counters row: the campaign was never stored
            raise LookupError(f"campaign {campaign_id} has no counters")
        self._db.execute(
            update(campaign_counters)
            .where(c.campaign_id == campaign_id, c.exhausted_limit == "")
            .values(exhausted_limit=decision.limit, exhaust_time=now)
        )
        return decision

    def take_up_to(
        self, campaign_id: str, limits: Limits, cost: GrantCost, count: int, now: datetime
    ) -> tuple[int, Decision]:
        if count <= 0:
            return 0, Decision(Verdict.GRANTED)
        if self._take_many(campaign_id, limits, cost, count):
            return count, Decision(Verdict.GRANTED)
        # Near the end of the budget: as many as the counters still allow, read once, then one
        # by one should another replica have spent in between; the first refusal stops it, as
        # every grant of the campaign costs the same.
        totals = self.totals(campaign_id)
        fitting = min(count - 1, _fitting(limits, cost, totals))
        taken = fitting if fitting > 0 and self._take_many(campaign_id, limits, cost, fitting) else 0
        while taken < count:
            decision = self.take(campaign_id, limits, cost, now)
            if not decision.granted:
                return taken, decision
            taken += 1
        return taken, Decision(Verdict.GRANTED)

    def _take_many(self, campaign_id: str, limits: Limits, cost: GrantCost, count: int) -> bool:
        c = campaign_counters.c
        taken = self._db.execute(
            update(campaign_counters)
            .where(
                c.campaign_id == campaign_id,
                _fits(limits.max_grants, c.grants, count),
                _fits(limits.points_budget, c.points, cost.points * count),
                _fits(limits.coupon_budget_cents, c.coupon_cents, cost.coupon_cents * count),
            )
            .values(
                grants=c.grants + count,
                points=c.points + cost.points * count,
                coupon_cents=c.coupon_cents + cost.coupon_cents * count,
            )
        )
        return bool(taken.rowcount == 1)

    def totals(self, campaign_id: str) -> CampaignTotals:
        row = self._db.execute(
            select(campaign_counters).where(campaign_counters.c.campaign_id == campaign_id)
        ).first()
        if row is None:
            return CampaignTotals()
        return CampaignTotals(
            grants=row.grants,
            points=row.points,
            coupon_cents=row.coupon_cents,
            messages_suppressed=row.messages_suppressed,
            exhausted_limit=row.exhausted_limit,
            exhaust_time=row.exhaust_time,
        )

    def count_suppressed(self, campaign_id: str, messages: int) -> None:
        c = campaign_counters.c
        self._db.execute(
            update(campaign_counters)
            .where(c.campaign_id == campaign_id)
            .values(messages_suppressed=c.messages_suppressed + messages)
        )


def _fitting(limits: Limits, cost: GrantCost, totals: CampaignTotals) -> int:
    """How many more grants every cap still allows (domain.fits, solved for the count)."""
    room = [
        (limits.max_grants, totals.grants, 1),
        (limits.points_budget, totals.points, cost.points),
        (limits.coupon_budget_cents, totals.coupon_cents, cost.coupon_cents),
    ]
    return min((max(0, cap - spent) // each for cap, spent, each in room if cap and each), default=2**62)


def _fits(cap: int, spent: ColumnElement[int], cost: int) -> ColumnElement[bool]:
    if cap == 0 or cost == 0:
        return true()
    return spent + cost <= cap
