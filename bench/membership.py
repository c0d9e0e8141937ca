"""Points over gRPC: how fast a real membership process credits and spends points.

It starts `quanyu serve membership` on a free port of 127.0.0.1 with a temporary var directory
(SQLite, or a fresh schema of the PostgreSQL database given with --postgres), enrols a few hundred
members and gives each enough points for the whole run. Then, at a fixed concurrency, one phase
after another on the same server and the same channel:

* grpc.health.v1 Health/Check, the floor: what the server answers with no work behind it;
* EarnPoints, each call a fresh source id for a random member (a new ledger entry and lot);
* RedeemPoints, each call a fresh source id spending a few points of a random member.

For each: calls answered per second, p50 and p99 latency, and the ratio to Health/Check.

    .venv/bin/python -m bench.membership [--seconds 10] [--concurrency 8] [--members 300]
        [--postgres postgresql://user@127.0.0.1:5432/db]

It talks only to 127.0.0.1 (and the PostgreSQL server named), bounds every loop, and removes its
server process, temporary directory and schema when it ends.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench.harness import CALL_TIMEOUT_S, Tally, hammer, stop, wait_serving
from quanyu.auth import Principal, Role, TokenCodec
from quanyu.db import normalise_url
from quanyu.membership.v1 import membership_pb2, membership_pb2_grpc
from tests.processes import free_port

ROOT = Path(__file__).resolve().parents[1]
SPEND_PER_EARN_CENTS = 12_800  # 128 points at the entry tier
POINTS_PER_REDEMPTION = 5
STARTING_SPEND_CENTS = 100_000_000  # 1,000,000 points each: no redemption runs short


# --- the server --------------------------------------------------------------------------------


def server_env(var_dir: Path, port: int, database_url: str) -> dict[str, str]:
    """None of the caller's QUANYU_* settings: loopback only, a var dir of its own, no metrics."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUANYU_")}
    env.update(
        {
            "QUANYU_VAR_DIR": str(var_dir),
            "QUANYU_HOST": "127.0.0.1",
            "QUANYU_MEMBERSHIP__PORT": str(port),
            "QUANYU_MEMBERSHIP__METRICS_PORT": "0",
            "QUANYU_GRACE_SECONDS": "3",
        }
    )
    if database_url:
        env["QUANYU_MEMBERSHIP__DATABASE_URL"] = database_url
    return env


