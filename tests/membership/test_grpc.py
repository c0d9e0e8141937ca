"""MembershipService over gRPC, called as a channel frontend, a till, the orders service and ops
would call it, on a clock the tests move: enrolment, the points ledger, tiers, expiry, reversals,
stages, referrals, coupons, segments, the funnel, merges and who may call what."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from quanyu.auth import Role
from quanyu.clients import error_info, error_reason, field_violations, service_channel
from quanyu.common.v1 import common_pb2
from quanyu.config import Settings
from quanyu.db import Database
from quanyu.identity.v1 import identity_pb2, identity_pb2_grpc
from quanyu.membership.v1 import membership_pb2, membership_pb2_grpc
from quanyu.paging import PageTokens
from quanyu.server import ServiceApp
from services.identity import bootstrap as identity_bootstrap
from services.membership import bootstrap
from services.membership.config import MembershipSettings
from services.membership.domain import add_months
from services.membership.downstream import CustomerChannels
from services.membership.grpc_servicer import POLICY, SERVICE, MembershipServicer
from services.membership.handlers import MembershipService
from tests.conftest import TokenFactory, bearer, running, served

Stub = membership_pb2_grpc.MembershipServiceStub
Meta = tuple[tuple[str, str]]
pb = membership_pb2

# A Tuesday, noon in Shanghai.
START = datetime(2026, 3, 10, 4, 0, tzinfo=UTC)
WECHAT = common_pb2.CHANNEL_WECHAT_MINI_PROGRAM
AWARENESS = pb.LIFECYCLE_STAGE_AWARENESS
INTEREST = pb.LIFECYCLE_STAGE_INTEREST
PURCHASE = pb.LIFECYCLE_STAGE_PURCHASE
LOYALTY = pb.LIFECYCLE_STAGE_LOYALTY


class Clock:
    """The service's time, moved by the test."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, *, months: int = 0, days: int = 0, hours: int = 0) -> datetime:
        self.now = add_months(self.now, months) + timedelta(days=days, hours=hours)
        return self.now


@dataclass
class Membership:
    stub: Stub
    service: MembershipService
    clock: Clock
    identity: identity_pb2_grpc.IdentityServiceStub
    ops: Meta

    def customer(self, openid: str) -> str:
        """A customer identity knows, holding the mini-program account `openid`: the kind of
        customer a channel acts for."""
        request = identity_pb2.ResolveCustomerRequest(
            account=common_pb2.ChannelAccount(channel=WECHAT, external_id=openid)
        )
        return str(self.identity.ResolveCustomer(request, metadata=self.ops).customer.customer_id)

    def guide(self, guide_id: str, store_id: str) -> None:
        guide = pb.Guide(guide_id=guide_id, store_id=store_id, active=True)
        self.stub.UpsertGuide(pb.UpsertGuideRequest(guide=guide), metadata=self.ops)


Start = Callable[..., Membership]


@pytest.fixture
def start(settings: Settings, database_url: str, tmp_path: Path, token: TokenFactory) -> Iterator[Start]:
    """start(own=MembershipSettings(...), now=...): a server whose service runs on a test clock,
    beside the identity service it asks whose customers a channel's callers are."""
    settings.membership.database_url = database_url
    bootstrap.migrate(settings)
    settings.identity.database_url = f"sqlite:///{tmp_path / 'identity.db'}"
    identity_bootstrap.migrate(settings)
    with ExitStack() as stack:
        served_identity = stack.enter_context(served(identity_bootstrap.build_app(settings), settings))
        identity = identity_pb2_grpc.IdentityServiceStub(served_identity.channel)
        settings.identity.target = served_identity.target
        # What membership's bootstrap builds: identity asked with membership's own service token.
        asking = identity_pb2_grpc.IdentityServiceStub(
            service_channel(settings, "identity", caller="membership")
        )

        def serve(own: MembershipSettings | None = None, *, now: datetime = START) -> Membership:
            own = own or MembershipSettings()
            clock = Clock(now)
            service = MembershipService(
                bootstrap.unit_of_work(
                    Database(settings.database_url(bootstrap.NAME), pool_size=settings.server_workers)
                ),
                own.programme(),
                PageTokens(settings.signing_key_bytes(), purpose=bootstrap.NAME),
                CustomerChannels(asking),
                clock=clock,
                member_code_ttl=timedelta(seconds=own.member_code_ttl_seconds),
            )

            def register(server: grpc.Server) -> None:
                membership_pb2_grpc.add_MembershipServiceServicer_to_server(
                    MembershipServicer(service), server
                )

            app = ServiceApp(
                name=bootstrap.NAME,
                service_names=[SERVICE.full_name],
                register=register,
                policy=POLICY,
                on_stop=[service.close],
            )
            channel = stack.enter_context(running(app, settings))
            return Membership(Stub(channel), service, clock, identity, bearer(token(Role.OPS)))

        yield serve


@pytest.fixture
def m(start: Start) -> Membership:
    return start()


@pytest.fixture
def stub(m: Membership) -> Stub:
    return m.stub


@pytest.fixture
def ops(token: TokenFactory) -> Meta:
    return bearer(token(Role.OPS))


@pytest.fixture
def svc(token: TokenFactory) -> Meta:
    """The orders service."""
    return bearer(token(Role.SERVICE))


@pytest.fixture
def app_channel(token: TokenFactory) -> Meta:
    return bearer(token(Role.CHANNEL, channel="CHANNEL_WECHAT_MINI_PROGRAM"))


def stamp(when: datetime) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(when)
    return value


def when(value: Timestamp) -> datetime:
    return value.ToDatetime(tzinfo=UTC)


def failure(call: Callable[..., object], request: Message, metadata: Meta | None = None) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, metadata=metadata)
    return caught.value


def enroll(stub: Stub, meta: Meta, customer_id: str, **fields: object) -> pb.Member:
    request = pb.EnrollRequest(customer_id=customer_id, **fields)  # type: ignore[arg-type]
    enrolled: pb.Member = stub.Enroll(request, metadata=meta).member
    return enrolled


def earn(
    stub: Stub, meta: Meta, member_id: str, source_id: str, spend_cents: int, *, store_id: str = ""
) -> pb.EarnPointsResponse:
    request = pb.EarnPointsRequest(
        member_id=member_id, source_id=source_id, spend_cents=spend_cents, store_id=store_id
    )
    response: pb.EarnPointsResponse = stub.EarnPoints(request, metadata=meta)
    return response


def redeem(
    stub: Stub, meta: Meta, member_id: str, source_id: str, points: int, *, store_id: str = "", code: str = ""
) -> pb.RedeemPointsResponse:
    request = pb.RedeemPointsRequest(
        member_id=member_id, points=points, source_id=source_id, store_id=store_id, member_code=code
    )
    response: pb.RedeemPointsResponse = stub.RedeemPoints(request, metadata=meta)
    return response


def member_code(stub: Stub, channel: Meta, member_id: str) -> str:
    """The code the member's app shows at the till, as their channel asks for it."""
    code: str = stub.CreateMemberCode(pb.CreateMemberCodeRequest(member_id=member_id), metadata=channel).code
    return code


def reverse(stub: Stub, meta: Meta, source_id: str) -> list[pb.LedgerEntry]:
    request = pb.ReversePointsRequest(source_id=source_id, reason="ORDER_CANCELLED")
    return list(stub.ReversePoints(request, metadata=meta).entries)


def member(stub: Stub, meta: Meta, member_id: str) -> pb.Member:
    found: pb.Member = stub.GetMember(pb.GetMemberRequest(member_id=member_id), metadata=meta).member
    return found


def ledger(stub: Stub, meta: Meta, member_id: str) -> list[pb.LedgerEntry]:
    """Every entry of the member, newest first, page by page."""
    entries: list[pb.LedgerEntry] = []
    page_token = ""
    while True:
        page = stub.ListLedgerEntries(
            pb.ListLedgerEntriesRequest(member_id=member_id, page_size=3, page_token=page_token),
            metadata=meta,
        )
        entries += page.entries
        page_token = page.next_page_token
        if not page_token:
            return entries


def kinds(entries: list[pb.LedgerEntry]) -> list[str]:
    return [pb.EntryKind.Name(e.kind).removeprefix("ENTRY_KIND_") for e in entries]


def assert_balance_is_the_ledgers(stub: Stub, meta: Meta, member_id: str, *, merged: bool = False) -> int:
    """The balance is the sum of the ledger, never negative; without a merge (which moves entries
    and writes none) the newest entry's running balance is the balance too."""
    entries = ledger(stub, meta, member_id)
    balance = member(stub, meta, member_id).points_balance
    assert balance == sum(e.points for e in entries)
    assert balance >= 0
    if entries and not merged:
        assert entries[0].balance_after == balance
    return balance


def issue(
    stub: Stub,
    meta: Meta,
    member_id: str,
    request_id: str,
    *,
    discount: int = 500,
    min_spend: int = 0,
    expire: datetime = START + timedelta(days=30),
) -> pb.Coupon:
    request = pb.IssueCouponRequest(
        member_id=member_id,
        discount_cents=discount,
        min_spend_cents=min_spend,
        expire_time=stamp(expire),
        request_id=request_id,
    )
    coupon: pb.Coupon = stub.IssueCoupon(request, metadata=meta).coupon
    return coupon


def use_coupon(
    stub: Stub,
    meta: Meta,
    code: str,
    member_id: str,
    order_id: str,
    *,
    amount: int,
    store_id: str = "",
    member_code: str = "",
) -> pb.RedeemCouponResponse:
    request = pb.RedeemCouponRequest(
        code=code,
        member_id=member_id,
        order_id=order_id,
        order_amount_cents=amount,
        store_id=store_id,
        member_code=member_code,
    )
    response: pb.RedeemCouponResponse = stub.RedeemCoupon(request, metadata=meta)
    return response


def event(stub: Stub, meta: Meta, customer_id: str, event_type: int = pb.EVENT_TYPE_VIEW) -> None:
    request = pb.RecordEventRequest(customer_id=customer_id, event_type=event_type)  # type: ignore[arg-type]
    stub.RecordEvent(request, metadata=meta)


