"""Placing orders end to end: how fast the orders service takes delivery orders with all four
services running as real processes, against the cheapest call its server can answer.

For each database (SQLite, and PostgreSQL when a URL is given) it starts identity, membership,
fulfilment and orders in a temporary var dir on free ports of 127.0.0.1, loads a few hundred
stores scattered around Shanghai with ample stock of every SKU, and places one order for each
of a few hundred customers (named by their app account) so that every customer and member
exists before the clock starts. Then, at a fixed concurrency, one phase after the other:

* grpc.health.v1 Health/Check on the orders server, calls per second;
* orders CreateOrder with a channel token: delivery orders near a random store, 1-3 lines, a
  fresh request id every call, customers drawn from the same few hundred accounts. Each call
  resolves the customer (identity), finds the member (membership) and asks fulfilment to choose
  and reserve a store before the order is stored.

It prints one table with a row per database: CreateOrder calls per second, p50 and p99 latency,
Health/Check calls per second, and the ratio of the two, held against a target of 15 % on SQLite.
A second table splits what a CreateOrder costs by service: each process's CPU per order placed.

    .venv/bin/python -m bench.orders [--seconds 15] [--concurrency 8] [--stores 300]
        [--customers 300] [--postgres postgresql://user@127.0.0.1:5432/db]

`--postgres` (or QUANYU_BENCH_POSTGRES_URL) adds a run on PostgreSQL, each service in its own
schema created for the run and dropped after it. The benchmark talks only to 127.0.0.1, bounds
every loop, and removes its processes, schemas and temporary directory when it ends.
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
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench.harness import CALL_TIMEOUT_S, Tally, cpu_seconds, hammer, stop, wait_serving
from quanyu.auth import Principal, Role, TokenCodec
from quanyu.common.v1 import common_pb2
from quanyu.db import normalise_url
from quanyu.fulfilment.v1 import fulfilment_pb2, fulfilment_pb2_grpc
from quanyu.orders.v1 import orders_pb2, orders_pb2_grpc
from tests.processes import free_port

ROOT = Path(__file__).resolve().parents[1]
# Started in this order: orders calls the other three.
SERVICES = ("identity", "membership", "fulfilment", "orders")
TARGET_RATIO = 0.15  # CreateOrder against Health/Check on SQLite

CENTRE = (31.2304, 121.4737)  # People's Square
SPREAD_KM = 25.0  # stores lie within this distance of the centre
DELIVERY_RADIUS_M = 5_000.0
CUSTOMER_DISTANCE_KM = 2.0  # customers order this close to some store, inside its radius
KM_PER_DEGREE = 111.32
SKUS = tuple(f"SKU-{n:03d}" for n in range(40))
ON_HAND = 1_000_000
TEMPLATES = 4096
START_TIMEOUT_S = 60.0
POSTGRES_ENV = "QUANYU_BENCH_POSTGRES_URL"
LOCAL_HOSTS = (None, "127.0.0.1", "localhost", "::1")  # None: a Unix socket


# --- the platform ------------------------------------------------------------------------------


def schema_url(url: str, schema: str) -> str:
    """`url` with every connection's search path set to `schema`."""
    parsed = make_url(normalise_url(url)).update_query_dict({"options": f"-csearch_path={schema}"})
    return parsed.render_as_string(hide_password=False)


@contextmanager
def postgres_schemas(url: str) -> Iterator[dict[str, str]]:
    """A fresh schema per service for this run, dropped afterwards; the URL of each."""
    run = uuid.uuid4().hex[:10]
    schemas = {service: f"bench_{run}_{service}" for service in SERVICES}
    admin = create_engine(normalise_url(url), isolation_level="AUTOCOMMIT")
    created: list[str] = []
    try:
        with admin.connect() as connection:
            for schema in schemas.values():
                connection.execute(text(f'CREATE SCHEMA "{schema}"'))
                created.append(schema)
        yield {service: schema_url(url, schema) for service, schema in schemas.items()}
    finally:
        with admin.connect() as connection:
            for schema in created:
                connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@dataclass
class Deployment:
    """Four services of one run: their environment, addresses and processes."""

    var: Path
    env: dict[str, str]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

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
    """None of the caller's QUANYU_* settings: loopback only, free ports, no metrics endpoints."""
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
        env[prefix + "METRICS_PORT"] = "0"
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
            running = Deployment(var, deployment_env(var, urls, services, **extra))
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
        for number, place in enumerate(places):
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
class Result:
    database: str
    stores: int
    customers: int
    concurrency: int
    create: Tally
    health: Tally
    # Each service's CPU (user and system) per answered CreateOrder over the measured phase.
    cpu_ms_per_order: dict[str, float]

    @property
    def ratio(self) -> float:
        return self.create.per_second / self.health.per_second if self.health.per_second else math.nan


