"""Placing orders end to end: what a CreateOrder costs, in CPU of every process involved, with
all four services running as real processes, on SQLite and on PostgreSQL in one run.

For each database it starts identity, membership, fulfilment and orders in a temporary var dir
on free ports of 127.0.0.1, loads stores scattered around Shanghai with ample stock of every SKU
(20,000 on SQLite, 5,000 on PostgreSQL by default), and places one order for each of 500
customers (named by their app account) so that every customer and member exists before the
clock starts: the measured orders are returning customers'. Then, at a fixed concurrency:

* grpc.health.v1 Health/Check on the orders server, before and after the orders (pooled): the
  orders server's CPU per check is H, the yardstick of this run on this database;
* orders CreateOrder with a channel token: delivery orders near a random store, 1-3 lines, a
  fresh request id every call. Each call resolves the customer (identity), finds the member
  (membership) and asks fulfilment to choose and reserve a store before the order is stored.

It prints CreateOrder/s and latency per database, the ratio of PostgreSQL's rate to SQLite's,
and what one order costs: each service process's CPU, the PostgreSQL server's (its backends
serving each service's connections, told apart by application_name, and its background
processes), their sum in ms and in H, held against the targets of issue 17.

    .venv/bin/python -m bench.orders [--seconds 15] [--concurrency 8] [--stores 20000]
        [--postgres-stores 5000] [--customers 500]
        [--postgres postgresql://user@127.0.0.1:5432/db | --no-postgres]

PostgreSQL is measured when its URL (--postgres, else QUANYU_BENCH_POSTGRES_URL, else
postgresql://postgres@127.0.0.1:5432/test) answers; each service gets its own schema created for
the run and dropped after it. The server must be on this machine: its processes' CPU is read
from /proc. The benchmark talks only to this machine, bounds every loop, and removes its
processes, schemas and temporary directory when it ends.
"""

from __future__ import annotations

import argparse
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
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench import harness
from bench.harness import (
    CALL_TIMEOUT_S,
    PostgresCpu,
    PostgresWatch,
    Tally,
    add_postgres_options,
    application_name,
    cpu_seconds,
    hammer,
    pooled,
    postgres_to_measure,
    stop,
    wait_serving,
)
from quanyu.auth import Principal, Role, TokenCodec
from quanyu.common.v1 import common_pb2
from quanyu.fulfilment.v1 import fulfilment_pb2, fulfilment_pb2_grpc
from quanyu.orders.v1 import orders_pb2, orders_pb2_grpc
from tests.processes import free_port

ROOT = Path(__file__).resolve().parents[1]
# Started in this order: orders calls the other three.
SERVICES = ("identity", "membership", "fulfilment", "orders")
# Issue 17's targets: a returning customer's order in H on each database, and PostgreSQL's
# rate against SQLite's.
TARGET_H = {"sqlite": 15.0, "postgresql": 20.0}
TARGET_POSTGRES_RATE = 0.80

CENTRE = (31.2304, 121.4737)  # People's Square
SPREAD_KM = 25.0  # stores lie within this distance of the centre
DELIVERY_RADIUS_M = 5_000.0
CUSTOMER_DISTANCE_KM = 2.0  # customers order this close to some store, inside its radius
KM_PER_DEGREE = 111.32
SKUS = tuple(f"SKU-{n:03d}" for n in range(40))
ON_HAND = 1_000_000
TEMPLATES = 4096
START_TIMEOUT_S = 60.0
LOAD_THREADS = 8


# --- the platform ------------------------------------------------------------------------------


# Kept here too: the benches built on this module's start-up helpers take it from here.
schema_url = harness.schema_url


@contextmanager
def postgres_schemas(url: str) -> Iterator[dict[str, str]]:
    """A fresh schema per service for this run, dropped afterwards; the URL of each."""
    with harness.postgres_schemas(url, SERVICES) as urls:
        yield urls