def listed(stub: Stub, meta: Meta, page_size: int = 2, **filters: object) -> list[str]:
    """Member ids matching the filters, over every page."""
    ids: list[str] = []
    page_token = ""
    while True:
        request = pb.ListMembersRequest(page_size=page_size, page_token=page_token, **filters)  # type: ignore[arg-type]
        page = stub.ListMembers(request, metadata=meta)
        ids += [x.member_id for x in page.members]
        page_token = page.next_page_token
        if not page_token:
            return ids


def merge(stub: Stub, meta: Meta, survivor: str, merged: str, request_id: str) -> pb.Member:
    request = pb.MergeMembersRequest(
        survivor_customer_id=survivor, merged_customer_id=merged, request_id=request_id
    )
    survivor_member: pb.Member = stub.MergeMembers(request, metadata=meta).member
    return survivor_member


# --- enrolment -------------------------------------------------------------------------------


def test_enrolment_is_idempotent_per_customer_and_records_store_guide_channel_and_referrer(
    m: Membership, app_channel: Meta
) -> None:
    stub = m.stub
    m.guide("guide-7", "SH-1")
    referrer = enroll(stub, app_channel, m.customer("referrer"))
    customer = m.customer("openid-1")
    first = stub.Enroll(
        pb.EnrollRequest(
            customer_id=customer,
            home_store_id="SH-1",
            guide_id="guide-7",
            channel=WECHAT,
            referrer_member_id=referrer.member_id,
        ),
        metadata=app_channel,
    )
    assert first.created
    new = first.member
    assert new.member_id.startswith("mem_")
    assert (new.customer_id, new.home_store_id, new.guide_id) == (customer, "SH-1", "guide-7")
    assert new.enrolled_channel == WECHAT
    assert new.referrer_member_id == referrer.member_id
    assert (new.tier, new.points_balance, new.lifetime_spend_cents) == ("BRONZE", 0, 0)
    assert new.stage == AWARENESS
    assert when(new.enroll_time) == START
    again = stub.Enroll(pb.EnrollRequest(customer_id=customer, home_store_id="BJ-9"), metadata=app_channel)
    assert not again.created
    assert again.member == new


def test_a_referrer_who_is_not_a_member_is_not_found(m: Membership, app_channel: Meta) -> None:
    stub, customer = m.stub, m.customer("openid-1")
    request = pb.EnrollRequest(customer_id=customer, referrer_member_id="mem_nobody")
    assert failure(stub.Enroll, request, app_channel).code() is grpc.StatusCode.NOT_FOUND
    # Nothing was enrolled by the failed call.
    lookup = pb.GetMemberRequest(customer_id=customer)
    assert failure(stub.GetMember, lookup, app_channel).code() is grpc.StatusCode.NOT_FOUND


def test_a_member_cannot_be_their_own_referrer(m: Membership, app_channel: Meta, svc: Meta) -> None:
    stub, first, second = m.stub, m.customer("openid-1"), m.customer("openid-2")
    own = enroll(stub, app_channel, first)
    error = failure(
        stub.Enroll, pb.EnrollRequest(customer_id=first, referrer_member_id=own.member_id), app_channel
    )
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "referrer_member_id" in [name for name, _ in field_violations(error)]
    # Nor through a customer merged into them.
    merge(stub, svc, first, second, "merge-1")
    error = failure(
        stub.Enroll, pb.EnrollRequest(customer_id=second, referrer_member_id=own.member_id), app_channel
    )
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert member(stub, app_channel, own.member_id).referrer_member_id == ""


def test_a_member_is_found_by_member_id_or_customer_id(m: Membership, app_channel: Meta) -> None:
    stub, customer = m.stub, m.customer("openid-1")
    new = enroll(stub, app_channel, customer, home_store_id="SH-1")
    by_member = stub.GetMember(pb.GetMemberRequest(member_id=new.member_id), metadata=app_channel)
    by_customer = stub.GetMember(pb.GetMemberRequest(customer_id=customer), metadata=app_channel)
    assert by_member.member == by_customer.member == new
    for unknown in (pb.GetMemberRequest(member_id="mem_nobody"), pb.GetMemberRequest(customer_id="cus-2")):
        assert failure(stub.GetMember, unknown, app_channel).code() is grpc.StatusCode.NOT_FOUND
    error = failure(stub.GetMember, pb.GetMemberRequest(), app_channel)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "key" in [name for name, _ in field_violations(error)]


# --- earning and tiers -------------------------------------------------------------------


def test_points_are_whole_yuan_times_the_multiplier_of_the_tier_before_the_spend(
    stub: Stub, svc: Meta
) -> None:
    member_id = enroll(stub, svc, "cus-1").member_id
    steps = [
        # (spend in fen, points, tier afterwards)
        (99_999, 999, "BRONZE"),  # 999.99 CNY: whole yuan only
        (1, 0, "SILVER"),  # reaches 1,000 CNY: up at once, with nothing earned for one fen
        (10_000, 120, "SILVER"),  # 100 CNY at 1.2
        (399_900, 4_798, "GOLD"),  # 3,999 CNY at SILVER's 1.2; now 5,099 CNY
        (10_000, 150, "GOLD"),
        (1_500_000, 22_500, "PLATINUM"),  # at GOLD's 1.5; now 20,199 CNY
        (10_000, 200, "PLATINUM"),
    ]
    spent = 0
    balance = 0
    for index, (spend, points, tier) in enumerate(steps):
        result = earn(stub, svc, member_id, f"order-{index}", spend, store_id="SH-1")
        spent += spend
        balance += points
        assert result.entry.kind == pb.ENTRY_KIND_EARN
        assert result.entry.points == points, index
        assert result.entry.balance_after == balance
        assert (result.entry.source_id, result.entry.store_id) == (f"order-{index}", "SH-1")
        assert (result.member.tier, result.member.points_balance) == (tier, balance), index
        assert result.member.lifetime_spend_cents == spent
    assert assert_balance_is_the_ledgers(stub, svc, member_id) == balance


@pytest.mark.parametrize(
    ("own", "day", "points"),
    [
        (MembershipSettings(member_weekday=3), datetime(2026, 3, 11, 4, 0, tzinfo=UTC), 200),
        (MembershipSettings(member_weekday=3), START, 100),
        # 00:00 on Wednesday in Shanghai, still Tuesday in UTC.
        (MembershipSettings(member_weekday=3), datetime(2026, 3, 10, 16, 0, tzinfo=UTC), 200),
        (MembershipSettings(member_weekday=3), datetime(2026, 3, 11, 16, 0, tzinfo=UTC), 100),
        (MembershipSettings(member_day_of_month=18), datetime(2026, 3, 18, 4, 0, tzinfo=UTC), 200),
        (MembershipSettings(member_day_of_month=18), datetime(2026, 3, 17, 4, 0, tzinfo=UTC), 100),
    ],
)
def test_points_double_on_the_configured_member_day_in_local_time(
    start: Start, svc: Meta, own: MembershipSettings, day: datetime, points: int
) -> None:
    m = start(own, now=day)
    member_id = enroll(m.stub, svc, "cus-1").member_id
    assert earn(m.stub, svc, member_id, "order-1", 10_000).entry.points == points


def test_earning_is_idempotent_by_source_id(stub: Stub, svc: Meta) -> None:
    member_id = enroll(stub, svc, "cus-1").member_id
    other_id = enroll(stub, svc, "cus-2").member_id
    first = earn(stub, svc, member_id, "order-1", 25_000)
    retry = earn(stub, svc, member_id, "order-1", 25_000)
    assert retry.entry == first.entry
    assert retry.member.points_balance == first.member.points_balance == 250
    assert retry.member.lifetime_spend_cents == 25_000
    for who, amount in ((member_id, 25_001), (other_id, 25_000)):
        error = failure(
            stub.EarnPoints,
            pb.EarnPointsRequest(member_id=who, source_id="order-1", spend_cents=amount),
            svc,
        )
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert error_reason(error) == "SOURCE_ID_REUSED"
    assert len(ledger(stub, svc, member_id)) == 1
    assert member(stub, svc, other_id).points_balance == 0


def test_a_tier_falls_only_when_tiers_are_evaluated_after_the_rolling_spend_fell(
    m: Membership, svc: Meta
) -> None:
    stub = m.stub
    gold = enroll(stub, svc, "cus-gold").member_id
    assert earn(stub, svc, gold, "order-1", 500_000).member.tier == "GOLD"
    assert m.service.evaluate_tiers() == 0
    m.clock.advance(months=13)
    # A spend after the spend window has passed earns at the tier held and does not lower it.
    late = earn(stub, svc, gold, "order-2", 10_000)
    assert (late.entry.points, late.member.tier) == (150, "GOLD")
    recent = enroll(stub, svc, "cus-recent").member_id
    assert earn(stub, svc, recent, "order-3", 100_000).member.tier == "SILVER"
    assert member(stub, svc, gold).tier == "GOLD"
    assert m.service.evaluate_tiers() == 1
    assert member(stub, svc, gold).tier == "BRONZE"
    assert member(stub, svc, recent).tier == "SILVER"
    assert m.service.evaluate_tiers() == 0


# --- the ledger ----------------------------------------------------------------------------


def test_ledger_entries_page_newest_first_with_tokens_bound_to_the_query_and_caller(
    stub: Stub, svc: Meta, ops: Meta
) -> None:
    member_id = enroll(stub, svc, "cus-1").member_id
    other_id = enroll(stub, svc, "cus-2").member_id
    for index in range(5):
        earn(stub, svc, member_id, f"order-{index}", 10_000 * (index + 1))
    pages: list[list[str]] = []
    page_token = ""
    while True:
        page = stub.ListLedgerEntries(
            pb.ListLedgerEntriesRequest(member_id=member_id, page_size=2, page_token=page_token),
            metadata=svc,
        )
        pages.append([e.source_id for e in page.entries])
        page_token = page.next_page_token
        if not page_token:
            break
    assert pages == [["order-4", "order-3"], ["order-2", "order-1"], ["order-0"]]
    everything = stub.ListLedgerEntries(pb.ListLedgerEntriesRequest(member_id=member_id), metadata=svc)
    # The fourth order reached 1,000 CNY: the fifth earns at SILVER.
    assert [e.balance_after for e in everything.entries] == [1600, 1000, 600, 300, 100]
    assert everything.next_page_token == ""

    first = stub.ListLedgerEntries(
        pb.ListLedgerEntriesRequest(member_id=member_id, page_size=2), metadata=svc
    ).next_page_token
    misuses = [
        (pb.ListLedgerEntriesRequest(member_id=other_id, page_token=first), svc),  # another query
        (pb.ListLedgerEntriesRequest(member_id=member_id, page_token=first), ops),  # another caller
        (pb.ListLedgerEntriesRequest(member_id=member_id, page_token=first[:-2] + "xx"), svc),
        (pb.ListLedgerEntriesRequest(member_id=member_id, page_token="garbage"), svc),
    ]
    for request, meta in misuses:
        error = failure(stub.ListLedgerEntries, request, meta)
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "page_token" in [name for name, _ in field_violations(error)]