def measure(
    running: Deployment,
    templates: Sequence[orders_pb2.CreateOrderRequest],
    customers: int,
    seconds: float,
    concurrency: int,
) -> tuple[Tally, Tally, dict[str, float]]:
    """Every customer's first order (unmeasured), then Health/Check and CreateOrder phases, with
    the CPU each service process spent per CreateOrder."""
    channel_token = running.token(Principal(Role.CHANNEL, "bench-orders", channel="CHANNEL_APP"))
    run = uuid.uuid4().hex[:8]
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
        hammer(health_call, concurrency, min(2.0, seconds / 3))
        health_tally = hammer(health_call, concurrency, seconds)
        pids = {service: process.pid for service, process in running.processes.items()}
        before = {service: cpu_seconds(pid) for service, pid in pids.items()}
        # Every order here can be served: a refusal is a failure like any other.
        create_tally = hammer(create_call, concurrency, seconds, refusals=())
        spent = {service: cpu_seconds(pid) - before[service] for service, pid in pids.items()}
    calls = create_tally.calls
    per_order = {service: 1000 * used / calls if calls else math.nan for service, used in spent.items()}
    return health_tally, create_tally, per_order


def run(
    database: str, postgres_url: str | None, *, stores: int, customers: int, seconds: float, concurrency: int
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
        health, create, cpu = measure(running, templates, customers, seconds, concurrency)
    return Result(database, stores, customers, concurrency, create, health, cpu)


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


def report(results: Sequence[Result], seconds: float) -> str:
    headers = [
        "database",
        "CreateOrder/s",
        "p50 ms",
        "p99 ms",
        "Health/s",
        "health p50 ms",
        "ratio",
        f"target ≥ {TARGET_RATIO:.0%}",
        "create errors",
        "machine busy",
    ]
    rows: list[list[str]] = []
    for result in results:
        create, health = result.create, result.health
        rows.append(
            [
                result.database,
                f"{create.per_second:.1f}",
                f"{create.percentile_ms(50):.1f}",
                f"{create.percentile_ms(99):.1f}",
                f"{health.per_second:.0f}",
                f"{health.percentile_ms(50):.2f}",
                f"{result.ratio:.1%}",
                ("met" if result.ratio >= TARGET_RATIO else "missed") if result.database == "sqlite" else "-",
                errors(create),
                f"{create.machine_busy:.0%}",
            ]
        )
    first = results[0]
    heading = (
        f"CreateOrder (delivery, {first.stores} stores, {first.customers} customers) against Health/Check"
        f" on the orders server: {first.concurrency} threads, {seconds:.0f} s per phase"
    )
    cpu_headers = ["database", *SERVICES, "all four"]
    cpu_rows = [
        [
            result.database,
            *(f"{result.cpu_ms_per_order[service]:.2f}" for service in SERVICES),
            f"{sum(result.cpu_ms_per_order.values()):.2f}",
        ]
        for result in results
    ]
    cpu_note = (
        "Server CPU per CreateOrder, ms: each service process's user and system time over the"
        " CreateOrder phase (/proc/PID/stat), per answered call. The client's own CPU is not counted;"
        " on this machine all of it shares the same cores. Machine busy: every core, client included,"
        " over the CreateOrder phase (/proc/stat)."
    )
    return "\n\n".join([heading, table(headers, rows), cpu_note, table(cpu_headers, cpu_rows)])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.orders", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="seconds per measured phase (default 15)")
    parser.add_argument("--concurrency", type=int, default=8, help="client threads (default 8)")
    parser.add_argument("--stores", type=int, default=300, help="stores around Shanghai (default 300)")
    parser.add_argument("--customers", type=int, default=300, help="distinct customers (default 300)")
    parser.add_argument(
        "--postgres",
        default=os.environ.get(POSTGRES_ENV) or None,
        help=f"also run on this PostgreSQL database (default ${POSTGRES_ENV})",
    )
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.concurrency < 1 or args.stores < 1 or args.customers < 1:
        parser.error("--seconds, --concurrency, --stores and --customers must be positive")
    if args.postgres and make_url(normalise_url(args.postgres)).host not in LOCAL_HOSTS:
        parser.error("--postgres must name a database on this machine")

    databases: list[tuple[str, str | None]] = [("sqlite", None)]
    if args.postgres:
        databases.append(("postgresql", args.postgres))
    results = [
        run(
            name,
            url,
            stores=args.stores,
            customers=args.customers,
            seconds=args.seconds,
            concurrency=args.concurrency,
        )
        for name, url in databases
    ]
    print(report(results, args.seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
