"""The four services as real processes for the reliability checks, on SQLite files or PostgreSQL
schemas, with relays in front of orders, membership and fulfilment (so a test can lose a service's
answers on the way back), a connection of the test's own to every service's database, and the
means to kill, freeze, thaw, stop and restart any service or to run a second fulfilment replica.

Every start of a service writes its own log file (`<service>.<n>.log`), so the logs of a process
that was killed are kept for the scans that read them afterwards.
"""

from __future__ import annotations

import contextlib
import functools
import json
import random
import signal
import sqlite3
import string
import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import OperationalError

from quanyu.config import SERVICE_NAMES
from quanyu.db import Database, is_conflict, normalise_url
from quanyu.fulfilment.v1 import fulfilment_pb2_grpc
from quanyu.identity.v1 import identity_pb2_grpc
from quanyu.logs import REQUEST_ID_HEADER
from quanyu.marketing.v1 import marketing_pb2_grpc
from quanyu.membership.v1 import membership_pb2_grpc
from quanyu.orders.v1 import orders_pb2_grpc
from tests.orders.platform import Platform
from tests.processes import free_port, health_status, platform_env, poll, started, target, wait_serving
from tests.reliability.relay import Relay

SQLITE = "sqlite"
POSTGRES = "postgres"
# The services whose answers a test can lose: orders (to its caller), membership and fulfilment
# (to orders).
RELAYED = ("orders", "membership", "fulfilment")
START_TIMEOUT = 90.0


