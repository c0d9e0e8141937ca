"""What the audit trail keeps of a privileged action, free of gRPC and SQL: a service's use case
builds the record from its actor and writes it through its own stores, in the transaction of the
action, so the record and the change commit together or not at all. `quanyu.audit` keeps the
records in a service's database and serves them to ops."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


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
class Actor:
    """Who acts, as logs name the caller, and the request id of the call."""

    name: str
    request_id: str

    def did(self, action: str, target: str, at: datetime, detail: str = "") -> AuditRecord:
        """The record of this actor's action on `target` at `at`."""
        return AuditRecord(at, self.name, action, target, self.request_id, detail)


class AuditTrail(Protocol):
    def add(self, record: AuditRecord) -> None:
        """Keep a record with the transaction's action."""
        ...
