"""Capacity: one replica of each service against two, on one PostgreSQL database, and whether the
orders, stock and points stay right when every service runs twice.

All five services run on a schema each of one PostgreSQL database, created for the run and
dropped after it. A round starts REPLICAS (1 or 2) processes of each service, replica n
listening on 127.0.0.(n+1), every one on the same port as its siblings; each service reaches the
others through a target listing every replica's address (`ipv4:127.0.0.2:P,127.0.0.3:P`), which
gRPC balances round-robin, as a client does over a headless Service's pods. The rounds alternate
1, 2, 1, 2 (`--rounds`), each on fresh processes over the same data, so that a slower minute of
this shared machine does not fall on one side only.

A round, after a few seconds of unmeasured orders to warm every replica's pools:

* grpc.health.v1 Health/Check on the orders replicas: the orders replicas' CPU per check is H;
* CreateOrder from 8-16 client threads (`--concurrency`), delivery orders of returning customers
  (each placed a first order before the first round): orders per second, and the CPU per order of
  every service (its replicas together) and of PostgreSQL (the backends of this run's
  connections, named by their application_name), in ms and in H;
* each replica's share of the calls its service served (its own grpc_server_handled_total).

After the last round, with two replicas of each service still running, a sample of the orders is
accepted, made ready and completed (stock committed, points earned through orders' outbox), the
outboxes are let drain, and the data are checked across the schemas:

* every acknowledged order is stored, once, with its lines reserved once (ACTIVE or COMMITTED);
* every stock row's `reserved` is the sum of its ACTIVE reservations and its `on_hand` what was
  loaded less its COMMITTED ones (no unit reserved or taken twice);
* every completed order earned points exactly once (one EARN ledger entry, its points noted on the
  order), and no outbox effect was refused for good or left due and undelivered.

    .venv/bin/python -m bench.capacity --postgres postgresql://postgres@127.0.0.1:5432/test
        [--seconds 15] [--concurrency 8] [--rounds 1,2,1,2] [--stores 300] [--customers 300]
        [--pool-size 4] [--complete 200]

The bench talks only to loopback addresses, bounds every loop and wait, and removes its
processes, schemas and temporary directory when it ends.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from bench.harness import (
    CALL_TIMEOUT_S,
    LOCAL_HOSTS,
    POSTGRES_ENV,
    Tally,
    cpu_seconds,
    hammer,
    stop,
    wait_serving,
)
from bench.orders import (
    ON_HAND,
    Deployment,
    deployment_env,
    errors,
    load_stores,
    order_templates,
    table,
)
from quanyu.auth import Principal, Role
from quanyu.db import normalise_url
from quanyu.orders.v1 import orders_pb2, orders_pb2_grpc
from tests.processes import free_port

ROOT = Path(__file__).resolve().parents[1]
# Started in this order: each calls only services started before it (marketing hears orders'
# events through its outbox, so it is up before orders).
SERVICES = ("identity", "membership", "fulfilment", "marketing", "orders")
# Fulfilment keeps no outbox: it calls no one.
WITH_OUTBOX = ("identity", "membership", "marketing", "orders")
# Replica n of every service listens on the n-th of these.
REPLICA_HOSTS = ("127.0.0.2", "127.0.0.3")
START_TIMEOUT_S = 60.0
WARM_SECONDS = 3.0
DRAIN_TIMEOUT_S = 180.0
IDLE_SECONDS = 5.0
FIRST_ORDER_ATTEMPTS = 5
HEALTH_SERVICE = "grpc.health.v1.Health"
# Spread the bench's own calls over every orders replica, as the services' channels do.
ROUND_ROBIN = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})


# --- the platform ------------------------------------------------------------------------------


def service_url(url: str, schema: str, application: str) -> str:
    """`url` with every connection's search path set to `schema`, and named `application` in
    pg_stat_activity so that this run's backends (and their CPU) can be told from others'."""
    parsed = make_url(normalise_url(url)).update_query_dict(
        {"options": f"-csearch_path={schema}", "application_name": application}
    )
    return parsed.render_as_string(hide_password=False)


@dataclass(frozen=True)
class Schemas:
    """The schema and connection name of each service in this run."""

    run: str

    def schema(self, service: str) -> str:
        return f"bench_{self.run}_{service}"

    def application(self, service: str) -> str:
        return f"bench-capacity-{self.run}-{service}"


@contextmanager
def postgres_schemas(admin: Engine, schemas: Schemas) -> Iterator[None]:
    """A fresh schema per service, dropped afterwards."""
    created: list[str] = []
    try:
        with admin.connect() as connection:
            for service in SERVICES:
                connection.execute(text(f'CREATE SCHEMA "{schemas.schema(service)}"'))
                created.append(schemas.schema(service))
        yield
    finally:
        with admin.connect() as connection:
            for schema in created:
                connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


class Replicas(Deployment):
    """`count` processes of each service, replica n on REPLICA_HOSTS[n], all on one port per
    service; every target lists every replica."""

    def __init__(self, var: Path, env: dict[str, str], count: int) -> None:
        super().__init__(var, env)
        self.hosts = REPLICA_HOSTS[:count]
        for service in SERVICES:
            prefix = f"QUANYU_{service.upper()}__"
            self.env[prefix + "TARGET"] = self.address(service)
            # Each replica's metrics on its own address, the same port for all.
            self.env[prefix + "METRICS_PORT"] = str(free_port())
        self.replicas: dict[tuple[str, str], subprocess.Popen[bytes]] = {}

    def address(self, service: str) -> str:
        port = self.env[f"QUANYU_{service.upper()}__PORT"]
        return "ipv4:" + ",".join(f"{host}:{port}" for host in self.hosts)

    def first(self, service: str) -> str:
        """The first replica's own address."""
        return f"{self.hosts[0]}:{self.env[f'QUANYU_{service.upper()}__PORT']}"

    def replica_log(self, service: str, host: str) -> Path:
        return self.var / f"{service}-{host}.log"

    def start_all(self) -> None:
        for service in SERVICES:
            for host in self.hosts:
                with self.replica_log(service, host).open("ab") as log:
                    process = subprocess.Popen(
                        [sys.executable, "-m", "quanyu_ops.cli", "serve", service],
                        cwd=ROOT,
                        env={**self.env, "QUANYU_HOST": host},
                        stdout=log,
                        stderr=log,
                    )
                self.replicas[service, host] = process
                port = self.env[f"QUANYU_{service.upper()}__PORT"]
                wait_serving(f"{host}:{port}", process, START_TIMEOUT_S)

    def stop_all(self) -> None:
        # Callers first, so no call is left hanging on a service already gone.
        for process in reversed(self.replicas.values()):
            stop(process)

    def log_tails(self) -> str:
        tails = []
        for service, host in self.replicas:
            lines = self.replica_log(service, host).read_text(errors="replace").splitlines()[-10:]
            tails.append(f"  {service} on {host} (last lines):\n    " + "\n    ".join(lines))
        return "\n".join(tails)

    def cpu(self) -> dict[tuple[str, str], float]:
        return {key: cpu_seconds(process.pid) for key, process in self.replicas.items()}

    def served(self) -> dict[tuple[str, str], int]:
        """Calls each replica has answered, health checks aside, from its own metrics."""
        counts = {}
        for service, host in self.replicas:
            port = self.env[f"QUANYU_{service.upper()}__METRICS_PORT"]
            with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as answer:
                lines = answer.read().decode().splitlines()
            counts[service, host] = int(
                sum(
                    float(line.rsplit(" ", 1)[1])
                    for line in lines
                    if line.startswith("grpc_server_handled_total{") and HEALTH_SERVICE not in line
                )
            )
        return counts