@dataclass
class Deployment:
    """Four services of one run: their environment, addresses and processes."""

    var: Path
    env: dict[str, str]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    # Each service's PostgreSQL URL; empty on SQLite.
    database_urls: dict[str, str] = field(default_factory=dict)

    def postgres_applications(self) -> dict[str, str]:
        """service -> the application_name of its PostgreSQL connections (none on SQLite)."""
        names = {service: application_name(url) for service, url in self.database_urls.items()}
        return {service: name for service, name in names.items() if name}

    def address(self, service: str) -> str:
        return f"127.0.0.1:{self.env[f'QUANYU_{service.upper()}__PORT']}"

    def token(self, principal: Principal) -> tuple[tuple[str, str]]:
        codec = TokenCodec.local(self.var / "token-keys")
        return (("authorization", f"Bearer {codec.issue(principal, 3600).token}"),)

    def log(self, service: str) -> Path:
        return self.var / f"{service}.log"

    def start(self, service: str) -> None:
        """`service` started (again) with this run's environment, its output appended to its log."""
        with self.log(service).open("ab") as log:
            self.processes[service] = subprocess.Popen(
                [sys.executable, "-m", "quanyu_ops.cli", "serve", service],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=log,
            )
        wait_serving(self.address(service), self.processes[service], START_TIMEOUT_S)


