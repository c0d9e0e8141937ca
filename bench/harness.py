"""What every benchmark over gRPC shares: a server process waited for and stopped, a phase of
calls made back to back from a few threads and tallied, and the CPU each process involved spent
meanwhile, the PostgreSQL server's included."""

from __future__ import annotations

import argparse
import itertools
import math
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import grpc
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from quanyu.db import normalise_url
from quanyu_ops.supervisor import is_serving, terminate

# How long one call may take before it counts as failed (DEADLINE_EXCEEDED).
CALL_TIMEOUT_S = 30.0
# Answers that are correct refusals (no store can serve, not enough points), not failures.
REFUSALS = frozenset({grpc.StatusCode.FAILED_PRECONDITION})


def wait_serving(address: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    """Until `address` answers SERVING; RuntimeError if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{address}: the process exited with {process.returncode} before serving")
        if is_serving(address):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{address} was not serving within {timeout:.0f} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (a graceful shutdown), then SIGKILL if it has not ended within 30 s."""
    terminate(process, timeout=30)


def _stat_fields(pid: int) -> list[str]:
    # Past the command name in parentheses: state is the first field, the parent's pid the
    # second, utime and stime the 12th and 13th.
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()


def cpu_seconds(pid: int) -> float:
    """CPU time, user and system, that a process (all its threads) has used so far."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds_if_alive(pid: int) -> float | None:
    """cpu_seconds, or None once the process has ended."""
    try:
        return cpu_seconds(pid)
    except (FileNotFoundError, ProcessLookupError):
        return None


def parent_pid(pid: int) -> int:
    return int(_stat_fields(pid)[1])


def machine_ticks() -> tuple[int, int]:
    """(all, not busy) clock ticks of every core so far, from /proc/stat."""
    # user nice system idle iowait irq softirq steal; guest time is inside user and nice already.
    ticks = [int(t) for t in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(ticks), ticks[3] + ticks[4] + ticks[7]  # idle, waiting on I/O, taken by the host


@dataclass
class Tally:
    """One phase of calls: latencies of the answered ones, correct refusals, other errors by code."""

    latencies_ns: list[int] = field(default_factory=list)
    refused: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    server_cpu_s: float = math.nan  # CPU the server process used meanwhile, when it was watched
    machine_busy: float = math.nan  # share of all the machine's cores busy meanwhile (0-1)

    @property
    def calls(self) -> int:
        """Calls answered: served, or refused as the contract says."""
        return len(self.latencies_ns)

    @property
    def server_cpu_ms_per_call(self) -> float:
        """The server's CPU per answered call: what a call costs it, whatever the client's share."""
        return 1000 * self.server_cpu_s / self.calls if self.calls else math.nan

    @property
    def server_cores(self) -> float:
        """How many cores the server kept busy: a Python process serves on about one at most."""
        return self.server_cpu_s / self.seconds if self.seconds else math.nan

    @property
    def per_second(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0

    def percentile_ms(self, q: float) -> float:
        if not self.latencies_ns:
            return math.nan
        ordered = sorted(self.latencies_ns)
        index = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
        return ordered[index] / 1e6

    def add(self, other: Tally) -> None:
        self.latencies_ns += other.latencies_ns
        self.refused += other.refused
        for code, count in other.errors.items():
            self.errors[code] = self.errors.get(code, 0) + count


def pooled(phases: Sequence[Tally]) -> Tally:
    """Phases of the same call as one: calls, time and server CPU added up, so that phases taken
    in turns with another call's (ABAB) weigh the minutes of the run alike."""
    both = Tally(seconds=sum(phase.seconds for phase in phases), server_cpu_s=0.0, machine_busy=0.0)
    for phase in phases:
        both.add(phase)
        both.server_cpu_s += phase.server_cpu_s
        both.machine_busy += phase.machine_busy * phase.seconds / (both.seconds or 1.0)
    return both


def hammer(
    call: Callable[[int, int], None],
    concurrency: int,
    seconds: float,
    *,
    refusals: Collection[grpc.StatusCode] = REFUSALS,
    server_pid: int | None = None,
    rate: float | None = None,
) -> Tally:
    """`concurrency` threads calling back to back for `seconds`, each call given (thread, sequence).

    A call answered with one of `refusals` counts as answered (and refused); any other error is
    counted by its code and not timed. With `server_pid`, the CPU that process used meanwhile is
    read from /proc. With `rate`, calls are started on a schedule of `rate` a second across all
    threads (the next free thread takes the next slot; a call whose slot has passed starts at
    once), so a load below the machine's ceiling is held steady; a call is timed from its start.
    """
    tallies = [Tally() for _ in range(concurrency)]
    deadline = time.perf_counter() + seconds
    slots = itertools.count()
    slot_lock = threading.Lock()
    first_slot = time.perf_counter()

    def wait_for_slot() -> None:
        if rate is None:
            return
        with slot_lock:
            due = first_slot + next(slots) / rate
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)

    def worker(number: int) -> None:
        tally = tallies[number]
        sequence = 0
        while time.perf_counter() < deadline:
            wait_for_slot()
            if time.perf_counter() >= deadline:
                break
            sequence += 1
            started = time.perf_counter_ns()
            try:
                call(number, sequence)
            except grpc.RpcError as error:
                code = error.code()
                if code not in refusals:
                    tally.errors[code.name] = tally.errors.get(code.name, 0) + 1
                    continue
                tally.refused += 1
            tally.latencies_ns.append(time.perf_counter_ns() - started)

    cpu_before = cpu_seconds(server_pid) if server_pid is not None else math.nan
    machine_before = machine_ticks()
    begun = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        # Every call has its own deadline, so a worker ends soon after the phase does.
        thread.join(timeout=seconds + CALL_TIMEOUT_S + 10)
    total = Tally(seconds=time.perf_counter() - begun)
    machine_after = machine_ticks()
    all_ticks = machine_after[0] - machine_before[0]
    if all_ticks:
        total.machine_busy = 1 - (machine_after[1] - machine_before[1]) / all_ticks
    if server_pid is not None:
        total.server_cpu_s = cpu_seconds(server_pid) - cpu_before
    for tally in tallies:
        total.add(tally)
    return total