def backend_cpu(admin: Engine, schemas: Schemas) -> Backends:
    """Each backend serving this run's connections: its service and the CPU it has used so far."""
    names = {schemas.application(service): service for service in SERVICES}
    with admin.connect() as connection:
        rows = connection.execute(
            text("SELECT pid, application_name FROM pg_stat_activity WHERE application_name = ANY(:names)"),
            {"names": list(names)},
        ).all()
    found = {}
    for pid, application in rows:
        try:
            found[int(pid)] = (names[application], cpu_seconds(int(pid)))
        except (FileNotFoundError, ProcessLookupError):
            continue  # the connection closed meanwhile
    return found


Backends = dict[int, tuple[str, float]]


def cpu_spent(
    before: dict[tuple[str, str], float],
    after: dict[tuple[str, str], float],
    backends_before: Backends,
    backends_after: Backends,
) -> dict[str, float]:
    """CPU seconds between two readings: each service's replicas together, and "postgresql"."""
    spent = {service: 0.0 for service in SERVICES}
    for key, used in after.items():
        spent[key[0]] += used - before[key]
    # A backend opened in between counts from nothing; one closed in between is lost (a pool
    # keeps its connections, so few are).
    spent["postgresql"] = sum(
        used - backends_before.get(pid, (service, 0.0))[1] for pid, (service, used) in backends_after.items()
    )
    return spent