@dataclass
class Deployment(Platform):
    backend: str = SQLITE
    database_urls: dict[str, str] = field(default_factory=dict)
    relays: dict[str, Relay] = field(default_factory=dict)
    starts: dict[str, int] = field(default_factory=dict)
    channels: dict[str, grpc.Channel] = field(default_factory=dict)

    # --- processes ---------------------------------------------------------------------------

    def start(self, service: str) -> None:
        self.start_all([service])

    def start_all(self, services: list[str]) -> None:
        """Start services side by side (each migrates its own database first), then wait for each."""
        launched = {}
        for service in services:
            self.starts[service] = self.starts.get(service, 0) + 1
            log = self.logs / f"{service}.{self.starts[service]}.log"
            launched[service] = self.stack.enter_context(started(["serve", service], self.env, log))
        for service, process in launched.items():
            wait_serving(target(self.env, service), process, timeout=START_TIMEOUT)
            self.processes[service] = process

    def kill(self, service: str) -> None:
        """SIGKILL: the process dies on the spot, in whatever it was doing."""
        process = self.processes.pop(service)
        process.send_signal(signal.SIGCONT)  # a frozen process dies as well, but only once woken
        process.kill()
        process.wait(timeout=30)

    def restore(self) -> None:
        """Every service running and serving again, whatever a check did to it."""
        for relay in self.relays.values():
            relay.cut()
        for service in SERVICE_NAMES:
            if service in self.processes:
                self.thaw(service)
        stopped = [
            s for s in SERVICE_NAMES if s not in self.processes or self.processes[s].poll() is not None
        ]
        for service in stopped:
            self.processes.pop(service, None)
        if stopped:
            self.start_all(stopped)

    def serving(self, service: str) -> bool:
        return bool(health_status(target(self.env, service)) == health_pb2.HealthCheckResponse.SERVING)

    def alive(self, service: str) -> bool:
        process = self.processes.get(service)
        return process is not None and process.poll() is None

    @contextmanager
    def replica(self, service: str, **settings: str) -> Iterator[grpc.Channel]:
        """Another process of `service` on its own port, sharing the deployment's database (with
        `settings` of its own on top of the deployment's environment)."""
        port = free_port()
        env = {**self.env, **settings, f"QUANYU_{service.upper()}__PORT": str(port)}
        log = self.logs / f"{service}-replica.{uuid.uuid4().hex[:6]}.log"
        with started(["serve", service], env, log) as process:
            wait_serving(f"127.0.0.1:{port}", process, timeout=START_TIMEOUT)
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                yield channel

    # --- stubs, one channel per service ------------------------------------------------------

    def channel(self, service: str) -> grpc.Channel:
        """One channel per service for the whole run; it reconnects after a restart by itself."""
        if service not in self.channels:
            self.channels[service] = self.stack.enter_context(
                grpc.insecure_channel(target(self.env, service))
            )
        return self.channels[service]

    @cached_property
    def orders(self) -> orders_pb2_grpc.OrderServiceStub:
        return orders_pb2_grpc.OrderServiceStub(self.channel("orders"))

    @cached_property
    def orders_through_relay(self) -> orders_pb2_grpc.OrderServiceStub:
        """Orders reached through its relay, whose answers a test can hold back and drop."""
        channel = self.stack.enter_context(grpc.insecure_channel(self.relays["orders"].address))
        return orders_pb2_grpc.OrderServiceStub(channel)

    @cached_property
    def fulfilment(self) -> fulfilment_pb2_grpc.FulfilmentServiceStub:
        return fulfilment_pb2_grpc.FulfilmentServiceStub(self.channel("fulfilment"))

    @cached_property
    def membership(self) -> membership_pb2_grpc.MembershipServiceStub:
        return membership_pb2_grpc.MembershipServiceStub(self.channel("membership"))

    @cached_property
    def marketing(self) -> marketing_pb2_grpc.MarketingServiceStub:
        return marketing_pb2_grpc.MarketingServiceStub(self.channel("marketing"))

    @cached_property
    def identity(self) -> identity_pb2_grpc.IdentityServiceStub:
        return identity_pb2_grpc.IdentityServiceStub(self.channel("identity"))

    # --- databases ---------------------------------------------------------------------------

    @cached_property
    def databases(self) -> dict[str, Database]:
        """The test's own connection to each service's database, to read what the service wrote."""
        found = {name: Database(url, pool_size=2) for name, url in self.database_urls.items()}
        for database in found.values():
            self.stack.callback(database.dispose)
        return found

    @contextmanager
    def writes_held(self, service: str, tables: Sequence[str] = ()) -> Iterator[None]:
        """Another connection keeps `service`'s writers out of its database while the block runs, as
        a stuck batch job would: SQLite's write lock (BEGIN EXCLUSIVE), or on PostgreSQL an EXCLUSIVE
        lock on `tables` (every table of the service's schema when none are named). Readers go on.

        On PostgreSQL, name the table a writer touches first if the writers must not fail: locks on
        several tables are taken one after another, and a writer holding one of them while it
        waits for another deadlocks with them (the database then aborts one side or the other).
        """
        url = self.database_urls[service]
        if self.backend == SQLITE:
            holder = sqlite3.connect(str(make_url(url).database), timeout=30, isolation_level=None)
            try:
                holder.execute("BEGIN EXCLUSIVE")
                yield
                holder.execute("ROLLBACK")
            finally:
                holder.close()
            return
        engine = create_engine(normalise_url(url))
        try:
            with engine.connect() as connection:
                _lock(connection, tables)
                yield
                connection.rollback()
        finally:
            engine.dispose()

    def log_marks(self) -> dict[Path, int]:
        """Where every log file ends now, to read only what is written after."""
        return {path: path.stat().st_size for path in self.logs.glob("*.log")}

    def logs_written(self, within: float = 30.0) -> None:
        """Wait until every line the running services have logged so far is in their files.

        A service writes its log from a thread of its own, a moment after each call. So a call
        marked with a request id of its own goes to each running service (refused, as it carries
        no token, and logged like every call); its line in the file means every earlier one is
        there too.
        """
        # Letters only: a hex id can hold a run of digits shaped like a mobile number, which the
        # logs rightly mask, and the marker would then never be found as it was sent.
        marker = "logs-written-" + "".join(random.choices(string.ascii_lowercase, k=24))
        marks = self.log_marks()
        for service, method in _MARKED_CALLS.items():
            if not self.alive(service):
                continue
            with contextlib.suppress(grpc.RpcError):
                self.channel(service).unary_unary(method)(
                    b"", metadata=((REQUEST_ID_HEADER, marker),), timeout=10
                )
            log = self.logs / f"{service}.{self.starts[service]}.log"
            written = functools.partial(_holds, log, marks.get(log, 0), marker)
            poll(written, bool, f"{service} writes out its log", within)

    def log_events(self, since: dict[Path, int] | None = None) -> Iterator[dict[str, Any]]:
        """The services' JSON log lines written since `since` (all of them without it)."""
        for path in sorted(self.logs.glob("*.log")):
            with path.open("rb") as log:
                log.seek((since or {}).get(path, 0))
                for line in log.read().decode(errors="replace").splitlines():
                    if line.startswith("{"):
                        with contextlib.suppress(ValueError):
                            yield json.loads(line)

    def server_errors(self, since: dict[Path, int] | None = None) -> list[str]:
        """Calls a service answered INTERNAL or UNKNOWN, and errors it did not expect, as logged
        (with the exception, when the line carries one)."""
        found = []
        for event in self.log_events(since):
            answered = event.get("event") == "rpc" and event.get("code") in ("INTERNAL", "UNKNOWN")
            if answered or event.get("event") == "unexpected error":
                raised = event.get("exception")
                last = (
                    raised[-1] if isinstance(raised, list) and raised and isinstance(raised[-1], dict) else {}
                )
                cause = f"{last.get('exc_type', '')}: {last.get('exc_value', '')}"[:300]
                found.append(f"{event.get('service')} {event.get('method')}: {event.get('event')} {cause}")
        return found


# A method of each service, called without a token to leave a marked line in its log.
_MARKED_CALLS = {
    "identity": "/quanyu.identity.v1.IdentityService/GetCustomer",
    "membership": "/quanyu.membership.v1.MembershipService/GetMember",
    "orders": "/quanyu.orders.v1.OrderService/GetOrder",
    "fulfilment": "/quanyu.fulfilment.v1.FulfilmentService/GetStore",
    "marketing": "/quanyu.marketing.v1.MarketingService/GetCampaign",
}