# --- the PostgreSQL server's share -------------------------------------------------------------

# The database a bench runs on besides SQLite when nothing else is said and it answers.
LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
POSTGRES_ENV = "QUANYU_BENCH_POSTGRES_URL"
LOCAL_HOSTS = (None, "127.0.0.1", "localhost", "::1")  # None: a Unix socket


def is_local(url: str) -> bool:
    """Whether a database URL names a server on this machine, whose processes /proc can show."""
    return make_url(normalise_url(url)).host in LOCAL_HOSTS


def postgres_answers(url: str) -> bool:
    """Whether the PostgreSQL server at `url` accepts a connection within a few seconds."""
    engine = create_engine(normalise_url(url), connect_args={"connect_timeout": 3}, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return True
    except OperationalError:
        return False
    finally:
        engine.dispose()


def add_postgres_options(parser: argparse.ArgumentParser) -> None:
    """--postgres URL or --no-postgres, as postgres_to_measure reads them."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--postgres",
        help=f"the PostgreSQL database to run on too (default ${POSTGRES_ENV}, else {LOCAL_POSTGRES}"
        " when it answers)",
    )
    where.add_argument("--no-postgres", action="store_true", help="SQLite only")


def postgres_to_measure(parser: argparse.ArgumentParser, given: str | None, skip: bool) -> str | None:
    """The PostgreSQL URL a bench runs on besides SQLite: `given` (--postgres), else
    $QUANYU_BENCH_POSTGRES_URL, else LOCAL_POSTGRES when it answers; None with `skip`
    (--no-postgres) or when nothing was given and nothing answers."""
    if skip:
        return None
    url = given or os.environ.get(POSTGRES_ENV) or LOCAL_POSTGRES
    if not is_local(url):
        parser.error("--postgres must name a database on this machine: its processes' CPU is read here")
    if postgres_answers(url):
        return url
    if given:
        parser.error(f"PostgreSQL at {given} does not answer")
    print(f"PostgreSQL at {url} does not answer: SQLite only", file=sys.stderr)
    return None


def schema_url(url: str, schema: str) -> str:
    """`url` with every connection's search path set to `schema`, and the schema's name as the
    connection's application_name, so that the server's backends for it can be told apart."""
    parsed = make_url(normalise_url(url)).update_query_dict(
        {"options": f"-csearch_path={schema}", "application_name": schema}
    )
    return parsed.render_as_string(hide_password=False)


def application_name(url: str) -> str | None:
    """The application_name a database URL gives its connections, if any."""
    name = make_url(url).query.get("application_name")
    return name if isinstance(name, str) else None


@contextmanager
def postgres_schemas(url: str, services: Collection[str]) -> Iterator[dict[str, str]]:
    """A fresh schema per service for this run, dropped afterwards; the URL of each."""
    run = uuid.uuid4().hex[:10]
    schemas = {service: f"bench_{run}_{service}" for service in services}
    admin = create_engine(normalise_url(url), isolation_level="AUTOCOMMIT", poolclass=NullPool)
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


# How often the server's processes are listed during a phase: a backend that ends between two
# looks loses only what it spent since the last one.
POSTGRES_SAMPLE_S = 0.2


@dataclass
class PostgresCpu:
    """What the PostgreSQL server spent over one phase, from /proc/PID/stat of its processes.

    A backend is told apart by the application_name its connections carry (pg_stat_activity):
    the watched applications' backends are counted each under its name; the server's own
    processes (postmaster, WAL writer, checkpointer, background writer, autovacuum) as
    background; client backends of anyone else as other clients, counted apart and never in a
    cost, since other work may share the server.
    """

    by_application: dict[str, float] = field(default_factory=dict)  # seconds
    background_s: float = 0.0
    other_clients_s: float = 0.0
    other_clients: int = 0
    born: int = 0  # watched backends that started during the phase (new pool connections)
    ended: int = 0  # watched backends that ended during it: up to one sample's CPU each is lost

    def add(self, other: PostgresCpu) -> None:
        for name, used in other.by_application.items():
            self.by_application[name] = self.by_application.get(name, 0.0) + used
        self.background_s += other.background_s
        self.other_clients_s += other.other_clients_s
        self.other_clients += other.other_clients
        self.born += other.born
        self.ended += other.ended

    @property
    def watched_s(self) -> float:
        return sum(self.by_application.values())

    @property
    def server_s(self) -> float:
        """The watched backends and the server's background processes: what the cost counts."""
        return self.watched_s + self.background_s


class PostgresWatch:
    """The CPU of a local PostgreSQL server's processes over a phase, split by application_name.

    Use as a context manager around the phase; `cpu` holds the figures after it. Every
    POSTGRES_SAMPLE_S it lists the server's processes (pg_stat_activity) and reads each one's CPU
    from /proc, so backends that start or end during the phase count too. It must run on the
    server's machine, with a user allowed to see other sessions' pids (any user can).
    """

    def __init__(
        self, url: str, applications: Collection[str], interval_s: float = POSTGRES_SAMPLE_S
    ) -> None:
        self._engine = create_engine(normalise_url(url), isolation_level="AUTOCOMMIT", poolclass=NullPool)
        self._applications = frozenset(applications)
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._connection: Connection | None = None
        self._own_pid = 0
        self._postmaster: int | None = None
        self._first: dict[int, float] = {}  # CPU when first seen; 0 for a process born meanwhile
        self._last: dict[int, float] = {}
        self._kind: dict[int, tuple[str, str]] = {}  # (backend_type, application_name) last seen
        self._born: set[int] = set()
        self._alive: set[int] = set()
        self._sampled_once = False
        self.cpu = PostgresCpu()

    def __enter__(self) -> PostgresWatch:
        self._connection = self._engine.connect()
        self._own_pid = int(self._connection.execute(text("SELECT pg_backend_pid()")).scalar_one())
        self._sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        try:
            if error is None:
                self._sample()
                self.cpu = self._tally()
        finally:
            if self._connection is not None:
                self._connection.close()
            self._engine.dispose()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._sample()

    def _sample(self) -> None:
        assert self._connection is not None
        rows = self._connection.execute(
            text(
                "SELECT pid, coalesce(backend_type, ''), coalesce(application_name, '') FROM pg_stat_activity"
            )
        ).all()
        listed = {int(pid): (str(kind), str(name)) for pid, kind, name in rows if int(pid) != self._own_pid}
        if self._postmaster is None and listed:
            # Every server process is the postmaster's child; it is not listed itself.
            self._postmaster = parent_pid(self._own_pid)
        if self._postmaster is not None:
            listed[self._postmaster] = ("postmaster", "")
        for pid, kind in listed.items():
            used = cpu_seconds_if_alive(pid)
            if used is None:
                continue
            if pid not in self._first:
                # A process first listed after the phase began was born during it.
                self._first[pid] = 0.0 if self._sampled_once else used
                if self._sampled_once:
                    self._born.add(pid)
            self._last[pid] = used
            self._kind[pid] = kind
        self._alive = set(listed)
        self._sampled_once = True

    def _tally(self) -> PostgresCpu:
        cpu = PostgresCpu(by_application={name: 0.0 for name in self._applications})
        for pid, last in self._last.items():
            spent = last - self._first[pid]
            backend_type, application = self._kind[pid]
            if application in self._applications:
                cpu.by_application[application] += spent
                cpu.born += pid in self._born
                if pid not in self._alive:
                    cpu.ended += 1
            elif backend_type == "client backend":
                cpu.other_clients_s += spent
                cpu.other_clients += 1
            else:
                cpu.background_s += spent
        return cpu
