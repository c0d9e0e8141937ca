"""What membership tells marketing: each change writes its event in the change's own
transaction (on a real database: SQLite, and PostgreSQL when reachable), so a change that fails
tells nothing and one the database runs again tells once; and what each event says, in a shape
marketing's Event takes."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from google.protobuf import json_format
from sqlalchemy import select

from quanyu.auth import Principal, Role
from quanyu.config import Settings
from quanyu.db import Database
from quanyu.marketing.v1 import marketing_pb2
from quanyu.membership.v1 import membership_pb2
from quanyu.paging import PageTokens
from quanyu.unit_of_work import ConcurrentChange, InMemoryUnitOfWork, SqlUnitOfWork, Transaction
from services.membership import bootstrap
from services.membership.domain import EngagementEvent, Programme
from services.membership.domain.known import ORDERS_EVENT
from services.membership.domain.marketing import MARKETING_EVENT
from services.membership.handlers import MembershipService
from services.membership.ports import Stores
from services.membership.storage import SqlStores, outbox
from tests.membership.memory import AllCustomers, MemoryStores

T = TypeVar("T")
OPS = Principal(Role.OPS, "ops")
SERVICE = Principal(Role.SERVICE, "orders")
START = datetime(2026, 3, 10, 4, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


class TwiceOrNever(SqlUnitOfWork[Stores]):
    """The database's runner where every write meets a concurrent change once it has done all
    its work (so it runs again from the start), or, `failing`, fails there for good."""

    failing = False

    def run(self, work: Callable[[Transaction[Stores]], T]) -> T:
        attempts = 0

        def flaky(tx: Transaction[Stores]) -> T:
            nonlocal attempts
            attempts += 1
            result = work(tx)
            if self.failing:
                raise RuntimeError("the change fails after all its work")
            if attempts == 1:
                raise ConcurrentChange("a member")
            return result

        return super().run(flaky)


def enrol(service: MembershipService, customer_id: str) -> str:
    member, _ = service.enroll(
        OPS, customer_id, home_store_id="SH-001", guide_id="", channel="", referrer_member_id=""
    )
    return member.member_id


def as_event(payload: dict[str, Any]) -> marketing_pb2.Event:
    """The payload as marketing's Event: fails on any field the contract does not have."""
    return json_format.ParseDict(payload, marketing_pb2.Event())


@pytest.fixture
def database(settings: Settings, database_url: str) -> Iterator[Database]:
    settings.membership.database_url = database_url
    bootstrap.migrate(settings)
    db = Database(database_url)
    yield db
    db.dispose()


@pytest.fixture
def uow(database: Database) -> TwiceOrNever:
    return TwiceOrNever(database, SqlStores)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(uow: TwiceOrNever, clock: Clock) -> MembershipService:
    return MembershipService(
        uow, Programme(), PageTokens(b"k" * 32, purpose="membership"), AllCustomers(), clock=clock
    )


def told(database: Database) -> list[marketing_pb2.Event]:
    with database.snapshot() as connection:
        rows = connection.execute(select(outbox.c.kind, outbox.c.payload).order_by(outbox.c.effect_id)).all()
    assert {row.kind for row in rows} <= {MARKETING_EVENT, ORDERS_EVENT}
    rows = [row for row in rows if row.kind == MARKETING_EVENT]
    events = [json.loads(row.payload) for row in rows]
    return [as_event({k: v for k, v in e.items() if not k.startswith("_")}) for e in events]


def test_every_change_run_again_tells_marketing_once(
    service: MembershipService, database: Database, clock: Clock
) -> None:
    survivor = enrol(service, "cus-a")
    merged = enrol(service, "cus-b")
    service.earn(survivor, "order-1", 150_000, "SH-001")
    service.redeem(SERVICE, survivor, 100, "spend-1", store_id="")
    service.grant(survivor, 50, "cmp-1:v1", "CAMPAIGN")
    service.update_tags(survivor, ["vip"], [])
    service.record_event(OPS, "cus-b", "", EngagementEvent.VIEW, START)
    service.earn(merged, "order-2", 10_000, "SH-001")
    service.reverse(SERVICE, "order-2")
    service.merge("cus-a", "cus-b", "merge-1")
    clock.now += timedelta(days=800)
    assert service.expire() >= 1

    events = told(database)
    kinds = [e.WhichOneof("kind") for e in events]
    assert kinds == [
        "member_enrolled",
        "member_enrolled",
        "member_changed",  # earn
        "member_changed",  # redeem
        "member_changed",  # grant
        "member_changed",  # tags
        "engagement",
        "member_changed",  # interest: the engagement moved the stage
        "member_changed",  # earn
        "member_changed",  # reversal
        "member_merged",
        "member_changed",  # the survivor after the merge
        "member_changed",  # expiry
    ]
    assert len({e.event_id for e in events}) == len(events)
    assert all(len(e.event_id) <= 64 for e in events)
    assert events[0].event_id == f"membership/{survivor}/enrolled"
    earned = events[2].member_changed
    assert (earned.tier_changed, earned.stage_changed) == (True, True)
    assert (earned.member.member_id, earned.member.tier, earned.member.points_balance) == (
        survivor,
        "SILVER",
        1_500,
    )
    assert [p.points for p in earned.member.expiring_points] == [1_500]
    assert events[5].member_changed.member.tags == ["vip"]
    assert not events[5].member_changed.tier_changed
    assert events[6].engagement.event_type == membership_pb2.EVENT_TYPE_VIEW
    assert events[10].member_merged.member_id == merged
    assert events[10].member_merged.survivor_member_id == survivor
    last = events[-1].member_changed.member
    assert (last.member_id, last.points_balance, list(last.expiring_points)) == (survivor, 0, [])