# --- expiry --------------------------------------------------------------------------------


def test_points_expire_twelve_months_after_earning_oldest_first_and_only_once(
    m: Membership, svc: Meta
) -> None:
    stub = m.stub
    member_id = enroll(stub, svc, "cus-1").member_id
    first = earn(stub, svc, member_id, "order-1", 10_000).entry  # 100 points
    assert when(first.expire_time) == add_months(START, 12)
    m.clock.advance(months=6)
    second = earn(stub, svc, member_id, "order-2", 5_000).entry  # 50 points
    assert when(second.expire_time) == add_months(START, 18)
    m.clock.advance(months=1)
    # 80 points: all but 20 of the older earn, none of the newer.
    assert redeem(stub, svc, member_id, "order-3", 80).member.points_balance == 70

    assert m.service.expire(add_months(START, 12) - timedelta(seconds=1)) == 0
    assert m.service.expire(add_months(START, 12)) == 1
    assert m.service.expire(add_months(START, 12)) == 0
    entries = ledger(stub, svc, member_id)
    assert kinds(entries) == ["EXPIRE", "REDEEM", "EARN", "EARN"]
    assert (entries[0].points, entries[0].balance_after) == (-20, 50)
    assert assert_balance_is_the_ledgers(stub, svc, member_id) == 50

    assert m.service.expire(add_months(START, 18)) == 1
    assert m.service.expire(add_months(START, 18)) == 0
    entries = ledger(stub, svc, member_id)
    assert kinds(entries).count("EXPIRE") == 2
    assert entries[0].points == -50
    assert assert_balance_is_the_ledgers(stub, svc, member_id) == 0


def test_the_validity_is_configurable_and_lapsed_points_cannot_be_spent(start: Start, svc: Meta) -> None:
    m = start(MembershipSettings(points_validity_months=3))
    member_id = enroll(m.stub, svc, "cus-1").member_id
    entry = earn(m.stub, svc, member_id, "order-1", 10_000).entry
    assert when(entry.expire_time) == add_months(START, 3)
    m.clock.advance(months=3)
    # The expiry run has not been yet; the lapsed points are still not spendable.
    error = failure(
        m.stub.RedeemPoints, pb.RedeemPointsRequest(member_id=member_id, points=1, source_id="o-2"), svc
    )
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(error) == "INSUFFICIENT_POINTS"
    assert m.service.expire() == 1
    assert assert_balance_is_the_ledgers(m.stub, svc, member_id) == 0


# --- redeeming -----------------------------------------------------------------------------


def test_redeeming_more_than_the_balance_fails_and_spends_nothing(stub: Stub, svc: Meta) -> None:
    member_id = enroll(stub, svc, "cus-1").member_id
    earn(stub, svc, member_id, "order-1", 10_000)
    error = failure(
        stub.RedeemPoints, pb.RedeemPointsRequest(member_id=member_id, points=101, source_id="order-2"), svc
    )
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(error) == "INSUFFICIENT_POINTS"
    info = error_info(error)
    assert info is not None
    assert info.metadata["balance"] == "100"
    assert kinds(ledger(stub, svc, member_id)) == ["EARN"]
    assert member(stub, svc, member_id).points_balance == 100
    # The failed attempt did not use up its source id.
    spent = redeem(stub, svc, member_id, "order-2", 100)
    assert (spent.entry.kind, spent.entry.points, spent.entry.balance_after) == (
        pb.ENTRY_KIND_REDEEM,
        -100,
        0,
    )
    assert spent.member.points_balance == 0


def test_points_are_redeemed_only_inside_the_redemption_windows(start: Start, svc: Meta) -> None:
    october_31 = datetime(2026, 10, 31, 4, 0, tzinfo=UTC)
    m = start(MembershipSettings(redemption_windows="11-01..11-30"), now=october_31)
    member_id = enroll(m.stub, svc, "cus-1").member_id
    earn(m.stub, svc, member_id, "order-1", 50_000)
    request = pb.RedeemPointsRequest(member_id=member_id, points=100, source_id="order-2")
    error = failure(m.stub.RedeemPoints, request, svc)
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(error) == "OUTSIDE_REDEMPTION_WINDOW"
    m.clock.now = datetime(2026, 10, 31, 16, 0, tzinfo=UTC)  # 1 November, 00:00 in Shanghai
    inside = m.stub.RedeemPoints(request, metadata=svc)
    assert inside.member.points_balance == 400
    m.clock.now = datetime(2026, 11, 30, 16, 0, tzinfo=UTC)  # 1 December in Shanghai
    # A retry of the November redemption is answered; a new one is refused.
    assert m.stub.RedeemPoints(request, metadata=svc).entry == inside.entry
    late = pb.RedeemPointsRequest(member_id=member_id, points=100, source_id="order-3")
    assert error_reason(failure(m.stub.RedeemPoints, late, svc)) == "OUTSIDE_REDEMPTION_WINDOW"
    assert member(m.stub, svc, member_id).points_balance == 400


def test_redeeming_is_idempotent_by_source_id(stub: Stub, svc: Meta) -> None:
    member_id = enroll(stub, svc, "cus-1").member_id
    earn(stub, svc, member_id, "order-1", 50_000)
    first = redeem(stub, svc, member_id, "order-2", 120)
    retry = redeem(stub, svc, member_id, "order-2", 120)
    assert retry.entry == first.entry
    assert retry.member.points_balance == 380
    error = failure(
        stub.RedeemPoints, pb.RedeemPointsRequest(member_id=member_id, points=121, source_id="order-2"), svc
    )
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(error) == "SOURCE_ID_REUSED"
    assert kinds(ledger(stub, svc, member_id)) == ["REDEEM", "EARN"]


def test_a_store_terminal_redeems_points_only_at_its_own_store_with_the_members_code(
    m: Membership, svc: Meta, app_channel: Meta, token: TokenFactory
) -> None:
    stub = m.stub
    till = bearer(token(Role.STORE, store_id="SH-1"))
    member_id = enroll(stub, till, m.customer("openid-1")).member_id
    earn(stub, svc, member_id, "order-1", 50_000)
    code = member_code(stub, app_channel, member_id)
    error = failure(
        stub.RedeemPoints,
        pb.RedeemPointsRequest(
            member_id=member_id, points=10, source_id="order-2", store_id="BJ-1", member_code=code
        ),
        till,
    )
    assert (error.code(), error_reason(error)) == (grpc.StatusCode.PERMISSION_DENIED, "OTHER_STORE")
    # Its own member, without the code: nothing is spent.
    error = failure(
        stub.RedeemPoints, pb.RedeemPointsRequest(member_id=member_id, points=10, source_id="order-2"), till
    )
    assert (error.code(), error_reason(error)) == (grpc.StatusCode.PERMISSION_DENIED, "MEMBER_CODE_REQUIRED")
    assert redeem(stub, till, member_id, "order-2", 10, code=code).entry.store_id == "SH-1"
    assert redeem(stub, till, member_id, "order-3", 10, store_id="SH-1", code=code).entry.store_id == "SH-1"
    # The orders service may redeem for any store.
    assert redeem(stub, svc, member_id, "order-4", 10, store_id="BJ-1").entry.store_id == "BJ-1"
    assert member(stub, svc, member_id).points_balance == 470


# --- reversing -----------------------------------------------------------------------------


def test_a_till_refunds_what_it_redeemed_and_its_source_ids_are_its_own(
    m: Membership, svc: Meta, app_channel: Meta, token: TokenFactory
) -> None:
    stub = m.stub
    till_a = bearer(token(Role.STORE, store_id="SH-1", subject="till-1"))
    other_till = bearer(token(Role.STORE, store_id="SH-1", subject="till-2"))
    till_b = bearer(token(Role.STORE, store_id="BJ-1"))
    member_id = enroll(stub, till_a, m.customer("openid-1")).member_id
    earn(stub, svc, member_id, "order-1", 50_000)
    code = member_code(stub, app_channel, member_id)
    spent = redeem(stub, till_a, member_id, "pos-0001", 100, code=code)
    # The platform's own "pos-0001" is another source: reversing it gives nothing back.
    assert reverse(stub, svc, "pos-0001") == []
    # Another store's till naming the same source id reverses nothing of store SH-1's.
    assert reverse(stub, till_b, "pos-0001") == []
    assert member(stub, svc, member_id).points_balance == 400
    # Any till of the store refunds it, once.
    given_back = reverse(stub, other_till, "pos-0001")
    assert [(e.kind, e.points) for e in given_back] == [(pb.ENTRY_KIND_REVERSAL, 100)]
    assert reverse(stub, till_a, "pos-0001") == given_back
    assert member(stub, svc, member_id).points_balance == 500
    assert spent.entry.source_id == "pos-0001"


def test_reversing_an_unspent_earn_takes_back_its_points_and_spend(m: Membership, svc: Meta) -> None:
    stub = m.stub
    member_id = enroll(stub, svc, "cus-1").member_id
    earned = earn(stub, svc, member_id, "order-1", 100_000)
    assert earned.member.tier == "SILVER"
    entries = reverse(stub, svc, "order-1")
    assert len(entries) == 1
    reversal = entries[0]
    assert (reversal.kind, reversal.points, reversal.balance_after) == (pb.ENTRY_KIND_REVERSAL, -1000, 0)
    assert reversal.source_id == "order-1"
    after = member(stub, svc, member_id)
    assert (after.points_balance, after.lifetime_spend_cents) == (0, 0)
    # The spend no longer counts toward the tier once tiers are evaluated.
    assert m.service.evaluate_tiers() == 1
    assert member(stub, svc, member_id).tier == "BRONZE"
    assert assert_balance_is_the_ledgers(stub, svc, member_id) == 0


