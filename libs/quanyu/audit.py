"""The audit trail of privileged actions: a table in each service's database, read by ops through
`quanyu.common.v1.AuditService`.

A use case writes the record of its action (`quanyu.audit_record`) through its stores, in the
transaction of the action (`AuditRecords` on the transaction's connection): the record and the
change commit together, so no change is kept without its record, and a crash between the two
cannot lose one.
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc
from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, insert, select
from sqlalchemy.engine import Connection

from quanyu.audit_record import AuditRecord
from quanyu.auth import Role
from quanyu.common.v1 import audit_pb2, audit_pb2_grpc
from quanyu.db import Database, UtcDateTime
from quanyu.errors import Violations
from quanyu.wire import to_timestamp

MAX_PAGE = 500
DEFAULT_PAGE = 100
AUDIT_SERVICE = audit_pb2.DESCRIPTOR.services_by_name["AuditService"]


def audit_table(metadata: MetaData) -> Table:
    """The `audit_records` table of a service's database (its migration creates the same)."""
    ids = BigInteger().with_variant(Integer(), "sqlite")
    return Table(
        "audit_records",
        metadata,
        Column("record_id", ids, primary_key=True, autoincrement=True),
        Column("time", UtcDateTime(), nullable=False),
        Column("actor", String(160), nullable=False),
        Column("action", String(48), nullable=False),
        Column("object", String(200), nullable=False),
        Column("request_id", String(128), nullable=False),
        Column("detail", String(500), nullable=False, default=""),
    )


def add_record(connection: Connection, table: Table, record: AuditRecord) -> None:
    """Keep a record in the transaction of `connection` (it commits with the action)."""
    connection.execute(
        insert(table).values(
            time=record.time,
            actor=record.actor[:160],
            action=record.action[:48],
            object=record.object[:200],
            request_id=record.request_id[:128],
            detail=record.detail[:500],
        )
    )


class AuditRecords:
    """The trail on one transaction's connection: a record added commits with the transaction."""

    def __init__(self, connection: Connection, table: Table) -> None:
        self._connection, self._table = connection, table

    def add(self, record: AuditRecord) -> None:
        add_record(self._connection, self._table, record)


def page_of(connection: Connection, table: Table, before_id: int | None, limit: int) -> list[AuditRecord]:
    query = select(table).order_by(table.c.record_id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(table.c.record_id < before_id)
    return [
        AuditRecord(
            r["time"], r["actor"], r["action"], r["object"], r["request_id"], r["detail"], r["record_id"]
        )
        for r in connection.execute(query).mappings()
    ]


class AuditLog:
    """The trail in one service's database."""

    def __init__(self, database: Database, table: Table) -> None:
        self._database, self._table = database, table

    def page(self, page_size: int, page_token: str) -> tuple[list[AuditRecord], str]:
        violations = Violations()
        violations.check(0 <= page_size <= MAX_PAGE, "page_size", f"must be between 0 and {MAX_PAGE}")
        before = int(page_token) if page_token.isdigit() and len(page_token) < 19 else None
        violations.check(
            not page_token or before is not None, "page_token", "is not a page token of this list"
        )
        violations.raise_if_any()
        limit = page_size or DEFAULT_PAGE
        with self._database.snapshot() as connection:
            # One more than the page: whether another page follows is known, not guessed.
            records = page_of(connection, self._table, before, limit + 1)
        following = str(records[limit - 1].record_id) if len(records) > limit else ""
        return records[:limit], following


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    """`quanyu.common.v1.AuditService` over a service's trail."""

    POLICY: Mapping[str, frozenset[Role]] = {
        f"/{AUDIT_SERVICE.full_name}/ListAuditRecords": frozenset({Role.OPS})
    }

    def __init__(self, log: AuditLog) -> None:
        self._log = log

    def add_to(self, server: grpc.Server) -> None:
        audit_pb2_grpc.add_AuditServiceServicer_to_server(self, server)

    def ListAuditRecords(  # noqa: N802 - the RPC's name
        self, request: audit_pb2.ListAuditRecordsRequest, context: grpc.ServicerContext
    ) -> audit_pb2.ListAuditRecordsResponse:
        records, following = self._log.page(request.page_size, request.page_token)
        return audit_pb2.ListAuditRecordsResponse(
            records=[
                audit_pb2.AuditRecord(
                    record_id=str(r.record_id),
                    time=to_timestamp(r.time),
                    actor=r.actor,
                    action=r.action,
                    object=r.object,
                    request_id=r.request_id,
                    detail=r.detail,
                )
                for r in records
            ],
            next_page_token=following,
        )
