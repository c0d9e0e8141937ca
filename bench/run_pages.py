"""How long a scheduled run's pages hold marketing's one SQLite writer: a ONCE campaign with a
coupon action over `--members` member profiles, run in process by RunCases over a fresh SQLite
file, each unit of work timed. On SQLite every write transaction holds the writer from BEGIN
IMMEDIATE to COMMIT, so the time inside write transactions is what the outbox relay, the
projections and ingest wait on while a run goes; time in read transactions holds nobody.

    .venv/bin/python -m bench.run_pages [--members 20000] [--page-size 2000] [--rounds 3]
        [--before runs_before.py]

Each round is a fresh database; the figures are per page, median over rounds. Wall times: the
machine's load moves them, so compare only within one run of this script; with --before, another
version of runs.py runs in the same process, round after round with this one, in turn."""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from sqlalchemy import literal, select

from bench.marketing import numbered, profile_of_number
from bench.orders import table
from quanyu.db import Database, UtcDateTime, migrate
from quanyu.unit_of_work import SqlUnitOfWork, Transaction
from services.marketing.domain import ScheduleKind
from services.marketing.handlers import CampaignCases, RunCases
from services.marketing.storage import MIGRATIONS, SqlStores
from services.marketing.storage.tables import member_profiles
from tests.marketing.factory import TIERS, coupon, scheduled
from tests.marketing.use_case_support import Clock, running

T = TypeVar("T")
START = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)


class Timed:
    """A unit of work that keeps how long each write and each read transaction took."""

    def __init__(self, inner: SqlUnitOfWork[SqlStores]) -> None:
        self._inner = inner
        self.writes: list[float] = []
        self.reads: list[float] = []

    def run(self, work: Callable[[Transaction[SqlStores]], T]) -> T:
        return self._timed(self._inner.run, work, self.writes)

    def read(self, work: Callable[[Transaction[SqlStores]], T]) -> T:
        return self._timed(self._inner.read, work, self.reads)

    @staticmethod
    def _timed(
        how: Callable[[Callable[[Transaction[SqlStores]], T]], T],
        work: Callable[[Transaction[SqlStores]], T],
        into: list[float],
    ) -> T:
        began = time.perf_counter()
        try:
            return how(work)
        finally:
            into.append(time.perf_counter() - began)


def seed(database: Database, count: int) -> None:
    """The member profiles bench.marketing seeds, in one statement."""
    n = numbered(0, count).c.n
    at = literal(START - timedelta(days=1), UtcDateTime())
    values = profile_of_number(n, at)
    with database.transaction() as connection:
        connection.execute(
            member_profiles.insert().from_select(
                list(values), select(*(value.label(name) for name, value in values.items()))
            )
        )


def one_round(members: int, page_size: int, runs: type[RunCases] = RunCases) -> tuple[Timed, int]:
    with tempfile.TemporaryDirectory(prefix="quanyu-run-pages-") as var:
        database = Database(f"sqlite:///{Path(var) / 'marketing.db'}", pool_size=4)
        try:
            migrate(database, MIGRATIONS)
            seed(database, members)
            uow = SqlUnitOfWork(database, SqlStores)
            clock = Clock(START - timedelta(hours=1))
            running(
                CampaignCases(uow, TIERS, clock=clock),
                scheduled(ScheduleKind.ONCE, holdout_percent=5, actions=(coupon(),), start_time=START),
            )
            clock.now = START
            timed = Timed(uow)
            made = runs(timed, clock=clock, runner="bench", page_size=page_size).run_due()
            return timed, made
        finally:
            database.dispose()


def runs_from(path: Path) -> type[RunCases]:
    """RunCases as another version of services/marketing/handlers/runs.py defines it (say one
    written out by `git show <commit>:services/marketing/handlers/runs.py`)."""
    spec = importlib.util.spec_from_file_location("services.marketing.handlers.runs_compared", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    found: type[RunCases] = module.RunCases
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run_pages", description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=20_000)
    parser.add_argument("--page-size", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--before",
        type=Path,
        help="another version of runs.py: its RunCases and this one's alternate, round by round",
    )
    args = parser.parse_args(argv)
    versions: dict[str, type[RunCases]] = {"this": RunCases}
    if args.before is not None:
        versions = {"before": runs_from(args.before), "this": RunCases}
    figures: dict[str, list[tuple[float, float, float]]] = {name: [] for name in versions}
    pages = -(-args.members // args.page_size)
    for turn in range(args.rounds):
        # ABBA: each version goes first as often as the other.
        order = list(versions) if turn % 2 == 0 else list(reversed(versions))
        for name in order:
            cpu = time.process_time()
            timed, made = one_round(args.members, args.page_size, versions[name])
            if made != args.members:
                raise RuntimeError(f"{made} decisions for {args.members} members")
            figures[name].append(
                (sum(timed.writes) / pages, sum(timed.reads) / pages, time.process_time() - cpu)
            )
    print(
        table(
            [
                "runs.py",
                "members",
                "page",
                "ms in write transactions a page",
                "ms in read transactions a page",
                "CPU s a round",
                "load average",
            ],
            [
                [
                    name,
                    f"{args.members:,}",
                    f"{args.page_size:,}",
                    f"{statistics.median(w for w, _, _ in rows) * 1000:.0f}",
                    f"{statistics.median(r for _, r, _ in rows) * 1000:.0f}",
                    f"{statistics.median(c for _, _, c in rows):.2f}",
                    f"{os.getloadavg()[0]:.1f}",
                ]
                for name, rows in figures.items()
            ],
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
