"""Points expiry and tier evaluation with two membership replicas on one database: each job runs
once per interval across both, right after a start when its last run is overdue, and not again
when a replica restarts before the interval is up."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

from quanyu.db import Database
from quanyu.tasks import RunSchedule
from services.membership.storage import periodic_runs
from tests.processes import free_port, platform_env, poll, started, wait_serving

EXPIRY, TIERS = "points-expiry", "tier-evaluation"
HOUR = "3600"


class Replicas:
    def __init__(self, home: Path, database_url: str) -> None:
        self.home, self.database_url = home, database_url
        self.database = Database(database_url)
        self.schedule = RunSchedule(self.database, periodic_runs)
        self.starts = 0

    @contextmanager
    def running(self, count: int, expiry_interval: str) -> Iterator[list[Path]]:
        """`count` replicas started together; yields their logs once each checked both jobs."""
        logs = []
        with ExitStack() as stack:
            processes = []
            for _ in range(count):
                self.starts += 1
                port, log = free_port(), self.home / f"membership-{self.starts}.log"
                env = platform_env(
                    self.home / "var",
                    QUANYU_MEMBERSHIP__PORT=str(port),
                    QUANYU_MEMBERSHIP__DATABASE_URL=self.database_url,
                    QUANYU_MEMBERSHIP_EXPIRY_INTERVAL_SECONDS=expiry_interval,
                    QUANYU_MEMBERSHIP_TIER_EVALUATION_INTERVAL_SECONDS=HOUR,
                )
                processes.append((port, stack.enter_context(started(["serve", "membership"], env, log))))
                logs.append(log)
            for port, process in processes:
                wait_serving(f"127.0.0.1:{port}", process)
            for log in logs:
                poll(partial(start_checks, log), lambda found: set(found) == {EXPIRY, TIERS}, "start checks")
            yield logs

    def runs(self, job: str) -> int:
        return self.schedule.runs(job)[0]


def start_checks(log: Path) -> dict[str, bool]:
    """What a replica found at start for each job: whether it was due (and so run there)."""
    found = {}
    for line in log.read_text(errors="replace").splitlines():
        if "periodic job checked at start" in line:
            event = json.loads(line)
            found[event["job"]] = event["due"]
    return found


def test_each_job_runs_once_per_interval_across_replicas_and_catches_up_after_a_start(
    tmp_path: Path, database_url: str
) -> None:
    replicas = Replicas(tmp_path, database_url)

    # A new deployment: never run, so due at once, and run by exactly one of the two.
    with replicas.running(2, HOUR) as logs:
        for job in (EXPIRY, TIERS):
            assert sorted(start_checks(log)[job] for log in logs) == [False, True], job
            assert replicas.runs(job) == 1

        # A replica restarted within the hour does not run them again.
        with replicas.running(1, HOUR) as (restarted,):
            assert start_checks(restarted) == {EXPIRY: False, TIERS: False}
        assert (replicas.runs(EXPIRY), replicas.runs(TIERS)) == (1, 1)

    # Expiry every 3 s from now on: once the last run is older than that, a start catches up.
    _, last, _ = replicas.schedule.runs(EXPIRY)
    assert last is not None
    poll(lambda: datetime.now(UTC), lambda now: now - last > timedelta(seconds=3), "the run to be overdue")
    with replicas.running(2, "3") as logs:
        assert sorted(start_checks(log)[EXPIRY] for log in logs) == [False, True]
        assert sorted(start_checks(log)[TIERS] for log in logs) == [False, False]
        assert replicas.runs(EXPIRY) == 2

        # Over 15 s, both replicas up: about five runs in all (each replica running it would make ten).
        before, started_at = replicas.runs(EXPIRY), time.monotonic()
        poll(lambda: time.monotonic() - started_at, lambda waited: waited >= 15, "the window", within=30)
        made = replicas.runs(EXPIRY) - before
        assert 3 <= made <= 6, f"{made} runs of a 3 s job in 15 s"
    assert replicas.runs(TIERS) == 1
    replicas.database.dispose()
