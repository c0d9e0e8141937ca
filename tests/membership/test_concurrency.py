"""Two membership processes on one database, as production runs them, called at the same moment:
one balance spent from both never goes below zero, a coupon shown at two tills pays for one
order, and an earn sent many times at once credits once."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import grpc
import pytest

from quanyu.auth import Principal, Role, TokenCodec
from quanyu.clients import error_reason
from quanyu.membership.v1 import membership_pb2, membership_pb2_grpc
from quanyu.wire import to_timestamp
from tests.conftest import bearer
from tests.processes import free_port, platform_env, started, wait_serving

Stub = membership_pb2_grpc.MembershipServiceStub
Metadata = tuple[tuple[str, str]]
T = TypeVar("T")
CALL_TIMEOUT = 60


@dataclass(frozen=True)
class Replicas:
    """Two `quanyu serve membership` processes on one database and one signing key."""

    stubs: tuple[Stub, Stub]
    codec: TokenCodec

    def service(self) -> Metadata:
        return bearer(self.codec.issue(Principal(Role.SERVICE, "orders")).token)

    def till(self, store_id: str, terminal: str = "till-1") -> Metadata:
        return bearer(self.codec.issue(Principal(Role.STORE, terminal, store_id=store_id)).token)

    def ops(self) -> Metadata:
        return bearer(self.codec.issue(Principal(Role.OPS, "ops")).token)


def member_code(stub: Stub, replicas: Replicas, member_id: str) -> str:
    """A code the member's app would show at the till (asked for here by ops)."""
    answer = stub.CreateMemberCode(
        membership_pb2.CreateMemberCodeRequest(member_id=member_id), metadata=replicas.ops()
    )
    code: str = answer.code
    return code


@pytest.fixture
def replicas(tmp_path: Path, database_url: str) -> Iterator[Replicas]:
    var = tmp_path / "var"
    with ExitStack() as stack:
        ports = [free_port(), free_port()]
        processes = [
            stack.enter_context(
                started(
                    ["serve", "membership"],
                    platform_env(
                        var,
                        QUANYU_MEMBERSHIP__PORT=str(port),
                        QUANYU_MEMBERSHIP__DATABASE_URL=database_url,
                    ),
                    tmp_path / f"membership-{name}.log",
                )
            )
            for name, port in zip("ab", ports, strict=True)
        ]
        for port, process in zip(ports, processes, strict=True):
            wait_serving(f"127.0.0.1:{port}", process)
        channels = [stack.enter_context(grpc.insecure_channel(f"127.0.0.1:{port}")) for port in ports]
        yield Replicas((Stub(channels[0]), Stub(channels[1])), TokenCodec.local(var / "token-keys"))


