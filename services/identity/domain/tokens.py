"""Revoked tokens and the audit trail of privileged actions, as identity keeps them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

MAX_TARGET_LENGTH = 128

# Audit actions: names, not secrets.
TOKEN_ISSUED = "TOKEN_ISSUED"  # noqa: S105
TOKEN_REVOKED = "TOKEN_REVOKED"  # noqa: S105
CUSTOMERS_MERGED = "CUSTOMERS_MERGED"


@dataclass(frozen=True)
class Revocation:
    """One token by its id, or every token of a subject issued at or before `issued_before`."""

    token_id: str
    subject: str
    issued_before: datetime
    revoke_time: datetime


@dataclass(frozen=True)
class Actor:
    """Who acts, as logs name the caller, and the request id of the call."""

    name: str
    request_id: str


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
