"""The outbox relay's lanes: effects bound for a service that hangs wait alone, and every kind of
effect, named in a lane or not, is still delivered or refused for good."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from quanyu.db import Database, new_metadata, utcnow
from quanyu.outbox import OutboxRelay, add_effect, outbox_table

WAIT = 20.0  # seconds a test waits for a delivery that should come at once


@pytest.fixture
def outbox(tmp_path: Path) -> Any:
    table = outbox_table(new_metadata())
    database = Database(f"sqlite:///{tmp_path / 'outbox.db'}")
    table.metadata.create_all(database.engine)
    yield database, table
    database.dispose()


def test_a_hung_service_holds_up_only_the_effects_bound_for_it(outbox: Any) -> None:
    database, table = outbox
    hanging, freed, stock_delivered = threading.Event(), threading.Event(), threading.Event()

    def earn_points(_: dict[str, Any]) -> None:
        hanging.set()
        freed.wait(3 * WAIT)  # a frozen membership: the call waits out its deadline

    def commit_stock(_: dict[str, Any]) -> None:
        stock_delivered.set()

    with database.transaction() as connection:
        # The points come first in the outbox: in one lane, the stock would queue behind them.
        add_effect(connection, table, "earn_points", {"order_id": "o-1"}, utcnow())
        add_effect(connection, table, "commit_stock", {"order_id": "o-1"}, utcnow())
    relay = OutboxRelay(
        database,
        table,
        {"earn_points": earn_points, "commit_stock": commit_stock},
        lanes={"membership": ["earn_points"], "fulfilment": ["commit_stock"]},
        poll_seconds=0.05,
    )
    relay.start()
    try:
        assert hanging.wait(WAIT)
        assert stock_delivered.wait(WAIT), "the stock waited behind the hung points delivery"
        assert not freed.is_set()
    finally:
        freed.set()
        relay.stop()
    with database.snapshot() as connection:
        delivered = dict(connection.execute(select(table.c.kind, table.c.delivered_time)).all())
    assert delivered["commit_stock"] is not None


def test_a_kind_no_lane_names_is_still_taken_up_and_refused_for_good_without_a_deliverer(
    outbox: Any,
) -> None:
    database, table = outbox
    seen: list[str] = []
    with database.transaction() as connection:
        add_effect(connection, table, "earn_points", {"n": 1}, utcnow())
        add_effect(connection, table, "from_a_newer_release", {"n": 2}, utcnow())
        add_effect(connection, table, "audit", {"n": 3}, utcnow())
    relay = OutboxRelay(
        database,
        table,
        {"earn_points": lambda p: seen.append(f"points {p['n']}"), "audit": lambda p: seen.append("audit")},
        lanes={"membership": ["earn_points"]},
    )
    assert relay.deliver_due() == 2
    assert sorted(seen) == ["audit", "points 1"]
    state = relay.state()
    assert (state.undelivered, state.failed) == (0, 1)


def test_a_kind_in_two_lanes_is_refused(outbox: Any) -> None:
    database, table = outbox
    with pytest.raises(ValueError, match="earn_points"):
        OutboxRelay(database, table, {}, lanes={"a": ["earn_points"], "b": ["earn_points", "x"]})