def deployment_env(
    var: Path, database_urls: dict[str, str], services: Sequence[str] = SERVICES, **extra: str
) -> dict[str, str]:
    """None of the caller's QUANYU_* settings: loopback only, free ports, no metrics endpoints
    unless `extra` gives a service's port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUANYU_")}
    env.update(
        {
            "QUANYU_VAR_DIR": str(var),
            "QUANYU_HOST": "127.0.0.1",
            "QUANYU_GRACE_SECONDS": "3",
            "QUANYU_LOG_LEVEL": "WARNING",
            # Orders stay with their store for the whole run.
            "QUANYU_ORDERS_ACCEPT_WINDOW_SECONDS": "86400",
        }
    )
    env.update(extra)
    for service in services:
        prefix = f"QUANYU_{service.upper()}__"
        env[prefix + "PORT"] = str(free_port())
        env.setdefault(prefix + "METRICS_PORT", "0")
        if service in database_urls:
            env[prefix + "DATABASE_URL"] = database_urls[service]
    return env


@contextmanager
def deployment(
    postgres_url: str | None, services: Sequence[str] = SERVICES, **extra: str
) -> Iterator[Deployment]:
    """`services` (the four by default) on SQLite files in a temporary dir, or on fresh PostgreSQL
    schemas; `extra` settings for all of them."""
    var = Path(tempfile.mkdtemp(prefix="quanyu-bench-orders-"))
    try:
        with _databases(postgres_url) as urls:
            running = Deployment(var, deployment_env(var, urls, services, **extra), database_urls=urls)
            try:
                for service in services:
                    running.start(service)
                yield running
            except Exception:
                for service in running.processes:
                    tail = running.log(service).read_text(errors="replace").splitlines()[-10:]
                    print(f"  {service} log (last lines):\n    " + "\n    ".join(tail), file=sys.stderr)
                raise
            finally:
                # Every process ends before its schema is dropped.
                for process in reversed(running.processes.values()):
                    stop(process)
    finally:
        shutil.rmtree(var, ignore_errors=True)


@contextmanager
def _databases(postgres_url: str | None) -> Iterator[dict[str, str]]:
    if postgres_url is None:
        yield {}  # each service's SQLite file under the var dir
        return
    with postgres_schemas(postgres_url) as urls:
        yield urls


# --- the data ----------------------------------------------------------------------------------


def near(rng: random.Random, centre: tuple[float, float], km: float) -> tuple[float, float]:
    """A point uniformly spread within `km` of `centre` (flat-earth offsets, fine at this scale)."""
    distance = km * math.sqrt(rng.random())
    bearing = rng.uniform(0, 2 * math.pi)
    lat = centre[0] + distance * math.cos(bearing) / KM_PER_DEGREE
    lng = centre[1] + distance * math.sin(bearing) / (KM_PER_DEGREE * math.cos(math.radians(centre[0])))
    return lat, lng


def wgs84(point: tuple[float, float]) -> common_pb2.LatLng:
    return common_pb2.LatLng(latitude=point[0], longitude=point[1], system=common_pb2.COORDINATE_SYSTEM_WGS84)


def load_stores(running: Deployment, count: int, seed: int) -> list[tuple[float, float]]:
    """`count` stores around Shanghai, each delivering around itself and stocking every SKU."""
    rng = random.Random(seed)
    ops = running.token(Principal(Role.OPS, "bench-orders"))
    places = [near(rng, CENTRE, SPREAD_KM) for _ in range(count)]
    levels = [fulfilment_pb2.SkuQuantity(sku=sku, on_hand=ON_HAND) for sku in SKUS]
    with grpc.insecure_channel(running.address("fulfilment")) as channel:
        fulfilment = fulfilment_pb2_grpc.FulfilmentServiceStub(channel)

        def open_store(number: int, place: tuple[float, float]) -> None:
            store_id = f"SH-{number:04d}"
            fulfilment.UpsertStore(
                fulfilment_pb2.UpsertStoreRequest(
                    store=fulfilment_pb2.Store(
                        store_id=store_id,
                        name=f"Shanghai {number}",
                        location=wgs84(place),
                        delivery_radius_m=DELIVERY_RADIUS_M,
                    )
                ),
                metadata=ops,
                timeout=CALL_TIMEOUT_S,
            )
            fulfilment.SetStock(
                fulfilment_pb2.SetStockRequest(store_id=store_id, levels=levels),
                metadata=ops,
                timeout=CALL_TIMEOUT_S,
            )

        # Tens of thousands of stores, one by one, would take minutes of the run.
        with ThreadPoolExecutor(LOAD_THREADS) as pool:
            for opened in [pool.submit(open_store, n, place) for n, place in enumerate(places)]:
                opened.result(timeout=CALL_TIMEOUT_S * count)
    return places


def order_templates(
    stores: Sequence[tuple[float, float]], customers: int, seed: int
) -> list[orders_pb2.CreateOrderRequest]:
    """Delivery orders near the stores, customer `n % customers` for template `n`."""
    rng = random.Random(seed + 1)
    templates = []
    for number in range(TEMPLATES):
        lines = [
            common_pb2.Line(sku=sku, quantity=rng.randint(1, 3), unit_price_cents=rng.randrange(500, 20_000))
            for sku in rng.sample(SKUS, rng.randint(1, 3))
        ]
        templates.append(
            orders_pb2.CreateOrderRequest(
                account=common_pb2.ChannelAccount(
                    channel=common_pb2.CHANNEL_APP, external_id=f"bench-customer-{number % customers:05d}"
                ),
                channel=common_pb2.CHANNEL_APP,
                fulfilment_type=common_pb2.FULFILMENT_TYPE_DELIVERY,
                lines=lines,
                delivery_location=wgs84(near(rng, rng.choice(stores), CUSTOMER_DISTANCE_KM)),
                delivery_address=f"Lane {number}, Shanghai",
            )
        )
    return templates


# --- measuring ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cost:
    """What the measured phases gave: Health/Check on the orders server (H), CreateOrder, and the
    CPU of every process per answered CreateOrder."""

    health: Tally
    create: Tally
    # Each service process's CPU (user and system) per answered CreateOrder, ms.
    cpu_ms_per_order: dict[str, float]
    # The PostgreSQL server's over the CreateOrder phase; None on SQLite.
    postgres: PostgresCpu | None = None

    def postgres_ms_per_order(self, service: str) -> float:
        """The server's backends serving `service`'s connections, per answered CreateOrder, ms."""
        if self.postgres is None:
            return 0.0
        return self._per_order(self.postgres.by_application.get(service, 0.0))

    @property
    def postgres_background_ms_per_order(self) -> float:
        return 0.0 if self.postgres is None else self._per_order(self.postgres.background_s)

    @property
    def total_ms_per_order(self) -> float:
        """Every service process, and the PostgreSQL server's backends and background processes."""
        postgres = 0.0 if self.postgres is None else self._per_order(self.postgres.server_s)
        return sum(self.cpu_ms_per_order.values()) + postgres

    @property
    def h_ms(self) -> float:
        """One Health/Check's server CPU on the orders server: the yardstick H."""
        return self.health.server_cpu_ms_per_call

    @property
    def total_h(self) -> float:
        return self.total_ms_per_order / self.h_ms if self.h_ms else math.nan

    def _per_order(self, seconds: float) -> float:
        return 1000 * seconds / self.create.calls if self.create.calls else math.nan


