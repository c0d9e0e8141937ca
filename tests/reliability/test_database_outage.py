"""Every service's database out of reach for a while under a load of reads and writes on all the
services: the services answer UNAVAILABLE (or hold a call until the database is back or the
caller's deadline passes), never INTERNAL or UNKNOWN, and serve again by themselves once it
returns. A transaction the database aborts to break a deadlock is run again by the unit of work,
whole, and answered as if nothing had happened."""

from __future__ import annotations

from pathlib import Path

import pytest

from quanyu.config import SERVICE_NAMES
from tests.conftest import POSTGRES_URL
from tests.reliability.deployment import Deployment, deployment, throwaway_postgres, with_schema
from tests.reliability.outage import OutageFigures, database_outage, deadlock_victim, postgres_cut, sqlite_cut


def assert_weathered(figures: OutageFigures) -> None:
    assert figures.problems == []
    assert (figures.server_errors, figures.unrecovered) == (0, 0)


def test_sqlite_files_locked_by_another_connection_hold_writers_without_an_internal_error(
    d: Deployment,
) -> None:
    with sqlite_cut(d) as cut:
        figures = database_outage(d, cut, outages=1, refusals=0, deadline=5.0)
    assert_weathered(figures)
    assert figures.outages == 1


@pytest.mark.postgres
@pytest.mark.skipif(not POSTGRES_URL, reason="QUANYU_TEST_POSTGRES_URL is not set")
def test_a_postgres_database_closed_to_connections_is_answered_unavailable_and_recovered_from(
    tmp_path: Path,
) -> None:
    with (
        throwaway_postgres(POSTGRES_URL) as (url, name),
        deployment(tmp_path, {s: with_schema(url, s) for s in SERVICE_NAMES}) as running,
        postgres_cut(POSTGRES_URL, name) as cut,
    ):
        figures = database_outage(running, cut, outages=2, refusals=3, deadline=10.0)
    assert_weathered(figures)
    assert figures.unavailable > 0


@pytest.mark.postgres
@pytest.mark.skipif(not POSTGRES_URL, reason="QUANYU_TEST_POSTGRES_URL is not set")
def test_a_transaction_aborted_to_break_a_deadlock_is_run_again_and_its_retry_answers_the_same(
    postgres_deployment_: Deployment,
) -> None:
    first, retried = deadlock_victim(postgres_deployment_)
    assert first.ok, first
    assert retried.ok, retried
    assert retried.answer().order.order_id == first.answer().order.order_id  # type: ignore[attr-defined]