def test_reversing_a_spent_earn_claws_back_only_what_is_unspent(stub: Stub, svc: Meta) -> None:
    member_id = enroll(stub, svc, "cus-1").member_id
    earn(stub, svc, member_id, "order-1", 10_000)  # 100 points
    redeem(stub, svc, member_id, "order-2", 70)
    entries = reverse(stub, svc, "order-1")
    assert [(e.kind, e.points, e.balance_after) for e in entries] == [(pb.ENTRY_KIND_REVERSAL, -30, 0)]
    after = member(stub, svc, member_id)
    assert (after.points_balance, after.lifetime_spend_cents) == (0, 0)
    assert assert_balance_is_the_ledgers(stub, svc, member_id) == 0
    # Later earnings are the member's in full.
    assert earn(stub, svc, member_id, "order-3", 5_000).member.points_balance == 50


def test_reversing_a_redemption_gives_the_points_back(stub: Stub, svc: Meta) -> None:
    member_id = enroll(stub, svc, "cus-1").member_id
    earn(stub, svc, member_id, "order-1", 10_000)
    redeem(stub, svc, member_id, "order-2", 40, store_id="SH-1")
    entries = reverse(stub, svc, "order-2")
    assert [(e.kind, e.points, e.balance_after, e.store_id) for e in entries] == [
        (pb.ENTRY_KIND_REVERSAL, 40, 100, "SH-1")
    ]
    assert redeem(stub, svc, member_id, "order-3", 100).member.points_balance == 0
    assert assert_balance_is_the_ledgers(stub, svc, member_id) == 0


def test_reversing_is_idempotent_and_undoes_every_entry_of_the_source(stub: Stub, svc: Meta) -> None:
    member_id = enroll(stub, svc, "cus-1").member_id
    earn(stub, svc, member_id, "order-0", 20_000)  # 200 points
    # One order that paid with points and earned some.
    redeem(stub, svc, member_id, "order-1", 50)
    earn(stub, svc, member_id, "order-1", 10_000)  # 100 points
    assert member(stub, svc, member_id).points_balance == 250
    first = reverse(stub, svc, "order-1")
    assert [(e.kind, e.points) for e in first] == [
        (pb.ENTRY_KIND_REVERSAL, 50),
        (pb.ENTRY_KIND_REVERSAL, -100),
    ]
    assert member(stub, svc, member_id).points_balance == 200
    entries_before = ledger(stub, svc, member_id)
    again = reverse(stub, svc, "order-1")
    assert again == first
    assert ledger(stub, svc, member_id) == entries_before
    assert member(stub, svc, member_id).points_balance == 200
    assert assert_balance_is_the_ledgers(stub, svc, member_id) == 200


def test_reversing_a_source_with_nothing_recorded_succeeds_with_no_entries(stub: Stub, svc: Meta) -> None:
    assert reverse(stub, svc, "order-never") == []


# --- stages --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "event_type", [pb.EVENT_TYPE_VIEW, pb.EVENT_TYPE_FOLLOW, pb.EVENT_TYPE_ADD_TO_CART, pb.EVENT_TYPE_SHARE]
)
def test_an_engagement_event_moves_a_new_member_to_interest(
    m: Membership, app_channel: Meta, event_type: int
) -> None:
    stub, customer = m.stub, m.customer("openid-1")
    member_id = enroll(stub, app_channel, customer).member_id
    event(stub, app_channel, customer, event_type)
    assert member(stub, app_channel, member_id).stage == INTEREST


def test_a_member_goes_from_awareness_to_loyalty_and_never_back(
    m: Membership, app_channel: Meta, svc: Meta
) -> None:
    stub, customer = m.stub, m.customer("openid-1")
    member_id = enroll(stub, app_channel, customer).member_id
    assert member(stub, svc, member_id).stage == AWARENESS
    event(stub, app_channel, customer)
    assert member(stub, svc, member_id).stage == INTEREST
    assert earn(stub, svc, member_id, "order-1", 1_000).member.stage == PURCHASE
    event(stub, app_channel, customer, pb.EVENT_TYPE_SHARE)
    assert member(stub, svc, member_id).stage == PURCHASE
    m.clock.advance(months=11)
    assert earn(stub, svc, member_id, "order-2", 1_000).member.stage == LOYALTY
    m.clock.advance(months=24)
    assert earn(stub, svc, member_id, "order-3", 1_000).member.stage == LOYALTY
    event(stub, app_channel, customer)
    assert member(stub, svc, member_id).stage == LOYALTY


def test_a_repeat_purchase_thirteen_months_later_is_not_loyalty(m: Membership, svc: Meta) -> None:
    member_id = enroll(m.stub, svc, "cus-1").member_id
    assert earn(m.stub, svc, member_id, "order-1", 1_000).member.stage == PURCHASE
    m.clock.advance(months=13)
    assert earn(m.stub, svc, member_id, "order-2", 1_000).member.stage == PURCHASE
    m.clock.advance(days=1)
    assert earn(m.stub, svc, member_id, "order-3", 1_000).member.stage == LOYALTY


def test_events_of_customers_who_are_not_members_are_accepted_without_effect(
    m: Membership, app_channel: Meta
) -> None:
    stranger = m.customer("stranger")
    event(m.stub, app_channel, stranger, pb.EVENT_TYPE_FOLLOW)
    assert enroll(m.stub, app_channel, stranger).stage == AWARENESS


@pytest.mark.parametrize("event_type", [pb.EVENT_TYPE_UNSPECIFIED, 99])
def test_an_event_needs_a_known_type(m: Membership, app_channel: Meta, event_type: int) -> None:
    stub, customer = m.stub, m.customer("openid-1")
    enroll(stub, app_channel, customer)
    request = pb.RecordEventRequest(customer_id=customer, event_type=event_type)  # type: ignore[arg-type]
    error = failure(stub.RecordEvent, request, app_channel)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "event_type" in [name for name, _ in field_violations(error)]
    assert stub.GetMember(pb.GetMemberRequest(customer_id=customer), metadata=app_channel).member.stage == (
        AWARENESS
    )


# --- referrals -----------------------------------------------------------------------------


def test_a_referrer_earns_once_when_the_referred_members_first_order_earns(
    m: Membership, app_channel: Meta, svc: Meta
) -> None:
    stub = m.stub
    referrer = enroll(stub, app_channel, m.customer("referrer")).member_id
    referred = enroll(stub, app_channel, m.customer("new"), referrer_member_id=referrer).member_id
    earn(stub, svc, referred, "order-1", 5_000)
    earn(stub, svc, referred, "order-1", 5_000)  # a retry
    earn(stub, svc, referred, "order-2", 5_000)  # a second order
    entries = ledger(stub, svc, referrer)
    assert [(e.kind, e.points, e.source_id) for e in entries] == [
        (pb.ENTRY_KIND_REFERRAL_BONUS, 100, "order-1")
    ]
    assert when(entries[0].expire_time) == add_months(START, 12)
    assert member(stub, svc, referrer).points_balance == 100
    assert member(stub, svc, referred).points_balance == 100
    # Cancelling the first order takes the bonus back with the earn.
    undone = reverse(stub, svc, "order-1")
    assert sorted((e.member_id, e.points) for e in undone) == sorted([(referred, -50), (referrer, -100)])
    assert member(stub, svc, referrer).points_balance == 0
    assert assert_balance_is_the_ledgers(stub, svc, referrer) == 0


def test_a_member_without_a_referrer_credits_nobody(m: Membership, app_channel: Meta, svc: Meta) -> None:
    stub = m.stub
    bystander = enroll(stub, app_channel, m.customer("bystander")).member_id
    alone = enroll(stub, app_channel, m.customer("alone")).member_id
    earn(stub, svc, alone, "order-1", 5_000)
    assert ledger(stub, svc, bystander) == []


# --- coupons -------------------------------------------------------------------------------


def test_issuing_a_coupon_is_idempotent_by_request_id(stub: Stub, svc: Meta, ops: Meta) -> None:
    member_id = enroll(stub, svc, "cus-1").member_id
    coupon = issue(stub, ops, member_id, "campaign-1", discount=500, min_spend=2_000)
    assert len(coupon.code) >= 8
    assert (coupon.member_id, coupon.discount_cents, coupon.min_spend_cents) == (member_id, 500, 2_000)
    assert when(coupon.expire_time) == START + timedelta(days=30)
    assert not coupon.redeemed
    assert issue(stub, ops, member_id, "campaign-1", discount=500, min_spend=2_000) == coupon
    error = failure(
        stub.IssueCoupon,
        pb.IssueCouponRequest(
            member_id=member_id,
            discount_cents=600,
            min_spend_cents=2_000,
            expire_time=stamp(START + timedelta(days=30)),
            request_id="campaign-1",
        ),
        ops,
    )
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(error) == "REQUEST_ID_REUSED"
    assert issue(stub, ops, member_id, "campaign-2").code != coupon.code


def test_a_coupon_is_redeemed_once_by_its_owner_above_its_minimum_spend(
    stub: Stub, svc: Meta, ops: Meta
) -> None:
    owner = enroll(stub, svc, "cus-1").member_id
    stranger = enroll(stub, svc, "cus-2").member_id
    code = issue(stub, ops, owner, "campaign-1", discount=500, min_spend=2_000).code

    refusals = [
        (stranger, "order-1", 5_000, "COUPON_NOT_OWNED"),
        (owner, "order-1", 1_999, "MIN_SPEND_NOT_MET"),
    ]
    for who, order, amount, reason in refusals:
        error = failure(
            stub.RedeemCoupon,
            pb.RedeemCouponRequest(code=code, member_id=who, order_id=order, order_amount_cents=amount),
            svc,
        )
        assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert error_reason(error) == reason

    used = use_coupon(stub, svc, code, owner, "order-1", amount=2_000)
    assert used.discount_cents == 500
    assert (used.coupon.redeemed, used.coupon.redeemed_order_id) == (True, "order-1")
    assert use_coupon(stub, svc, code, owner, "order-1", amount=2_000) == used  # a retry for the same order
    error = failure(
        stub.RedeemCoupon,
        pb.RedeemCouponRequest(code=code, member_id=owner, order_id="order-2", order_amount_cents=9_000),
        svc,
    )
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(error) == "COUPON_ALREADY_REDEEMED"


