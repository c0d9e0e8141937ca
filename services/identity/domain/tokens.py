"""Revoked tokens, and the actions identity records on the audit trail (the shape of a record is
the kernel's: quanyu.audit_record)."""

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
