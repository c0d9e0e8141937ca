"""What the use-case tests share: a clock they move, campaigns and members made through the use
cases, and the effects a grant left in the outbox."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from quanyu.db import Database
from quanyu.unit_of_work import InMemoryUnitOfWork
from services.marketing.domain import Campaign, Channel, MemberFacts, OrderFacts
from services.marketing.handlers import CampaignCases, EventIn, EventKind, MessageCases, TriggerCases
from services.marketing.ports import IssuedCoupon
from services.marketing.storage.tables import outbox
from tests.marketing.factory import TIERS, member
from tests.marketing.memory import MemoryStores

# 10:00 in Shanghai: outside quiet hours.
T0 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def running(cases: CampaignCases, draft: Campaign) -> Campaign:
    made = cases.create_campaign(draft)
    return cases.start_campaign(made.campaign_id)


def enrolled(member_id: str, event_id: str = "", **facts: Any) -> EventIn:
    values: MemberFacts = member(member_id=member_id, **facts)
    return EventIn(
        event_id=event_id or f"enrol_{member_id}",
        kind=EventKind.MEMBER_ENROLLED,
        member_id=member_id,
        occur_time=T0,
        customer_id=f"cus_{member_id}",
        facts=values,
        accounts={Channel.APP: f"app_{member_id}"},
    )


def order_completed(member_id: str, event_id: str, total_cents: int = 12000) -> EventIn:
    return EventIn(
        event_id=event_id,
        kind=EventKind.ORDER_COMPLETED,
        member_id=member_id,
        occur_time=T0,
        customer_id=f"cus_{member_id}",
        order_id=f"ord_{event_id}",
        order=OrderFacts(total_cents=total_cents, skus=frozenset({"sku_1"}), store_id="sto_1"),
    )


def make_cases(uow: Any, clock: Clock) -> tuple[CampaignCases, TriggerCases]:
    return CampaignCases(uow, TIERS, clock=clock), TriggerCases(uow, clock=clock)


def effects(database: Database | MemoryStores) -> list[tuple[str, dict[str, Any]]]:
    """(kind, payload) of each effect in the outbox, oldest first."""
    if isinstance(database, MemoryStores):
        return [(kind, payload) for kind, payload, _ in database.outbox.effects]
    with database.snapshot() as connection:
        rows = connection.execute(select(outbox.c.kind, outbox.c.payload).order_by(outbox.c.effect_id))
        return [(row.kind, json.loads(row.payload)) for row in rows]


def coupons_issued(uow: Any) -> int:
    """What the delivery of the outbox's coupons does with membership's answer: each coupon's code
    (made up here, one per effect) filled into its grant's messages; how many messages it freed."""
    source = uow.stores if isinstance(uow, InMemoryUnitOfWork) else uow.database
    issued = [
        IssuedCoupon(payload["grant_key"], payload["request_id"], f"CPN{n:09d}")
        for n, (kind, payload) in enumerate(effects(source))
        if kind == "issue_coupon"
    ]
    return MessageCases(uow, clock=Clock()).coupons_issued(issued)
