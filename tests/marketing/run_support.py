"""What the scheduled runs' tests share: members seeded as profiles, runners on a clock the test
moves, and what the grants table holds per member."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import select

from quanyu.db import Database
from quanyu.unit_of_work import Transaction, UnitOfWork
from services.marketing.domain import Campaign, Channel, Limits, ScheduleKind
from services.marketing.handlers import CampaignCases, RunCases
from services.marketing.ports import Outcome, Profile, Stores
from services.marketing.storage.tables import grants
from tests.marketing.factory import TIERS, coupon, member, scheduled
from tests.marketing.use_case_support import Clock, running

T = TypeVar("T")


def profile(member_id: str, **facts: Any) -> Profile:
    last_order = facts.pop("last_order_time", None)
    return Profile(
        facts=member(member_id=member_id, **facts),
        customer_id=f"cus_{member_id}",
        accounts={Channel.APP: f"app_{member_id}"},
        last_order_time=last_order,
    )


def seed(uow: UnitOfWork[Stores], profiles: list[Profile], now: datetime) -> None:
    def work(tx: Transaction[Stores]) -> None:
        for p in profiles:
            tx.stores.facts.put_profile(p, now)

    uow.run(work)


def members(count: int, **facts: Any) -> list[Profile]:
    return [profile(f"mem_{n:05d}", **facts) for n in range(count)]


def scheduled_campaign(
    uow: UnitOfWork[Stores],
    clock: Clock,
    kind: ScheduleKind,
    local_time: str = "10:00",
    days: int = 0,
    **changes: Any,
) -> Campaign:
    values: dict[str, Any] = {"holdout_percent": 0, "actions": (coupon(),), "limits": Limits()}
    values.update(changes)
    return running(CampaignCases(uow, TIERS, clock=clock), scheduled(kind, local_time, days, **values))


def runner(uow: UnitOfWork[Stores], clock: Clock, name: str = "replica-a", **options: Any) -> RunCases:
    return RunCases(uow, clock=clock, runner=name, **options)


def outcomes(database: Database, campaign_id: str) -> dict[str, Counter[Outcome]]:
    """Each member's decisions in the campaign, counted by outcome."""
    found: dict[str, Counter[Outcome]] = {}
    with database.snapshot() as connection:
        rows = connection.execute(
            select(grants.c.member_id, grants.c.outcome).where(grants.c.campaign_id == campaign_id)
        )
        for row in rows:
            found.setdefault(row.member_id, Counter())[Outcome(row.outcome)] += 1
    return found


def granted(database: Database, campaign_id: str) -> set[str]:
    return {m for m, seen in outcomes(database, campaign_id).items() if seen[Outcome.GRANTED]}


class Dying:
    """A unit of work whose process dies once `commits` transactions have committed: the use case
    raises as a killed replica stops, its last page committed and nothing after."""

    def __init__(self, inner: UnitOfWork[Stores], commits: int) -> None:
        self._inner, self._left = inner, commits

    def run(self, work: Callable[[Transaction[Stores]], T]) -> T:
        result = self._inner.run(work)
        self._left -= 1
        if self._left == 0:
            raise Killed
        return result

    def read(self, work: Callable[[Transaction[Stores]], T]) -> T:
        return self._inner.read(work)


class Meddled:
    """A unit of work that lets `meddle` change the world once, right after the first read: between
    a page decided in its read transaction and that page's write."""

    def __init__(self, inner: UnitOfWork[Stores], meddle: Callable[[], None]) -> None:
        self._inner, self._meddle = inner, meddle
        self.meddled = False

    def run(self, work: Callable[[Transaction[Stores]], T]) -> T:
        return self._inner.run(work)

    def read(self, work: Callable[[Transaction[Stores]], T]) -> T:
        result = self._inner.read(work)
        if not self.meddled:
            self.meddled = True
            self._meddle()
        return result


class Killed(BaseException):
    """The process ending under the run (a BaseException, as SystemExit is: nothing catches it)."""