def _holds(log: Path, offset: int, text: str) -> bool:
    """`text` is in the log file past `offset`."""
    with log.open("rb") as lines:
        lines.seek(offset)
        return text.encode() in lines.read()


def _lock(connection: Connection, tables: Sequence[str]) -> None:
    """EXCLUSIVE locks on `tables` (or every table of the schema), in one transaction; taken
    again when this side is the one a deadlock aborts."""
    while True:
        connection.begin()
        if not tables:
            tables = list(
                connection.execute(
                    text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
                ).scalars()
            )
        quoted = ", ".join(f'"{table}"' for table in tables)
        try:
            connection.execute(text(f"LOCK TABLE {quoted} IN EXCLUSIVE MODE"))
            return
        except OperationalError as error:
            connection.rollback()
            if not is_conflict(error):
                raise


def service_env(**extra: str) -> dict[str, str]:
    """Settings every reliability deployment shares, on top of `platform_env`."""
    quiet = {f"QUANYU_{name.upper()}__METRICS_PORT": "0" for name in SERVICE_NAMES}
    return {
        **quiet,
        # Orders wait at their store for as long as a run takes; nothing reroutes them meanwhile.
        "QUANYU_ORDERS_ACCEPT_WINDOW_SECONDS": "3600",
        # A hung peer is given up on quickly, so an effect waits for its retry and not the caller.
        "QUANYU_CALL_TIMEOUT_SECONDS": "2",
        # Calls in flight at a SIGTERM have time to finish even while a test holds them up.
        "QUANYU_GRACE_SECONDS": "20",
        # Marketing looks for scheduled runs every second and grants a run in small pages, so a
        # fault lands in the middle of one; a replica killed mid-run is taken over soon after.
        "QUANYU_MARKETING_RUN_INTERVAL_SECONDS": "1",
        "QUANYU_MARKETING_RUN_PAGE_SIZE": "25",
        "QUANYU_MARKETING_RUN_LEASE_SECONDS": "5",
        **extra,
    }


@contextmanager
def deployment(root: Path, database_urls: dict[str, str] | None = None, **extra: str) -> Iterator[Deployment]:
    """All four services on free ports under `root`, on SQLite files there unless `database_urls`
    names each service's database; stopped after."""
    var, logs = root / "var", root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    urls = database_urls or {name: f"sqlite:///{(var / f'{name}.db').resolve()}" for name in SERVICE_NAMES}
    with ExitStack() as stack:
        env = platform_env(var, **service_env(**extra))
        env.update({f"QUANYU_{name.upper()}__DATABASE_URL": url for name, url in urls.items()})
        relays = {}
        for name in RELAYED:
            relay = Relay(target(env, name))
            stack.callback(relay.close)
            relays[name] = relay
        # Orders (and identity's relay) reach membership and fulfilment through the relays.
        env.update(
            {f"QUANYU_{name.upper()}__TARGET": relays[name].address for name in ("membership", "fulfilment")}
        )
        backend = POSTGRES if urls["orders"].startswith("postgres") else SQLITE
        running = Deployment(var, env, logs, stack, backend=backend, database_urls=urls, relays=relays)
        running.start_all(list(SERVICE_NAMES))
        stack.callback(running.terminate_all)  # runs first on the way out
        yield running


@contextmanager
def postgres_deployment(root: Path, url: str, **extra: str) -> Iterator[Deployment]:
    """A deployment on one fresh schema per service of the PostgreSQL database at `url`."""
    with postgres_schemas(url, SERVICE_NAMES) as urls, deployment(root, urls, **extra) as running:
        yield running


def with_schema(url: str, schema: str) -> str:
    parsed = make_url(normalise_url(url)).update_query_dict({"options": f"-csearch_path={schema}"})
    return parsed.render_as_string(hide_password=False)


@contextmanager
def postgres_schemas(url: str, names: tuple[str, ...]) -> Iterator[dict[str, str]]:
    """A fresh schema of the database at `url` for each name, dropped afterwards."""
    tag = uuid.uuid4().hex[:10]
    schemas = {name: f"r_{tag}_{name}" for name in names}
    admin = create_engine(normalise_url(url), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            for schema in schemas.values():
                connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        yield {name: with_schema(url, schema) for name, schema in schemas.items()}
    finally:
        with admin.connect() as connection:
            for schema in schemas.values():
                connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@contextmanager
def throwaway_postgres(url: str) -> Iterator[tuple[str, str]]:
    """A database of its own, owned by a login role of its own (not a superuser, so a connection
    limit binds it): (the database's URL, its name). Both are dropped afterwards."""
    name = f"quanyu_throwaway_{uuid.uuid4().hex[:10]}"
    admin = create_engine(normalise_url(url), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE ROLE "{name}" LOGIN'))
            connection.execute(text(f'CREATE DATABASE "{name}" OWNER "{name}"'))
        own = make_url(normalise_url(url)).set(username=name, password=None, database=name)
        yield own.render_as_string(hide_password=False), name
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{name}" CONNECTION LIMIT -1'))
            connection.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name"),
                {"name": name},
            )
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            connection.execute(text(f'DROP ROLE IF EXISTS "{name}"'))
        admin.dispose()