# --- measuring ---------------------------------------------------------------------------------


@dataclass
class Round:
    replicas: int
    health: Tally
    create: Tally
    # CPU ms per answered CreateOrder: of each service (its replicas together) and "postgresql".
    cpu_ms_per_order: dict[str, float]
    health_cpu_ms: float  # the first orders replica's CPU per Health/Check it answered: H
    # Each replica's share of the calls its service answered during CreateOrder.
    shares: dict[tuple[str, str], float]
    connections: dict[str, int]  # this run's PostgreSQL connections, by service, at the end
    # The bench's own CPU per order (its 8-16 threads calling), not part of the cost.
    client_ms_per_order: float

    @property
    def total_ms(self) -> float:
        return sum(self.cpu_ms_per_order.values())

    def in_h(self, ms: float) -> float:
        return ms / self.health_cpu_ms if self.health_cpu_ms else math.nan


@dataclass
class Orders:
    """What the client was told: the order id of every acknowledged CreateOrder."""

    acknowledged: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, order_id: str) -> None:
        with self.lock:
            self.acknowledged.append(order_id)


def first_orders(
    running: Replicas, templates: Sequence[orders_pb2.CreateOrderRequest], customers: int, concurrency: int
) -> list[str]:
    """Every customer's first order, so that each is a returning customer when the clock starts."""
    token = running.token(Principal(Role.CHANNEL, "bench-capacity", channel="CHANNEL_APP"))
    with grpc.insecure_channel(
        running.address("orders"), options=[("grpc.service_config", ROUND_ROBIN)]
    ) as channel:
        stub = orders_pb2_grpc.OrderServiceStub(channel)

        def place(number: int) -> str:
            request = orders_pb2.CreateOrderRequest()
            request.CopyFrom(templates[number])
            request.request_id = f"capacity-first-{number}"
            # A busy machine can time a downstream call out: the contract says to retry with the
            # same request id, which stores the order once whatever happened the first time.
            for attempt in range(FIRST_ORDER_ATTEMPTS):
                try:
                    answer = stub.CreateOrder(request, metadata=token, timeout=CALL_TIMEOUT_S)
                except grpc.RpcError as error:
                    if error.code() != grpc.StatusCode.UNAVAILABLE or attempt == FIRST_ORDER_ATTEMPTS - 1:
                        raise
                    continue
                return str(answer.order.order_id)
            raise AssertionError("unreachable: the last attempt returns or raises")

        with ThreadPoolExecutor(concurrency) as pool:
            return list(pool.map(place, range(customers)))


