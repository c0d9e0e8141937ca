"""Every service's migrations build its schema on an empty database, on SQLite and PostgreSQL,
match its table definitions exactly, and can be applied again harmlessly."""

from __future__ import annotations

import importlib

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from quanyu.config import SERVICE_NAMES
from quanyu.db import Database, migrate


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_migrations_build_exactly_the_tables_the_service_defines(database_url: str, service: str) -> None:
    bootstrap = importlib.import_module(f"services.{service}.bootstrap")
    storage = importlib.import_module(f"services.{service}.storage")
    database = Database(database_url)
    try:
        migrate(database, bootstrap.MIGRATIONS)
        migrate(database, bootstrap.MIGRATIONS)  # a second replica starting finds nothing to do
        with database.engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), storage.metadata)
            tables = set(inspect(connection).get_table_names())
        assert differences == []
        assert tables == {*storage.metadata.tables, "alembic_version"}
    finally:
        database.dispose()
