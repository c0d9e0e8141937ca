"""Membership's storage: the tables (storage.tables) and the repositories that load and save the
domain's objects on one connection, gathered as the `Stores` of a transaction."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from functools import cached_property
from typing import Any

from sqlalchemy.engine import Connection

from quanyu.audit import AuditRecords
from quanyu.outbox import add_effect
from services.membership.storage.ledger import CouponRepository, LedgerRepository
from services.membership.storage.members import GuideRepository, MemberCodeRepository, MemberRepository
from services.membership.storage.tables import (
    audit_records,
    coupons,
    guides,
    ledger_entries,
    lot_draws,
    member_codes,
    member_customers,
    member_merges,
    member_tags,
    members,
    metadata,
    outbox,
    periodic_runs,
    point_lots,
)

__all__ = [
    "SqlStores",
    "coupons",
    "guides",
    "ledger_entries",
    "lot_draws",
    "member_codes",
    "member_customers",
    "member_merges",
    "member_tags",
    "members",
    "metadata",
    "outbox",
    "periodic_runs",
    "point_lots",
]


class EffectLog:
    """The outbox, on the transaction of the change an effect is recorded with."""

    def __init__(self, connection: Connection) -> None:
        self._db = connection

    def add(self, kind: str, payload: Mapping[str, Any], now: datetime) -> None:
        add_effect(self._db, outbox, kind, payload, now)


class SqlStores:
    """services.membership.ports.Stores on one connection; each repository built when first used."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    @cached_property
    def members(self) -> MemberRepository:
        return MemberRepository(self._connection)

    @cached_property
    def ledger(self) -> LedgerRepository:
        return LedgerRepository(self._connection)

    @cached_property
    def coupons(self) -> CouponRepository:
        return CouponRepository(self._connection)

    @cached_property
    def codes(self) -> MemberCodeRepository:
        return MemberCodeRepository(self._connection)

    @cached_property
    def guides(self) -> GuideRepository:
        return GuideRepository(self._connection)

    @cached_property
    def outbox(self) -> EffectLog:
        return EffectLog(self._connection)

    @cached_property
    def audit(self) -> AuditRecords:
        return AuditRecords(self._connection, audit_records)
