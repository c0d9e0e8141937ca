"""A scheduled run is claimed through the database: one claimant at a time while its lease holds,
taken over once it lapses, resumed after the last member the crashed claimant finished."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from quanyu.unit_of_work import ConcurrentChange, SqlUnitOfWork
from services.marketing.storage import SqlStores

NOW = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)
LEASE = timedelta(minutes=1)
RUN = "run:cmp_1:2026-12-07"


def test_a_second_claimant_is_refused_while_the_lease_holds_then_resumes_after_the_cursor(
    uow: SqlUnitOfWork[SqlStores],
) -> None:
    first = uow.run(lambda tx: tx.stores.runs.claim("cmp_1", RUN, "replica-a", NOW, LEASE))
    assert first is not None
    assert (first.cursor, first.done) == ("", False)
    progressed = uow.run(
        lambda tx: tx.stores.runs.advance(first, "mem_0500", NOW + timedelta(seconds=30), LEASE)
    )

    soon = NOW + timedelta(seconds=60)
    assert uow.run(lambda tx: tx.stores.runs.claim("cmp_1", RUN, "replica-b", soon, LEASE)) is None

    # replica-a stops renewing (it crashed); once its lease lapses replica-b takes over.
    lapsed = NOW + timedelta(seconds=30) + LEASE
    taken = uow.run(lambda tx: tx.stores.runs.claim("cmp_1", RUN, "replica-b", lapsed, LEASE))
    assert taken is not None
    assert (taken.claimed_by, taken.cursor, taken.lease_until) == ("replica-b", "mem_0500", lapsed + LEASE)

    # The old claimant, back from a pause, may no longer write over the new one's progress.
    with pytest.raises(ConcurrentChange):
        uow.run(lambda tx: tx.stores.runs.advance(progressed, "mem_0600", lapsed, LEASE))

    uow.run(lambda tx: tx.stores.runs.finish(taken, lapsed))
    done = uow.read(lambda tx: tx.stores.runs.get("cmp_1", RUN))
    assert done is not None
    assert (done.done, done.cursor) == (True, "mem_0500")
    assert (
        uow.run(lambda tx: tx.stores.runs.claim("cmp_1", RUN, "replica-c", lapsed + LEASE * 9, LEASE)) is None
    )


def test_the_holder_renews_its_own_claim(uow: SqlUnitOfWork[SqlStores]) -> None:
    uow.run(lambda tx: tx.stores.runs.claim("cmp_1", RUN, "replica-a", NOW, LEASE))

    again = uow.run(
        lambda tx: tx.stores.runs.claim("cmp_1", RUN, "replica-a", NOW + timedelta(seconds=5), LEASE)
    )

    assert again is not None
    assert again.lease_until == NOW + timedelta(seconds=5) + LEASE
    assert uow.read(lambda tx: tx.stores.runs.get("cmp_1", "run:cmp_1:2026-12-08")) is None