def test_a_released_coupon_can_be_used_again(stub: Stub, svc: Meta, ops: Meta) -> None:
    owner = enroll(stub, svc, "cus-1").member_id
    code = issue(stub, ops, owner, "campaign-1").code
    use_coupon(stub, svc, code, owner, "order-1", amount=3_000)
    # Releasing for an order that does not hold it changes nothing.
    kept = stub.ReleaseCoupon(pb.ReleaseCouponRequest(code=code, order_id="order-2"), metadata=svc).coupon
    assert (kept.redeemed, kept.redeemed_order_id) == (True, "order-1")
    released = stub.ReleaseCoupon(pb.ReleaseCouponRequest(code=code, order_id="order-1"), metadata=svc)
    assert (released.coupon.redeemed, released.coupon.redeemed_order_id) == (False, "")
    again = stub.ReleaseCoupon(pb.ReleaseCouponRequest(code=code, order_id="order-1"), metadata=svc)
    assert again.coupon == released.coupon
    reused = use_coupon(stub, svc, code, owner, "order-2", amount=300)
    assert (reused.coupon.redeemed_order_id, reused.discount_cents) == ("order-2", 300)  # capped


def test_an_expired_coupon_is_refused(m: Membership, svc: Meta, ops: Meta) -> None:
    owner = enroll(m.stub, svc, "cus-1").member_id
    code = issue(m.stub, ops, owner, "campaign-1", expire=START + timedelta(days=7)).code
    m.clock.advance(days=7)
    error = failure(
        m.stub.RedeemCoupon,
        pb.RedeemCouponRequest(code=code, member_id=owner, order_id="order-1", order_amount_cents=9_000),
        svc,
    )
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(error) == "COUPON_EXPIRED"


def test_a_store_terminal_redeems_coupons_only_at_its_own_store_with_the_members_code(
    m: Membership, ops: Meta, app_channel: Meta, token: TokenFactory
) -> None:
    stub = m.stub
    till = bearer(token(Role.STORE, store_id="SH-1"))
    owner = enroll(stub, till, m.customer("openid-1")).member_id
    code = issue(stub, ops, owner, "campaign-1").code
    shown = member_code(stub, app_channel, owner)
    elsewhere = pb.RedeemCouponRequest(
        code=code,
        member_id=owner,
        order_id="order-1",
        order_amount_cents=9_000,
        store_id="BJ-1",
        member_code=shown,
    )
    assert failure(stub.RedeemCoupon, elsewhere, till).code() is grpc.StatusCode.PERMISSION_DENIED
    without = pb.RedeemCouponRequest(code=code, member_id=owner, order_id="order-1", order_amount_cents=9_000)
    assert error_reason(failure(stub.RedeemCoupon, without, till)) == "MEMBER_CODE_REQUIRED"
    assert use_coupon(stub, till, code, owner, "order-1", amount=9_000, member_code=shown).coupon.redeemed


# --- tags, segments, funnel ----------------------------------------------------------------


def test_tags_are_added_and_removed_and_a_retry_changes_nothing(stub: Stub, ops: Meta) -> None:
    member_id = enroll(stub, ops, "cus-1").member_id
    change = pb.UpdateTagsRequest(member_id=member_id, add_tags=["vip", "coffee", "vip"])
    assert list(stub.UpdateTags(change, metadata=ops).member.tags) == ["coffee", "vip"]
    assert list(stub.UpdateTags(change, metadata=ops).member.tags) == ["coffee", "vip"]
    removal = pb.UpdateTagsRequest(member_id=member_id, remove_tags=["coffee", "never-had"], add_tags=["tea"])
    assert list(stub.UpdateTags(removal, metadata=ops).member.tags) == ["tea", "vip"]
    assert list(member(stub, ops, member_id).tags) == ["tea", "vip"]


@pytest.fixture
def segment(m: Membership, ops: Meta, svc: Meta, app_channel: Meta) -> dict[str, str]:
    """Five members: a GOLD buyer and an interested one at SH-1, a new one at BJ-1, a new VIP at
    SH-1 and one with no store."""
    stub = m.stub
    for guide, store in (("g1", "SH-1"), ("g2", "SH-1"), ("g3", "BJ-1")):
        m.guide(guide, store)
    keen = m.customer("keen")
    ids = {
        "gold": enroll(stub, ops, "cus-gold", home_store_id="SH-1", guide_id="g1").member_id,
        "keen": enroll(stub, ops, keen, home_store_id="SH-1", guide_id="g2").member_id,
        "north": enroll(stub, ops, "cus-north", home_store_id="BJ-1", guide_id="g3").member_id,
        "vip": enroll(stub, ops, "cus-vip", home_store_id="SH-1", guide_id="g1").member_id,
        "online": enroll(stub, ops, "cus-online").member_id,
    }
    earn(stub, svc, ids["gold"], "order-1", 500_000)
    event(stub, app_channel, keen)
    for who in ("gold", "vip"):
        stub.UpdateTags(pb.UpdateTagsRequest(member_id=ids[who], add_tags=["vip"]), metadata=ops)
    return ids


def test_members_are_listed_by_tier_tag_stage_store_and_guide_in_pages(
    stub: Stub, ops: Meta, segment: dict[str, str]
) -> None:
    def ids(*names: str) -> list[str]:
        return sorted(segment[name] for name in names)

    assert listed(stub, ops) == ids("gold", "keen", "north", "vip", "online")
    assert listed(stub, ops, tier="GOLD") == ids("gold")
    assert listed(stub, ops, tier="BRONZE") == ids("keen", "north", "vip", "online")
    assert listed(stub, ops, tag="vip") == ids("gold", "vip")
    assert listed(stub, ops, stage=INTEREST) == ids("keen")
    assert listed(stub, ops, stage=AWARENESS) == ids("north", "vip", "online")
    assert listed(stub, ops, home_store_id="SH-1") == ids("gold", "keen", "vip")
    assert listed(stub, ops, guide_id="g1") == ids("gold", "vip")
    assert listed(stub, ops, home_store_id="SH-1", guide_id="g1", tag="vip", stage=AWARENESS) == ids("vip")
    assert listed(stub, ops, tag="nobody") == []

    first = stub.ListMembers(pb.ListMembersRequest(page_size=2, home_store_id="SH-1"), metadata=ops)
    assert len(first.members) == 2
    assert first.next_page_token
    changed_query = pb.ListMembersRequest(home_store_id="BJ-1", page_token=first.next_page_token)
    error = failure(stub.ListMembers, changed_query, ops)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in [name for name, _ in field_violations(error)]


def test_the_funnel_counts_each_stage_with_conversion_rates_for_a_store_or_the_chain(
    stub: Stub, ops: Meta, segment: dict[str, str]
) -> None:
    chain = stub.GetFunnel(pb.GetFunnelRequest(), metadata=ops)
    assert [(s.stage, s.members) for s in chain.stages] == [
        (AWARENESS, 3),
        (INTEREST, 1),
        (PURCHASE, 1),
        (LOYALTY, 0),
    ]
    assert [(c.from_stage, c.to_stage) for c in chain.conversions] == [
        (AWARENESS, INTEREST),
        (INTEREST, PURCHASE),
        (PURCHASE, LOYALTY),
    ]
    assert [c.rate for c in chain.conversions] == pytest.approx([2 / 5, 1 / 2, 0.0])
    store = stub.GetFunnel(pb.GetFunnelRequest(home_store_id="SH-1"), metadata=ops)
    assert [s.members for s in store.stages] == [1, 1, 1, 0]
    assert [c.rate for c in store.conversions] == pytest.approx([2 / 3, 1 / 2, 0.0])
    empty = stub.GetFunnel(pb.GetFunnelRequest(home_store_id="GZ-1"), metadata=ops)
    assert [s.members for s in empty.stages] == [0, 0, 0, 0]
    assert [c.rate for c in empty.conversions] == [0.0, 0.0, 0.0]


def test_a_store_terminal_sees_only_its_own_members_and_funnel(
    stub: Stub, ops: Meta, token: TokenFactory, segment: dict[str, str]
) -> None:
    till = bearer(token(Role.STORE, store_id="SH-1"))
    own = listed(stub, ops, home_store_id="SH-1")
    assert listed(stub, till) == own
    assert listed(stub, till, home_store_id="SH-1") == own
    assert listed(stub, till, tag="vip") == sorted([segment["gold"], segment["vip"]])
    own_funnel = stub.GetFunnel(pb.GetFunnelRequest(home_store_id="SH-1"), metadata=ops)
    assert stub.GetFunnel(pb.GetFunnelRequest(), metadata=till) == own_funnel
    assert stub.GetFunnel(pb.GetFunnelRequest(home_store_id="SH-1"), metadata=till) == own_funnel
    other = (
        (stub.ListMembers, pb.ListMembersRequest(home_store_id="BJ-1")),
        (stub.GetFunnel, pb.GetFunnelRequest(home_store_id="BJ-1")),
    )
    for call, request in other:
        assert failure(call, request, till).code() is grpc.StatusCode.PERMISSION_DENIED


# --- merges --------------------------------------------------------------------------------


