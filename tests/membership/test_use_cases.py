"""Membership's use cases over stores kept in memory: what a sequence of calls does to members,
the ledger and coupons, without a database; and that counters move once per committed change,
however often a conflict makes the database run a use case again."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from quanyu.audit_record import Actor
from quanyu.auth import Principal, Role
from quanyu.config import Settings
from quanyu.db import Database
from quanyu.errors import FailedPrecondition, InvalidArgument
from quanyu.paging import PageTokens
from quanyu.unit_of_work import ConcurrentChange, InMemoryUnitOfWork, SqlUnitOfWork, Transaction
from services.membership import bootstrap
from services.membership.domain import EntryKind, Programme, RedemptionWindow, Stage, add_months
from services.membership.domain.requests import PointsGrant
from services.membership.handlers import MembershipService
from services.membership.ports import Stores
from services.membership.storage import SqlStores
from tests.membership.memory import AllCustomers, MemoryStores
from tests.trail import kept_records

T = TypeVar("T")
OPS = Principal(Role.OPS, "ops")
SERVICE = Principal(Role.SERVICE, "orders")
# 2026-03-10 is a Tuesday, noon in Shanghai.
START = datetime(2026, 3, 10, 4, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def in_memory(programme: Programme | None = None) -> tuple[MembershipService, Clock, MemoryStores]:
    stores = MemoryStores()
    clock = Clock()
    service = MembershipService(
        InMemoryUnitOfWork[Stores](stores),
        programme or Programme(),
        PageTokens(b"k" * 32, purpose="membership"),
        AllCustomers(),
        clock=clock,
    )
    return service, clock, stores


def enrol(service: MembershipService, customer_id: str, referrer: str = "") -> str:
    member, _ = service.enroll(
        OPS, customer_id, home_store_id="SH-001", guide_id="", channel="", referrer_member_id=referrer
    )
    return member.member_id


def counted(name: str) -> float:
    return REGISTRY.get_sample_value(f"{name}_total") or 0.0


# --- in memory --------------------------------------------------------------------------------


def test_an_earn_credits_points_counts_the_spend_and_makes_a_purchase() -> None:
    service, _, stores = in_memory()
    member_id = enrol(service, "cus-1")
    entry, member = service.earn(member_id, "order-1", 150_000, "SH-001")
    assert (entry.kind, entry.points, member.points_balance) == (EntryKind.EARN, 1_500, 1_500)
    assert (member.tier, member.stage, member.lifetime_spend_cents) == ("SILVER", Stage.PURCHASE, 150_000)
    assert [lot.remaining for lot in stores.ledger.open_lots(member_id)] == [1_500]


def test_a_retried_earn_answers_with_the_first_and_a_reused_source_id_is_refused() -> None:
    service, _, stores = in_memory()
    member_id = enrol(service, "cus-1")
    first, _ = service.earn(member_id, "order-1", 10_000, "SH-001")
    again, member = service.earn(member_id, "order-1", 10_000, "SH-001")
    assert again == first
    assert member.points_balance == 100
    with pytest.raises(InvalidArgument):
        service.earn(member_id, "order-1", 20_000, "SH-001")
    assert len(stores.ledger.entries) == 1


def test_a_referred_members_first_purchase_pays_the_referrer_once() -> None:
    service, _, _ = in_memory()
    referrer = enrol(service, "cus-referrer")
    referred = enrol(service, "cus-new", referrer=referrer)
    service.earn(referred, "order-1", 5_000, "SH-001")
    service.earn(referred, "order-2", 5_000, "SH-001")
    assert service.get_member(OPS, member_id=referrer).points_balance == 100
    entries, _ = service.list_entries(OPS, referrer, 10, "")
    assert [e.kind for e in entries] == [EntryKind.REFERRAL_BONUS]


def test_a_redemption_spends_the_lots_that_expire_first_and_a_reversal_gives_them_back() -> None:
    service, clock, stores = in_memory()
    member_id = enrol(service, "cus-1")
    older, _ = service.earn(member_id, "order-1", 10_000, "SH-001")
    clock.now += timedelta(days=30)
    newer, _ = service.earn(member_id, "order-2", 10_000, "SH-001")
    service.redeem(SERVICE, member_id, 150, "spend-1", store_id="SH-001")
    assert stores.ledger.lots[older.entry_id].remaining == 0
    assert stores.ledger.lots[newer.entry_id].remaining == 50
    (reversal,) = service.reverse(SERVICE, "spend-1")
    assert (reversal.points, reversal.expire_time) == (150, older.expire_time)
    assert service.get_member(OPS, member_id=member_id).points_balance == 200


def test_a_member_short_of_points_or_outside_the_windows_spends_nothing() -> None:
    windows = (RedemptionWindow.parse("11-01..11-30"),)
    service, clock, stores = in_memory(Programme(redemption_windows=windows))
    member_id = enrol(service, "cus-1")
    service.earn(member_id, "order-1", 10_000, "SH-001")
    with pytest.raises(FailedPrecondition) as outside:
        service.redeem(SERVICE, member_id, 10, "spend-1", store_id="")
    assert outside.value.reason == "OUTSIDE_REDEMPTION_WINDOW"
    clock.now = datetime(2026, 11, 2, 4, 0, tzinfo=UTC)
    with pytest.raises(FailedPrecondition) as short:
        service.redeem(SERVICE, member_id, 101, "spend-2", store_id="")
    assert short.value.reason == "INSUFFICIENT_POINTS"
    assert [e.kind for e in stores.ledger.entries] == [EntryKind.EARN]


def test_cancelling_an_order_claws_back_only_the_points_left_unspent() -> None:
    service, _, _ = in_memory()
    member_id = enrol(service, "cus-1")
    service.earn(member_id, "order-1", 10_000, "SH-001")
    service.redeem(SERVICE, member_id, 60, "spend-1", store_id="")
    (reversal,) = service.reverse(SERVICE, "order-1")
    assert (reversal.points, reversal.shortfall_points) == (-40, 60)
    member = service.get_member(OPS, member_id=member_id)
    assert (member.points_balance, member.lifetime_spend_cents) == (0, 0)


def test_lapsed_points_are_written_off_once() -> None:
    service, clock, _ = in_memory()
    member_id = enrol(service, "cus-1")
    service.earn(member_id, "order-1", 10_000, "SH-001")
    clock.now += timedelta(days=400)
    assert service.expire() == 1
    assert service.expire() == 0
    assert service.get_member(OPS, member_id=member_id).points_balance == 0


def test_a_merge_combines_balances_spend_and_stages_into_the_survivor() -> None:
    service, clock, _ = in_memory()
    survivor = enrol(service, "cus-a")
    merged = enrol(service, "cus-b")
    service.earn(merged, "order-1", 120_000, "SH-001")
    clock.now += timedelta(days=1)
    service.earn(survivor, "order-2", 10_000, "SH-001")
    member = service.merge("cus-a", "cus-b", "merge-1")
    assert member.member_id == survivor
    assert (member.points_balance, member.lifetime_spend_cents) == (1_300, 130_000)
    assert (member.tier, member.stage) == ("SILVER", Stage.PURCHASE)
    assert service.get_member(OPS, customer_id="cus-b").member_id == survivor
    assert service.merge("cus-a", "cus-b", "merge-1") == member


def test_orders_is_told_each_member_as_enrolled_and_as_a_merge_leaves_them() -> None:
    service, _, stores = in_memory()
    survivor = enrol(service, "cus-a")
    merged = enrol(service, "cus-b")
    service.merge("cus-a", "cus-b", "merge-1")
    service.merge("cus-a", "cus-b", "merge-1")  # a repeat changes nothing and tells nothing
    told = [
        (e["member"]["member_id"], e["member"]["version"], e["member"]["root_member_id"])
        for e in stores.outbox.told_orders
    ]
    assert told == [
        (survivor, 1, survivor),
        (merged, 1, merged),
        (survivor, 2, survivor),
        (merged, 2, survivor),
    ]
    assert stores.outbox.told_orders[-1]["event_id"] == f"membership/member/{merged}/2"


def test_a_coupon_is_taken_by_one_order_and_given_back_when_it_is_cancelled() -> None:
    service, clock, _ = in_memory()
    member_id = enrol(service, "cus-1")
    coupon = service.issue_coupon(member_id, 500, 2_000, clock.now + timedelta(days=7), "issue-1")
    _, discount = service.redeem_coupon(
        SERVICE, code=coupon.code, member_id=member_id, order_id="o-1", order_amount_cents=3_000, store_id=""
    )
    assert discount == 500
    with pytest.raises(FailedPrecondition) as taken:
        service.redeem_coupon(
            SERVICE,
            code=coupon.code,
            member_id=member_id,
            order_id="o-2",
            order_amount_cents=3_000,
            store_id="",
        )
    assert taken.value.reason == "COUPON_ALREADY_REDEEMED"
    assert service.release_coupon(coupon.code, "o-1").redeemed_order_id is None


def test_a_use_case_that_fails_counts_nothing() -> None:
    service, _, _ = in_memory()
    member_id = enrol(service, "cus-1")
    service.earn(member_id, "order-1", 10_000, "SH-001")
    before = counted("quanyu_points_redeemed")
    with pytest.raises(FailedPrecondition):
        service.redeem(SERVICE, member_id, 1_000, "spend-1", store_id="")
    assert counted("quanyu_points_redeemed") == before


# --- counters under a retried transaction ------------------------------------------------------


class ConflictOnce(SqlUnitOfWork[Stores]):
    """The database's runner, where the first attempt of every write meets a concurrent change
    once it has done all its work: the use case runs again from the start and commits then."""

    def run(self, work: Callable[[Transaction[Stores]], T]) -> T:
        attempts = 0

        def flaky(tx: Transaction[Stores]) -> T:
            nonlocal attempts
            attempts += 1
            result = work(tx)
            if attempts == 1:
                raise ConcurrentChange("a member")
            return result

        return super().run(flaky)


@pytest.fixture
def retried(settings: Settings, database_url: str) -> Iterator[MembershipService]:
    settings.membership.database_url = database_url
    bootstrap.migrate(settings)
    database = Database(database_url)
    service = MembershipService(
        ConflictOnce(database, SqlStores),
        Programme(),
        PageTokens(b"k" * 32, purpose="membership"),
        AllCustomers(),
        clock=Clock(),
    )
    yield service
    service.close()


def test_points_are_counted_once_when_a_conflict_runs_the_earn_again(retried: MembershipService) -> None:
    member_id = enrol(retried, "cus-1")
    earned, redeemed = counted("quanyu_points_earned"), counted("quanyu_points_redeemed")
    entry, member = retried.earn(member_id, "order-1", 10_000, "SH-001")
    assert (entry.points, member.points_balance) == (100, 100)
    assert counted("quanyu_points_earned") - earned == 100
    retried.redeem(SERVICE, member_id, 30, "spend-1", store_id="")
    assert counted("quanyu_points_redeemed") - redeemed == 30


def test_expired_points_are_counted_once_when_a_conflict_runs_the_expiry_again(
    retried: MembershipService,
) -> None:
    member_id = enrol(retried, "cus-1")
    retried.earn(member_id, "order-1", 10_000, "SH-001")
    expired = counted("quanyu_points_expired")
    assert retried.expire(START + timedelta(days=400)) == 1
    assert counted("quanyu_points_expired") - expired == 100


def test_granted_points_are_counted_once_when_a_conflict_runs_the_grant_again(
    retried: MembershipService,
) -> None:
    member_id = enrol(retried, "cus-1")
    granted = counted("quanyu_points_granted")
    entry, member = retried.grant(member_id, 250, "cmp-1:v1:mem:1", "CAMPAIGN")
    assert (entry.kind, entry.points, member.points_balance) == (EntryKind.ADJUST, 250, 250)
    assert counted("quanyu_points_granted") - granted == 250
    # A repeat is answered with the first entry and counts nothing.
    assert retried.grant(member_id, 250, "cmp-1:v1:mem:1", "CAMPAIGN")[0] == entry
    assert counted("quanyu_points_granted") - granted == 250


def test_points_granted_by_hand_commit_with_their_audit_record_or_not_at_all(
    retried: MembershipService,
) -> None:
    member_id = enrol(retried, "cus-1")
    database = retried.uow.database  # type: ignore[attr-defined]
    alice = Actor("ops/alice", "req-grant")
    # Run twice by a conflict, the grant is kept once, and so is its record.
    retried.grant(member_id, 250, "goodwill-1", "late delivery", alice)
    retried.grant_many([PointsGrant(member_id, 50, "goodwill-2", "late delivery")], alice)
    # A campaign's grant (no actor) is marketing's to trace.
    retried.grant(member_id, 10, "cmp-1:v1:mem:1", "CAMPAIGN")
    assert kept_records(database) == [
        ("POINTS_GRANTED", f"member:{member_id}", "ops/alice", "req-grant"),
        ("POINTS_GRANTED", f"members:{member_id}", "ops/alice", "req-grant"),
    ]

    # With no trail to write to, the grant is not kept either: the record commits with it.
    with database.transaction() as connection:
        connection.execute(text("DROP TABLE audit_records"))
    with pytest.raises(DBAPIError):
        retried.grant(member_id, 999, "goodwill-3", "late delivery", alice)
    assert retried.get_member(OPS, member_id=member_id).points_balance == 310


# --- grants and coupon pages in memory ---------------------------------------------------------


def test_a_grant_opens_a_lot_that_redemptions_draw_on_and_that_lapses_like_earned_points() -> None:
    service, clock, stores = in_memory()
    member_id = enrol(service, "cus-1")
    service.earn(member_id, "order-1", 10_000, "SH-001")  # 100 points, expiring first
    clock.now = START + timedelta(days=10)
    entry, _ = service.grant(member_id, 500, "cmp-1", "CAMPAIGN")
    assert entry.expire_time == add_months(clock.now, 12)
    assert sorted(lot.remaining for lot in stores.ledger.open_lots(member_id)) == [100, 500]
    service.redeem(SERVICE, member_id, 150, "spend-1", store_id="")
    assert sorted(lot.remaining for lot in stores.ledger.open_lots(member_id)) == [450]
    # The earned lot, soonest to expire, paid first; what is left of the grant lapses twelve months
    # after it, and only then.
    assert service.expire(add_months(clock.now, 12) - timedelta(seconds=1)) == 0
    assert service.get_member(OPS, member_id=member_id).points_balance == 450
    assert service.expire(add_months(clock.now, 12)) == 1
    member = service.get_member(OPS, member_id=member_id)
    assert member.points_balance == 0
    with pytest.raises(InvalidArgument):
        service.grant(member_id, 1, "cmp-1", "CAMPAIGN")  # the source id granted 500


def test_coupon_pages_follow_one_another_without_a_gap_or_a_repeat() -> None:
    service, clock, _ = in_memory()
    member_id = enrol(service, "cus-1")
    issued = []
    for index in range(7):
        clock.now = START + timedelta(minutes=index // 2)  # pairs issued at one moment
        expire = START + timedelta(days=30)
        issued.append(service.issue_coupon(member_id, 100, 0, expire, f"req-{index}").code)
    seen: list[str] = []
    token = ""
    while True:
        page, token = service.list_coupons(SERVICE, member_id, False, 3, token)
        assert len(page) <= 3
        seen += [c.code for c in page]
        if not token:
            break
    assert sorted(seen) == sorted(issued)
    assert len(seen) == len(set(seen))
    coupons = service.list_coupons(SERVICE, member_id, False, 0, "")[0]
    times = [c.create_time for c in coupons if c.create_time is not None]
    assert len(times) == 7
    assert times == sorted(times, reverse=True)
