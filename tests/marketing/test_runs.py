"""Scheduled runs on the database (SQLite and PostgreSQL): each kind reaches the right members at
their own local time, a run is run once whoever else tries, a run whose holder died is resumed
from its cursor, and the audience, the campaign's state and its budget are asked at the run."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from quanyu.db import Database
from quanyu.unit_of_work import SqlUnitOfWork, Transaction
from services.marketing.domain import Audience, Expiry, Limits, ScheduleKind, occurrence_of_run
from services.marketing.handlers import CampaignCases, ResultCases, TriggerCases
from services.marketing.ports import Outcome
from services.marketing.storage import SqlStores
from tests.marketing.factory import TIERS
from tests.marketing.run_support import (
    Dying,
    Killed,
    Meddled,
    granted,
    members,
    outcomes,
    profile,
    runner,
    scheduled_campaign,
    seed,
)
from tests.marketing.use_case_support import Clock, effects

Uow = SqlUnitOfWork[SqlStores]

# 2026-03-01 10:00 in Shanghai is 08:00 in Ürümqi (two hours behind, no summer time in either).
SHANGHAI_TEN = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
URUMQI_TEN = SHANGHAI_TEN + timedelta(hours=2)


def test_a_daily_run_reaches_each_member_at_ten_in_their_own_zone(uow: Uow, database: Database) -> None:
    clock = Clock(SHANGHAI_TEN - timedelta(hours=3))
    live = scheduled_campaign(uow, clock, ScheduleKind.DAILY, "10:00")
    seed(
        uow,
        [
            profile("mem_sh"),
            profile("mem_ur", time_zone="Asia/Urumqi"),
            # No zone on the profile: the home store's, as fulfilment keeps it.
            profile("mem_west", home_store_id="sto_kashgar"),
        ],
        clock.now,
    )
    stores = {"sto_kashgar": "Asia/Urumqi"}
    runs = runner(uow, clock, store_zone=lambda s: stores.get(s, ""), store_zones=stores.values)

    clock.now = SHANGHAI_TEN - timedelta(minutes=1)
    assert runs.run_due() == 0
    clock.now = SHANGHAI_TEN
    runs.run_due()
    assert granted(database, live.campaign_id) == {"mem_sh"}

    clock.now = URUMQI_TEN - timedelta(minutes=1)
    assert runs.run_due() == 0
    clock.now = URUMQI_TEN
    runs.run_due()
    assert granted(database, live.campaign_id) == {"mem_sh", "mem_ur", "mem_west"}
    # One occurrence for the day whatever the zone: each member decided once.
    assert all(sum(seen.values()) == 1 for seen in outcomes(database, live.campaign_id).values())
    assert runs.due_runs() == []


def test_a_birthday_is_the_members_own_local_date(uow: Uow, database: Database) -> None:
    # 17:00 UTC on 1 March: already 2 March (01:00) in Shanghai, still 1 March (23:00) in Ürümqi.
    clock = Clock(datetime(2026, 3, 1, 16, 0, tzinfo=UTC))
    live = scheduled_campaign(uow, clock, ScheduleKind.BIRTHDAY, "00:30")
    seed(
        uow,
        [
            profile("mem_sh_0302", birthday="03-02"),
            profile("mem_ur_0301", birthday="03-01", time_zone="Asia/Urumqi"),
            profile("mem_ur_0302", birthday="03-02", time_zone="Asia/Urumqi"),
            profile("mem_sh_none"),
        ],
        clock.now,
    )
    clock.now = datetime(2026, 3, 1, 17, 0, tzinfo=UTC)

    runner(uow, clock).run_due()

    assert granted(database, live.campaign_id) == {"mem_sh_0302", "mem_ur_0301"}


def test_inactive_and_expiring_runs_pick_by_the_members_facts(uow: Uow, database: Database) -> None:
    clock = Clock(SHANGHAI_TEN - timedelta(hours=1))
    inactive = scheduled_campaign(uow, clock, ScheduleKind.INACTIVE_DAYS, "10:00", days=30)
    expiring = scheduled_campaign(uow, clock, ScheduleKind.POINTS_EXPIRING, "10:00", days=7)
    seed(
        uow,
        [
            profile("mem_lapsed", last_order_time=SHANGHAI_TEN - timedelta(days=30)),
            profile("mem_recent", last_order_time=SHANGHAI_TEN - timedelta(days=29)),
            profile("mem_never"),
        ],
        clock.now,
    )

    def expiries(tx: Transaction[SqlStores]) -> None:
        facts = tx.stores.facts
        facts.set_expiries("mem_recent", [Expiry(300, SHANGHAI_TEN + timedelta(days=3))])
        facts.set_expiries("mem_never", [Expiry(300, SHANGHAI_TEN + timedelta(days=10))])

    uow.run(expiries)
    clock.now = SHANGHAI_TEN

    runner(uow, clock).run_due()

    assert granted(database, inactive.campaign_id) == {"mem_lapsed"}
    assert granted(database, expiring.campaign_id) == {"mem_recent"}


def test_two_replicas_at_once_run_a_run_once(replicas: list[Uow], database: Database) -> None:
    clock = Clock(SHANGHAI_TEN - timedelta(hours=1))
    live = scheduled_campaign(replicas[0], clock, ScheduleKind.ONCE, start_time=SHANGHAI_TEN)
    seed(replicas[0], members(300), clock.now)
    clock.now = SHANGHAI_TEN
    runners = [runner(u, clock, f"replica-{n}", page_size=25) for n, u in enumerate(replicas)]
    made: list[int] = []
    barrier = threading.Barrier(2)

    def run(n: int) -> None:
        barrier.wait()
        made.append(runners[n].run_due())

    threads = [threading.Thread(target=run, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sum(made) == 300
    assert len(granted(database, live.campaign_id)) == 300
    assert len([kind for kind, _ in effects(database) if kind == "issue_coupon"]) == 300


def test_a_run_whose_replica_died_is_resumed_from_its_cursor(uow: Uow, database: Database) -> None:
    clock = Clock(SHANGHAI_TEN - timedelta(hours=1))
    live = scheduled_campaign(uow, clock, ScheduleKind.DAILY, "10:00")
    seed(uow, members(35), clock.now)
    clock.now = SHANGHAI_TEN
    lease = timedelta(minutes=2)
    # The claim, then two pages of ten committed; the replica dies on its way to the third.
    dying = runner(Dying(uow, commits=3), clock, "replica-a", page_size=10, lease=lease)
    with pytest.raises(Killed):
        dying.run_due()
    assert len(granted(database, live.campaign_id)) == 20

    other = runner(uow, clock, "replica-b", page_size=10, lease=lease)
    clock.now += lease - timedelta(seconds=1)
    assert other.run_due() == 0  # the dead replica's lease still holds

    clock.now += timedelta(seconds=1)
    assert other.run_due() == 15

    seen = outcomes(database, live.campaign_id)
    assert sorted(seen) == [f"mem_{n:05d}" for n in range(35)]
    assert all(s == Counter({Outcome.GRANTED: 1}) for s in seen.values())
    claim = uow.read(lambda tx: tx.stores.runs.get(live.campaign_id, "2026-03-01@Asia/Shanghai"))
    assert claim is not None
    assert (claim.done, claim.claimed_by, claim.attempts, claim.cursor) == (True, "replica-b", 2, "mem_00034")


def test_a_daily_run_does_not_reach_again_those_already_reached(uow: Uow, database: Database) -> None:
    clock = Clock(SHANGHAI_TEN - timedelta(hours=1))
    live = scheduled_campaign(uow, clock, ScheduleKind.DAILY, "10:00")
    seed(uow, [profile("mem_a"), profile("mem_b")], clock.now)
    clock.now = SHANGHAI_TEN
    runs = runner(uow, clock)
    runs.run_due()
    runs.run_due()  # again the same day: the run is done

    seed(uow, [profile("mem_c")], clock.now)
    clock.now += timedelta(days=1)
    runs.run_due()

    seen = outcomes(database, live.campaign_id)
    # Passed over on day two, not recorded again as refused: a daily campaign over a million
    # members would otherwise write a million refusals a day.
    assert seen["mem_a"] == seen["mem_b"] == Counter({Outcome.GRANTED: 1})
    assert seen["mem_c"] == Counter({Outcome.GRANTED: 1})
    assert len([kind for kind, _ in effects(database) if kind == "issue_coupon"]) == 3
    day_two = occurrence_of_run(live.campaign_id, ScheduleKind.DAILY, (clock.now + timedelta(hours=8)).date())
    assert day_two.endswith("2026-03-02")


def test_the_audience_is_asked_at_the_run(uow: Uow, database: Database) -> None:
    clock = Clock(SHANGHAI_TEN - timedelta(hours=1))
    live = scheduled_campaign(uow, clock, ScheduleKind.ONCE, audience=Audience(tiers=("GOLD",)))
    seed(uow, [profile("mem_stays"), profile("mem_leaves")], clock.now)
    # The member moved down a tier after the campaign started, before its run.
    seed(uow, [profile("mem_leaves", tier="SILVER")], clock.now)
    clock.now = SHANGHAI_TEN

    runner(uow, clock).run_due()

    assert set(outcomes(database, live.campaign_id)) == {"mem_stays"}


@pytest.mark.parametrize("stop", ["pause_campaign", "end_campaign"])
def test_a_paused_or_ended_campaign_does_not_run(uow: Uow, database: Database, stop: str) -> None:
    clock = Clock(SHANGHAI_TEN - timedelta(hours=1))
    live = scheduled_campaign(uow, clock, ScheduleKind.DAILY, "10:00")
    seed(uow, members(5), clock.now)
    getattr(CampaignCases(uow, TIERS, clock=clock), stop)(live.campaign_id)
    clock.now = SHANGHAI_TEN

    runs = runner(uow, clock)
    assert (runs.due_runs(), runs.run_due()) == ([], 0)
    assert outcomes(database, live.campaign_id) == {}


def test_a_run_stops_when_the_budget_runs_out_and_the_results_say_so(uow: Uow, database: Database) -> None:
    clock = Clock(SHANGHAI_TEN - timedelta(hours=1))
    live = scheduled_campaign(uow, clock, ScheduleKind.ONCE, limits=Limits(max_grants=25))
    seed(uow, members(40), clock.now)
    clock.now = SHANGHAI_TEN

    result = runner(uow, clock, page_size=10).run(runner(uow, clock).due_runs()[0])

    assert result.finished
    assert result.decisions == Counter({Outcome.GRANTED: 25, Outcome.BUDGET_EXHAUSTED: 5})
    # The members after the page the budget ran out in were never decided for.
    assert len(outcomes(database, live.campaign_id)) == 30
    totals = ResultCases(uow).campaign_results(live.campaign_id).totals
    assert (totals.grants, totals.exhausted_limit, totals.exhaust_time) == (25, "max_grants", SHANGHAI_TEN)


def test_a_page_and_events_for_its_members_count_each_grant_once(
    replicas: list[Uow], database: Database
) -> None:
    clock = Clock(SHANGHAI_TEN - timedelta(hours=1))
    live = scheduled_campaign(replicas[0], clock, ScheduleKind.DAILY, "10:00", limits=Limits(max_grants=90))
    seed(replicas[0], members(120), clock.now)
    clock.now = SHANGHAI_TEN
    runs = runner(replicas[0], clock, page_size=20)
    triggers = TriggerCases(replicas[1], clock=clock)
    barrier = threading.Barrier(2)
    failures: list[BaseException] = []

    def run() -> None:
        barrier.wait()
        runs.run_due()

    def trigger() -> None:
        barrier.wait()
        # From the other end, so the events cross the run's pages.
        for n in reversed(range(120)):
            triggers.trigger(live.campaign_id, f"mem_{n:05d}", f"event:evt_{n}")

    def guarded(job: Callable[[], None]) -> Callable[[], None]:
        def go() -> None:
            try:
                job()
            except BaseException as error:  # surfaced below, with the thread's own traceback
                failures.append(error)

        return go

    threads = [threading.Thread(target=guarded(job)) for job in (run, trigger)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert failures == []
    seen = outcomes(database, live.campaign_id)
    # Once per member across the run's occurrence and the event's, and the budget's figure is
    # the grants actually recorded.
    assert all(s[Outcome.GRANTED] <= 1 for s in seen.values())
    assert sum(s[Outcome.GRANTED] for s in seen.values()) == 90
    assert ResultCases(replicas[0]).campaign_results(live.campaign_id).totals.grants == 90
    assert len([kind for kind, _ in effects(database) if kind == "issue_coupon"]) == 90


def test_what_changes_between_a_page_read_and_its_write_is_asked_again(uow: Uow, database: Database) -> None:
    clock = Clock(SHANGHAI_TEN - timedelta(hours=1))
    live = scheduled_campaign(
        uow, clock, ScheduleKind.ONCE, start_time=SHANGHAI_TEN, limits=Limits(max_grants=8)
    )
    seed(uow, members(10), clock.now)
    clock.now = SHANGHAI_TEN
    due = runner(uow, clock).due_runs()[0]
    triggers = TriggerCases(uow, clock=clock)

    def meddle() -> None:
        # Once the page is read: an event takes mem_00002's own slot in this run, and events on
        # occurrences of their own grant four others their one grant each, spending the budget
        # the page counted on (a second after the start, which the per-member count begins after).
        clock.now += timedelta(seconds=1)
        triggers.trigger(live.campaign_id, "mem_00002", due.occurrence_id)
        for n in (5, 7, 8, 9):
            triggers.trigger(live.campaign_id, f"mem_{n:05d}", f"event:evt_{n}")

    meddled = Meddled(uow, meddle)
    result = runner(meddled, clock, page_size=20).run(due)

    assert meddled.meddled
    assert result.finished
    seen = outcomes(database, live.campaign_id)
    # mem_00002 decided once, by the event; the four the events granted refused by their limit;
    # of the 8 grants the events left 3 for the page, taken in member id order, the rest refused.
    assert seen["mem_00002"] == Counter({Outcome.GRANTED: 1})
    assert result.decisions == Counter(
        {Outcome.GRANTED: 3, Outcome.LIMIT_REACHED: 4, Outcome.BUDGET_EXHAUSTED: 2}
    )
    assert sorted(m for m, s in seen.items() if s[Outcome.GRANTED]) == [
        f"mem_{n:05d}" for n in (0, 1, 2, 3, 5, 7, 8, 9)
    ]
    assert sorted(m for m, s in seen.items() if s[Outcome.BUDGET_EXHAUSTED]) == ["mem_00004", "mem_00006"]
    assert ResultCases(uow).campaign_results(live.campaign_id).totals.grants == 8
    assert len([kind for kind, _ in effects(database) if kind == "issue_coupon"]) == 8


@pytest.mark.parametrize("meddling", ["paused", "taken_over"])
def test_a_page_read_is_not_written_once_the_campaign_paused_or_the_run_was_taken_over(
    uow: Uow, database: Database, meddling: str
) -> None:
    clock = Clock(SHANGHAI_TEN - timedelta(hours=1))
    live = scheduled_campaign(uow, clock, ScheduleKind.ONCE, start_time=SHANGHAI_TEN)
    seed(uow, members(30), clock.now)
    clock.now = SHANGHAI_TEN
    lease = timedelta(minutes=2)
    due = runner(uow, clock).due_runs()[0]
    campaigns = CampaignCases(uow, TIERS, clock=clock)
    other = runner(uow, clock, "replica-b", page_size=10, lease=lease)

    def meddle() -> None:
        if meddling == "paused":
            campaigns.pause_campaign(live.campaign_id)
        else:
            # The first replica stalled past its lease; the other takes the run over and ends it.
            clock.now += lease
            assert other.run(due).finished

    result = runner(Meddled(uow, meddle), clock, page_size=10, lease=lease).run(due)

    assert result.decisions == Counter()
    assert not result.finished
    if meddling == "paused":
        assert outcomes(database, live.campaign_id) == {}
        campaigns.start_campaign(live.campaign_id)
        clock.now += lease  # the first replica's claim lapses, never renewed by a page
        assert other.run(due).finished
    seen = outcomes(database, live.campaign_id)
    assert sorted(seen) == [f"mem_{n:05d}" for n in range(30)]
    assert all(s == Counter({Outcome.GRANTED: 1}) for s in seen.values())


def test_a_run_that_fails_holds_back_neither_the_others_nor_its_own_next_pass(
    uow: Uow, database: Database
) -> None:
    clock = Clock(SHANGHAI_TEN - timedelta(hours=1))
    daily = scheduled_campaign(uow, clock, ScheduleKind.DAILY, "10:00")
    once = scheduled_campaign(uow, clock, ScheduleKind.ONCE, start_time=SHANGHAI_TEN)
    seed(uow, members(3, home_store_id="sto_new"), clock.now)
    clock.now = SHANGHAI_TEN
    broken = {"on": True}

    def store_zone(store_id: str) -> str:
        # The zone lookup fails while it is broken; only the daily run asks it, per member.
        if broken["on"]:
            raise RuntimeError("zone lookup failed")
        return ""

    runs = runner(uow, clock, store_zone=store_zone)
    assert runs.run_due() == 3
    assert (granted(database, daily.campaign_id), len(granted(database, once.campaign_id))) == (set(), 3)

    broken["on"] = False
    assert runs.run_due() == 3
    assert len(granted(database, daily.campaign_id)) == 3