def test_merging_combines_balances_ledgers_coupons_and_spend_and_keeps_the_survivors_store_and_guide(
    m: Membership, svc: Meta, ops: Meta
) -> None:
    stub = m.stub
    m.guide("g-north", "BJ-1")
    m.guide("g-south", "SH-1")
    merged = enroll(stub, svc, "cus-old", home_store_id="BJ-1", guide_id="g-north").member_id
    earn(stub, svc, merged, "order-1", 50_000)  # 500 points, the oldest
    stub.UpdateTags(pb.UpdateTagsRequest(member_id=merged, add_tags=["tea"]), metadata=ops)
    coupon = issue(stub, ops, merged, "campaign-1", expire=START + timedelta(days=90))
    m.clock.advance(months=1)
    survivor = enroll(stub, svc, "cus-main", home_store_id="SH-1", guide_id="g-south").member_id
    earn(stub, svc, survivor, "order-2", 60_000)  # 600 points
    stub.UpdateTags(pb.UpdateTagsRequest(member_id=survivor, add_tags=["vip"]), metadata=ops)
    m.clock.advance(months=1)

    combined = merge(stub, svc, "cus-main", "cus-old", "merge-1")
    assert combined.member_id == survivor
    assert combined.customer_id == "cus-main"
    assert (combined.points_balance, combined.lifetime_spend_cents) == (1_100, 110_000)
    assert combined.tier == "SILVER"  # 1,100 CNY together
    assert (combined.home_store_id, combined.guide_id) == ("SH-1", "g-south")
    assert list(combined.tags) == ["tea", "vip"]
    assert combined.stage == PURCHASE

    # The merged member's and customer's ids lead to the survivor.
    assert member(stub, svc, merged) == combined
    by_customer = stub.GetMember(pb.GetMemberRequest(customer_id="cus-old"), metadata=svc).member
    assert by_customer == combined
    again = stub.Enroll(pb.EnrollRequest(customer_id="cus-old"), metadata=svc)
    assert (again.created, again.member.member_id) == (False, survivor)

    # One ledger, one balance.
    assert sorted(e.source_id for e in ledger(stub, svc, survivor)) == ["order-1", "order-2"]
    assert assert_balance_is_the_ledgers(stub, svc, survivor, merged=True) == 1_100
    assert ledger(stub, svc, merged) == ledger(stub, svc, survivor)

    # The merged member's coupon is the survivor's.
    assert use_coupon(stub, svc, coupon.code, survivor, "order-3", amount=1_000).coupon.redeemed

    # Points are still spent oldest first: the merged member's earn goes first.
    redeem(stub, svc, merged, "order-4", 300)
    assert m.service.expire(add_months(START, 12)) == 1
    assert ledger(stub, svc, survivor)[0].points == -200
    assert assert_balance_is_the_ledgers(stub, svc, survivor) == 600

    # Earning under the merged member's id credits the survivor.
    assert earn(stub, svc, merged, "order-5", 10_000).member.member_id == survivor
    # Only the survivor is listed and counted.
    assert listed(stub, ops) == [survivor]
    funnel = stub.GetFunnel(pb.GetFunnelRequest(), metadata=ops)
    assert sum(s.members for s in funnel.stages) == 1


def test_merging_is_idempotent_by_request_id(stub: Stub, svc: Meta) -> None:
    survivor = enroll(stub, svc, "cus-a").member_id
    merged = enroll(stub, svc, "cus-b").member_id
    earn(stub, svc, survivor, "order-1", 10_000)
    earn(stub, svc, merged, "order-2", 20_000)
    first = merge(stub, svc, "cus-a", "cus-b", "merge-1")
    assert first.points_balance == 300
    assert merge(stub, svc, "cus-a", "cus-b", "merge-1") == first
    assert merge(stub, svc, "cus-a", "cus-b", "merge-2") == first  # the merge already happened
    enroll(stub, svc, "cus-c")
    error = failure(
        stub.MergeMembers,
        pb.MergeMembersRequest(
            survivor_customer_id="cus-a", merged_customer_id="cus-c", request_id="merge-1"
        ),
        svc,
    )
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(error) == "REQUEST_ID_REUSED"
    assert member(stub, svc, survivor).points_balance == 300
    assert assert_balance_is_the_ledgers(stub, svc, survivor, merged=True) == 300


def test_a_member_of_the_merged_customer_alone_moves_to_the_survivor_customer(stub: Stub, svc: Meta) -> None:
    only = enroll(stub, svc, "cus-b", home_store_id="SH-1").member_id
    moved = merge(stub, svc, "cus-a", "cus-b", "merge-1")
    assert (moved.member_id, moved.customer_id, moved.home_store_id) == (only, "cus-a", "SH-1")
    assert stub.GetMember(pb.GetMemberRequest(customer_id="cus-a"), metadata=svc).member.member_id == only
    assert stub.GetMember(pb.GetMemberRequest(customer_id="cus-b"), metadata=svc).member.member_id == only


def test_a_customer_merged_into_one_member_cannot_be_merged_into_another(stub: Stub, svc: Meta) -> None:
    first = enroll(stub, svc, "cus-a").member_id
    earlier_survivor = enroll(stub, svc, "cus-b").member_id
    other = enroll(stub, svc, "cus-c").member_id
    earn(stub, svc, first, "order-1", 10_000)
    earn(stub, svc, other, "order-2", 5_000)
    merge(stub, svc, "cus-b", "cus-a", "merge-1")
    for survivor, request_id in (("cus-c", "merge-2"), ("cus-new", "merge-3")):
        error = failure(
            stub.MergeMembers,
            pb.MergeMembersRequest(
                survivor_customer_id=survivor, merged_customer_id="cus-a", request_id=request_id
            ),
            svc,
        )
        assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert error_reason(error) == "MEMBER_ALREADY_MERGED"
    assert member(stub, svc, other).points_balance == 50
    assert member(stub, svc, earlier_survivor).points_balance == 100
    assert stub.GetMember(pb.GetMemberRequest(customer_id="cus-a"), metadata=svc).member.member_id == (
        earlier_survivor
    )
    # The survivor itself may be merged on, and takes the earlier merge with it.
    assert merge(stub, svc, "cus-c", "cus-b", "merge-4").points_balance == 150
    assert stub.GetMember(pb.GetMemberRequest(customer_id="cus-a"), metadata=svc).member.member_id == other


def test_merging_two_customers_without_members_is_not_found(stub: Stub, svc: Meta) -> None:
    request = pb.MergeMembersRequest(survivor_customer_id="cus-a", merged_customer_id="cus-b", request_id="m")
    assert failure(stub.MergeMembers, request, svc).code() is grpc.StatusCode.NOT_FOUND


# --- bad input -----------------------------------------------------------------------------

PAST = stamp(START - timedelta(seconds=1))
FUTURE = stamp(START + timedelta(days=1))
LONG = "x" * 65

BAD_REQUESTS: list[tuple[str, Message, str]] = [
    ("Enroll", pb.EnrollRequest(), "customer_id"),
    ("Enroll", pb.EnrollRequest(customer_id="c", home_store_id=LONG), "home_store_id"),
    ("Enroll", pb.EnrollRequest(customer_id="c", channel=99), "channel"),  # type: ignore[arg-type]
    ("GetMember", pb.GetMemberRequest(), "key"),
    ("GetMember", pb.GetMemberRequest(member_id=""), "member_id"),
    ("GetMember", pb.GetMemberRequest(customer_id=LONG), "customer_id"),
    ("EarnPoints", pb.EarnPointsRequest(member_id="m", source_id="o", spend_cents=-1), "spend_cents"),
    ("EarnPoints", pb.EarnPointsRequest(member_id="m", source_id="", spend_cents=100), "source_id"),
    ("EarnPoints", pb.EarnPointsRequest(member_id="", source_id="o", spend_cents=100), "member_id"),
    ("RedeemPoints", pb.RedeemPointsRequest(member_id="m", source_id="o", points=0), "points"),
    ("RedeemPoints", pb.RedeemPointsRequest(member_id="m", source_id="o", points=-5), "points"),
    ("RedeemPoints", pb.RedeemPointsRequest(member_id="m", source_id="", points=5), "source_id"),
    ("RedeemPoints", pb.RedeemPointsRequest(member_id="", source_id="o", points=5), "member_id"),
    ("ReversePoints", pb.ReversePointsRequest(source_id=""), "source_id"),
    ("ListLedgerEntries", pb.ListLedgerEntriesRequest(), "member_id"),
    ("ListLedgerEntries", pb.ListLedgerEntriesRequest(member_id="m", page_size=-1), "page_size"),
    ("ListLedgerEntries", pb.ListLedgerEntriesRequest(member_id="m", page_token="garbage"), "page_token"),
    ("Enroll", pb.EnrollRequest(customer_id="c", birthday="02-30"), "birthday"),
    ("Enroll", pb.EnrollRequest(customer_id="c", birthday="2-3"), "birthday"),
    ("GrantPoints", pb.GrantPointsRequest(member_id="m", source_id="g", points=0), "points"),
    ("GrantPoints", pb.GrantPointsRequest(member_id="m", source_id="g", points=-1), "points"),
    ("GrantPoints", pb.GrantPointsRequest(member_id="m", source_id="g", points=100_000_001), "points"),
    ("GrantPoints", pb.GrantPointsRequest(member_id="m", source_id="", points=5), "source_id"),
    ("GrantPoints", pb.GrantPointsRequest(member_id="", source_id="g", points=5), "member_id"),
    ("GrantPoints", pb.GrantPointsRequest(member_id="m", source_id="g", points=5, reason=LONG * 5), "reason"),
    ("ListCoupons", pb.ListCouponsRequest(), "member_id"),
    ("ListCoupons", pb.ListCouponsRequest(member_id="m", page_size=-1), "page_size"),
    ("ListCoupons", pb.ListCouponsRequest(member_id="m", page_token="garbage"), "page_token"),
    (
        "IssueCoupon",
        pb.IssueCouponRequest(
            member_id="m", discount_cents=1, expire_time=FUTURE, request_id="r", campaign_id=LONG
        ),
        "campaign_id",
    ),
    (
        "IssueCoupon",
        pb.IssueCouponRequest(member_id="m", discount_cents=0, expire_time=FUTURE, request_id="r"),
        "discount_cents",
    ),
    (
        "IssueCoupon",
        pb.IssueCouponRequest(
            member_id="m", discount_cents=1, min_spend_cents=-1, expire_time=FUTURE, request_id="r"
        ),
        "min_spend_cents",
    ),
    (
        "IssueCoupon",
        pb.IssueCouponRequest(member_id="m", discount_cents=1, expire_time=PAST, request_id="r"),
        "expire_time",
    ),
    ("IssueCoupon", pb.IssueCouponRequest(member_id="m", discount_cents=1, request_id="r"), "expire_time"),
    ("IssueCoupon", pb.IssueCouponRequest(member_id="m", discount_cents=1, expire_time=FUTURE), "request_id"),
    ("RedeemCoupon", pb.RedeemCouponRequest(member_id="m", order_id="o"), "code"),
    ("RedeemCoupon", pb.RedeemCouponRequest(code="C", member_id="m"), "order_id"),
    (
        "RedeemCoupon",
        pb.RedeemCouponRequest(code="C", member_id="m", order_id="o", order_amount_cents=-1),
        "order_amount_cents",
    ),
    ("ReleaseCoupon", pb.ReleaseCouponRequest(code="C"), "order_id"),
    ("RecordEvent", pb.RecordEventRequest(customer_id="c"), "event_type"),
    ("RecordEvent", pb.RecordEventRequest(event_type=pb.EVENT_TYPE_VIEW), "customer_id"),
    ("ListMembers", pb.ListMembersRequest(stage=9), "stage"),  # type: ignore[arg-type]
    ("ListMembers", pb.ListMembersRequest(page_size=-1), "page_size"),
    ("ListMembers", pb.ListMembersRequest(tag=LONG), "tag"),
    ("ListMembers", pb.ListMembersRequest(page_token="garbage"), "page_token"),
    ("UpdateTags", pb.UpdateTagsRequest(add_tags=["vip"]), "member_id"),
    ("UpdateTags", pb.UpdateTagsRequest(member_id="m", add_tags=[LONG]), "add_tags[0]"),
    ("UpdateTags", pb.UpdateTagsRequest(member_id="m", remove_tags=["ok", ""]), "remove_tags[1]"),
    ("UpdateTags", pb.UpdateTagsRequest(member_id="m", add_tags=["a"], remove_tags=["a"]), "remove_tags"),
    ("GetFunnel", pb.GetFunnelRequest(home_store_id=LONG), "home_store_id"),
    (
        "MergeMembers",
        pb.MergeMembersRequest(survivor_customer_id="c", merged_customer_id="c", request_id="r"),
        "merged_customer_id",
    ),
    ("MergeMembers", pb.MergeMembersRequest(survivor_customer_id="a", merged_customer_id="b"), "request_id"),
]


