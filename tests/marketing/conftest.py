"""The marketing tests' database: migrated, on SQLite and (when reachable) PostgreSQL, with a
unit of work over the storage's stores."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from quanyu.db import Database, migrate
from quanyu.unit_of_work import SqlUnitOfWork
from services.marketing.storage import MIGRATIONS, SqlStores


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    db = Database(database_url, pool_size=20)
    migrate(db, MIGRATIONS)
    yield db
    db.dispose()


@pytest.fixture
def uow(database: Database) -> SqlUnitOfWork[SqlStores]:
    return SqlUnitOfWork(database, SqlStores)


@pytest.fixture
def replicas(database: Database, uow: SqlUnitOfWork[SqlStores]) -> Iterator[list[SqlUnitOfWork[SqlStores]]]:
    """Two replicas' units of work: each its own engine and pool on the one database, as two
    marketing processes have."""
    other = Database(database.url, pool_size=20)
    yield [uow, SqlUnitOfWork(other, SqlStores)]
    other.dispose()
