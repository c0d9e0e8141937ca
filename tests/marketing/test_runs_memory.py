"""A scheduled run over in-memory stores: the page's rules (the control group drawn, each member
decided once per occurrence, the budget taken for the page) shown apart from the database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from quanyu.unit_of_work import InMemoryUnitOfWork
from services.marketing.domain import Limits, ScheduleKind, is_held_out
from services.marketing.ports import Outcome
from tests.marketing.memory import MemoryStores
from tests.marketing.run_support import members, runner, scheduled_campaign, seed
from tests.marketing.use_case_support import Clock, effects

TEN = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)


def test_a_once_run_holds_out_its_control_group_and_grants_the_rest_once() -> None:
    stores = MemoryStores()
    uow = InMemoryUnitOfWork(stores)
    clock = Clock(TEN - timedelta(hours=1))
    live = scheduled_campaign(uow, clock, ScheduleKind.ONCE, holdout_percent=20, start_time=TEN)
    seed(uow, members(45), clock.now)
    clock.now = TEN
    runs = runner(uow, clock, page_size=10)

    made = runs.run_due()
    again = runs.run_due()

    held = {f"mem_{n:05d}" for n in range(45) if is_held_out(live.campaign_id, f"mem_{n:05d}", 20)}
    assert 0 < len(held) < 45
    assert (made, again) == (45, 0)
    assert stores.grants.count(live.campaign_id, Outcome.HELD_OUT) == len(held)
    assert stores.grants.count(live.campaign_id, Outcome.GRANTED) == 45 - len(held)
    coupons = [p["member_id"] for kind, p in effects(stores) if kind == "issue_coupon"]
    assert sorted(coupons) == sorted({f"mem_{n:05d}" for n in range(45)} - held)


def test_a_budget_near_its_end_grants_what_is_left_and_refuses_the_rest() -> None:
    stores = MemoryStores()
    uow = InMemoryUnitOfWork(stores)
    clock = Clock(TEN - timedelta(hours=1))
    # 2000 cents a coupon: room for three.
    live = scheduled_campaign(
        uow, clock, ScheduleKind.DAILY, "10:00", limits=Limits(coupon_budget_cents=7000)
    )
    seed(uow, members(8), clock.now)
    clock.now = TEN

    runner(uow, clock).run_due()

    assert stores.grants.count(live.campaign_id, Outcome.GRANTED) == 3
    assert stores.grants.count(live.campaign_id, Outcome.BUDGET_EXHAUSTED) == 5
    assert stores.budgets.totals(live.campaign_id).exhausted_limit == "coupon_budget_cents"
