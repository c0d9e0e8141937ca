"""Limits and budgets hold under concurrency: many transactions on their own connections and
threads race for a campaign's grants, and the database lets exactly as many through as the caps
allow, on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime

from quanyu.unit_of_work import SqlUnitOfWork
from services.marketing.domain import Action, Limits, occurrence_of_event
from services.marketing.ports import GrantRecord, Outcome
from services.marketing.storage import SqlStores
from tests.marketing.factory import campaign, coupon
from tests.marketing.storage_support import decide_grant

NOW = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
TRIGGERS = 50


def race(
    replicas: list[SqlUnitOfWork[SqlStores]], limits: Limits, actions: tuple[Action, ...]
) -> list[GrantRecord]:
    """TRIGGERS members, each with an event of their own, decided at once on as many threads,
    shared between the replicas."""
    uow = replicas[0]
    live = campaign(limits=limits, actions=actions, holdout_percent=0)
    uow.run(lambda tx: tx.stores.campaigns.add(live, NOW))
    gate = threading.Barrier(TRIGGERS)
    decided: list[GrantRecord] = []
    failures: list[BaseException] = []

    def trigger(n: int) -> None:
        try:
            gate.wait()
            record = replicas[n % len(replicas)].run(
                lambda tx: decide_grant(tx, live, f"mem_{n:02d}", occurrence_of_event(f"evt_{n}"), NOW)
            )
            decided.append(record)
        except BaseException as error:  # a thread's failure is reported by the test
            failures.append(error)

    threads = [threading.Thread(target=trigger, args=(n,)) for n in range(TRIGGERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert len(decided) == TRIGGERS
    return decided


def outcomes(decided: list[GrantRecord]) -> Counter[tuple[Outcome, str]]:
    return Counter((record.outcome, record.limit_name) for record in decided)


def test_fifty_concurrent_triggers_against_max_grants_ten_grant_exactly_ten(
    uow: SqlUnitOfWork[SqlStores], replicas: list[SqlUnitOfWork[SqlStores]]
) -> None:
    decided = race(replicas, Limits(max_grants=10), (Action(grant_points=5),))

    assert outcomes(decided) == {
        (Outcome.GRANTED, ""): 10,
        (Outcome.BUDGET_EXHAUSTED, "max_grants"): 40,
    }
    totals = uow.read(lambda tx: tx.stores.budgets.totals("cmp_1"))
    assert (totals.grants, totals.points, totals.exhausted_limit) == (10, 50, "max_grants")
    assert uow.read(lambda tx: tx.stores.grants.count("cmp_1", Outcome.GRANTED)) == 10


def test_a_points_budget_is_never_overspent(
    uow: SqlUnitOfWork[SqlStores], replicas: list[SqlUnitOfWork[SqlStores]]
) -> None:
    # 70 points buys seven grants of 10 points, whichever seven win.
    decided = race(replicas, Limits(points_budget=70), (Action(grant_points=10),))

    assert outcomes(decided) == {
        (Outcome.GRANTED, ""): 7,
        (Outcome.BUDGET_EXHAUSTED, "points_budget"): 43,
    }
    assert uow.read(lambda tx: tx.stores.budgets.totals("cmp_1")).points == 70


def test_a_coupon_budget_is_never_overspent(
    uow: SqlUnitOfWork[SqlStores], replicas: list[SqlUnitOfWork[SqlStores]]
) -> None:
    # 25,000 cents of coupons at 2,000 each is twelve coupons, with 1,000 left that buys none.
    decided = race(replicas, Limits(coupon_budget_cents=25_000), (coupon(discount_cents=2_000),))

    assert outcomes(decided) == {
        (Outcome.GRANTED, ""): 12,
        (Outcome.BUDGET_EXHAUSTED, "coupon_budget_cents"): 38,
    }
    assert uow.read(lambda tx: tx.stores.budgets.totals("cmp_1")).coupon_cents == 24_000


def test_one_member_triggered_fifty_times_at_once_is_granted_their_share_only(
    uow: SqlUnitOfWork[SqlStores], replicas: list[SqlUnitOfWork[SqlStores]]
) -> None:
    live = campaign(limits=Limits(per_member_max=2), actions=(Action(grant_points=1),), holdout_percent=0)
    uow.run(lambda tx: tx.stores.campaigns.add(live, NOW))
    gate = threading.Barrier(TRIGGERS)
    decided: list[GrantRecord] = []

    def trigger(n: int) -> None:
        gate.wait()
        replica = replicas[n % len(replicas)]
        decided.append(
            replica.run(lambda tx: decide_grant(tx, live, "mem_1", occurrence_of_event(f"evt_{n}"), NOW))
        )

    threads = [threading.Thread(target=trigger, args=(n,)) for n in range(TRIGGERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert outcomes(decided) == {(Outcome.GRANTED, ""): 2, (Outcome.LIMIT_REACHED, "per_member_max"): 48}
    assert uow.read(lambda tx: tx.stores.budgets.totals("cmp_1")).grants == 2


def test_one_occurrence_delivered_at_once_by_many_gives_one_grant(
    uow: SqlUnitOfWork[SqlStores], replicas: list[SqlUnitOfWork[SqlStores]]
) -> None:
    live = campaign(limits=Limits(per_member_max=5), actions=(Action(grant_points=1),), holdout_percent=0)
    uow.run(lambda tx: tx.stores.campaigns.add(live, NOW))
    gate = threading.Barrier(20)
    decided: list[GrantRecord] = []

    def trigger(n: int) -> None:
        gate.wait()
        replica = replicas[n % len(replicas)]
        decided.append(
            replica.run(lambda tx: decide_grant(tx, live, "mem_1", occurrence_of_event("evt_1"), NOW))
        )

    threads = [threading.Thread(target=trigger, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert {record.grant_key for record in decided} == {decided[0].grant_key}
    assert uow.read(lambda tx: tx.stores.budgets.totals("cmp_1")).grants == 1
    assert len(uow.read(lambda tx: tx.stores.grants.of_member("cmp_1", "mem_1"))) == 1
