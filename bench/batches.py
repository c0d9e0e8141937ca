"""Batch delivery over gRPC: how fast a real membership process issues coupons in batches, and how
fast an outbox relay delivers a campaign's coupons through them.

It starts `quanyu serve membership` on a free port of 127.0.0.1 with a temporary var directory
(SQLite), enrols a few thousand members, then:

* BatchIssueCoupons, 500 coupons a call, one caller (as one relay lane calls): coupons a second;
* IssueCoupon, one coupon a call, one caller, for contrast;
* an outbox relay (SQLite, as marketing's) holding one issue_coupon effect per coupon, delivered
  through BatchIssueCoupons in batches of 500, then a smaller outbox delivered one call per effect:
  effects delivered a second, and what a 1,000,000-coupon campaign would take at that rate.

    .venv/bin/python -m bench.batches [--members 2000] [--coupons 50000] [--singles 2000]

It talks only to 127.0.0.1, bounds every loop, and removes its server process and temporary
directory when it ends.
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from bench.harness import CALL_TIMEOUT_S
from bench.membership import membership_server
from quanyu.auth import Principal, Role, TokenCodec
from quanyu.db import Database, new_metadata, utcnow
from quanyu.membership.v1 import membership_pb2, membership_pb2_grpc
from quanyu.outbox import BatchDeliverer, OutboxRelay, add_effect, outbox_table, refusals_are_final

BATCH = 500
CAMPAIGN = 1_000_000
Stub = membership_pb2_grpc.MembershipServiceStub


def enrol(stub: Stub, metadata: Sequence[tuple[str, str]], count: int) -> list[str]:
    def one(number: int) -> str:
        request = membership_pb2.EnrollRequest(customer_id=f"bench-customer-{number}")
        member_id: str = stub.Enroll(request, metadata=metadata, timeout=CALL_TIMEOUT_S).member.member_id
        return member_id

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(count)))


def coupon(member_id: str, request_id: str, expire: Timestamp) -> membership_pb2.IssueCouponRequest:
    return membership_pb2.IssueCouponRequest(
        member_id=member_id,
        discount_cents=500,
        expire_time=expire,
        request_id=request_id,
        campaign_id="bench",
    )


def timed(work: Callable[[], Any]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def relay_rate(
    tmp: Path, name: str, effects: int, member_ids: list[str], deliverers: dict[str, Any], **batched: Any
) -> float:
    """Effects a second a relay delivers from an outbox of `effects` issue_coupon effects."""
    table = outbox_table(new_metadata())
    database = Database(f"sqlite:///{tmp / f'{name}.db'}")
    table.metadata.create_all(database.engine)
    try:
        run = uuid.uuid4().hex[:8]
        with database.transaction() as connection:
            for n in range(effects):
                payload = {"member_id": member_ids[n % len(member_ids)], "request_id": f"{run}-{name}-{n}"}
                add_effect(connection, table, "issue_coupon", payload, utcnow())
        relay = OutboxRelay(database, table, deliverers, **batched)
        delivered = 0

        def drain() -> None:
            nonlocal delivered
            for _ in range(effects + 1):  # bounded: each pass delivers at least one, or it is stuck
                passed = relay.deliver_due()
                delivered += passed
                if delivered >= effects or passed == 0:
                    return

        seconds = timed(drain)
        if delivered != effects:
            raise RuntimeError(f"the relay delivered {delivered} of {effects} effects")
        return effects / seconds
    finally:
        database.dispose()


def run(member_count: int, coupons: int, singles: int) -> list[tuple[str, str]]:
    temporary = Path(tempfile.mkdtemp(prefix="quanyu-bench-batches-"))
    try:
        with ExitStack() as stack:
            address = stack.enter_context(membership_server(temporary, ""))
            token = TokenCodec.local(temporary / "token-keys").issue(
                Principal(Role.SERVICE, "marketing"), ttl_seconds=3600
            )
            metadata = (("authorization", f"Bearer {token.token}"),)
            stub = Stub(stack.enter_context(grpc.insecure_channel(address)))
            print("  enrolling ...", file=sys.stderr, flush=True)
            member_ids = enrol(stub, metadata, member_count)
            expire = Timestamp()
            expire.FromDatetime(utcnow() + timedelta(days=30))
            numbers = itertools.count()

            def batch_of(count: int) -> list[membership_pb2.IssueCouponRequest]:
                return [
                    coupon(member_ids[n % len(member_ids)], f"direct-{n}", expire)
                    for n in itertools.islice(numbers, count)
                ]

            print("  BatchIssueCoupons ...", file=sys.stderr, flush=True)
            calls = [batch_of(BATCH) for _ in range(coupons // BATCH)]

            def batches() -> None:
                for requests in calls:
                    stub.BatchIssueCoupons(
                        membership_pb2.BatchIssueCouponsRequest(requests=requests),
                        metadata=metadata,
                        timeout=CALL_TIMEOUT_S,
                    )

            batch_rate = len(calls) * BATCH / timed(batches)
            print("  IssueCoupon ...", file=sys.stderr, flush=True)
            ones = batch_of(singles)

            def one_by_one() -> None:
                for request in ones:
                    stub.IssueCoupon(request, metadata=metadata, timeout=CALL_TIMEOUT_S)

            single_rate = singles / timed(one_by_one)

            def deliver(payload: dict[str, Any]) -> None:
                request = coupon(payload["member_id"], payload["request_id"], expire)
                stub.IssueCoupon(request, metadata=metadata, timeout=CALL_TIMEOUT_S)

            def deliver_many(payloads: list[dict[str, Any]]) -> None:
                requests = [coupon(p["member_id"], p["request_id"], expire) for p in payloads]
                stub.BatchIssueCoupons(
                    membership_pb2.BatchIssueCouponsRequest(requests=requests),
                    metadata=metadata,
                    timeout=CALL_TIMEOUT_S,
                )

            deliverers = {"issue_coupon": refusals_are_final("membership", deliver)}
            print("  relay, batched ...", file=sys.stderr, flush=True)
            relay_batched = relay_rate(
                temporary,
                "batched",
                coupons,
                member_ids,
                deliverers,
                batched={
                    "issue_coupon": BatchDeliverer(refusals_are_final("membership", deliver_many), BATCH)
                },
            )
            print("  relay, one call an effect ...", file=sys.stderr, flush=True)
            relay_single = relay_rate(temporary, "single", singles, member_ids, deliverers)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    minutes = CAMPAIGN / relay_batched / 60
    return [
        ("members", f"{member_count:,}"),
        (f"BatchIssueCoupons, {BATCH} a call", f"{batch_rate:,.0f} coupons/s ({coupons:,} coupons)"),
        ("IssueCoupon, one a call", f"{single_rate:,.0f} coupons/s ({singles:,} coupons)"),
        (f"relay, batches of {BATCH}", f"{relay_batched:,.0f} effects/s ({coupons:,} effects)"),
        ("relay, one call an effect", f"{relay_single:,.0f} effects/s ({singles:,} effects)"),
        (f"{CAMPAIGN:,} coupons through the batched relay", f"{minutes:.1f} min"),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.batches", description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=2_000, help="members enrolled first (default 2000)")
    parser.add_argument(
        "--coupons", type=int, default=50_000, help="coupons issued in batches (default 50000)"
    )
    parser.add_argument("--singles", type=int, default=2_000, help="coupons issued one a call (default 2000)")
    args = parser.parse_args(argv)
    if args.members < 1 or args.coupons < BATCH or args.singles < 1:
        parser.error(f"--members and --singles must be positive, --coupons at least {BATCH}")
    figures = run(args.members, args.coupons, args.singles)
    width = max(len(name) for name, _ in figures)
    print("\n".join(f"{name:<{width}}  {value}" for name, value in figures), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
