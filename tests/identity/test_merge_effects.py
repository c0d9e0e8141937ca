"""A customer merge reaches membership through identity's outbox: once, and even when
membership is down at the moment ops merge the customers."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import grpc
from sqlalchemy import create_engine, select

from quanyu.auth import Principal, Role, TokenCodec
from quanyu.common.v1 import common_pb2
from quanyu.identity.v1 import identity_pb2, identity_pb2_grpc
from quanyu.membership.v1 import membership_pb2, membership_pb2_grpc
from services.identity.domain import CustomersMerged
from services.identity.storage import outbox
from tests.conftest import bearer
from tests.processes import platform_env, started, target, wait_serving


def test_merged_customers_become_one_member_once_membership_is_back(tmp_path: Path) -> None:
    var = tmp_path / "var"
    env = platform_env(var)
    with started(["serve", "identity"], env, tmp_path / "identity.log") as identity_process:
        wait_serving(target(env, "identity"), identity_process)
        ops = bearer(TokenCodec.local(var / "token-keys").issue(Principal(Role.OPS, "ops")).token)
        identity = identity_pb2_grpc.IdentityServiceStub(grpc.insecure_channel(target(env, "identity")))
        membership = membership_pb2_grpc.MembershipServiceStub(
            grpc.insecure_channel(target(env, "membership"))
        )
        app = common_pb2.ChannelAccount(channel=common_pb2.CHANNEL_APP, external_id="app-user-1")
        tmall = common_pb2.ChannelAccount(channel=common_pb2.CHANNEL_TMALL, external_id="tmall-buyer-1")
        survivor = identity.ResolveCustomer(
            identity_pb2.ResolveCustomerRequest(account=app), metadata=ops
        ).customer
        merged = identity.ResolveCustomer(
            identity_pb2.ResolveCustomerRequest(account=tmall), metadata=ops
        ).customer

        with started(["serve", "membership"], env, tmp_path / "membership-1.log") as membership_process:
            wait_serving(target(env, "membership"), membership_process)
            members = {}
            for customer, spend in ((survivor, 30_000), (merged, 12_000)):
                member = membership.Enroll(
                    membership_pb2.EnrollRequest(customer_id=customer.customer_id, home_store_id="SH-001"),
                    metadata=ops,
                ).member
                membership.EarnPoints(
                    membership_pb2.EarnPointsRequest(
                        member_id=member.member_id,
                        source_id=f"order-{customer.customer_id}",
                        spend_cents=spend,
                    ),
                    metadata=ops,
                )
                members[customer.customer_id] = member.member_id
            membership_process.send_signal(signal.SIGTERM)
            assert membership_process.wait(timeout=30) == 0

        # Membership is down: the merge itself still succeeds at once.
        answer = identity.MergeCustomers(
            identity_pb2.MergeCustomersRequest(
                survivor_customer_id=survivor.customer_id, merged_customer_id=merged.customer_id
            ),
            metadata=ops,
            timeout=10,
        )
        assert answer.customer.customer_id == survivor.customer_id

        with started(["serve", "membership"], env, tmp_path / "membership-2.log") as membership_process:
            wait_serving(target(env, "membership"), membership_process)
            deadline = time.monotonic() + 60
            member = None
            while time.monotonic() < deadline:
                member = membership.GetMember(
                    membership_pb2.GetMemberRequest(customer_id=merged.customer_id), metadata=ops
                ).member
                if member.member_id == members[survivor.customer_id]:
                    break
            assert member is not None
            assert member.member_id == members[survivor.customer_id]
            # 300 + 120 points, each counted once.
            assert member.points_balance == 420
            assert member.lifetime_spend_cents == 42_000

    engine = create_engine(f"sqlite:///{var / 'identity.db'}")
    with engine.connect() as connection:
        rows = connection.execute(
            select(outbox.c.delivered_time, outbox.c.attempts, outbox.c.failed).where(
                outbox.c.kind == CustomersMerged.KIND
            )
        ).all()
    engine.dispose()
    assert len(rows) == 1
    delivered_time, attempts, failed = rows[0]
    assert delivered_time is not None
    assert failed == 0
    assert attempts >= 2  # it was tried while membership was down, and delivered after
