"""Marketing's repositories on a real database: what is stored reads back the same, a campaign's
versions stay as they were, and the facts kept from events answer what the use cases ask."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from quanyu.db import Database
from quanyu.unit_of_work import ConcurrentChange, SqlUnitOfWork, Transaction
from services.marketing.domain import (
    Action,
    Audience,
    Campaign,
    CampaignState,
    Channel,
    Expiry,
    Limits,
    ScheduleKind,
    Stage,
    TriggerEvent,
    occurrence_of_event,
)
from services.marketing.ports import CompletedOrder, GrantRecord, Outcome, Profile
from services.marketing.storage import SqlStores
from services.marketing.storage.tables import campaigns, outbox
from tests.marketing.factory import campaign, coupon, member, message, scheduled
from tests.marketing.storage_support import decide_grant

NOW = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)


def full_campaign() -> Campaign:
    return campaign(
        audience=Audience(
            tiers=("GOLD",),
            tags=("vip", "new"),
            stages=(Stage.PURCHASE,),
            home_store_ids=("sto_1",),
            guide_ids=("gd_1",),
            min_order_cents=5_000,
            skus=("TEA",),
        ),
        actions=(
            coupon(),
            Action(grant_points=50),
            Action(add_tag="welcomed"),
            Action(remove_tag="new"),
            message(),
        ),
        limits=Limits(per_member_max=2, per_member_period_days=30, max_grants=100, points_budget=5_000),
        start_time=NOW,
        end_time=NOW + timedelta(days=30),
        priority=3,
    )


def test_a_campaign_reads_back_as_stored_and_by_its_request(uow: SqlUnitOfWork[SqlStores]) -> None:
    stored = full_campaign()
    uow.run(lambda tx: tx.stores.campaigns.add(stored, NOW, request_id="req-1", fingerprint="fp-1"))

    assert uow.read(lambda tx: tx.stores.campaigns.get("cmp_1")) == stored
    assert uow.read(lambda tx: tx.stores.campaigns.by_request("req-1")) == ("cmp_1", "fp-1")
    assert uow.read(lambda tx: tx.stores.campaigns.by_request("req-2")) is None
    assert uow.read(lambda tx: tx.stores.campaigns.get("cmp_2")) is None


def test_each_version_is_kept_as_it_was(uow: SqlUnitOfWork[SqlStores]) -> None:
    first = campaign(limits=Limits(max_grants=10))
    uow.run(lambda tx: tx.stores.campaigns.add(first, NOW))

    def edit(tx: Transaction[SqlStores]) -> None:
        stores = tx.stores
        loaded = stores.campaigns.get("cmp_1")
        assert loaded is not None
        loaded.update(campaign(limits=Limits(max_grants=20)), ["limits.max_grants"], known_tiers=())
        stores.campaigns.save(loaded, NOW + timedelta(hours=1))

    uow.run(edit)

    now = uow.read(lambda tx: tx.stores.campaigns.get("cmp_1"))
    assert now is not None
    assert (now.version, now.limits.max_grants) == (2, 20)
    old = uow.read(lambda tx: tx.stores.campaigns.version("cmp_1", 1))
    assert old is not None
    assert (old.version, old.limits.max_grants) == (1, 10)
    assert uow.read(lambda tx: tx.stores.campaigns.version("cmp_1", 3)) is None


def test_a_save_from_a_stale_read_is_refused(database: Database) -> None:
    with database.transaction() as connection:
        SqlStores(connection).campaigns.add(campaign(), NOW)
    with database.transaction() as connection:
        stores = SqlStores(connection)
        loaded = stores.campaigns.get("cmp_1")
        assert loaded is not None
        # Another replica started it after this one read it.
        started = update(campaigns).where(campaigns.c.campaign_id == "cmp_1").values(state="RUNNING")
        connection.execute(started)
        loaded.name = "renamed"
        with pytest.raises(ConcurrentChange):
            stores.campaigns.save(loaded, NOW)


def test_campaigns_are_found_by_state_trigger_and_page(uow: SqlUnitOfWork[SqlStores]) -> None:
    def seed(tx: Transaction[SqlStores]) -> None:
        stores = tx.stores
        for n in range(4):
            made = campaign(campaign_id=f"cmp_{n}", create_time=NOW + timedelta(minutes=n))
            if n % 2 == 0:
                made.start()
            stores.campaigns.add(made, NOW)
        daily = scheduled(ScheduleKind.DAILY, campaign_id="cmp_s", create_time=NOW + timedelta(minutes=9))
        daily.start()
        stores.campaigns.add(daily, NOW)

    uow.run(seed)

    stored = uow.read(lambda tx: tx.stores.campaigns.get("cmp_s"))
    assert stored is not None
    assert stored.trigger == scheduled(ScheduleKind.DAILY).trigger
    running = uow.read(lambda tx: tx.stores.campaigns.running_for(TriggerEvent.FIRST_PURCHASE))
    assert [c.campaign_id for c in running] == ["cmp_0", "cmp_2"]
    assert uow.read(lambda tx: tx.stores.campaigns.running_for(TriggerEvent.ORDER_COMPLETED)) == []
    assert [c.campaign_id for c in uow.read(lambda tx: tx.stores.campaigns.running_scheduled())] == ["cmp_s"]
    first = uow.read(lambda tx: tx.stores.campaigns.page([], None, 2))
    assert [c.campaign_id for c in first] == ["cmp_0", "cmp_1"]
    last = first[-1]
    assert last.create_time is not None
    after = (last.create_time, last.campaign_id)
    rest = uow.read(lambda tx: tx.stores.campaigns.page([CampaignState.DRAFT], after, 10))
    assert [c.campaign_id for c in rest] == ["cmp_3"]


def test_consent_is_kept_per_customer_and_channel(uow: SqlUnitOfWork[SqlStores]) -> None:
    uow.run(lambda tx: tx.stores.consents.set("cus_1", Channel.APP, True, NOW))
    uow.run(lambda tx: tx.stores.consents.set("cus_1", Channel.WECHAT_MINI_PROGRAM, True, NOW))
    uow.run(lambda tx: tx.stores.consents.set("cus_1", Channel.APP, False, NOW))

    assert uow.read(lambda tx: tx.stores.consents.of("cus_1")) == {
        Channel.APP: False,
        Channel.WECHAT_MINI_PROGRAM: True,
    }
    assert uow.read(lambda tx: tx.stores.consents.of("cus_2")) == {}


def test_an_event_is_claimed_once(uow: SqlUnitOfWork[SqlStores]) -> None:
    first = {"evt_1": "ORDER_COMPLETED", "evt_2": "MEMBER_ENROLLED"}
    again = {"evt_2": "MEMBER_ENROLLED", "evt_3": "ENGAGEMENT"}
    assert uow.run(lambda tx: tx.stores.facts.claim_events(first, NOW)) == {"evt_1", "evt_2"}
    assert uow.run(lambda tx: tx.stores.facts.claim_events(again, NOW)) == {"evt_3"}
    assert uow.run(lambda tx: tx.stores.facts.claim_events({}, NOW)) == set()


def test_a_profile_reads_back_and_follows_merges(uow: SqlUnitOfWork[SqlStores]) -> None:
    profile = Profile(
        facts=member(time_zone="Asia/Urumqi", birthday="03-14", tags=frozenset({"vip", "tea"})),
        customer_id="cus_1",
        accounts={Channel.APP: "app-user-1", Channel.WECHAT_MINI_PROGRAM: "openid-1"},
    )
    uow.run(lambda tx: tx.stores.facts.put_profile(profile, NOW))
    uow.run(lambda tx: tx.stores.facts.put_profile(Profile(member(member_id="mem_2"), "cus_2"), NOW))

    assert uow.read(lambda tx: tx.stores.facts.profile("mem_1")) == profile
    uow.run(lambda tx: tx.stores.facts.merge("mem_1", "mem_2", NOW))
    uow.run(lambda tx: tx.stores.facts.merge("mem_0", "mem_1", NOW))  # heard of only by its merge

    assert uow.read(lambda tx: tx.stores.facts.survivor_of("mem_0")) == "mem_1"
    assert uow.read(lambda tx: tx.stores.facts.survivor_of("mem_1")) == "mem_2"
    assert uow.read(lambda tx: tx.stores.facts.survivor_of("mem_2")) is None
    standing = uow.read(lambda tx: tx.stores.facts.profiles_after("", 10))
    assert [p.facts.member_id for p in standing] == ["mem_2"]


def test_orders_move_the_last_order_and_the_first_purchase(uow: SqlUnitOfWork[SqlStores]) -> None:
    uow.run(lambda tx: tx.stores.facts.put_profile(Profile(member(), "cus_1"), NOW))

    def order(n: int, at: datetime) -> CompletedOrder:
        return CompletedOrder(f"ord_{n}", "mem_1", "cus_1", "sto_1", 1_000 * n, at)

    assert uow.run(lambda tx: tx.stores.facts.record_order(order(1, NOW))) is True
    assert uow.run(lambda tx: tx.stores.facts.record_order(order(2, NOW + timedelta(days=2)))) is False
    assert uow.run(lambda tx: tx.stores.facts.record_order(order(3, NOW + timedelta(days=1)))) is False
    assert uow.run(lambda tx: tx.stores.facts.record_order(order(1, NOW))) is False  # delivered again

    kept = uow.read(lambda tx: tx.stores.facts.profile("mem_1"))
    assert kept is not None
    assert (kept.first_purchase_time, kept.last_order_time) == (NOW, NOW + timedelta(days=2))


def test_point_expiries_are_replaced_whole(uow: SqlUnitOfWork[SqlStores]) -> None:
    uow.run(
        lambda tx: tx.stores.facts.set_expiries(
            "mem_1", [Expiry(10, NOW), Expiry(20, NOW + timedelta(days=1))]
        )
    )
    uow.run(lambda tx: tx.stores.facts.set_expiries("mem_1", [Expiry(30, NOW + timedelta(days=3))]))

    assert uow.read(lambda tx: tx.stores.facts.expiries("mem_1")) == [Expiry(30, NOW + timedelta(days=3))]


def test_the_arms_of_a_campaign_carry_their_orders_within_the_window(uow: SqlUnitOfWork[SqlStores]) -> None:
    live = campaign(actions=(Action(grant_points=5),), limits=Limits(per_member_max=3), holdout_percent=0)
    uow.run(lambda tx: tx.stores.campaigns.add(live, NOW))
    uow.run(lambda tx: decide_grant(tx, live, "mem_1", occurrence_of_event("e1"), NOW))
    uow.run(lambda tx: decide_grant(tx, live, "mem_1", occurrence_of_event("e2"), NOW + timedelta(days=1)))
    uow.run(lambda tx: decide_grant(tx, live, "mem_2", occurrence_of_event("e3"), NOW))
    orders = [
        CompletedOrder(f"ord_{n}", who, "cus", "sto_1", 100 * (n + 1), NOW + timedelta(days=days))
        for n, (who, days) in enumerate([("mem_1", 3), ("mem_1", 20), ("mem_1", -1), ("mem_2", 13)])
    ]
    uow.run(lambda tx: [tx.stores.facts.record_order(done) for done in orders])
    uow.run(lambda tx: tx.stores.facts.cancel_order("ord_3"))

    reaches = uow.read(lambda tx: tx.stores.grants.reaches("cmp_1", Outcome.GRANTED, timedelta(days=14)))

    by_member = {r.member_id: r for r in reaches}
    assert by_member["mem_1"].reach_time == NOW
    assert by_member["mem_1"].orders == ((NOW + timedelta(days=3), 100),)
    assert by_member["mem_2"].orders == ()
    assert uow.read(lambda tx: tx.stores.grants.count("cmp_1", Outcome.GRANTED)) == 2
    held = GrantRecord(
        slot="occ_held",
        grant_key="mkt_held",
        campaign_id="cmp_1",
        version=1,
        member_id="mem_3",
        holder_id="mem_3",
        occurrence_id=occurrence_of_event("e4"),
        outcome=Outcome.HELD_OUT,
        grant_time=NOW,
    )
    uow.run(lambda tx: tx.stores.grants.add(held))
    assert uow.read(lambda tx: tx.stores.grants.get("occ_held")) == held
    assert uow.read(lambda tx: tx.stores.grants.count("cmp_1", Outcome.HELD_OUT)) == 1
    # Held out is not a grant: it counts against no limit.
    assert uow.read(lambda tx: tx.stores.grants.count_for("cmp_1", "mem_3", None)) == 0
    assert uow.read(lambda tx: tx.stores.grants.count_for("cmp_1", "mem_1", NOW)) == 1
    assert uow.read(lambda tx: tx.stores.grants.counters("cmp_1", "mem_1", None)).member_grants == 2


def test_a_merged_member_counts_against_the_survivor(uow: SqlUnitOfWork[SqlStores]) -> None:
    live = campaign(actions=(Action(grant_points=5),), holdout_percent=0)
    uow.run(lambda tx: tx.stores.campaigns.add(live, NOW))
    uow.run(lambda tx: tx.stores.facts.merge("mem_old", "mem_1", NOW))
    uow.run(lambda tx: decide_grant(tx, live, "mem_1", occurrence_of_event("e1"), NOW))

    second = uow.run(lambda tx: decide_grant(tx, live, "mem_old", occurrence_of_event("e2"), NOW))

    assert (second.holder_id, second.outcome, second.limit_name) == (
        "mem_1",
        Outcome.LIMIT_REACHED,
        "per_member_max",
    )


def test_effects_are_recorded_in_the_outbox(uow: SqlUnitOfWork[SqlStores], database: Database) -> None:
    uow.run(lambda tx: tx.stores.outbox.add("IssueCoupon", {"request_id": "mkt_x.0.issue_coupon"}, NOW))

    with database.engine.connect() as connection:
        kinds = connection.execute(select(outbox.c.kind)).scalars().all()
    assert kinds == ["IssueCoupon"]


def test_suppressed_messages_are_counted_for_the_results(uow: SqlUnitOfWork[SqlStores]) -> None:
    uow.run(lambda tx: tx.stores.campaigns.add(campaign(), NOW))
    uow.run(lambda tx: tx.stores.budgets.count_suppressed("cmp_1", 2))

    assert uow.read(lambda tx: tx.stores.budgets.totals("cmp_1")).messages_suppressed == 2
