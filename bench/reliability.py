"""The platform's promises under concurrency, faults, bad input and intruders, in full: the same
checks `make test` runs in small (tests/reliability/), run at length on all five services as real
processes, printed as one table of figures whose goal is zero.

For each database (SQLite, and PostgreSQL when a URL is given) it starts a deployment in a
temporary directory on free ports of 127.0.0.1 and runs, one after the other:

* 50 copies of one CreateOrder at once, round after round: orders, reservations, coupon uses and
  point redemptions beyond one;
* 200 single-unit orders at once for 15 units across two fulfilment replicas, round after round:
  units reserved beyond what is on hand (and units left unsold while callers were refused);
* services killed (SIGKILL) or frozen (SIGSTOP) mid-flow, round after round: effects lost and
  doubled once every service is back;
* a campaign (a scheduled ONCE run over a few thousand members, and one fed by completed orders)
  while marketing or membership is killed or frozen mid-run: coupons and grants lost and doubled
  once every service is back; many events at once over two marketing replicas against each kind
  of cap: spent past the cap; messages pulled for customers without consent or in quiet hours;
* SIGTERM to orders under load: calls that failed beyond those refused after the signal;
* every service's database cut off under load until each service has refused calls for it:
  answers INTERNAL or UNKNOWN, and services that did not recover (and on PostgreSQL, a call whose
  transaction the database aborts to break a deadlock, run again whole by the unit of work);
* thousands of random messages to every RPC: server errors;
* every string and repeated field of every request past its cap: fields not refused by name;
* the authorisation matrix (every RPC as each role on an object of its own, of another store, of
  another channel's customer and of nobody) and every attack of a caller on what is not its own,
  round after round: cells checked, leaks, value spent without the member, points minted past
  the caps; tokens with random claims: server errors;
* a canary phone through every RPC that takes one, in every spelling: sightings in logs and
  databases, and stored values that give it back;
* membership's books after all of it, and the Hypothesis ledger state machine at length.

    .venv/bin/python -m bench.reliability [--rounds 200] [--fuzz-cases 10000] [--postgres URL]
        [--marketing-rounds 16] [--marketing-members 3000]

`--postgres` (or QUANYU_BENCH_POSTGRES_URL) adds a column for PostgreSQL: one schema per service
(and, for the outage, a throwaway database with a role of its own), dropped after. It exits 1
when any figure misses its goal.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import hypothesis
from hypothesis.stateful import run_state_machine_as_test

from quanyu.config import SERVICE_NAMES
from tests.membership.test_ledger_invariants import LedgerMachine, check_books
from tests.reliability.abuse import every_attack, token_claims
from tests.reliability.authz import authorisation_matrix
from tests.reliability.canary import canary_through_every_phone_rpc
from tests.reliability.concurrency import duplicate_orders, oversell
from tests.reliability.deployment import (
    Deployment,
    deployment,
    postgres_deployment,
    postgres_schemas,
    throwaway_postgres,
    with_schema,
)
from tests.reliability.faults import faults_in_the_order_flow
from tests.reliability.fuzz import fuzz_every_rpc
from tests.reliability.marketing import (
    budgets_under_concurrency,
    grants_under_faults,
    messages_against_consent,
)
from tests.reliability.outage import Cut, database_outage, deadlock_victim, postgres_cut, sqlite_cut
from tests.reliability.shutdown import graceful_shutdown
from tests.reliability.sizes import sizes_are_capped
from tests.reliability.world import Outcome

POSTGRES_ENV = "QUANYU_BENCH_POSTGRES_URL"
LEDGER = "ledger invariant violations (books after faults, fuzzing, all; state machine)"


@dataclass
class Figure:
    name: str
    goal: int | None  # None: a count, not a promise
    values: dict[str, int | str] = field(default_factory=dict)

    def missed(self) -> bool:
        return self.goal is not None and any(v != self.goal for v in self.values.values())


@dataclass
class Table:
    figures: dict[str, Figure] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def put(self, key: str, name: str, goal: int | None, database: str, value: int | str) -> None:
        self.figures.setdefault(key, Figure(name, goal)).values[database] = value

    def add(self, key: str, name: str, goal: int | None, database: str, value: int) -> None:
        """Add to a figure several runs contribute to."""
        figure = self.figures.setdefault(key, Figure(name, goal))
        figure.values[database] = int(figure.values.get(database, 0)) + value


@dataclass(frozen=True)
class Sizes:
    duplicate_rounds: int
    oversell_rounds: int
    fault_rounds: int
    shutdown_rounds: int
    outages: int
    fuzz_cases: int
    ledger_examples: int
    abuse_rounds: int
    token_cases: int
    marketing_rounds: int
    marketing_members: int


def measure(table: Table, database: str, root: Path, postgres_url: str | None, sizes: Sizes) -> None:
    def step(what: str, run: Callable[[], None], deployed: Deployment | None = None) -> None:
        started = time.monotonic()
        try:
            run()
        except Exception as error:
            table.notes.append(f"{database}: {what} did not finish: {error!r}")
            traceback.print_exc(file=sys.stderr)
            if deployed is not None:
                deployed.restore()  # whatever the run left frozen or stopped, for the next one
        print(f"{database}: {what} took {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)

    opened = postgres_deployment(root / "main", postgres_url) if postgres_url else deployment(root / "main")
    with opened as d:
        step("duplicate orders", lambda: _duplicates(table, database, d, sizes), d)
        step("oversell", lambda: _oversell(table, database, d, sizes), d)
        step("faults", lambda: _faults(table, database, d, sizes), d)
        step("marketing under faults", lambda: _marketing_faults(table, database, d, sizes), d)
        step("marketing budgets", lambda: _marketing_budgets(table, database, d, sizes), d)
        step("marketing messages", lambda: _marketing_messages(table, database, d), d)
        step("graceful shutdown", lambda: _shutdown(table, database, d, sizes), d)
        if not postgres_url:
            step("database outage", lambda: _outage(table, database, d, sqlite_cut(d), sizes, refusals=1), d)
        if postgres_url:
            step("deadlock", lambda: _deadlock(table, database, d), d)
        step("fuzzing", lambda: _fuzz(table, database, d, sizes), d)
        step("sizes", lambda: _sizes(table, database, d), d)
        step("authorisation", lambda: _authz(table, database, d, sizes), d)
        step("canary", lambda: _canary(table, database, d), d)
        step("membership's books", lambda: _books(table, database, d), d)
    if postgres_url:
        step(
            "database outage", lambda: _postgres_outage(table, database, root / "outage", postgres_url, sizes)
        )
    step("ledger state machine", lambda: _ledger_machine(table, database, postgres_url, sizes))


def _duplicates(table: Table, database: str, d: Deployment, sizes: Sizes) -> None:
    f = duplicate_orders(d, rounds=sizes.duplicate_rounds, copies=50)
    table.put(
        "dup",
        f"concurrent duplicate orders created ({f.rounds} rounds x 50 copies)",
        0,
        database,
        f.duplicates,
    )
    table.put(
        "dup-answers",
        "  copies refused or answered differently",
        0,
        database,
        f.failed_calls + f.differing_answers,
    )
    table.notes += [f"{database}: {p}" for p in f.problems[:5]]


def _oversell(table: Table, database: str, d: Deployment, sizes: Sizes) -> None:
    f = oversell(d, rounds=sizes.oversell_rounds, attempts=200, scarce=10, spare=5)
    table.put(
        "oversold",
        f"oversold units ({f.rounds} rounds x 200 orders for 15 units, 2 replicas)",
        0,
        database,
        f.oversold,
    )
    table.put("unsold", "  units left unsold while callers were refused", 0, database, f.unsold)
    table.put(
        "oversell-odd", "  answers other than a store or FAILED_PRECONDITION", 0, database, f.unexpected
    )
    table.notes += [f"{database}: {p}" for p in f.problems[:5]]


def _faults(table: Table, database: str, d: Deployment, sizes: Sizes) -> None:
    f = faults_in_the_order_flow(d, rounds=sizes.fault_rounds)
    table.put(
        "lost", f"effects lost under faults ({f.rounds} rounds: kill/freeze mid-flow)", 0, database, f.lost
    )
    table.put("doubled", "effects doubled under faults", 0, database, f.doubled)
    table.put(
        "unclean",
        "  callers given an unclean error, or another order on retry",
        0,
        database,
        f.unclean + f.retries_differing,
    )
    table.add("ledger", LEDGER, 0, database, f.ledger_violations)
    table.notes += [f"{database}: {p}" for p in f.problems[:5]]


def _marketing_faults(table: Table, database: str, d: Deployment, sizes: Sizes) -> None:
    f = grants_under_faults(d, rounds=sizes.marketing_rounds, members=sizes.marketing_members)
    table.put(
        "mkt-lost",
        f"campaign grants lost under faults ({f.rounds} rounds: marketing/membership killed/frozen "
        f"mid-run, {f.owed} coupons owed)",
        0,
        database,
        f.lost,
    )
    table.put("mkt-doubled", "campaign grants doubled under faults", 0, database, f.doubled)
    table.notes += [f"{database}: {p}" for p in f.problems[:5]]


def _marketing_budgets(table: Table, database: str, d: Deployment, sizes: Sizes) -> None:
    f = budgets_under_concurrency(d, rounds=max(1, sizes.marketing_rounds // 4), events=100)
    table.put(
        "mkt-overrun",
        f"campaign budgets overrun ({f.rounds} rounds x 100 events at once, 2 replicas, 3 kinds of cap)",
        0,
        database,
        f.overrun,
    )
    table.put("mkt-underrun", "  caps left unspent while events were turned away", 0, database, f.underrun)
    table.notes += [f"{database}: {p}" for p in f.problems[:5]]


def _marketing_messages(table: Table, database: str, d: Deployment) -> None:
    f = messages_against_consent(d, customers=60)
    table.put(
        "mkt-consent",
        f"messages pulled without consent ({f.customers} customers, {f.pulled} pulled)",
        0,
        database,
        f.without_consent,
    )
    table.put("mkt-quiet", "messages pulled in the customer's quiet hours", 0, database, f.in_quiet_hours)
    table.put("mkt-owed", "  messages owed and never pulled", 0, database, f.owed_not_pulled)
    table.notes += [f"{database}: {p}" for p in f.problems[:5]]


def _shutdown(table: Table, database: str, d: Deployment, sizes: Sizes) -> None:
    f = graceful_shutdown(d, rounds=sizes.shutdown_rounds)
    table.put(
        "shutdown",
        f"calls failed in graceful shutdown beyond those refused ({f.rounds} SIGTERMs, {f.calls} calls)",
        0,
        database,
        f.failed_beyond_refused + f.health_late,
    )
    table.put("shutdown-refused", "  refused UNAVAILABLE after the signal", None, database, f.refused)
    table.put(
        "shutdown-grpc",
        "  dropped CANCELLED by gRPC's core as it stopped (grpc#41785)",
        None,
        database,
        f.cancelled_by_grpc,
    )
    table.notes += [f"{database}: {p}" for p in f.problems[:5]]


def _outage(
    table: Table,
    database: str,
    d: Deployment,
    cutting: AbstractContextManager[Cut],
    sizes: Sizes,
    *,
    refusals: int,
) -> None:
    with cutting as cut:
        f = database_outage(d, cut, outages=sizes.outages, refusals=refusals, deadline=30.0)
    table.put(
        "outage",
        f"INTERNAL answers and unrecovered services, database cut off ({f.outages} outages)",
        0,
        database,
        f.server_errors + f.unrecovered,
    )
    table.put("outage-unavailable", "  calls answered UNAVAILABLE meanwhile", None, database, f.unavailable)
    table.notes += [f"{database}: {p}" for p in f.problems[:5]]


def _deadlock(table: Table, database: str, d: Deployment) -> None:
    first, retried = deadlock_victim(d)
    table.put(
        "deadlock",
        "a call a deadlock aborted, failing, or its retry answering otherwise",
        0,
        database,
        int(not first.ok) + int(not retried.ok or _order_id(retried) != _order_id(first)),
    )


def _order_id(outcome: Outcome[object]) -> str:
    return str(getattr(getattr(outcome.value, "order", None), "order_id", ""))


def _postgres_outage(table: Table, database: str, root: Path, url: str, sizes: Sizes) -> None:
    with (
        throwaway_postgres(url) as (own, name),
        deployment(root, {s: with_schema(own, s) for s in SERVICE_NAMES}) as d,
    ):
        _outage(table, database, d, postgres_cut(url, name), sizes, refusals=5)


def _fuzz(table: Table, database: str, d: Deployment, sizes: Sizes) -> None:
    f = fuzz_every_rpc(d, cases=sizes.fuzz_cases, seed=20261122)
    table.put("fuzz-cases", "fuzz cases sent", None, database, f.cases)
    table.put(
        "fuzz-errors",
        "  server errors (answers, crashes, hangs, logged errors)",
        0,
        database,
        f.server_errors + f.logged_errors,
    )
    table.put("fuzz-effects", "  outbox effects given up for good", 0, database, f.effects_given_up)
    table.add("ledger", LEDGER, 0, database, f.ledger_violations)
    table.notes += [f"{database}: {p}" for p in f.problems[:5]]


def _sizes(table: Table, database: str, d: Deployment) -> None:
    f = sizes_are_capped(d)
    table.put(
        "sizes",
        f"request fields past their cap not refused by name, or caps undocumented ({f.fields} fields)",
        0,
        database,
        f.unenforced + f.undocumented,
    )
    table.notes += [f"{database}: {p}" for p in f.problems[:5]]


def _authz(table: Table, database: str, d: Deployment, sizes: Sizes) -> None:
    matrix = authorisation_matrix(d)
    attacks = every_attack(d, rounds=sizes.abuse_rounds)
    claims_failed = token_claims(d, attacks, cases=sizes.token_cases)
    table.put(
        "authz-cells",
        f"authorisation cells checked (every RPC x role x own/other store's/other channel's/nobody's), "
        f"and attacks replayed ({sizes.abuse_rounds} rounds, {sizes.token_cases} forged-claim tokens)",
        None,
        database,
        f"{matrix.cells}+{attacks.attacks}",
    )
    table.put("authz-leaks", "  leaks", 0, database, matrix.leaks + attacks.leaks + claims_failed)
    table.put("authz-over", "  own objects or admitted roles refused", 0, database, matrix.over_refused)
    table.put(
        "authz-spent",
        "  value spent without the member (points and coupon fen)",
        0,
        database,
        attacks.value_spent_without_member,
    )
    table.put(
        "authz-minted",
        "  points minted by amounts over the caps",
        0,
        database,
        attacks.points_minted_over_caps,
    )
    table.notes += [f"{database}: {p}" for p in (matrix.problems + attacks.problems)[:8]]


def _canary(table: Table, database: str, d: Deployment) -> None:
    f = canary_through_every_phone_rpc(d)
    table.put("canary", f"canary sightings in logs and databases ({f.calls} calls)", 0, database, f.sightings)
    table.put("canary-recoverable", "  phones recoverable from what is stored", 0, database, f.recoverable)
    table.notes += [f"{database}: {p}" for p in f.problems[:5]]


def _books(table: Table, database: str, d: Deployment) -> None:
    try:
        check_books(d.databases["membership"])
        violations = 0
    except AssertionError as violation:
        violations = 1
        table.notes.append(f"{database}: membership's books after every run: {violation}")
    table.add("ledger", LEDGER, 0, database, violations)


def _ledger_machine(table: Table, database: str, postgres_url: str | None, sizes: Sizes) -> None:
    machine: type[LedgerMachine] = LedgerMachine
    if postgres_url:
        url = postgres_url

        class PostgresMachine(LedgerMachine):
            @staticmethod
            def database_url() -> AbstractContextManager[str]:
                return _one_schema(url)

        machine = PostgresMachine
    settings = hypothesis.settings(
        max_examples=sizes.ledger_examples,
        stateful_step_count=50,
        deadline=None,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    try:
        run_state_machine_as_test(machine, settings=settings)
        violations = 0
    except AssertionError as violation:
        violations = 1
        table.notes.append(f"{database}: ledger state machine: {str(violation).splitlines()[0]}")
    table.add("ledger", LEDGER, 0, database, violations)


@contextmanager
def _one_schema(url: str) -> Iterator[str]:
    with postgres_schemas(url, ("ledger",)) as urls:
        yield urls["ledger"]


def render(table: Table, databases: Sequence[str]) -> str:
    width = max(len(f.name) for f in table.figures.values())
    header = f"{'figure':<{width}}  {'goal':>4}  " + "  ".join(f"{d:>10}" for d in databases)
    lines = [header, "-" * len(header)]
    for figure in table.figures.values():
        goal = "" if figure.goal is None else str(figure.goal)
        cells = "  ".join(f"{figure.values.get(d, '-')!s:>10}" for d in databases)
        lines.append(f"{figure.name:<{width}}  {goal:>4}  {cells}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reliability", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200, help="fault rounds (default 200)")
    parser.add_argument("--fuzz-cases", type=int, default=10_000, help="fuzz cases (default 10000)")
    parser.add_argument("--duplicate-rounds", type=int, default=20, help="rounds of 50 copies (default 20)")
    parser.add_argument("--oversell-rounds", type=int, default=5, help="rounds of 200 orders (default 5)")
    parser.add_argument("--shutdown-rounds", type=int, default=10, help="SIGTERMs under load (default 10)")
    parser.add_argument("--outages", type=int, default=3, help="database outages (default 3)")
    parser.add_argument(
        "--ledger-examples", type=int, default=100, help="state machine examples (default 100)"
    )
    parser.add_argument("--abuse-rounds", type=int, default=5, help="rounds of every attack (default 5)")
    parser.add_argument("--token-cases", type=int, default=2_000, help="forged-claim tokens (default 2000)")
    parser.add_argument("--marketing-rounds", type=int, default=16, help="campaign fault rounds (default 16)")
    parser.add_argument(
        "--marketing-members", type=int, default=3_000, help="members a scheduled run reaches (default 3000)"
    )
    parser.add_argument(
        "--postgres",
        default=os.environ.get(POSTGRES_ENV) or None,
        help=f"also run on this PostgreSQL database (default ${POSTGRES_ENV})",
    )
    args = parser.parse_args(argv)
    sizes = Sizes(
        duplicate_rounds=args.duplicate_rounds,
        oversell_rounds=args.oversell_rounds,
        fault_rounds=args.rounds,
        shutdown_rounds=args.shutdown_rounds,
        outages=args.outages,
        fuzz_cases=args.fuzz_cases,
        ledger_examples=args.ledger_examples,
        abuse_rounds=args.abuse_rounds,
        token_cases=args.token_cases,
        marketing_rounds=args.marketing_rounds,
        marketing_members=args.marketing_members,
    )
    if (
        min(
            vars(args)[k]
            for k in ("rounds", "fuzz_cases", "duplicate_rounds", "oversell_rounds", "marketing_members")
        )
        < 1
    ):
        parser.error("every size must be positive")
    databases = {"SQLite": None} | ({"PostgreSQL": args.postgres} if args.postgres else {})
    table = Table()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="quanyu-reliability-") as temporary:
        for name, url in databases.items():
            measure(table, name, Path(temporary) / name, url, sizes)
    print(
        f"Quanyu reliability, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()} "
        f"({platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}), "
        f"{(time.monotonic() - started) / 60:.0f} min"
    )
    print(render(table, list(databases)))
    for note in table.notes:
        print(f"note: {note}")
    missed = [f.name.strip() for f in table.figures.values() if f.missed()]
    if missed or any("did not finish" in n for n in table.notes):
        print(f"missed: {', '.join(missed) or 'a run did not finish'}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