def test_a_change_that_fails_tells_marketing_nothing(
    service: MembershipService, database: Database, uow: TwiceOrNever
) -> None:
    member_id = enrol(service, "cus-1")
    before = told(database)
    uow.failing = True
    for change in (
        lambda: service.earn(member_id, "order-1", 10_000, "SH-001"),
        lambda: service.grant(member_id, 50, "cmp-1:v1", "CAMPAIGN"),
        lambda: service.update_tags(member_id, ["vip"], []),
        lambda: service.record_event(OPS, "cus-1", "", EngagementEvent.VIEW, START),
        lambda: enrol(service, "cus-2"),
    ):
        with pytest.raises(RuntimeError):
            change()
    assert told(database) == before


# --- in memory: what each event says -------------------------------------------------------------


def in_memory() -> tuple[MembershipService, Clock, MemoryStores]:
    stores, clock = MemoryStores(), Clock()
    service = MembershipService(
        InMemoryUnitOfWork[Stores](stores),
        Programme(),
        PageTokens(b"k" * 32, purpose="membership"),
        AllCustomers(),
        clock=clock,
    )
    return service, clock, stores


def events(stores: MemoryStores, since: int = 0) -> list[marketing_pb2.Event]:
    return [as_event(payload) for _, payload in stores.outbox.effects[since:]]


def test_an_enrolment_tells_the_member_as_enrolled_and_wakes_the_relay_once_committed() -> None:
    service, _, stores = in_memory()
    woken: list[int] = []
    service.on_effects = lambda: woken.append(len(stores.outbox.effects))
    member, _ = service.enroll(
        OPS, "cus-1", home_store_id="SH-001", guide_id="", channel="", referrer_member_id="", birthday="05-04"
    )
    (event,) = events(stores)
    assert event.event_id == f"membership/{member.member_id}/enrolled"
    assert event.occur_time.ToDatetime(UTC) == START
    assert event.member_enrolled.member == marketing_pb2.MemberProfile(
        member_id=member.member_id,
        customer_id="cus-1",
        tier="BRONZE",
        stage=membership_pb2.LIFECYCLE_STAGE_AWARENESS,
        home_store_id="SH-001",
        birthday="05-04",
    )
    assert woken == [1]
    # Enrolling again finds the member: nothing more is told.
    enrol(service, "cus-1")
    assert len(stores.outbox.effects) == 1


def test_a_retried_earn_tells_nothing_more_and_a_repeat_purchase_moves_the_stage_again() -> None:
    service, clock, stores = in_memory()
    member_id = enrol(service, "cus-1")
    service.earn(member_id, "order-1", 10_000, "SH-001")
    service.earn(member_id, "order-1", 10_000, "SH-001")  # orders' retry
    assert len(stores.outbox.effects) == 2
    clock.now += timedelta(days=10)
    service.earn(member_id, "order-2", 10_000, "SH-001")
    first, second = (e.member_changed for e in events(stores, 1))
    assert (first.tier_changed, first.stage_changed, first.member.stage) == (False, True, 3)
    assert (second.tier_changed, second.stage_changed, second.member.stage) == (False, True, 4)
    # Two earns ten days apart expire at two times, the sooner first.
    assert [p.points for p in second.member.expiring_points] == [100, 100]
    times = [p.expire_time.ToDatetime(UTC) for p in second.member.expiring_points]
    assert times == sorted(times)
    assert times[0] < times[1]


def test_an_engagement_past_interest_is_told_without_a_member_change() -> None:
    service, _, stores = in_memory()
    member_id = enrol(service, "cus-1")
    service.earn(member_id, "order-1", 10_000, "SH-001")
    before = len(stores.outbox.effects)
    service.record_event(OPS, "cus-1", "SH-001", EngagementEvent.SHARE, START)
    service.record_event(OPS, "cus-1", "SH-001", EngagementEvent.SHARE, START)  # reported again
    service.record_event(OPS, "cus-nobody", "SH-001", EngagementEvent.SHARE, START)  # not a member
    told = events(stores, before)
    assert [e.WhichOneof("kind") for e in told] == ["engagement", "engagement"]
    assert told[0].event_id == told[1].event_id  # one engagement, told twice: one to marketing
    assert told[0].engagement == marketing_pb2.Engagement(
        member_id=member_id,
        customer_id="cus-1",
        event_type=membership_pb2.EVENT_TYPE_SHARE,
    )


def test_tags_that_do_not_change_tell_nothing() -> None:
    service, _, stores = in_memory()
    member_id = enrol(service, "cus-1")
    service.update_tags(member_id, ["vip"], [])
    service.update_tags(member_id, ["vip"], [])
    service.update_tags(member_id, [], ["vip"])
    told = [e.member_changed.member.tags for e in events(stores, 1)]
    assert told == [["vip"], []]