def measure(
    running: Replicas,
    admin: Engine,
    schemas: Schemas,
    templates: Sequence[orders_pb2.CreateOrderRequest],
    placed: Orders,
    *,
    label: str,
    seconds: float,
    concurrency: int,
) -> Round:
    token = running.token(Principal(Role.CHANNEL, "bench-capacity", channel="CHANNEL_APP"))
    with (
        grpc.insecure_channel(
            running.address("orders"), options=[("grpc.service_config", ROUND_ROBIN)]
        ) as channel,
        grpc.insecure_channel(running.first("orders")) as first,
    ):
        # H is one process's CPU per Health/Check, whatever the round: the first orders replica's.
        health = health_pb2_grpc.HealthStub(first)
        orders = orders_pb2_grpc.OrderServiceStub(channel)
        check = health_pb2.HealthCheckRequest()

        def health_call(_: int, __: int) -> None:
            health.Check(check, timeout=CALL_TIMEOUT_S)

        def create(thread: int, sequence: int, phase: str) -> None:
            template = templates[(thread * 7919 + sequence * 31) % len(templates)]
            request = orders_pb2.CreateOrderRequest()
            request.CopyFrom(template)
            request.request_id = f"capacity-{label}-{phase}-{thread}-{sequence}"
            answer = orders.CreateOrder(request, metadata=token, timeout=CALL_TIMEOUT_S)
            placed.add(answer.order.order_id)

        # Every replica's pools and channels warm, unmeasured (these orders are checked too).
        hammer(lambda t, s: create(t, s, "warm"), concurrency, WARM_SECONDS, refusals=())
        hammer(health_call, concurrency, min(2.0, seconds / 3))
        health_pid = running.replicas["orders", running.hosts[0]].pid
        health_tally = hammer(health_call, concurrency, seconds, server_pid=health_pid)

        client_before = cpu_seconds(os.getpid())
        cpu_before, backends_before = running.cpu(), backend_cpu(admin, schemas)
        served_before = running.served()
        # Every order here can be served: a refusal is a failure like any other.
        create_tally = hammer(lambda t, s: create(t, s, "load"), concurrency, seconds, refusals=())
        cpu_after, backends_after = running.cpu(), backend_cpu(admin, schemas)
        served_after = running.served()
        client_s = cpu_seconds(os.getpid()) - client_before

    calls = create_tally.calls
    spent = cpu_spent(cpu_before, cpu_after, backends_before, backends_after)
    served = {key: served_after[key] - served_before[key] for key in served_after}
    shares = {}
    for (service, host), count in served.items():
        total = sum(c for (s, _), c in served.items() if s == service)
        shares[service, host] = count / total if total else math.nan
    connections = {service: 0 for service in SERVICES}
    for service, _ in backends_after.values():
        connections[service] += 1
    return Round(
        replicas=len(running.hosts),
        health=health_tally,
        create=create_tally,
        cpu_ms_per_order={k: 1000 * v / calls if calls else math.nan for k, v in spent.items()},
        health_cpu_ms=health_tally.server_cpu_ms_per_call,
        shares=shares,
        connections=connections,
        client_ms_per_order=1000 * client_s / calls if calls else math.nan,
    )


# --- after the load: completing a sample, and the checks ---------------------------------------


def complete(running: Replicas, order_ids: Sequence[str], concurrency: int) -> list[str]:
    """Accept, make ready and complete each order as ops would; the ids that completed."""
    token = running.token(Principal(Role.OPS, "bench-capacity"))
    with grpc.insecure_channel(
        running.address("orders"), options=[("grpc.service_config", ROUND_ROBIN)]
    ) as channel:
        stub = orders_pb2_grpc.OrderServiceStub(channel)

        def through(order_id: str) -> str:
            stub.AcceptOrder(
                orders_pb2.AcceptOrderRequest(order_id=order_id), metadata=token, timeout=CALL_TIMEOUT_S
            )
            stub.MarkOrderReady(
                orders_pb2.MarkOrderReadyRequest(order_id=order_id), metadata=token, timeout=CALL_TIMEOUT_S
            )
            stub.CompleteOrder(
                orders_pb2.CompleteOrderRequest(order_id=order_id), metadata=token, timeout=CALL_TIMEOUT_S
            )
            return order_id

        with ThreadPoolExecutor(concurrency) as pool:
            return list(pool.map(through, order_ids))


def outbox_waiting(admin: Engine, schemas: Schemas) -> dict[str, int]:
    """Effects due and not delivered yet, or refused for good, by schema."""
    waiting = {}
    with admin.connect() as connection:
        for service in WITH_OUTBOX:
            waiting[service] = connection.execute(
                text(
                    f'SELECT count(*) FROM "{schemas.schema(service)}".outbox'  # noqa: S608 - the run's own schema
                    " WHERE failed = 1 OR (delivered_time IS NULL AND next_attempt_time <= :now)"
                ),
                {"now": datetime.now(UTC).replace(tzinfo=None)},
            ).scalar_one()
    return waiting


