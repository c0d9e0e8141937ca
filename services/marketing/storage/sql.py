"""Statements both databases need spelled their own way."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection


def insert_new(connection: Connection, table: Table, values: Mapping[str, Any]) -> bool:
    """Insert a row unless its key is taken; True when it was inserted. A clash is not an error:
    on PostgreSQL a failed insert would abort the whole transaction, and these callers expect
    the row to exist often (an event delivered twice, a member seen again)."""
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    # RETURNING says whether a row went in; the drivers' rowcount is not reliable for this.
    key = next(iter(table.primary_key.columns))
    statement = dialect.insert(table).values(**values).on_conflict_do_nothing().returning(key)
    return connection.execute(statement).first() is not None


def insert_new_rows(connection: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> list[Any]:
    """`insert_new` for many rows in one statement: the keys of those inserted."""
    if not rows:
        return []
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    key = next(iter(table.primary_key.columns))
    statement = dialect.insert(table).values(list(rows)).on_conflict_do_nothing().returning(key)
    return list(connection.execute(statement).scalars())
