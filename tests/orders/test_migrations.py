"""Orders' upgrade to keeping the chosen pickup store: a pickup order stored before takes the
store that first took it as the store to re-route it from, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic import command
from alembic.config import Config
from sqlalchemy import text

from quanyu.db import Database
from services.orders.bootstrap import MIGRATIONS

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def _upgrade(database: Database, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with database.transaction() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def test_pickup_orders_stored_before_keep_the_store_that_first_took_them(database_url: str) -> None:
    database = Database(database_url)
    try:
        _upgrade(database, "0002")
        # (order, kind, origin, history of (to status, store))
        orders = [
            ("ord-p", "PICKUP", "HOME", [("ASSIGNED", "C"), ("PENDING_ASSIGNMENT", "C"), ("ASSIGNED", "N")]),
            ("ord-w", "PICKUP", "HOME", [("PENDING_ASSIGNMENT", "")]),
            ("ord-d", "DELIVERY", "HOME", [("ASSIGNED", "D")]),
        ]
        with database.transaction() as connection:
            for order_id, kind, origin, history in orders:
                connection.execute(
                    text(
                        "INSERT INTO orders (order_id, request_owner, request_id, request_fingerprint, "
                        "customer_id, member_id, channel, fulfilment_type, subtotal_cents, discount_cents, "
                        "points_redeemed, total_cents, delivery_address, origin_store_id, "
                        "fulfilling_store_id, guide_id, status, status_reason, coupon_code, points_earned, "
                        "create_time, update_time) VALUES (:o, '', :o, '', 'c', 'm', 'CHANNEL_APP', :k, "
                        "1, 0, 0, 1, '', :origin, '', '', 'ASSIGNED', '', '', 0, :t, :t)"
                    ),
                    {"o": order_id, "k": kind, "origin": origin, "t": NOW},
                )
                for to_status, store in history:
                    connection.execute(
                        text(
                            "INSERT INTO status_changes (order_id, from_status, to_status, actor, reason, "
                            "store_id, change_time) VALUES (:o, '', :to, 'system', '', :s, :t)"
                        ),
                        {"o": order_id, "to": to_status, "s": store, "t": NOW},
                    )
        _upgrade(database, "head")
        with database.engine.connect() as connection:
            kept = connection.execute(
                text("SELECT order_id, pickup_store_id FROM orders ORDER BY order_id")
            ).all()
        assert [tuple(row) for row in kept] == [("ord-d", ""), ("ord-p", "C"), ("ord-w", "")]
    finally:
        database.dispose()