def drain(admin: Engine, schemas: Schemas) -> float:
    """Seconds until every due effect of every outbox is delivered (NaN: not within the time)."""
    started = time.monotonic()
    while time.monotonic() - started < DRAIN_TIMEOUT_S:
        if not any(outbox_waiting(admin, schemas).values()):
            return time.monotonic() - started
        time.sleep(1.0)
    return math.nan


def rest_of_life(
    running: Replicas, admin: Engine, schemas: Schemas, sample: Sequence[str], concurrency: int
) -> tuple[list[str], float, dict[str, float]]:
    """The sample completed and the outboxes drained: the orders completed, seconds to drain, and
    the CPU ms per completed order of each process, less what the same processes spend idle (their
    relays polling, their key refreshes), read over IDLE_SECONDS once everything is delivered."""
    began = time.monotonic()
    cpu_before, backends_before = running.cpu(), backend_cpu(admin, schemas)
    completed = complete(running, sample, concurrency)
    drained_s = drain(admin, schemas)
    cpu_drained, backends_drained = running.cpu(), backend_cpu(admin, schemas)
    busy_s = time.monotonic() - began
    spent = cpu_spent(cpu_before, cpu_drained, backends_before, backends_drained)
    threading.Event().wait(IDLE_SECONDS)
    idle = cpu_spent(cpu_drained, running.cpu(), backends_drained, backend_cpu(admin, schemas))
    per_order = {
        key: 1000 * max(0.0, used - idle[key] * busy_s / IDLE_SECONDS) / len(completed)
        for key, used in spent.items()
    }
    return completed, drained_s, per_order


@dataclass(frozen=True)
class Check:
    what: str
    found: int  # rows breaking it: 0 when it holds
    of: int

    @property
    def holds(self) -> bool:
        return self.found == 0


# A check that an effect still on its way breaks: it holds only once the outboxes have drained.
WAITING = "once drained: "

# Each check: what it looks for, the rows breaking it, and the rows it looks at. The tables are
# named bare: their schemas are on the search path (no two of them share a table name).
CHECKS = (
    (
        "acknowledged orders not stored exactly once",
        """SELECT count(*) FROM unnest(CAST(:acknowledged AS text[])) AS a(order_id)
           WHERE (SELECT count(*) FROM orders o WHERE o.order_id = a.order_id) <> 1""",
        "SELECT cardinality(CAST(:acknowledged AS text[]))",
    ),
    (
        "orders stored under one request id more than once",
        """SELECT count(*) FROM (SELECT 1 FROM orders
           GROUP BY request_owner, request_id HAVING count(*) > 1) AS twice""",
        "SELECT count(*) FROM orders",
    ),
    (
        "order lines not reserved exactly once (ACTIVE or COMMITTED)",
        """SELECT count(*) FROM order_lines l
           WHERE l.quantity <> (SELECT coalesce(sum(r.quantity), 0) FROM reservations r
               WHERE r.order_id = l.order_id AND r.sku = l.sku AND r.state IN ('ACTIVE', 'COMMITTED'))""",
        "SELECT count(*) FROM order_lines",
    ),
    (
        "stock rows whose reserved is not the sum of ACTIVE reservations",
        """SELECT count(*) FROM stock s
           WHERE s.reserved <> (SELECT coalesce(sum(r.quantity), 0) FROM reservations r
               WHERE r.store_id = s.store_id AND r.sku = s.sku AND r.state = 'ACTIVE')""",
        "SELECT count(*) FROM stock",
    ),
    (
        "stock rows whose on_hand is not what was loaded less COMMITTED reservations",
        """SELECT count(*) FROM stock s
           WHERE s.on_hand <> :on_hand - (SELECT coalesce(sum(r.quantity), 0) FROM reservations r
               WHERE r.store_id = s.store_id AND r.sku = s.sku AND r.state = 'COMMITTED')""",
        "SELECT count(*) FROM stock",
    ),
    (
        "completed orders that earned points more than once",
        """SELECT count(*) FROM unnest(CAST(:completed AS text[])) AS d(order_id)
           WHERE (SELECT count(*) FROM ledger_entries e
               WHERE e.source_id = d.order_id AND e.kind = 'EARN') > 1""",
        "SELECT cardinality(CAST(:completed AS text[]))",
    ),
    (
        WAITING + "completed orders that earned no points",
        """SELECT count(*) FROM unnest(CAST(:completed AS text[])) AS d(order_id)
           WHERE NOT EXISTS (SELECT 1 FROM ledger_entries e
               WHERE e.source_id = d.order_id AND e.kind = 'EARN')""",
        "SELECT cardinality(CAST(:completed AS text[]))",
    ),
    (
        "completed orders whose points earned differ from their EARN entry",
        """SELECT count(*) FROM orders o JOIN ledger_entries e ON e.source_id = o.order_id AND e.kind = 'EARN'
           WHERE o.order_id = ANY(:completed) AND o.points_earned IS DISTINCT FROM e.points""",
        "SELECT cardinality(CAST(:completed AS text[]))",
    ),
)


