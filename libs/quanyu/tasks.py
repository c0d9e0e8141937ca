"""Periodic work a service runs beside its server (expiring points, timing out orders).

Work that must happen once per interval across the whole deployment, however many replicas run
and however often they restart, keeps its last run in the service's database (`RunSchedule`):
every replica checks at start and then a few times per interval, and the one whose conditional
update moves the last run forward does the work. A job whose last run is older than its interval
runs right after a start, so a pod restarted more often than the interval still runs it.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

import structlog
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select, update
from sqlalchemy.exc import IntegrityError

from quanyu.db import Database, UtcDateTime
from quanyu.unit_of_work import Clock, system_clock

log = structlog.get_logger("quanyu.tasks")

# A scheduled job is checked this often at most, and at least four times per interval, so it
# runs at most a quarter of an interval late.
LONGEST_CHECK_SECONDS = 30.0


def periodic_runs_table(metadata: MetaData) -> Table:
    return Table(
        "periodic_runs",
        metadata,
        Column("job", String(64), primary_key=True),
        Column("last_run_time", UtcDateTime(), nullable=False),
        # host/pid of the replica that ran it last, for ops reading the table.
        Column("last_runner", String(255), nullable=False),
        Column("runs", Integer, nullable=False),
    )


def this_replica() -> str:
    """How a replica names itself: its pod's host name and its process."""
    return f"{socket.gethostname()}/{os.getpid()}"


class RunSchedule:
    """When each periodic job of a service last ran, shared by all its replicas."""

    def __init__(self, database: Database, table: Table) -> None:
        self._database, self._table = database, table

    def claim(self, job: str, interval: timedelta, now: datetime, runner: str) -> bool:
        """True when `job` is due at `now` and this caller is the one to run it: the last run
        moves to `now` in the same statement, so no other replica claims it this interval."""
        t = self._table
        try:
            with self._database.transaction() as connection:
                row = connection.execute(select(t.c.last_run_time).where(t.c.job == job)).first()
                if row is None:
                    # Never run: due at once.
                    connection.execute(
                        insert(t).values(job=job, last_run_time=now, last_runner=runner, runs=1)
                    )
                    return True
                last: datetime = row.last_run_time
                if last + interval > now:
                    return False
                # Only if nobody moved it since we read it (PostgreSQL re-checks the condition
                # after waiting on the row; SQLite serialises writers).
                moved = connection.execute(
                    update(t)
                    .where(t.c.job == job, t.c.last_run_time == last)
                    .values(last_run_time=now, last_runner=runner, runs=t.c.runs + 1)
                )
                return bool(moved.rowcount == 1)
        except IntegrityError:
            # Another replica recorded the first run at the same moment: it is theirs.
            return False

    def runs(self, job: str) -> tuple[int, datetime | None, str]:
        """(times run, last run, last runner) of `job`."""
        t = self._table
        with self._database.snapshot() as connection:
            row = connection.execute(
                select(t.c.runs, t.c.last_run_time, t.c.last_runner).where(t.c.job == job)
            ).first()
        return (0, None, "") if row is None else (int(row.runs), row.last_run_time, str(row.last_runner))


class Periodic:
    """Runs `job` every `interval` seconds on a thread of its own until stopped.

    Without a schedule every replica runs it, first after a whole interval: for work that is
    per replica (refreshing a cache) or harmless to repeat. With a `schedule` it runs once per
    interval across the deployment, and right after a start when its last run is overdue.
    """

    def __init__(
        self,
        name: str,
        job: Callable[[], int],
        interval: float,
        *,
        schedule: RunSchedule | None = None,
        clock: Clock = system_clock,
    ) -> None:
        self._name, self._job, self._interval = name, job, interval
        self._schedule, self._clock = schedule, clock
        self._runner = this_replica()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        run = self._run_scheduled if self._schedule is not None else self._run
        self._thread = threading.Thread(target=run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stopping.wait(self._interval):
            self._once()

    def _run_scheduled(self) -> None:
        assert self._schedule is not None
        check = min(self._interval / 4, LONGEST_CHECK_SECONDS)
        first = True
        while True:
            try:
                claimed = self._schedule.claim(
                    self._name, timedelta(seconds=self._interval), self._clock(), self._runner
                )
            except Exception:
                log.exception("periodic job could not be checked; checking again soon", job=self._name)
                claimed = False
            else:
                if first:
                    # What a start found: the job overdue (and run now) or run recently elsewhere.
                    log.info(
                        "periodic job checked at start", job=self._name, due=claimed, runner=self._runner
                    )
            first = False
            if claimed:
                self._once()
            if self._stopping.wait(check):
                return

    def _once(self) -> None:
        try:
            done = self._job()
            if done:
                log.info("periodic job done", job=self._name, changed=done)
        except Exception:
            log.exception("periodic job failed; it runs again next period", job=self._name)
