"""Every service's migrations build its schema on an empty database, on SQLite and PostgreSQL,
match its table definitions exactly, and can be applied again harmlessly."""

from __future__ import annotations

import importlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from quanyu.config import SERVICE_NAMES
from quanyu.db import Database, migrate


# Marketing's storage is checked before the service runs, so it is listed beside the running ones.
@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_migrations_build_exactly_the_tables_the_service_defines(database_url: str, service: str) -> None:
    storage = importlib.import_module(f"services.{service}.storage")
    migrations = Path(str(importlib.import_module(f"services.{service}").__file__)).parent / "migrations"
    database = Database(database_url)
    try:
        migrate(database, migrations)
        migrate(database, migrations)  # a second replica starting finds nothing to do
        with database.engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), storage.metadata)
            tables = set(inspect(connection).get_table_names())
        assert differences == []
        assert tables == {*storage.metadata.tables, "alembic_version"}
    finally:
        database.dispose()


def _upgrade(database: Database, script_location: Any, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(script_location))
    with database.transaction() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def test_guides_members_already_name_are_kept_at_the_home_store_most_of_their_members_have(
    database_url: str,
) -> None:
    """Only known guides are credited once guides are kept: the upgrade keeps the ones in use."""
    membership = importlib.import_module("services.membership.bootstrap")
    database = Database(database_url)
    try:
        _upgrade(database, membership.MIGRATIONS, "0001")
        now = datetime(2026, 12, 1, tzinfo=UTC)
        rows = [("g-1", "SH-001"), ("g-1", "SH-001"), ("g-1", "BJ-002"), ("g-2", "BJ-002"), ("g-3", "")]
        with database.transaction() as connection:
            for n, (guide, store) in enumerate(rows):
                connection.execute(
                    text(
                        "INSERT INTO members (member_id, customer_id, root_member_id, tier, home_store_id, "
                        "guide_id, enrolled_channel, enroll_time, stage, referrer_member_id, points_balance, "
                        "lifetime_spend_cents, merged, update_time) "
                        "VALUES (:m, :c, :m, 'BRONZE', :s, :g, '', :t, 1, '', 0, 0, false, :t)"
                    ),
                    {"m": f"mem_{n}", "c": f"cus_{n}", "s": store, "g": guide, "t": now},
                )
        _upgrade(database, membership.MIGRATIONS, "head")
        with database.engine.connect() as connection:
            kept = connection.execute(
                text("SELECT guide_id, store_id, active FROM guides ORDER BY guide_id")
            ).all()
        assert [tuple(row) for row in kept] == [("g-1", "SH-001", True), ("g-2", "BJ-002", True)]
    finally:
        database.dispose()


def test_members_and_coupons_stored_before_birthdays_and_campaigns_have_none_and_the_step_undoes(
    database_url: str,
) -> None:
    """Revision 0003 gives members an unknown birthday and coupons no campaign; undone, it drops
    both columns and leaves the rows."""
    membership = importlib.import_module("services.membership.bootstrap")
    storage = importlib.import_module("services.membership.storage")
    ports = importlib.import_module("services.membership.ports")
    database = Database(database_url)
    try:
        _upgrade(database, membership.MIGRATIONS, "0002")
        now = datetime(2026, 12, 1, tzinfo=UTC)
        with database.transaction() as connection:
            connection.execute(
                text(
                    "INSERT INTO members (member_id, customer_id, root_member_id, tier, home_store_id, "
                    "guide_id, enrolled_channel, enroll_time, stage, referrer_member_id, points_balance, "
                    "lifetime_spend_cents, merged, update_time) "
                    "VALUES ('mem_1', 'cus_1', 'mem_1', 'BRONZE', '', '', '', :t, 1, '', 0, 0, false, :t)"
                ),
                {"t": now},
            )
            connection.execute(
                text(
                    "INSERT INTO coupons (code, member_id, discount_cents, min_spend_cents, expire_time, "
                    "redeemed_store_id, request_id, request_fingerprint, create_time) "
                    "VALUES ('CODE1', 'mem_1', 500, 0, :t, '', 'req-1', 'f', :t)"
                ),
                {"t": now},
            )
        _upgrade(database, membership.MIGRATIONS, "head")
        with database.transaction() as connection:
            stores = storage.SqlStores(connection)
            member = stores.members.get("mem_1")
            coupons = stores.coupons.page(
                ports.CouponListing(["mem_1"], active_at=None, before=None, limit=10)
            )
        assert member is not None
        assert member.birthday == ""
        assert [(c.code, c.campaign_id, c.create_time) for c in coupons] == [("CODE1", "", now)]

        config = Config()
        config.set_main_option("script_location", str(membership.MIGRATIONS))
        with database.transaction() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0002")
        with database.engine.connect() as connection:
            columns = {
                table: {c["name"] for c in inspect(connection).get_columns(table)}
                for table in ("members", "coupons")
            }
            left = connection.execute(text("SELECT count(*) FROM coupons")).scalar_one()
        assert "birthday" not in columns["members"]
        assert "campaign_id" not in columns["coupons"]
        assert left == 1
    finally:
        database.dispose()
