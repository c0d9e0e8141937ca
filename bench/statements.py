"""What a returning customer's CreateOrder costs each service's database: statements sent and
transactions, on SQLite and on PostgreSQL in one run, counted by the services themselves.

Every service counts what its database sees in its metrics: `quanyu_db_statements_total` (each
statement sent, BEGIN, COMMIT and ROLLBACK included; on PostgreSQL each is one round trip, an
executemany one pipeline) and `quanyu_db_transactions_total` (a BEGIN and its end; a statement
PostgreSQL runs alone, as every read does, is no transaction). For each database the bench starts
identity, membership, fulfilment and orders as processes (bench.orders' deployment, metrics
served on free ports), loads a few stores, places one order for each customer so that every
customer and member exists, then places `--orders` more, one at a time so that no retry of a
conflict is counted, and reads each service's counters before and after them.

The services keep working between calls (outbox relays, the stock and lease sweeps), so the
bench then reads the counters over a quiet stretch (5 s at least), and prints what as long a
stretch as the orders took costs beside the orders' figures ("at rest": part of the statements
beside it, not the orders' doing, and more of them the longer a loaded machine takes), and the
statements less that.

    .venv/bin/python -m bench.statements [--orders 200] [--customers 20] [--stores 200]
        [--postgres postgresql://user@127.0.0.1:5432/db | --no-postgres]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from prometheus_client.parser import text_string_to_metric_families

from bench.harness import CALL_TIMEOUT_S, add_postgres_options, postgres_to_measure
from bench.orders import SERVICES, Deployment, deployment, load_stores, order_templates, table
from quanyu.auth import Principal, Role
from quanyu.orders.v1 import orders_pb2, orders_pb2_grpc
from tests.processes import free_port

HEALTH_SERVICE = "grpc.health.v1.Health"
# The shortest quiet stretch the services' own work is measured over.
QUIET_S = 5.0


@dataclass(frozen=True)
class Counts:
    """One service's counters at one moment."""

    statements: float = 0.0
    transactions: float = 0.0
    calls: float = 0.0  # RPCs it answered, health checks aside

    def scaled(self, share: float) -> Counts:
        return Counts(self.statements * share, self.transactions * share, self.calls * share)

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.statements + other.statements,
            self.transactions + other.transactions,
            self.calls + other.calls,
        )

    def __sub__(self, other: Counts) -> Counts:
        return Counts(
            self.statements - other.statements,
            self.transactions - other.transactions,
            self.calls - other.calls,
        )


def counts(running: Deployment, service: str) -> Counts:
    """`service`'s counters, read from its metrics endpoint."""
    port = running.env[f"QUANYU_{service.upper()}__METRICS_PORT"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=CALL_TIMEOUT_S) as answer:
        exposition = answer.read().decode()
    statements = transactions = calls = 0.0
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == "quanyu_db_statements_total":
                statements += sample.value
            elif sample.name == "quanyu_db_transactions_total":
                transactions += sample.value
            elif (
                sample.name == "grpc_server_handled_total" and sample.labels["grpc_service"] != HEALTH_SERVICE
            ):
                calls += sample.value
    return Counts(statements, transactions, calls)


def all_counts(running: Deployment) -> dict[str, Counts]:
    return {service: counts(running, service) for service in SERVICES}


@dataclass(frozen=True)
class Result:
    database: str
    orders: int
    seconds: float
    # What each service's counters moved by over the orders, and over a quiet stretch as long.
    during: dict[str, Counts]
    at_rest: dict[str, Counts]


def run(database: str, postgres_url: str | None, *, stores: int, customers: int, orders: int) -> Result:
    print(f"{database}: starting the four services", file=sys.stderr, flush=True)
    metrics = {f"QUANYU_{service.upper()}__METRICS_PORT": str(free_port()) for service in SERVICES}
    with deployment(postgres_url, **metrics) as running:
        places = load_stores(running, stores, seed=7)
        templates = order_templates(places, customers, seed=7)
        token = running.token(Principal(Role.CHANNEL, "bench-statements", channel="CHANNEL_APP"))
        with grpc.insecure_channel(running.address("orders")) as channel:
            stub = orders_pb2_grpc.OrderServiceStub(channel)

            def place(number: int) -> None:
                request = orders_pb2.CreateOrderRequest()
                request.CopyFrom(templates[number % len(templates)])
                request.request_id = f"bench-statements-{number}"
                stub.CreateOrder(request, metadata=token, timeout=CALL_TIMEOUT_S)

            # Template n is customer n % customers: the first `customers` create them.
            for number in range(customers):
                place(number)
            before = all_counts(running)
            started = time.perf_counter()
            for number in range(customers, customers + orders):
                place(number)
            seconds = time.perf_counter() - started
            after = all_counts(running)
            # A bench may wait: what the services do meanwhile is what is measured here, over a
            # few seconds at least, then scaled to the time the orders took.
            quiet = max(seconds, QUIET_S)
            time.sleep(quiet)
            rested = all_counts(running)
    share = seconds / quiet
    return Result(
        database,
        orders,
        seconds,
        {s: after[s] - before[s] for s in SERVICES},
        {s: (rested[s] - after[s]).scaled(share) for s in SERVICES},
    )


def per_order(result: Result, name: str, during: Counts, rest: Counts) -> list[str]:
    n = result.orders
    return [
        result.database,
        name,
        f"{during.calls / n:.2f}",
        f"{during.statements / n:.1f}",
        f"{during.transactions / n:.1f}",
        f"{rest.statements / n:.1f}",
        f"{(during.statements - rest.statements) / n:.1f}",
    ]


def report(results: Sequence[Result]) -> str:
    headers = ["database", "service", "calls", "statements", "transactions", "at rest", "less at rest"]
    rows = []
    for result in results:
        for service in SERVICES:
            rows.append(per_order(result, service, result.during[service], result.at_rest[service]))
        everyone = sum(result.during.values(), Counts()), sum(result.at_rest.values(), Counts())
        rows.append(per_order(result, "all four", *everyone))
    return "\n".join(
        [
            "Per CreateOrder of a returning customer, placed one at a time; calls are the RPCs each"
            " service answered; statements include BEGIN, COMMIT and ROLLBACK (on PostgreSQL each"
            " is a round trip); at rest: the statements of a quiet stretch as long as the orders"
            " took, per order, which grows with the machine's load; less at rest: the orders' own.",
            table(headers, rows),
            *(f"{r.database}: {r.orders} orders in {r.seconds:.1f} s" for r in results),
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.statements", description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=200, help="orders counted (default 200)")
    parser.add_argument("--customers", type=int, default=20, help="returning customers (default 20)")
    parser.add_argument("--stores", type=int, default=200, help="stores (default 200)")
    add_postgres_options(parser)
    args = parser.parse_args(argv)
    if min(args.orders, args.customers, args.stores) <= 0:
        parser.error("--orders, --customers and --stores must be positive")
    postgres_url = postgres_to_measure(parser, args.postgres, args.no_postgres)

    load_before = os.getloadavg()[0]
    databases: list[tuple[str, str | None]] = [("sqlite", None)]
    if postgres_url:
        databases.append(("postgresql", postgres_url))
    results = [
        run(name, url, stores=args.stores, customers=args.customers, orders=args.orders)
        for name, url in databases
    ]
    print("$ python -m bench.statements " + " ".join(sys.argv[1:] if argv is None else argv))
    # Counts do not move with the machine's load, but the quiet stretch's figures may.
    print(
        f"machine: {os.cpu_count()} CPUs, 1-minute load average {load_before:.1f} at the start,"
        f" {os.getloadavg()[0]:.1f} at the end"
    )
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
