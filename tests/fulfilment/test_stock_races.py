"""Stock set by a till while orders reserve it, on PostgreSQL, where both run at once (SQLite lets
one writer in at a time)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event, text, update
from sqlalchemy.exc import OperationalError

from quanyu.db import Database, migrate
from services.fulfilment.bootstrap import MIGRATIONS
from services.fulfilment.storage import StockRepository, stock, stores
from tests.conftest import POSTGRES_URL, postgres_schema_url

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not POSTGRES_URL, reason="needs PostgreSQL (QUANYU_TEST_POSTGRES_URL)"),
]

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
LOCK_NOT_AVAILABLE = "55P03"


@pytest.fixture
def database() -> Iterator[Database]:
    for url in postgres_schema_url():
        db = Database(url)
        migrate(db, MIGRATIONS)
        with db.transaction() as connection:
            connection.execute(
                stores.insert().values(
                    store_id="SH-001",
                    name="People's Square",
                    latitude=31.2304,
                    longitude=121.4737,
                    status="ACTIVE",
                    delivery_radius_m=5000.0,
                    delivery_zone_geojson="",
                    opening_hours="[]",
                    timezone="Asia/Shanghai",
                    max_active_orders=0,
                    priority=0,
                    open_orders=0,
                    revision=1,
                    create_time=NOW,
                    update_time=NOW,
                )
            )
            connection.execute(
                stock.insert().values(store_id="SH-001", sku="TEA", on_hand=10, reserved=4, update_time=NOW)
            )
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
                    .where(stock.c.store_id == "SH-001", stock.c.sku == "TEA")
                    .values(reserved=stock.c.reserved + 3)
                )
                others.append("reserved")
            except OperationalError as error:
                others.append(getattr(error.orig, "sqlstate", "") or "")

    with database.transaction() as connection:
        event.listen(connection, "before_cursor_execute", reserve_meanwhile)
        below = StockRepository(connection).set_on_hand("SH-001", {"TEA": 6}, NOW)

    assert below == []
    assert others == [LOCK_NOT_AVAILABLE]
    with database.snapshot() as connection:
        [level] = StockRepository(connection).levels("SH-001", ["TEA"])
    assert (level.on_hand, level.reserved) == (6, 4)


def test_a_count_below_what_is_reserved_is_refused_and_changes_nothing(database: Database) -> None:
    with database.transaction() as connection:
        below = StockRepository(connection).set_on_hand("SH-001", {"TEA": 3, "MILK": 8}, NOW)
    assert below == ["TEA"]
    with database.snapshot() as connection:
        levels = StockRepository(connection).levels("SH-001")
    assert [(lv.sku, lv.on_hand, lv.reserved) for lv in levels] == [("TEA", 10, 4)]