@dataclass(frozen=True)
class Result:
    database: str
    stores: int
    customers: int
    concurrency: int
    cost: Cost

    @property
    def create(self) -> Tally:
        return self.cost.create

    @property
    def health(self) -> Tally:
        return self.cost.health

    @property
    def cpu_ms_per_order(self) -> dict[str, float]:
        return self.cost.cpu_ms_per_order


def measure_cost(
    running: Deployment,
    templates: Sequence[orders_pb2.CreateOrderRequest],
    customers: int,
    seconds: float,
    concurrency: int,
    *,
    postgres_url: str | None = None,
) -> Cost:
    """Every customer's first order (unmeasured), then Health/Check, CreateOrder and Health/Check
    again, with the CPU each service process, and with `postgres_url` the PostgreSQL server,
    spent per CreateOrder.

    H is taken on both sides of the orders, so that a change in the machine's pace during the run
    weighs on both alike.
    """
    channel_token = running.token(Principal(Role.CHANNEL, "bench-orders", channel="CHANNEL_APP"))
    run = uuid.uuid4().hex[:8]
    orders_pid = running.processes["orders"].pid
    with grpc.insecure_channel(running.address("orders")) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        orders = orders_pb2_grpc.OrderServiceStub(channel)
        check = health_pb2.HealthCheckRequest()

        def place(template: orders_pb2.CreateOrderRequest, request_id: str) -> None:
            request = orders_pb2.CreateOrderRequest()
            request.CopyFrom(template)
            request.request_id = request_id
            orders.CreateOrder(request, metadata=channel_token, timeout=CALL_TIMEOUT_S)

        def health_call(_: int, __: int) -> None:
            health.Check(check, timeout=CALL_TIMEOUT_S)

        def create_call(thread: int, sequence: int) -> None:
            template = templates[(thread * 7919 + sequence * 31) % len(templates)]
            place(template, f"bench-{run}-{thread}-{sequence}")

        # Each customer and member is created by its first order, before the clock starts.
        with ThreadPoolExecutor(concurrency) as pool:
            firsts = [
                pool.submit(place, templates[number], f"bench-{run}-first-{number}")
                for number in range(customers)
            ]
            for first in firsts:
                first.result(timeout=CALL_TIMEOUT_S * customers)
        warm = min(2.0, seconds / 3)
        hammer(health_call, concurrency, warm)
        health_before = hammer(health_call, concurrency, seconds / 2, server_pid=orders_pid)
        hammer(create_call, concurrency, warm, refusals=())
        pids = {service: process.pid for service, process in running.processes.items()}
        applications = {name: service for service, name in running.postgres_applications().items()}
        watch = PostgresWatch(postgres_url, applications) if postgres_url else None
        before = {service: cpu_seconds(pid) for service, pid in pids.items()}
        # Every order here can be served: a refusal is a failure like any other.
        if watch is not None:
            with watch:
                create_tally = hammer(create_call, concurrency, seconds, refusals=())
        else:
            create_tally = hammer(create_call, concurrency, seconds, refusals=())
        spent = {service: cpu_seconds(pid) - before[service] for service, pid in pids.items()}
        health_after = hammer(health_call, concurrency, seconds / 2, server_pid=orders_pid)
    calls = create_tally.calls
    per_order = {service: 1000 * used / calls if calls else math.nan for service, used in spent.items()}
    postgres = None
    if watch is not None:
        # By service rather than by application_name.
        postgres = watch.cpu
        postgres.by_application = {applications[name]: used for name, used in postgres.by_application.items()}
    return Cost(pooled([health_before, health_after]), create_tally, per_order, postgres)


