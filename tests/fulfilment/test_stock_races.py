"""Stock set by a till while orders reserve it, on PostgreSQL, where both run at once (SQLite lets
one writer in at a time)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event, text, update
from sqlalchemy.exc import OperationalError

from quanyu.db import Database, migrate
from services.fulfilment.bootstrap import MIGRATIONS
from services.fulfilment.domain.assignment import Assignment, Line
from services.fulfilment.domain.stores import validate_store
from services.fulfilment.storage import ReservationRepository, StockRepository, StoreRepository, stock
from tests.conftest import POSTGRES_URL, postgres_schema_url
from tests.fulfilment.test_stores import VALID
from tests.processes import poll

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not POSTGRES_URL, reason="needs PostgreSQL (QUANYU_TEST_POSTGRES_URL)"),
]

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
LOCK_NOT_AVAILABLE = "55P03"
LANGUAGE = "en-US-x-icu"  # a collation that sorts as people read: "a1" before "B1"


@pytest.fixture
def database() -> Iterator[Database]:
    for url in postgres_schema_url():
        db = Database(url)
        migrate(db, MIGRATIONS)
        with db.transaction() as connection:
            StoreRepository(connection).upsert([validate_store(VALID)], NOW)
            StockRepository(connection).set_on_hand(VALID.store_id, {"TEA": 10}, NOW)
            # An order already holds 4 of the 10.
            held = Assignment(VALID.store_id, 0.0, (Line("TEA", 4, 1_500),))
            ReservationRepository(connection).reserve("ord-1", [held], "DELIVERY", NOW, known=False)
        yield db
        db.dispose()


def test_no_reservation_slips_between_checking_new_stock_and_writing_it(database: Database) -> None:
    """The till's count is checked against what is reserved and then written; an order reserving
    in between would make the write land below its reservation, or be skipped. The rows are
    locked from the check on, so the order waits (here: gives up at its lock timeout)."""
    others: list[str] = []

    def reserve_meanwhile(_: Any, __: Any, statement: str, *args: Any) -> None:
        if not statement.startswith("UPDATE stock SET on_hand") or others:
            return
        with database.engine.connect() as other, other.begin():
            other.execute(text("SET LOCAL lock_timeout = '200ms'"))
            try:
                other.execute(
                    update(stock)
                    .where(stock.c.store_id == VALID.store_id, stock.c.sku == "TEA")
                    .values(reserved=stock.c.reserved + 3)
                )
                others.append("reserved")
            except OperationalError as error:
                others.append(getattr(error.orig, "sqlstate", "") or "")

    with database.transaction() as connection:
        event.listen(connection, "before_cursor_execute", reserve_meanwhile)
        below = StockRepository(connection).set_on_hand(VALID.store_id, {"TEA": 6}, NOW)

    assert below == []
    assert others == [LOCK_NOT_AVAILABLE]
    with database.snapshot() as connection:
        [level] = StockRepository(connection).levels(VALID.store_id, ["TEA"])
    assert (level.on_hand, level.reserved) == (6, 4)


def test_a_count_below_what_is_reserved_is_refused_and_changes_nothing(database: Database) -> None:
    with database.transaction() as connection:
        below = StockRepository(connection).set_on_hand(VALID.store_id, {"TEA": 3, "MILK": 8}, NOW)
    assert below == ["TEA"]
    with database.snapshot() as connection:
        levels = StockRepository(connection).levels(VALID.store_id)
    assert [(lv.sku, lv.on_hand, lv.reserved) for lv in levels] == [("TEA", 10, 4)]


def test_a_till_setting_stock_takes_the_rows_in_the_order_an_order_reserves_them(database: Database) -> None:
    """Reserving takes stock rows in code-point order of SKU ("B1" before "a1"). A database collated
    for a language sorts "a1" first; were SetStock to lock in that order, it could hold "a1" while
    waiting for "B1" from an order that waits for "a1": a deadlock. It must take "B1" first too."""
    with database.transaction() as connection:
        known = text("SELECT 1 FROM pg_collation WHERE collname = :name")
        if connection.execute(known, {"name": LANGUAGE}).first() is None:
            pytest.skip(f"this PostgreSQL has no {LANGUAGE} collation (built without ICU)")
        connection.execute(text(f'ALTER TABLE stock ALTER COLUMN sku TYPE VARCHAR(64) COLLATE "{LANGUAGE}"'))
        StockRepository(connection).set_on_hand(VALID.store_id, {"a1": 5, "B1": 5}, NOW)
    outcome: list[str] = []
    till_pids: list[int] = []
    till_errors: list[Exception] = []
    till_begun = threading.Event()

    def set_stock() -> None:
        try:
            with database.transaction() as connection:
                till_pids.append(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())
                till_begun.set()
                StockRepository(connection).set_on_hand(VALID.store_id, {"a1": 7, "B1": 7}, NOW)
        except Exception as error:
            till_errors.append(error)
            till_begun.set()

    till = threading.Thread(target=set_stock)
    try:
        with database.engine.connect() as order, order.begin():
            # An order reserving holds "B1" and is about to take "a1".
            order.execute(text("SET LOCAL lock_timeout = '500ms'"))
            order.execute(_reserve_one("B1"))
            till.start()
            assert till_begun.wait(timeout=10)
            assert till_pids, till_errors
            with database.engine.connect() as watcher:
                poll(
                    lambda: watcher.execute(
                        text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid"),
                        {"pid": till_pids[0]},
                    ).scalar(),
                    lambda waiting: waiting == "Lock",
                    "the till waiting for the order's row",
                    within=10,
                )
            try:
                order.execute(_reserve_one("a1"))
                outcome.append("reserved")
            except OperationalError as error:
                outcome.append(getattr(error.orig, "sqlstate", "") or "")
                order.rollback()
    finally:
        if till.ident is not None:  # started
            till.join(timeout=30)
    assert not till.is_alive()
    assert not till_errors
    assert outcome == ["reserved"]
    with database.snapshot() as connection:
        levels = StockRepository(connection).levels(VALID.store_id, ["B1", "a1"])
    assert sorted((lv.sku, lv.on_hand) for lv in levels) == [("B1", 7), ("a1", 7)]


def _reserve_one(sku: str) -> Any:
    return (
        update(stock)
        .where(stock.c.store_id == VALID.store_id, stock.c.sku == sku)
        .values(reserved=stock.c.reserved + 1)
    )