@pytest.mark.parametrize(
    ("method", "request_message", "field"),
    BAD_REQUESTS,
    ids=[f"{method}-{field}-{i}" for i, (method, _, field) in enumerate(BAD_REQUESTS)],
)
def test_a_bad_request_is_invalid_argument_naming_the_field(
    stub: Stub, ops: Meta, method: str, request_message: Message, field: str
) -> None:
    error = failure(getattr(stub, method), request_message, ops)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert field in [name for name, _ in field_violations(error)]


UNKNOWN: list[tuple[str, Message]] = [
    ("GetMember", pb.GetMemberRequest(member_id="mem_nobody")),
    ("GetMember", pb.GetMemberRequest(customer_id="cus-nobody")),
    ("EarnPoints", pb.EarnPointsRequest(member_id="mem_nobody", source_id="o", spend_cents=100)),
    ("RedeemPoints", pb.RedeemPointsRequest(member_id="mem_nobody", source_id="o", points=1)),
    ("ListLedgerEntries", pb.ListLedgerEntriesRequest(member_id="mem_nobody")),
    ("GrantPoints", pb.GrantPointsRequest(member_id="mem_nobody", points=1, source_id="g")),
    ("ListCoupons", pb.ListCouponsRequest(member_id="mem_nobody")),
    (
        "IssueCoupon",
        pb.IssueCouponRequest(member_id="mem_nobody", discount_cents=1, expire_time=FUTURE, request_id="r"),
    ),
    ("RedeemCoupon", pb.RedeemCouponRequest(code="NOSUCHCODE", member_id="m", order_id="o")),
    ("ReleaseCoupon", pb.ReleaseCouponRequest(code="NOSUCHCODE", order_id="o")),
    ("UpdateTags", pb.UpdateTagsRequest(member_id="mem_nobody", add_tags=["vip"])),
]


@pytest.mark.parametrize(
    ("method", "request_message"), UNKNOWN, ids=[f"{m}-{i}" for i, (m, _) in enumerate(UNKNOWN)]
)
def test_an_unknown_member_or_coupon_is_not_found(
    stub: Stub, ops: Meta, method: str, request_message: Message
) -> None:
    assert failure(getattr(stub, method), request_message, ops).code() is grpc.StatusCode.NOT_FOUND


# --- roles ---------------------------------------------------------------------------------

FRONT = {Role.CHANNEL, Role.STORE, Role.SERVICE, Role.OPS}
BACK = {Role.SERVICE, Role.OPS}
ALLOWED = {
    "Enroll": FRONT,
    "GetMember": FRONT,
    "CreateMemberCode": {Role.CHANNEL, Role.OPS},
    "EarnPoints": BACK,
    "RedeemPoints": FRONT,
    "ReversePoints": FRONT,
    "ListLedgerEntries": FRONT,
    "GrantPoints": BACK,
    "IssueCoupon": BACK,
    "ListCoupons": FRONT,
    "RedeemCoupon": FRONT,
    "ReleaseCoupon": BACK,
    "RecordEvent": FRONT,
    "ListMembers": {Role.OPS, Role.STORE},
    "UpdateTags": BACK,
    "BatchIssueCoupons": BACK,
    "BatchGrantPoints": BACK,
    "BatchUpdateTags": BACK,
    "BatchEarnPoints": BACK,
    "GetFunnel": {Role.OPS, Role.STORE},
    "MergeMembers": BACK,
    "UpsertGuide": {Role.OPS, Role.STORE},
    "GetGuide": {Role.OPS, Role.SERVICE, Role.STORE},
    "ListGuides": {Role.OPS, Role.STORE},
}
CALLS: dict[str, Message] = {
    "Enroll": pb.EnrollRequest(customer_id="cus-1"),
    "GetMember": pb.GetMemberRequest(member_id="mem_1"),
    "CreateMemberCode": pb.CreateMemberCodeRequest(member_id="mem_1"),
    "UpsertGuide": pb.UpsertGuideRequest(guide=pb.Guide(guide_id="g", store_id="s1", active=True)),
    "GetGuide": pb.GetGuideRequest(guide_id="g"),
    "ListGuides": pb.ListGuidesRequest(),
    "EarnPoints": pb.EarnPointsRequest(member_id="mem_1", source_id="o", spend_cents=100),
    "RedeemPoints": pb.RedeemPointsRequest(member_id="mem_1", source_id="o", points=1),
    "ReversePoints": pb.ReversePointsRequest(source_id="o"),
    "ListLedgerEntries": pb.ListLedgerEntriesRequest(member_id="mem_1"),
    "GrantPoints": pb.GrantPointsRequest(member_id="mem_1", points=1, source_id="g"),
    "ListCoupons": pb.ListCouponsRequest(member_id="mem_1"),
    "IssueCoupon": pb.IssueCouponRequest(
        member_id="mem_1",
        discount_cents=1,
        expire_time=stamp(datetime(2099, 1, 1, tzinfo=UTC)),
        request_id="r",
    ),
    "RedeemCoupon": pb.RedeemCouponRequest(code="C", member_id="mem_1", order_id="o"),
    "ReleaseCoupon": pb.ReleaseCouponRequest(code="C", order_id="o"),
    "RecordEvent": pb.RecordEventRequest(customer_id="cus-1", event_type=pb.EVENT_TYPE_VIEW),
    "ListMembers": pb.ListMembersRequest(),
    "UpdateTags": pb.UpdateTagsRequest(member_id="mem_1", add_tags=["vip"]),
    "BatchIssueCoupons": pb.BatchIssueCouponsRequest(
        requests=[
            pb.IssueCouponRequest(
                member_id="mem_1",
                discount_cents=1,
                expire_time=stamp(datetime(2099, 1, 1, tzinfo=UTC)),
                request_id="r",
            )
        ]
    ),
    "BatchGrantPoints": pb.BatchGrantPointsRequest(
        requests=[pb.GrantPointsRequest(member_id="mem_1", points=1, source_id="g")]
    ),
    "BatchUpdateTags": pb.BatchUpdateTagsRequest(
        requests=[pb.UpdateTagsRequest(member_id="mem_1", add_tags=["vip"])]
    ),
    "BatchEarnPoints": pb.BatchEarnPointsRequest(
        requests=[pb.EarnPointsRequest(member_id="mem_1", source_id="o", spend_cents=100)]
    ),
    "GetFunnel": pb.GetFunnelRequest(),
    "MergeMembers": pb.MergeMembersRequest(survivor_customer_id="a", merged_customer_id="b", request_id="r"),
}


@pytest.fixture
def deployed(settings: Settings, database_url: str) -> Iterator[Stub]:
    """The service as its composition root builds it."""
    settings.membership.database_url = database_url
    bootstrap.migrate(settings)
    with running(bootstrap.build_app(settings), settings) as channel:
        yield Stub(channel)


def test_the_role_matrix_covers_every_rpc() -> None:
    declared = {method.name for method in SERVICE.methods}
    assert declared == set(ALLOWED) == set(CALLS)