def checks(
    admin: Engine, schemas: Schemas, acknowledged: Sequence[str], completed: Sequence[str]
) -> list[Check]:
    path = ", ".join(f'"{schemas.schema(s)}"' for s in ("orders", "fulfilment", "membership"))
    params = {"acknowledged": list(acknowledged), "completed": list(completed), "on_hand": ON_HAND}
    found = []
    with admin.connect() as connection:
        connection.execute(text(f"SET search_path TO {path}"))
        for what, breaking, looked_at in CHECKS:
            count = connection.execute(text(breaking), params).scalar_one()
            of = connection.execute(text(looked_at), params).scalar_one()
            found.append(Check(what, int(count), int(of)))
        connection.execute(text("RESET search_path"))
    waiting = outbox_waiting(admin, schemas)
    found.append(
        Check(WAITING + "outbox effects refused for good or due and undelivered", sum(waiting.values()), 0)
    )
    return found


# --- the run -----------------------------------------------------------------------------------


@dataclass
class Outcome:
    rounds: list[Round]
    checks: list[Check]
    drained_s: float
    completed: int
    acknowledged: int
    # CPU ms per completed order of accepting, readying and completing it and delivering its
    # effects (stock committed, points earned, events), until the outboxes drained.
    after_ms: dict[str, float]
    after_h: float  # H of the last round


