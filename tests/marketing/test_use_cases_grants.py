"""Grants through the use cases on the database (SQLite and PostgreSQL): an event acts once
however often it arrives, the control group gets nothing but is recorded, the audience is asked
at the moment of the trigger, budgets hold under concurrency, and the effects carry the keys
membership deduplicates by."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY

from quanyu.db import Database
from quanyu.unit_of_work import SqlUnitOfWork
from services.marketing.domain import (
    Action,
    ActionKind,
    Audience,
    Campaign,
    Channel,
    Limits,
    Trigger,
    TriggerEvent,
    action_key,
    is_held_out,
    occurrence_of_event,
)
from services.marketing.handlers import EventIn, EventKind
from services.marketing.ports import GrantRecord, Message, MessageStatus, Outcome
from services.marketing.storage import SqlStores
from tests.marketing.factory import campaign, coupon, message
from tests.marketing.use_case_support import (
    T0,
    Clock,
    coupons_issued,
    effects,
    enrolled,
    make_cases,
    order_completed,
    running,
)

Uow = SqlUnitOfWork[SqlStores]


def held_out_member(campaign_id: str, percent: int, *, held: bool) -> str:
    return next(f"mem_{n}" for n in range(1000) if is_held_out(campaign_id, f"mem_{n}", percent) is held)


def test_a_replayed_event_grants_once(uow: Uow, database: Database) -> None:
    campaigns, triggers = make_cases(uow, Clock())
    live = running(campaigns, campaign(holdout_percent=0, actions=(coupon(), Action(grant_points=50))))
    triggers.ingest([enrolled("mem_1")])

    first = triggers.ingest([order_completed("mem_1", "evt_1")])
    again = triggers.ingest([order_completed("mem_1", "evt_1"), order_completed("mem_1", "evt_1")])

    assert [g.outcome for g in first.grants] == [Outcome.GRANTED]
    assert (again.accepted, again.duplicates, again.grants) == (0, 2, ())
    assert uow.read(lambda tx: tx.stores.grants.count(live.campaign_id, Outcome.GRANTED)) == 1
    assert [kind for kind, _ in effects(database)] == ["issue_coupon", "grant_points"]
    totals = uow.read(lambda tx: tx.stores.budgets.totals(live.campaign_id))
    assert (totals.grants, totals.points, totals.coupon_cents) == (1, 50, 2000)


def test_first_purchase_fires_on_the_first_completed_order_only(uow: Uow) -> None:
    campaigns, triggers = make_cases(uow, Clock())
    running(campaigns, campaign(holdout_percent=0, limits=Limits(per_member_max=5)))
    triggers.ingest([enrolled("mem_1")])

    first = triggers.ingest([order_completed("mem_1", "evt_1")])
    second = triggers.ingest([order_completed("mem_1", "evt_2")])

    assert len(first.grants) == 1
    assert second.grants == ()


def test_a_held_out_member_gets_nothing_but_is_recorded(uow: Uow, database: Database) -> None:
    campaigns, triggers = make_cases(uow, Clock())
    live = running(campaigns, campaign(holdout_percent=50))
    member_id = held_out_member(live.campaign_id, 50, held=True)
    triggers.ingest([enrolled(member_id)])

    done = triggers.ingest([order_completed(member_id, "evt_1")])

    assert [g.outcome for g in done.grants] == [Outcome.HELD_OUT]
    assert uow.read(lambda tx: tx.stores.grants.count(live.campaign_id, Outcome.HELD_OUT)) == 1
    assert effects(database) == []
    assert uow.read(lambda tx: tx.stores.budgets.totals(live.campaign_id)).grants == 0


def test_a_member_outside_the_audience_is_not_granted(uow: Uow, database: Database) -> None:
    campaigns, triggers = make_cases(uow, Clock())
    live = running(campaigns, campaign(holdout_percent=0, audience=Audience(tiers=("PLATINUM",))))
    triggers.ingest([enrolled("mem_1", tier="GOLD")])

    done = triggers.ingest([order_completed("mem_1", "evt_1")])

    assert done.grants == ()
    assert uow.read(lambda tx: tx.stores.grants.of_member(live.campaign_id, "mem_1")) == []
    assert effects(database) == []


def test_the_audience_is_asked_when_the_trigger_happens(uow: Uow) -> None:
    campaigns, triggers = make_cases(uow, Clock())
    running(campaigns, campaign(holdout_percent=0, audience=Audience(tiers=("PLATINUM",))))
    triggers.ingest([enrolled("mem_1", tier="GOLD")])
    promoted = EventIn("tier_1", EventKind.TIER_CHANGED, "mem_1", T0, tier="PLATINUM")
    done = triggers.ingest([promoted, order_completed("mem_1", "evt_1")])

    assert [g.outcome for g in done.grants] == [Outcome.GRANTED]


def test_fifty_concurrent_triggers_against_max_grants_ten_grant_ten(uow: Uow, replicas: list[Uow]) -> None:
    campaigns, triggers = make_cases(uow, Clock())
    live = running(campaigns, campaign(holdout_percent=0, limits=Limits(max_grants=10), actions=(coupon(),)))
    triggers.ingest([enrolled(f"mem_{n:02d}") for n in range(50)])
    each = [make_cases(replicas[n % len(replicas)], Clock())[1] for n in range(50)]
    gate = threading.Barrier(50)
    decided: list[GrantRecord | None] = []
    failures: list[BaseException] = []

    def trigger(n: int) -> None:
        try:
            gate.wait()
            decided.append(each[n].trigger(live.campaign_id, f"mem_{n:02d}", occurrence_of_event(f"evt_{n}")))
        except BaseException as error:  # a thread's failure is reported by the test
            failures.append(error)

    threads = [threading.Thread(target=trigger, args=(n,)) for n in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    outcomes = Counter((g.outcome, g.limit_name) for g in decided if g is not None)
    assert outcomes == {(Outcome.GRANTED, ""): 10, (Outcome.BUDGET_EXHAUSTED, "max_grants"): 40}
    assert uow.read(lambda tx: tx.stores.budgets.totals(live.campaign_id)).grants == 10


def test_a_call_whose_budget_runs_out_midway_records_each_events_decision(uow: Uow) -> None:
    campaigns, triggers = make_cases(uow, Clock())
    live = running(campaigns, campaign(holdout_percent=0, limits=Limits(max_grants=2), actions=(coupon(),)))
    triggers.ingest([enrolled(f"mem_{n}") for n in range(3)])

    done = triggers.ingest(
        [order_completed("mem_0", "evt_0"), order_completed("mem_0", "evt_0")]
        + [order_completed(f"mem_{n}", f"evt_{n}") for n in (1, 2)]
    )

    assert (done.accepted, done.duplicates) == (3, 1)
    assert [(g.member_id, g.outcome) for g in done.grants] == [
        ("mem_0", Outcome.GRANTED),
        ("mem_1", Outcome.GRANTED),
        ("mem_2", Outcome.BUDGET_EXHAUSTED),
    ]
    assert uow.read(lambda tx: tx.stores.budgets.totals(live.campaign_id)).grants == 2


def test_calls_of_many_events_on_both_replicas_grant_max_grants(uow: Uow, replicas: list[Uow]) -> None:
    campaigns, triggers = make_cases(uow, Clock())
    live = running(campaigns, campaign(holdout_percent=0, limits=Limits(max_grants=10), actions=(coupon(),)))
    triggers.ingest([enrolled(f"mem_{n:02d}") for n in range(50)])
    each = [make_cases(replicas[n % len(replicas)], Clock())[1] for n in range(10)]
    gate = threading.Barrier(10)
    decided: list[GrantRecord] = []
    failures: list[BaseException] = []

    def ingest(call: int) -> None:
        # Members of each call interleaved with the others', so concurrent calls reach the same
        # campaign's counters for members in crosswise order.
        events = [order_completed(f"mem_{n:02d}", f"evt_{n}") for n in range(call, 50, 10)]
        try:
            gate.wait()
            decided.extend(each[call].ingest(events[::-1] if call % 2 else events).grants)
        except BaseException as error:  # a thread's failure is reported by the test
            failures.append(error)

    threads = [threading.Thread(target=ingest, args=(n,)) for n in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    outcomes = Counter((g.outcome, g.limit_name) for g in decided)
    assert outcomes == {(Outcome.GRANTED, ""): 10, (Outcome.BUDGET_EXHAUSTED, "max_grants"): 40}
    assert uow.read(lambda tx: tx.stores.budgets.totals(live.campaign_id)).grants == 10


def test_calls_on_the_same_members_in_opposite_orders_queue_rather_than_deadlock(database: Database) -> None:
    # Units of work that never retry, on two replicas' pools: a call PostgreSQL picked to end a
    # deadlock would fail here instead of quietly running again.
    other = Database(database.url, pool_size=5)
    replicas = [SqlUnitOfWork(database, SqlStores, attempts=1), SqlUnitOfWork(other, SqlStores, attempts=1)]
    campaigns, triggers = make_cases(replicas[0], Clock())
    unlimited = Limits(per_member_max=100)
    first, orders = (
        running(campaigns, campaign(trigger=Trigger(event=t), holdout_percent=0, limits=unlimited))
        for t in (TriggerEvent.FIRST_PURCHASE, TriggerEvent.ORDER_COMPLETED)
    )
    members = [f"mem_{n:02d}" for n in range(20)]
    triggers.ingest([enrolled(m) for m in members])
    each = [make_cases(replica, Clock())[1] for replica in replicas]
    decided: list[GrantRecord] = []
    failures: list[BaseException] = []
    rounds = 3

    def ingest(call: int, gate: threading.Barrier, round_: int) -> None:
        # Every member in both calls, one call's in the other's reverse order: each call writes
        # the members' profiles and turns and both campaigns' counters, crosswise to the other.
        order = members if call == 0 else members[::-1]
        events = [order_completed(m, f"evt_{round_}_{call}_{m}") for m in order]
        try:
            gate.wait()
            decided.extend(each[call].ingest(events).grants)
        except BaseException as error:  # a thread's failure is reported by the test
            failures.append(error)

    try:
        for round_ in range(rounds):
            gate = threading.Barrier(2)
            threads = [threading.Thread(target=ingest, args=(n, gate, round_)) for n in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    finally:
        other.dispose()

    assert failures == []
    granted = Counter(g.campaign_id for g in decided if g.outcome is Outcome.GRANTED)
    # Every order granted the order campaign; each member's first, the first-purchase one.
    assert granted == {orders.campaign_id: 2 * rounds * len(members), first.campaign_id: len(members)}


def test_a_grants_effects_carry_the_action_keys(uow: Uow, database: Database) -> None:
    campaigns, triggers = make_cases(uow, Clock())
    actions = (
        coupon(valid_days=30),
        Action(grant_points=50),
        Action(add_tag="won"),
        Action(remove_tag="new"),
    )
    live = running(campaigns, campaign(holdout_percent=0, actions=actions))
    triggers.ingest([enrolled("mem_1")])

    (grant,) = triggers.ingest([order_completed("mem_1", "evt_1")]).grants

    key = grant.grant_key
    found = effects(database)
    assert [kind for kind, _ in found] == ["issue_coupon", "grant_points", "update_tags", "update_tags"]
    (_, issued), (_, points), (_, added), (_, removed) = found
    assert issued["request_id"] == action_key(key, 0, ActionKind.ISSUE_COUPON)
    assert issued["campaign_id"] == live.campaign_id
    assert issued["expire_time"] == (T0 + timedelta(days=30)).isoformat()
    assert (issued["discount_cents"], issued["member_id"]) == (2000, "mem_1")
    assert (points["source_id"], points["points"]) == (action_key(key, 1, ActionKind.GRANT_POINTS), 50)
    assert (added["request_id"], added["add_tags"]) == (action_key(key, 2, ActionKind.ADD_TAG), ["won"])
    assert (removed["request_id"], removed["remove_tags"]) == (
        action_key(key, 3, ActionKind.REMOVE_TAG),
        ["new"],
    )
    assert grant.version == live.version


def test_a_message_waits_for_consent_and_past_quiet_hours(uow: Uow) -> None:
    # 22:00 in Shanghai: in quiet hours, so the message goes at 09:00 the next morning.
    clock = Clock(T0 + timedelta(hours=12))
    campaigns, triggers = make_cases(uow, clock)
    live = running(campaigns, campaign(holdout_percent=0, actions=(coupon(), message())))
    triggers.ingest([enrolled("mem_1"), enrolled("mem_2")])
    uow.run(lambda tx: tx.stores.consents.set("cus_mem_1", Channel.APP, True, clock()))

    triggers.ingest([order_completed("mem_1", "evt_1"), order_completed("mem_2", "evt_2")])

    def pull() -> list[Message]:
        return uow.run(
            lambda tx: tx.stores.messages.pull(Channel.APP, T0 + timedelta(days=1), timedelta(minutes=1), 10)
        )

    # Held until membership has issued the coupon whose code it names.
    assert pull() == []
    assert coupons_issued(uow) == 1
    pending = pull()
    assert [(m.member_id, m.send_at) for m in pending] == [("mem_1", T0 + timedelta(hours=23))]
    assert pending[0].text == "Hi Li Lei, your code CPN000000000"
    assert uow.read(lambda tx: tx.stores.messages.count(live.campaign_id, MessageStatus.SUPPRESSED)) == 1


def test_of_campaigns_messaging_a_member_at_once_the_higher_priority_sends(uow: Uow) -> None:
    campaigns, triggers = make_cases(uow, Clock())
    low = running(campaigns, campaign(name="Low", holdout_percent=0, priority=1))
    high = running(campaigns, campaign(name="High", holdout_percent=0, priority=5))
    triggers.ingest([enrolled("mem_1")])
    uow.run(lambda tx: tx.stores.consents.set("cus_mem_1", Channel.APP, True, T0))

    done = triggers.ingest([order_completed("mem_1", "evt_1")])

    assert sorted(g.outcome for g in done.grants) == [Outcome.GRANTED, Outcome.GRANTED]
    coupons_issued(uow)
    pending = uow.run(lambda tx: tx.stores.messages.pull(Channel.APP, T0, timedelta(minutes=1), 10))
    assert [m.campaign_id for m in pending] == [high.campaign_id]
    assert uow.read(lambda tx: tx.stores.messages.count(low.campaign_id, MessageStatus.SUPPRESSED)) == 1
    assert uow.read(lambda tx: tx.stores.budgets.totals(low.campaign_id)).messages_suppressed == 1
    assert uow.read(lambda tx: tx.stores.budgets.totals(high.campaign_id)).messages_suppressed == 0


def granted_so_far() -> float:
    return REGISTRY.get_sample_value("quanyu_marketing_grant_decisions_total", {"outcome": "GRANTED"}) or 0.0


def test_a_decision_is_counted_once_however_often_its_event_arrives(uow: Uow) -> None:
    campaigns, triggers = make_cases(uow, Clock())
    running(campaigns, campaign(holdout_percent=0))
    triggers.ingest([enrolled("mem_1")])
    before = granted_so_far()

    triggers.ingest([order_completed("mem_1", "evt_1")] * 3)

    assert granted_so_far() - before == 1


def test_a_paused_or_finished_campaign_grants_nothing(uow: Uow, database: Database) -> None:
    clock = Clock()
    campaigns, triggers = make_cases(uow, clock)
    paused = running(campaigns, campaign(name="Paused", holdout_percent=0))
    campaigns.pause_campaign(paused.campaign_id)
    running(campaigns, campaign(name="Over", holdout_percent=0, end_time=T0 - timedelta(days=1)))
    running(campaigns, campaign(name="Not yet", holdout_percent=0, start_time=T0 + timedelta(days=1)))
    triggers.ingest([enrolled("mem_1")])

    done = triggers.ingest([order_completed("mem_1", "evt_1")])

    assert done.grants == ()
    assert effects(database) == []


def test_an_event_delivered_again_after_an_update_repeats_the_first_versions_grant(
    uow: Uow, database: Database
) -> None:
    campaigns, triggers = make_cases(uow, Clock())
    live = running(campaigns, campaign(holdout_percent=0))
    triggers.ingest([enrolled("mem_1")])
    (first,) = triggers.ingest([order_completed("mem_1", "evt_1")]).grants
    campaigns.pause_campaign(live.campaign_id)
    campaigns.update_campaign(live.campaign_id, campaign(name="Renamed"), ["name"])
    campaigns.start_campaign(live.campaign_id)

    again = triggers.trigger(live.campaign_id, "mem_1", occurrence_of_event("evt_1"))

    assert again == first
    assert first.version == 1
    assert [kind for kind, _ in effects(database)] == ["issue_coupon"]


def test_one_event_delivered_to_both_replicas_at_once_grants_once(
    uow: Uow, replicas: list[Uow], database: Database
) -> None:
    campaigns, triggers = make_cases(uow, Clock())
    live = running(campaigns, campaign(holdout_percent=0, actions=(coupon(),)))
    triggers.ingest([enrolled("mem_1")])
    each = [make_cases(replicas[n % len(replicas)], Clock())[1] for n in range(10)]
    gate = threading.Barrier(len(each))
    failures: list[BaseException] = []

    def deliver(n: int) -> None:
        try:
            gate.wait()
            each[n].ingest([order_completed("mem_1", "evt_1")])
        except BaseException as error:  # a thread's failure is reported by the test
            failures.append(error)

    threads = [threading.Thread(target=deliver, args=(n,)) for n in range(len(each))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    assert uow.read(lambda tx: tx.stores.grants.count(live.campaign_id, Outcome.GRANTED)) == 1
    assert [kind for kind, _ in effects(database)] == ["issue_coupon"]


def test_what_a_merged_member_was_given_counts_for_the_survivor(uow: Uow) -> None:
    campaigns, triggers = make_cases(uow, Clock())
    live = running(campaigns, campaign(holdout_percent=0))
    triggers.ingest([enrolled("mem_old"), enrolled("mem_1")])
    triggers.ingest([order_completed("mem_old", "evt_1")])
    merged = EventIn("merge_1", EventKind.CUSTOMER_MERGED, "mem_old", T0, survivor_id="mem_1")

    (second,) = triggers.ingest([merged, order_completed("mem_1", "evt_2")]).grants

    assert (second.holder_id, second.outcome, second.limit_name) == (
        "mem_1",
        Outcome.LIMIT_REACHED,
        "per_member_max",
    )
    assert uow.read(lambda tx: tx.stores.budgets.totals(live.campaign_id)).grants == 1


def _greeting(name: str, trigger: TriggerEvent, priority: int) -> Campaign:
    return campaign(
        name=name,
        trigger=Trigger(event=trigger),
        holdout_percent=0,
        priority=priority,
        actions=(message("Hi {display_name}"),),
    )


@pytest.mark.parametrize("apart_minutes", [2, 30])
@pytest.mark.parametrize("high_first", [False, True])
def test_campaigns_messaging_a_member_on_separate_events_at_about_once_send_only_the_higher_priority(
    uow: Uow, apart_minutes: int, high_first: bool
) -> None:
    clock = Clock()
    campaigns, triggers = make_cases(uow, clock)
    on_enrol = _greeting("Welcome", TriggerEvent.MEMBER_ENROLLED, priority=5 if high_first else 1)
    on_order = _greeting("Thanks", TriggerEvent.ORDER_COMPLETED, priority=1 if high_first else 5)
    first, second = running(campaigns, on_enrol), running(campaigns, on_order)
    uow.run(lambda tx: tx.stores.consents.set("cus_mem_1", Channel.APP, True, T0))

    triggers.ingest([enrolled("mem_1")])
    clock.now += timedelta(minutes=apart_minutes)
    triggers.ingest([order_completed("mem_1", "evt_1")])

    def status(campaign_id: str) -> tuple[int, int]:
        def read(tx: Any) -> tuple[int, int]:
            messages = tx.stores.messages
            return messages.count(campaign_id, MessageStatus.PENDING), tx.stores.budgets.totals(
                campaign_id
            ).messages_suppressed

        return uow.read(read)

    if apart_minutes > 10:
        # Apart by more than the moment: each is its own contact (within the week's allowance).
        assert status(first.campaign_id) == status(second.campaign_id) == (1, 0)
        return
    winner, loser = (first, second) if high_first else (second, first)
    assert status(winner.campaign_id) == (1, 0)
    assert status(loser.campaign_id) == (0, 1)