@contextmanager
def postgres_schema(url: str) -> Iterator[str]:
    """A fresh schema in the database at `url`, dropped afterwards; the URL that uses it."""
    schema = f"bench_membership_{uuid.uuid4().hex[:12]}"
    admin = create_engine(normalise_url(url), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        scoped = make_url(normalise_url(url)).update_query_dict({"options": f"-csearch_path={schema}"})
        try:
            yield scoped.render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    finally:
        admin.dispose()


@contextmanager
def membership_server(var_dir: Path, database_url: str) -> Iterator[str]:
    """`quanyu serve membership` in the background until the block ends; its address."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    log_path = var_dir / "membership.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "quanyu_ops.cli", "serve", "membership"],
            cwd=ROOT,
            env=server_env(var_dir, port, database_url),
            stdout=log,
            stderr=log,
        )
    try:
        wait_serving(address, process, timeout=60)
        yield address
    except Exception:
        tail = log_path.read_text(errors="replace").splitlines()[-20:]
        print("  membership log (last lines):\n    " + "\n    ".join(tail), file=sys.stderr)
        raise
    finally:
        stop(process)


# --- calls -------------------------------------------------------------------------------------


def enrol_members(
    stub: membership_pb2_grpc.MembershipServiceStub, metadata: Sequence[tuple[str, str]], count: int
) -> list[str]:
    """`count` members, each with enough points to redeem from for the whole run."""

    def one(number: int) -> str:
        member = stub.Enroll(
            membership_pb2.EnrollRequest(customer_id=f"bench-customer-{number}", home_store_id="store-1"),
            metadata=metadata,
            timeout=CALL_TIMEOUT_S,
        ).member
        stub.EarnPoints(
            membership_pb2.EarnPointsRequest(
                member_id=member.member_id,
                source_id=f"bench-start-{number}",
                spend_cents=STARTING_SPEND_CENTS,
                store_id="store-1",
            ),
            metadata=metadata,
            timeout=CALL_TIMEOUT_S,
        )
        member_id: str = member.member_id
        return member_id

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(count)))


@dataclass(frozen=True)
class Results:
    database: str
    members: int
    concurrency: int
    seconds: float
    setup_seconds: float
    phases: dict[str, Tally]


def run(seconds: float, concurrency: int, member_count: int, postgres_url: str) -> Results:
    temporary = Path(tempfile.mkdtemp(prefix="quanyu-bench-membership-"))
    try:
        with ExitStack() as stack:
            database_url = stack.enter_context(postgres_schema(postgres_url)) if postgres_url else ""
            address = stack.enter_context(membership_server(temporary, database_url))
            token = TokenCodec.local(temporary / "token-keys").issue(
                Principal(Role.SERVICE, "bench-membership"), ttl_seconds=3600
            )
            metadata = (("authorization", f"Bearer {token.token}"),)
            channel = stack.enter_context(grpc.insecure_channel(address))
            health = health_pb2_grpc.HealthStub(channel)
            membership = membership_pb2_grpc.MembershipServiceStub(channel)

            started = time.perf_counter()
            member_ids = enrol_members(membership, metadata, member_count)
            setup_seconds = time.perf_counter() - started
            run_id = uuid.uuid4().hex[:8]
            pickers = [random.Random(n) for n in range(concurrency)]
            # Per-thread numbers that run on across phases: every source id is fresh, warm-up too.
            numbers = [itertools.count(1) for _ in range(concurrency)]
            check = health_pb2.HealthCheckRequest()

            def health_call(_: int, __: int) -> None:
                health.Check(check, timeout=CALL_TIMEOUT_S)

            def earn_call(thread: int, _: int) -> None:
                membership.EarnPoints(
                    membership_pb2.EarnPointsRequest(
                        member_id=pickers[thread].choice(member_ids),
                        source_id=f"bench-{run_id}-earn-{thread}-{next(numbers[thread])}",
                        spend_cents=SPEND_PER_EARN_CENTS,
                        store_id="store-1",
                    ),
                    metadata=metadata,
                    timeout=CALL_TIMEOUT_S,
                )

            def redeem_call(thread: int, _: int) -> None:
                membership.RedeemPoints(
                    membership_pb2.RedeemPointsRequest(
                        member_id=pickers[thread].choice(member_ids),
                        points=POINTS_PER_REDEMPTION,
                        source_id=f"bench-{run_id}-redeem-{thread}-{next(numbers[thread])}",
                        store_id="store-1",
                    ),
                    metadata=metadata,
                    timeout=CALL_TIMEOUT_S,
                )

            phases: dict[str, Tally] = {}
            warm = min(2.0, seconds / 3)
            for name, call in (
                ("Health/Check", health_call),
                ("EarnPoints", earn_call),
                ("RedeemPoints", redeem_call),
            ):
                print(f"  {name} ...", file=sys.stderr, flush=True)
                hammer(call, concurrency, warm)
                phases[name] = hammer(call, concurrency, seconds)
        return Results(
            database="PostgreSQL" if postgres_url else "SQLite",
            members=member_count,
            concurrency=concurrency,
            seconds=seconds,
            setup_seconds=setup_seconds,
            phases=phases,
        )
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


# --- printing ----------------------------------------------------------------------------------


def ms(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def report(results: Results) -> str:
    health = results.phases["Health/Check"].per_second
    headers = ["call", "answered", "calls/s", "p50 ms", "p99 ms", "refused", "errors", "vs Health/Check"]
    rows = []
    for name, tally in results.phases.items():
        errors = ", ".join(f"{code} {count}" for code, count in sorted(tally.errors.items())) or "0"
        ratio = tally.per_second / health if health else math.nan
        rows.append(
            [
                name,
                f"{tally.calls:,}",
                f"{tally.per_second:,.0f}",
                ms(tally.percentile_ms(50)),
                ms(tally.percentile_ms(99)),
                f"{tally.refused:,}",
                errors,
                f"{100 * ratio:.1f}%",
            ]
        )
    widths = [max(len(headers[c]), *(len(r[c]) for r in rows)) for c in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        return (
            "| "
            + " | ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
            + " |"
        )

    rule = (
        "|"
        + "|".join(("-" * (w + 2)) if i == 0 else ("-" * (w + 1) + ":") for i, w in enumerate(widths))
        + "|"
    )
    return "\n".join(
        [
            f"One membership process on {results.database}, {results.members:,} members, "
            f"{results.concurrency} client threads, {results.seconds:g} s per call",
            "",
            line(headers),
            rule,
            *(line(r) for r in rows),
            "",
            f"EarnPoints: a fresh source id each call ({SPEND_PER_EARN_CENTS // 100} CNY: a new entry "
            f"and lot); RedeemPoints: {POINTS_PER_REDEMPTION} points each call, fresh source id. "
            f"Members enrolled and given points in {results.setup_seconds:.1f} s.",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.membership", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of calls per phase (default 10)")
    parser.add_argument("--concurrency", type=int, default=8, help="client threads (default 8)")
    parser.add_argument("--members", type=int, default=300, help="members enrolled first (default 300)")
    parser.add_argument("--postgres", default="", help="a PostgreSQL URL: run on a fresh schema there")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.concurrency < 1 or args.members < 1:
        parser.error("--seconds, --concurrency and --members must be positive")
    print(report(run(args.seconds, args.concurrency, args.members, args.postgres)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