def measure(
    running: Deployment,
    templates: Sequence[orders_pb2.CreateOrderRequest],
    customers: int,
    seconds: float,
    concurrency: int,
) -> tuple[Tally, Tally, dict[str, float]]:
    """measure_cost without the database server: (Health/Check, CreateOrder, each service's CPU
    per order in ms)."""
    cost = measure_cost(running, templates, customers, seconds, concurrency)
    return cost.health, cost.create, cost.cpu_ms_per_order


def run(
    database: str,
    postgres_url: str | None,
    *,
    stores: int,
    customers: int,
    seconds: float,
    concurrency: int,
) -> Result:
    print(f"{database}: starting the four services", file=sys.stderr, flush=True)
    with deployment(postgres_url) as running:
        started = time.perf_counter()
        places = load_stores(running, stores, seed=7)
        loaded_s = time.perf_counter() - started
        print(
            f"{database}: {stores} stores with {len(SKUS)} SKUs loaded in {loaded_s:.1f} s;"
            f" orders pid {running.processes['orders'].pid}",
            file=sys.stderr,
            flush=True,
        )
        templates = order_templates(places, customers, seed=7)
        cost = measure_cost(running, templates, customers, seconds, concurrency, postgres_url=postgres_url)
    return Result(database, stores, customers, concurrency, cost)