@pytest.mark.parametrize("method", sorted(CALLS))
@pytest.mark.parametrize("role", list(Role))
def test_every_rpc_admits_only_its_roles(
    deployed: Stub, token: TokenFactory, method: str, role: Role
) -> None:
    meta = bearer(
        token(
            role,
            store_id="s1" if role is Role.STORE else "",
            channel="CHANNEL_APP" if role is Role.CHANNEL else "",
        )
    )
    try:
        getattr(deployed, method)(CALLS[method], metadata=meta)
        code, reason = grpc.StatusCode.OK, ""
    except grpc.RpcError as error:
        code, reason = error.code(), error_reason(error)
    if role in ALLOWED[method]:
        # Admitted: whatever the answer, not a refusal of the role (a till may still be told it
        # needs the member's code, with a reason of its own).
        assert (code, reason) != (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
        assert code is not grpc.StatusCode.UNAUTHENTICATED
    else:
        assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")


@pytest.mark.parametrize("method", sorted(CALLS))
def test_every_rpc_refuses_a_missing_token(deployed: Stub, method: str) -> None:
    assert failure(getattr(deployed, method), CALLS[method]).code() is grpc.StatusCode.UNAUTHENTICATED


# --- birthdays, grants and a member's coupons (for campaigns and channel frontends) ---------


def test_enrolment_records_a_birthday_that_a_later_enrolment_leaves_as_it_is(
    m: Membership, app_channel: Meta, svc: Meta
) -> None:
    stub = m.stub
    leap = enroll(stub, app_channel, m.customer("leap"), birthday="02-29")
    assert leap.birthday == "02-29"
    assert member(stub, svc, leap.member_id).birthday == "02-29"
    again = stub.Enroll(pb.EnrollRequest(customer_id=leap.customer_id, birthday="03-01"), metadata=svc)
    assert (again.created, again.member.birthday) == (False, "02-29")
    assert enroll(stub, svc, "cus-unknown-birthday").birthday == ""
    for bad in ("13-01", "04-31", "00-10", "1-01", "01-1", "0229", "02-29 ", "aa-bb"):
        error = failure(stub.Enroll, pb.EnrollRequest(customer_id="cus-bad", birthday=bad), svc)
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert [name for name, _ in field_violations(error)] == ["birthday"]
    # A refused enrolment enrolled nobody.
    assert failure(stub.GetMember, pb.GetMemberRequest(customer_id="cus-bad"), svc).code() is (
        grpc.StatusCode.NOT_FOUND
    )


def grant(stub: Stub, meta: Meta, member_id: str, source_id: str, points: int) -> pb.GrantPointsResponse:
    request = pb.GrantPointsRequest(
        member_id=member_id, points=points, source_id=source_id, reason="CAMPAIGN"
    )
    response: pb.GrantPointsResponse = stub.GrantPoints(request, metadata=meta)
    return response


def test_granted_points_are_credited_once_per_source_id_and_expire_like_earned_ones(
    m: Membership, svc: Meta, ops: Meta
) -> None:
    stub = m.stub
    member_id = enroll(stub, svc, "cus-1").member_id
    other_id = enroll(stub, svc, "cus-2").member_id
    granted = grant(stub, svc, member_id, "cmp-1:v1:birthday:2026", 300)
    entry = granted.entry
    assert (pb.EntryKind.Name(entry.kind), entry.points, entry.balance_after) == (
        "ENTRY_KIND_ADJUST",
        300,
        300,
    )
    assert entry.source_id == "cmp-1:v1:birthday:2026"
    assert when(entry.expire_time) == add_months(START, 12)
    # Points given, not spend: no tier, stage or spend moves.
    assert (granted.member.points_balance, granted.member.tier) == (300, "BRONZE")
    assert (granted.member.lifetime_spend_cents, granted.member.stage) == (0, AWARENESS)

    repeated = grant(stub, svc, member_id, "cmp-1:v1:birthday:2026", 300)
    assert repeated.entry == entry
    assert repeated.member.points_balance == 300
    for who, points in ((member_id, 301), (other_id, 300)):
        error = failure(
            stub.GrantPoints,
            pb.GrantPointsRequest(member_id=who, points=points, source_id="cmp-1:v1:birthday:2026"),
            svc,
        )
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert error_reason(error) == "SOURCE_ID_REUSED"
    assert member(stub, svc, other_id).points_balance == 0

    # The most one call grants, by ops too; the points are spent like any others.
    assert grant(stub, ops, other_id, "goodwill-1", 100_000_000).member.points_balance == 100_000_000
    m.clock.advance(days=1)
    redeem(stub, svc, member_id, "order-1", 100)
    assert member(stub, svc, member_id).points_balance == 200
    assert_balance_is_the_ledgers(stub, svc, member_id)

    # Twelve months after the grant what is left of it lapses.
    m.clock.advance(months=12)
    assert m.service.expire() >= 1
    assert member(stub, svc, member_id).points_balance == 0
    assert kinds(ledger(stub, svc, member_id)) == ["EXPIRE", "REDEEM", "ADJUST"]
    assert ledger(stub, svc, member_id)[0].points == -200
    assert_balance_is_the_ledgers(stub, svc, member_id)


def test_a_channel_or_a_till_may_not_grant_points(stub: Stub, svc: Meta, token: TokenFactory) -> None:
    member_id = enroll(stub, svc, "cus-1", home_store_id="SH-1").member_id
    till = bearer(token(Role.STORE, store_id="SH-1"))
    channel = bearer(token(Role.CHANNEL, channel="CHANNEL_WECHAT_MINI_PROGRAM"))
    for meta in (till, channel):
        error = failure(
            stub.GrantPoints,
            pb.GrantPointsRequest(member_id=member_id, points=10, source_id="self-serve"),
            meta,
        )
        assert (error.code(), error_reason(error)) == (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
    assert member(stub, svc, member_id).points_balance == 0
    assert ledger(stub, svc, member_id) == []


def test_a_campaign_stamps_the_coupons_it_issues_and_a_retry_must_name_the_same_campaign(
    stub: Stub, svc: Meta
) -> None:
    member_id = enroll(stub, svc, "cus-1").member_id
    request = pb.IssueCouponRequest(
        member_id=member_id,
        discount_cents=500,
        expire_time=stamp(START + timedelta(days=7)),
        request_id="cmp-7:v2:mem:1",
        campaign_id="cmp-7",
    )
    coupon = stub.IssueCoupon(request, metadata=svc).coupon
    assert coupon.campaign_id == "cmp-7"
    assert stub.IssueCoupon(request, metadata=svc).coupon == coupon
    request.campaign_id = "cmp-8"
    error = failure(stub.IssueCoupon, request, svc)
    assert (error.code(), error_reason(error)) == (grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_ID_REUSED")
    by_hand = issue(stub, svc, member_id, "by-hand")
    assert by_hand.campaign_id == ""
    listed_coupons = stub.ListCoupons(pb.ListCouponsRequest(member_id=member_id), metadata=svc).coupons
    assert {(c.code, c.campaign_id) for c in listed_coupons} == {(coupon.code, "cmp-7"), (by_hand.code, "")}


def coupon_pages(stub: Stub, meta: Meta, member_id: str, *, inactive: bool, size: int) -> list[list[str]]:
    pages: list[list[str]] = []
    page_token = ""
    while True:
        page = stub.ListCoupons(
            pb.ListCouponsRequest(
                member_id=member_id, include_inactive=inactive, page_size=size, page_token=page_token
            ),
            metadata=meta,
        )
        pages.append([c.code for c in page.coupons])
        page_token = page.next_page_token
        if not page_token:
            return pages


def test_a_members_coupons_are_listed_newest_first_in_pages_the_inactive_ones_on_request(
    m: Membership, svc: Meta, ops: Meta
) -> None:
    stub = m.stub
    member_id = enroll(stub, svc, "cus-1").member_id
    other_id = enroll(stub, svc, "cus-2").member_id
    issue(stub, svc, other_id, "not-theirs")
    oldest = issue(stub, svc, member_id, "c-1", expire=START + timedelta(days=60)).code
    m.clock.advance(hours=1)
    lapsing = issue(stub, svc, member_id, "c-2", expire=START + timedelta(days=2)).code
    m.clock.advance(hours=1)
    # Two issued at the same moment: both listed, once each, whatever the page size.
    twins = sorted(
        (issue(stub, svc, member_id, "c-3a").code, issue(stub, svc, member_id, "c-3b").code), reverse=True
    )
    m.clock.advance(hours=1)
    used = issue(stub, svc, member_id, "c-4").code
    use_coupon(stub, svc, used, member_id, "order-1", amount=10_000)
    m.clock.advance(days=3)  # c-2 has expired
    newest = issue(stub, svc, member_id, "c-5").code

    assert coupon_pages(stub, svc, member_id, inactive=False, size=2) == [
        [newest, twins[0]],
        [twins[1], oldest],
    ]
    assert coupon_pages(stub, svc, member_id, inactive=False, size=3) == [[newest, *twins], [oldest]]
    assert coupon_pages(stub, svc, member_id, inactive=True, size=2) == [
        [newest, used],
        twins,
        [lapsing, oldest],
    ]
    assert coupon_pages(stub, svc, member_id, inactive=True, size=1) == [
        [code] for code in (newest, used, *twins, lapsing, oldest)
    ]
    everything = stub.ListCoupons(
        pb.ListCouponsRequest(member_id=member_id, include_inactive=True), metadata=svc
    )
    assert [c.redeemed for c in everything.coupons] == [False, True, False, False, False, False]
    assert everything.next_page_token == ""

    first = stub.ListCoupons(
        pb.ListCouponsRequest(member_id=member_id, include_inactive=True, page_size=1), metadata=svc
    ).next_page_token
    misuses = [
        (pb.ListCouponsRequest(member_id=member_id, page_token=first), svc),  # the active ones only
        (pb.ListCouponsRequest(member_id=other_id, include_inactive=True, page_token=first), svc),
        (pb.ListCouponsRequest(member_id=member_id, include_inactive=True, page_token=first), ops),
    ]
    for request, meta in misuses:
        error = failure(stub.ListCoupons, request, meta)
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "page_token" in [name for name, _ in field_violations(error)]


def test_a_channel_lists_the_coupons_of_its_own_customers_and_a_till_those_of_its_members(
    m: Membership, svc: Meta, token: TokenFactory
) -> None:
    stub = m.stub
    mini = bearer(token(Role.CHANNEL, channel="CHANNEL_WECHAT_MINI_PROGRAM"))
    till, other_till = bearer(token(Role.STORE, store_id="SH-1")), bearer(token(Role.STORE, store_id="BJ-1"))
    own = enroll(stub, mini, m.customer("openid-own"), home_store_id="SH-1").member_id
    app_only = m.identity.ResolveCustomer(
        identity_pb2.ResolveCustomerRequest(
            account=common_pb2.ChannelAccount(channel=common_pb2.CHANNEL_APP, external_id="app-user")
        ),
        metadata=m.ops,
    ).customer.customer_id
    foreign = enroll(stub, svc, app_only, home_store_id="SH-1").member_id
    codes = {who: issue(stub, svc, who, f"welcome-{who}").code for who in (own, foreign)}

    def listed_by(meta: Meta, member_id: str) -> list[str]:
        return [
            c.code
            for c in stub.ListCoupons(pb.ListCouponsRequest(member_id=member_id), metadata=meta).coupons
        ]

    assert listed_by(mini, own) == [codes[own]]
    assert listed_by(till, own) == [codes[own]]
    assert listed_by(till, foreign) == [codes[foreign]]
    assert listed_by(svc, foreign) == [codes[foreign]]

    def refusal(meta: Meta, member_id: str) -> tuple[grpc.StatusCode, str]:
        error = failure(stub.ListCoupons, pb.ListCouponsRequest(member_id=member_id), meta)
        return error.code(), (error.details() or "").replace(member_id, "<id>")

    # A member the caller does not reach is answered exactly as one that does not exist.
    nobody = refusal(svc, "mem_nobody")
    assert nobody[0] is grpc.StatusCode.NOT_FOUND
    assert refusal(mini, foreign) == nobody
    assert refusal(other_till, own) == nobody
    assert refusal(other_till, foreign) == nobody
