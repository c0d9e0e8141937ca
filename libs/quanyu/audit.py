"""The audit trail of privileged actions: a table in each service's database, written as the
action is served, and read by ops through `quanyu.common.v1.AuditService`.

A service names the RPCs it audits (`Audited`): the action, the object a request names, and the
roles whose calls are recorded. The server records a call once it has succeeded and before its
answer leaves: if the record cannot be kept, the caller is answered UNAVAILABLE and retries (every
audited write is idempotent by its key), so no answered action is missing from the trail.
Services that write a record in the same transaction as the action (identity) use `add_record`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import grpc
from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, insert, select
from sqlalchemy.engine import Connection

from quanyu.auth import Role
from quanyu.common.v1 import audit_pb2, audit_pb2_grpc
from quanyu.db import Database, UtcDateTime
from quanyu.errors import Violations
from quanyu.wire import to_timestamp

MAX_PAGE = 500
DEFAULT_PAGE = 100
AUDIT_SERVICE = audit_pb2.DESCRIPTOR.services_by_name["AuditService"]


@dataclass(frozen=True)
class AuditRecord:
    """A privileged action: who, when, which request, what was done to which object."""

    time: datetime
    actor: str
    action: str
    object: str
    request_id: str
    detail: str = ""
    record_id: int = 0  # assigned when kept


@dataclass(frozen=True)
class Audited:
    """How one RPC is recorded: its action, the object its request names, and whose calls count
    (None: every caller's)."""

    action: str
    object_of: Callable[[Any], str]
    roles: frozenset[Role] | None = None
    detail_of: Callable[[Any], str] = lambda _: ""


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

    def __init__(self, database: Database, table: Table, clock: Callable[[], datetime]) -> None:
        self._database, self._table, self._clock = database, table, clock

    def add(self, record: AuditRecord) -> None:
        with self._database.transaction() as connection:
            add_record(connection, self._table, record)

    def record(self, action: str, target: str, actor: str, request_id: str, detail: str = "") -> None:
        self.add(AuditRecord(self._clock(), actor, action, target, request_id, detail))

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