# --- printing ----------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table whose columns line up in plain text too; the first column (names) to the
    left, the figures to the right."""
    widths = [max(len(headers[c]), *(len(r[c]) for r in rows)) for c in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        padded = [cell.ljust(widths[0]) if c == 0 else cell.rjust(widths[c]) for c, cell in enumerate(cells)]
        return "| " + " | ".join(padded) + " |"

    rule = "|".join(("-" * (w + 2)) if c == 0 else ("-" * (w + 1) + ":") for c, w in enumerate(widths))
    return "\n".join([line(headers), f"|{rule}|", *(line(row) for row in rows)])


def errors(tally: Tally) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(tally.errors.items())) or "0"


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def rate_ratio(results: Sequence[Result]) -> float:
    """PostgreSQL's CreateOrder/s against SQLite's; NaN unless both ran."""
    rates = {result.database: result.create.per_second for result in results}
    if rates.get("sqlite") and "postgresql" in rates:
        return rates["postgresql"] / rates["sqlite"]
    return math.nan


def report(results: Sequence[Result], seconds: float) -> str:
    first = results[0]
    heading = (
        f"CreateOrder, returning customers ({first.customers}, delivery orders): {first.concurrency}"
        f" client threads, {seconds:g} s of orders and {seconds:g} s of Health/Check on the orders"
        f" server around them, per database"
    )
    rate_headers = [
        "database",
        "stores",
        "CreateOrder/s",
        "p50 ms",
        "p99 ms",
        "create errors",
        "Health/s",
        "H = Health/Check server CPU ms",
        "machine busy",
    ]
    rate_rows = [
        [
            result.database,
            f"{result.stores:,}",
            f"{result.create.per_second:.1f}",
            f"{result.create.percentile_ms(50):.1f}",
            f"{result.create.percentile_ms(99):.1f}",
            errors(result.create),
            f"{result.health.per_second:.0f}",
            f"{result.cost.h_ms:.3f}",
            f"{result.create.machine_busy:.0%}",
        ]
        for result in results
    ]
    postgres_ran = any(result.cost.postgres is not None for result in results)
    cpu_headers = [
        "database",
        *SERVICES,
        *((f"PG for {service}" for service in SERVICES) if postgres_ran else ()),
        *(("PG background",) if postgres_ran else ()),
        "all ms",
        "all H",
        "target",
        "",
    ]
    cpu_rows = []
    for result in results:
        cost = result.cost
        target = TARGET_H.get(result.database, math.nan)
        postgres_cells: list[str] = []
        if postgres_ran:
            on_postgres = cost.postgres is not None
            postgres_cells = [
                f"{cost.postgres_ms_per_order(service):.2f}" if on_postgres else "-" for service in SERVICES
            ]
            postgres_cells.append(f"{cost.postgres_background_ms_per_order:.2f}" if on_postgres else "-")
        cpu_rows.append(
            [
                result.database,
                *(f"{cost.cpu_ms_per_order[service]:.2f}" for service in SERVICES),
                *postgres_cells,
                f"{cost.total_ms_per_order:.2f}",
                f"{cost.total_h:.1f}",
                f"≤ {target:g} H",
                verdict(cost.total_h <= target),
            ]
        )
    parts = [heading, table(rate_headers, rate_rows)]
    ratio = rate_ratio(results)
    if not math.isnan(ratio):
        parts.append(
            f"CreateOrder/s on PostgreSQL against SQLite: {ratio:.0%} (target ≥ {TARGET_POSTGRES_RATE:.0%}:"
            f" {verdict(ratio >= TARGET_POSTGRES_RATE)})"
        )
    parts += [
        "CPU per CreateOrder, ms: each process's user and system time over the CreateOrder phase"
        " (/proc/PID/stat), per answered call; all H: their sum over H of the same database's run.",
        table(cpu_headers, cpu_rows),
    ]
    notes = [
        "H: the orders server's CPU per Health/Check, its phases before and after the orders pooled."
        " The client's own CPU is not counted; on this machine it shares the same cores. Machine busy:"
        " every core, client included, over the CreateOrder phase (/proc/stat)."
    ]
    for result in results:
        postgres = result.cost.postgres
        if postgres is None:
            continue
        notes.append(
            "PG for <service>: the PostgreSQL backends serving that service's connections (by their"
            " application_name in pg_stat_activity, listed every 0.2 s so that backends opened or closed"
            " during the phase count too); PG background: the server's own processes (postmaster, WAL"
            " writer, checkpointer, background writer, autovacuum), counted in full though other work"
            f" may share them. During the phase {postgres.born} backends of the services started and"
            f" {postgres.ended} ended (up to 0.2 s of CPU each unseen); other clients' backends on the"
            f" server: {postgres.other_clients}, {1000 * postgres.other_clients_s:.0f} ms of CPU, not"
            " counted."
        )
    parts += notes
    return "\n\n".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.orders", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="seconds of CreateOrder (default 15)")
    parser.add_argument("--concurrency", type=int, default=8, help="client threads (default 8)")
    parser.add_argument("--stores", type=int, default=20_000, help="stores on SQLite (default 20000)")
    parser.add_argument(
        "--postgres-stores", type=int, default=5_000, help="stores on PostgreSQL (default 5000)"
    )
    parser.add_argument("--customers", type=int, default=500, help="returning customers (default 500)")
    add_postgres_options(parser)
    args = parser.parse_args(argv)
    if min(args.seconds, args.concurrency, args.stores, args.postgres_stores, args.customers) <= 0:
        parser.error("--seconds, --concurrency, --stores, --postgres-stores and --customers must be positive")
    postgres_url = postgres_to_measure(parser, args.postgres, args.no_postgres)

    load_before = os.getloadavg()[0]
    databases: list[tuple[str, str | None, int]] = [("sqlite", None, args.stores)]
    if postgres_url:
        databases.append(("postgresql", postgres_url, args.postgres_stores))
    results = [
        run(
            name,
            url,
            stores=stores,
            customers=args.customers,
            seconds=args.seconds,
            concurrency=args.concurrency,
        )
        for name, url, stores in databases
    ]
    print("$ python -m bench.orders " + " ".join(sys.argv[1:] if argv is None else argv))
    # Other work on the machine weighs on every figure; say how busy it was.
    print(
        f"machine: {os.cpu_count()} CPUs, 1-minute load average {load_before:.1f} at the start,"
        f" {os.getloadavg()[0]:.1f} at the end"
    )
    print(report(results, args.seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