def at_once(calls: list[Callable[[], T]]) -> list[T | str]:
    """Run every call on its own thread, released together; each result, or
    "CODE:REASON" for a call that failed."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], T]) -> T | str:
        barrier.wait(timeout=30)
        try:
            return call()
        except grpc.RpcError as error:
            return f"{error.code().name}:{error_reason(error)}"

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def enrol(stub: Stub, metadata: Metadata, customer_id: str) -> str:
    answer = stub.Enroll(membership_pb2.EnrollRequest(customer_id=customer_id), metadata=metadata)
    member_id: str = answer.member.member_id
    return member_id


def ledger(stub: Stub, metadata: Metadata, member_id: str) -> list[membership_pb2.LedgerEntry]:
    entries: list[membership_pb2.LedgerEntry] = []
    token = ""
    while True:
        page = stub.ListLedgerEntries(
            membership_pb2.ListLedgerEntriesRequest(member_id=member_id, page_size=100, page_token=token),
            metadata=metadata,
        )
        entries.extend(page.entries)
        token = page.next_page_token
        if not token:
            return entries


def test_forty_redemptions_of_one_balance_from_two_processes_spend_it_exactly_once(
    replicas: Replicas,
) -> None:
    a, b = replicas.stubs
    service = replicas.service()
    member_id = enrol(a, service, "cust-rush")
    earned = a.EarnPoints(
        membership_pb2.EarnPointsRequest(member_id=member_id, source_id="order-big", spend_cents=100_000),
        metadata=service,
    )
    assert earned.member.points_balance == 1_000
    # Two tills of one store, each served by another process, with the code the member shows.
    code = member_code(a, replicas, member_id)
    tills = [(a, replicas.till("store-a", "till-1")), (b, replicas.till("store-a", "till-2"))]

    def request(number: int) -> membership_pb2.RedeemPointsRequest:
        return membership_pb2.RedeemPointsRequest(
            member_id=member_id, points=100, source_id=f"basket-{number}", member_code=code
        )

    def redeem(number: int) -> Callable[[], membership_pb2.RedeemPointsResponse]:
        stub, metadata = tills[number % 2]
        return lambda: stub.RedeemPoints(request(number), metadata=metadata, timeout=CALL_TIMEOUT)

    outcomes = at_once([redeem(n) for n in range(40)])

    spent = [o for o in outcomes if isinstance(o, membership_pb2.RedeemPointsResponse)]
    refused = [o for o in outcomes if isinstance(o, str)]
    assert len(spent) == 10
    assert set(refused) == {"FAILED_PRECONDITION:INSUFFICIENT_POINTS"}
    assert len(refused) == 30
    # Each redemption saw the balance the one before it left: 900, 800, ... 0, never below.
    assert sorted(o.entry.balance_after for o in spent) == list(range(0, 1_000, 100))
    for stub in (a, b):
        assert (
            stub.GetMember(
                membership_pb2.GetMemberRequest(member_id=member_id), metadata=service
            ).member.points_balance
            == 0
        )
    entries = ledger(b, service, member_id)
    assert [e.kind for e in entries].count(membership_pb2.ENTRY_KIND_REDEEM) == 10
    assert all(e.balance_after >= 0 for e in entries)
    assert sum(e.points for e in entries) == 0
    # A winner retried by the other till at the other process gets its first answer (the store's
    # tills share its source ids); nothing more is spent.
    winners = [n for n, o in enumerate(outcomes) if not isinstance(o, str)]
    for number in winners:
        stub, metadata = tills[(number + 1) % 2]
        again = stub.RedeemPoints(request(number), metadata=metadata)
        first = outcomes[number]
        assert isinstance(first, membership_pb2.RedeemPointsResponse)
        assert again.entry == first.entry
    assert (
        a.GetMember(
            membership_pb2.GetMemberRequest(member_id=member_id), metadata=service
        ).member.points_balance
        == 0
    )


def test_one_coupon_at_two_tills_at_once_pays_for_exactly_one_order(replicas: Replicas) -> None:
    a, b = replicas.stubs
    service = replicas.service()
    member_id = enrol(a, service, "cust-coupons")
    tills = [(a, replicas.till("store-a"), "store-a"), (b, replicas.till("store-b"), "store-b")]
    expire = to_timestamp(datetime.now(UTC) + timedelta(days=7))

    for round_number in range(15):
        code = a.IssueCoupon(
            membership_pb2.IssueCouponRequest(
                member_id=member_id,
                discount_cents=500,
                min_spend_cents=1_000,
                expire_time=expire,
                request_id=f"campaign-{round_number}",
            ),
            metadata=service,
        ).coupon.code

        # The member shows a code at each till (one on the phone, one printed, say).
        shown = {store: member_code(a, replicas, member_id) for _, _, store in tills}

        def redeem(
            till: tuple[Stub, Metadata, str],
            code: str = code,
            round_number: int = round_number,
            shown: dict[str, str] = shown,
        ) -> Callable[[], membership_pb2.RedeemCouponResponse]:
            stub, metadata, store = till
            request = membership_pb2.RedeemCouponRequest(
                code=code,
                member_id=member_id,
                order_id=f"order-{round_number}-{store}",
                order_amount_cents=3_000,
                member_code=shown[store],
            )
            return lambda: stub.RedeemCoupon(request, metadata=metadata, timeout=CALL_TIMEOUT)

        outcomes = at_once([redeem(till) for till in tills])

        won = [n for n, o in enumerate(outcomes) if isinstance(o, membership_pb2.RedeemCouponResponse)]
        assert len(won) == 1, outcomes
        assert outcomes[1 - won[0]] == "FAILED_PRECONDITION:COUPON_ALREADY_REDEEMED"
        winner = outcomes[won[0]]
        assert isinstance(winner, membership_pb2.RedeemCouponResponse)
        winning_store = tills[won[0]][2]
        assert winner.discount_cents == 500
        assert winner.coupon.redeemed_order_id == f"order-{round_number}-{winning_store}"
        # Asked again, the winning order gets the same answer at either process; the other order
        # is still refused.
        for stub in (a, b):
            again = stub.RedeemCoupon(
                membership_pb2.RedeemCouponRequest(
                    code=code,
                    member_id=member_id,
                    order_id=winner.coupon.redeemed_order_id,
                    order_amount_cents=3_000,
                    store_id=winning_store,
                ),
                metadata=service,
            )
            assert again == winner
        with pytest.raises(grpc.RpcError) as refused:
            redeem(tills[1 - won[0]])()
        assert error_reason(refused.value) == "COUPON_ALREADY_REDEEMED"


def test_twenty_identical_earns_at_once_on_two_processes_credit_once_and_answer_alike(
    replicas: Replicas,
) -> None:
    a, b = replicas.stubs
    service = replicas.service()
    member_id = enrol(b, service, "cust-retry")
    request = membership_pb2.EarnPointsRequest(
        member_id=member_id, source_id="order-retried", spend_cents=12_345, store_id="store-a"
    )

    def earn(stub: Stub) -> Callable[[], membership_pb2.EarnPointsResponse]:
        return lambda: stub.EarnPoints(request, metadata=service, timeout=CALL_TIMEOUT)

    outcomes = at_once([earn(stub) for stub in (a, b) * 10])

    assert all(isinstance(o, membership_pb2.EarnPointsResponse) for o in outcomes), outcomes
    first = outcomes[0]
    assert isinstance(first, membership_pb2.EarnPointsResponse)
    assert all(o == first for o in outcomes)
    assert first.entry.points == 123
    entries = ledger(a, service, member_id)
    assert [(e.kind, e.source_id, e.points) for e in entries] == [
        (membership_pb2.ENTRY_KIND_EARN, "order-retried", 123)
    ]
    for stub in (a, b):
        member = stub.GetMember(membership_pb2.GetMemberRequest(member_id=member_id), metadata=service).member
        assert member.points_balance == 123
        assert member.lifetime_spend_cents == 12_345