def run(
    postgres_url: str,
    *,
    rounds: Sequence[int],
    stores: int,
    customers: int,
    seconds: float,
    concurrency: int,
    pool_size: int,
    to_complete: int,
) -> Outcome:
    schemas = Schemas(uuid.uuid4().hex[:10])
    admin = create_engine(normalise_url(postgres_url), isolation_level="AUTOCOMMIT")
    var = Path(tempfile.mkdtemp(prefix="quanyu-bench-capacity-"))
    placed = Orders()
    measured: list[Round] = []
    completed: list[str] = []
    found: list[Check] = []
    drained_s = math.nan
    after_ms: dict[str, float] = {}
    after_h = math.nan
    try:
        with postgres_schemas(admin, schemas):
            urls = {s: service_url(postgres_url, schemas.schema(s), schemas.application(s)) for s in SERVICES}
            base = deployment_env(var, urls, SERVICES, QUANYU_DATABASE_POOL_SIZE=str(pool_size))
            templates: Sequence[orders_pb2.CreateOrderRequest] = ()
            for number, count in enumerate(rounds):
                running = Replicas(var, dict(base), count)
                print(
                    f"round {number + 1}: starting {count} replica(s) of each service",
                    file=sys.stderr,
                    flush=True,
                )
                try:
                    running.start_all()
                    if number == 0:
                        places = load_stores(running, stores, seed=7)
                        templates = order_templates(places, customers, seed=7)
                        for order_id in first_orders(running, templates, customers, concurrency):
                            placed.add(order_id)
                    result = measure(
                        running,
                        admin,
                        schemas,
                        templates,
                        placed,
                        label=f"{number}",
                        seconds=seconds,
                        concurrency=concurrency,
                    )
                    measured.append(result)
                    print(
                        f"round {number + 1}: {count} replica(s), {result.create.per_second:.1f} orders/s,"
                        f" {result.in_h(result.total_ms):.1f} H",
                        file=sys.stderr,
                        flush=True,
                    )
                    if number == len(rounds) - 1:
                        sample = placed.acknowledged[:: max(1, len(placed.acknowledged) // to_complete)][
                            :to_complete
                        ]
                        completed, drained_s, after_ms = rest_of_life(
                            running, admin, schemas, sample, concurrency
                        )
                        after_h = result.health_cpu_ms
                        found = checks(admin, schemas, placed.acknowledged, completed)
                except Exception:
                    print(running.log_tails(), file=sys.stderr)
                    raise
                finally:
                    running.stop_all()
    finally:
        admin.dispose()
        shutil.rmtree(var, ignore_errors=True)
    return Outcome(measured, found, drained_s, len(completed), len(placed.acknowledged), after_ms, after_h)


# --- printing ----------------------------------------------------------------------------------


def report(outcome: Outcome, args: argparse.Namespace) -> str:
    columns = [*SERVICES, "postgresql"]
    heading = (
        f"CreateOrder on PostgreSQL, five services with 1 or 2 replicas each: {args.concurrency} client"
        f" threads, {args.seconds:.0f} s per phase, {args.stores} stores, {args.customers} returning"
        f" customers, QUANYU_DATABASE_POOL_SIZE={args.pool_size}; rounds {args.rounds}"
    )
    rate_rows = []
    for number, result in enumerate(outcome.rounds):
        rate_rows.append(
            [
                f"{number + 1}",
                f"{result.replicas}",
                f"{result.create.per_second:.1f}",
                f"{result.create.percentile_ms(50):.1f}",
                f"{result.create.percentile_ms(99):.1f}",
                errors(result.create),
                f"{result.health_cpu_ms:.3f}",
                f"{result.total_ms:.2f}",
                f"{result.in_h(result.total_ms):.1f}",
                f"{result.client_ms_per_order:.2f}",
                f"{result.create.machine_busy:.0%}",
            ]
        )
    rates = table(
        [
            "round",
            "replicas",
            "orders/s",
            "p50 ms",
            "p99 ms",
            "errors",
            "H ms",
            "CPU ms/order",
            "CPU H/order",
            "client ms/order",
            "machine busy",
        ],
        rate_rows,
    )
    by_count: dict[int, list[float]] = {}
    for result in outcome.rounds:
        by_count.setdefault(result.replicas, []).append(result.create.per_second)
    means = {count: sum(r) / len(r) for count, r in by_count.items()}
    scaling = f"Mean orders/s: {', '.join(f'{c} replica(s) {m:.1f}' for c, m in sorted(means.items()))}" + (
        f"; two against one {means[2] / means[1]:.2f}x" if 1 in means and 2 in means and means[1] else ""
    )
    cpu_rows = [
        [f"{number + 1}", f"{result.replicas}"]
        + [
            f"{result.cpu_ms_per_order[c]:.2f} / {result.in_h(result.cpu_ms_per_order[c]):.1f}"
            for c in columns
        ]
        for number, result in enumerate(outcome.rounds)
    ]
    cpu = table(["round", "replicas", *(f"{c} ms / H" for c in columns)], cpu_rows)
    share_rows = []
    connection_rows = []
    for number, result in enumerate(outcome.rounds):
        share_rows.append(
            [f"{number + 1}", f"{result.replicas}"]
            + [
                " / ".join(share(result.shares[s, h]) for h in REPLICA_HOSTS[: result.replicas])
                for s in SERVICES
            ]
        )
        connection_rows.append(
            [f"{number + 1}", f"{result.replicas}"] + [f"{result.connections[s]}" for s in SERVICES]
        )
    shares = table(["round", "replicas", *SERVICES], share_rows)
    connections = table(["round", "replicas", *SERVICES], connection_rows)
    drained = not math.isnan(outcome.drained_s)

    def verdict(check: Check) -> str:
        if check.holds:
            return "holds"
        # Not drained in time: an effect still waiting is late, not lost.
        return "BROKEN" if drained or not check.what.startswith(WAITING) else "still waiting"

    check_rows = [[c.what, f"{c.found}", f"{c.of}" if c.of else "-", verdict(c)] for c in outcome.checks]
    checked = table(["check", "rows breaking it", "of", ""], check_rows)
    notes = (
        "CPU per order: user and system time of every replica of the service over the CreateOrder"
        " phase (/proc/PID/stat), and of the PostgreSQL backends serving this run's connections"
        " (pg_stat_activity.application_name), per answered call; in H, divided by the first orders"
        " replica's CPU per Health/Check it answered, measured in the same round. The client's CPU"
        " (client ms/order) is not counted; it shares the machine's cores with everything else"
        " (machine busy, /proc/stat)."
    )
    return "\n\n".join(
        [
            heading,
            rates,
            scaling,
            notes,
            "CPU per order by process, ms / H:",
            cpu,
            "Each replica's share of the calls its service answered (127.0.0.2 / 127.0.0.3):",
            shares,
            "PostgreSQL connections open at the end of the phase, by service (all replicas):",
            connections,
            f"After the last round: {outcome.acknowledged} orders acknowledged in all, {outcome.completed}"
            f" of them accepted, made ready and completed; "
            + (
                f"outboxes drained in {outcome.drained_s:.1f} s."
                if drained
                else f"outboxes NOT drained within {DRAIN_TIMEOUT_S:.0f} s."
            ),
            checked,
            "CPU per completed order of the rest of its life (AcceptOrder, MarkOrderReady, CompleteOrder"
            " and the effects they queue), until the outboxes drained, less the same processes' idle CPU"
            f" over as long (read for {IDLE_SECONDS:.0f} s after), ms / H:",
            table(
                [*columns, "all"],
                [
                    [ms_and_h(outcome.after_ms.get(c, math.nan), outcome.after_h) for c in columns]
                    + [ms_and_h(sum(outcome.after_ms.values()), outcome.after_h)]
                ],
            )
            if drained
            else "(not measured: the outboxes did not drain, so the processes were not idle after)",
        ]
    )


def ms_and_h(ms: float, h_ms: float) -> str:
    return f"{ms:.2f} / {ms / h_ms:.1f}"


def share(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.0%}"


def parse_rounds(value: str) -> list[int]:
    rounds = [int(part) for part in value.split(",") if part.strip()]
    if not rounds or any(count not in (1, 2) for count in rounds):
        raise argparse.ArgumentTypeError("rounds are 1s and 2s, comma-separated, e.g. 1,2,1,2")
    return rounds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.capacity", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="seconds per measured phase (default 15)")
    parser.add_argument("--concurrency", type=int, default=8, help="client threads (default 8)")
    parser.add_argument(
        "--rounds", type=parse_rounds, default=[1, 2, 1, 2], help="replicas per round (1,2,1,2)"
    )
    parser.add_argument("--stores", type=int, default=300, help="stores around Shanghai (default 300)")
    parser.add_argument("--customers", type=int, default=300, help="returning customers (default 300)")
    parser.add_argument("--pool-size", type=int, default=4, help="QUANYU_DATABASE_POOL_SIZE (default 4)")
    parser.add_argument("--complete", type=int, default=200, help="orders completed after the load (200)")
    parser.add_argument(
        "--postgres",
        default=os.environ.get(POSTGRES_ENV) or None,
        help=f"the PostgreSQL database (default ${POSTGRES_ENV})",
    )
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.concurrency < 1 or args.stores < 1 or args.customers < 1:
        parser.error("--seconds, --concurrency, --stores and --customers must be positive")
    if args.pool_size < 1 or args.complete < 1:
        parser.error("--pool-size and --complete must be positive")
    if not args.postgres:
        parser.error(f"--postgres (or ${POSTGRES_ENV}) is needed: replicas share one PostgreSQL database")
    if make_url(normalise_url(args.postgres)).host not in LOCAL_HOSTS:
        parser.error("--postgres must name a database on this machine")
    outcome = run(
        args.postgres,
        rounds=args.rounds,
        stores=args.stores,
        customers=args.customers,
        seconds=args.seconds,
        concurrency=args.concurrency,
        pool_size=args.pool_size,
        to_complete=args.complete,
    )
    print(report(outcome, args))
    return 0 if all(check.holds for check in outcome.checks) else 1


if __name__ == "__main__":
    sys.exit(main())
