"""The audit trail as the tests read it: kept in memory for use cases tested without a database,
and read back from a service's database."""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy import MetaData, select

from quanyu.audit import audit_table
from quanyu.audit_record import AuditRecord
from quanyu.db import Database

_records = audit_table(MetaData())


class MemoryAudit:
    def __init__(self) -> None:
        self.kept: list[AuditRecord] = []

    def add(self, record: AuditRecord) -> None:
        self.kept.append(replace(record, record_id=len(self.kept) + 1))


def kept_records(database: Database) -> list[tuple[str, str, str, str]]:
    """(action, object, actor, request id) of every record in the service's trail, oldest first."""
    with database.snapshot() as connection:
        rows = connection.execute(
            select(_records.c.action, _records.c.object, _records.c.actor, _records.c.request_id).order_by(
                _records.c.record_id
            )
        )
        return [(r.action, r.object, r.actor, r.request_id) for r in rows]
