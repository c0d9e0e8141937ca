"""Marketing's storage: the tables (storage.tables) and the repositories that load and save on
one connection, gathered as the `Stores` of a transaction."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection

from quanyu.audit import AuditRecords
from quanyu.outbox import add_effect, add_effects
from services.marketing.storage.campaigns import BudgetRepository, CampaignRepository
from services.marketing.storage.coupons import CouponRepository
from services.marketing.storage.facts import FactRepository
from services.marketing.storage.grants import GrantRepository, RunRepository
from services.marketing.storage.messages import ConsentRepository, MessageRepository
from services.marketing.storage.tables import audit_records, metadata, outbox

# Where the service's migrations live (the other services name it in bootstrap).
MIGRATIONS = Path(__file__).parent.parent / "migrations"

__all__ = [
    "MIGRATIONS",
    "BudgetRepository",
    "CampaignRepository",
    "ConsentRepository",
    "EffectLog",
    "FactRepository",
    "GrantRepository",
    "MessageRepository",
    "RunRepository",
    "SqlStores",
    "metadata",
]


class EffectLog:
    """The outbox: effects on membership recorded in the transaction of the grant that has them."""

    def __init__(self, connection: Connection) -> None:
        self._db = connection

    def add(
        self, kind: str, payload: Mapping[str, Any], now: datetime, *, delay: timedelta = timedelta(0)
    ) -> None:
        add_effect(self._db, outbox, kind, payload, now, delay=delay)

    def add_many(self, effects: Sequence[tuple[str, Mapping[str, Any]]], now: datetime) -> None:
        add_effects(self._db, outbox, effects, now)


class SqlStores:
    """services.marketing.ports.Stores on one connection; each repository built when first used."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    @cached_property
    def campaigns(self) -> CampaignRepository:
        return CampaignRepository(self._connection)

    @cached_property
    def budgets(self) -> BudgetRepository:
        return BudgetRepository(self._connection)

    @cached_property
    def grants(self) -> GrantRepository:
        return GrantRepository(self._connection)

    @cached_property
    def messages(self) -> MessageRepository:
        return MessageRepository(self._connection)

    @cached_property
    def consents(self) -> ConsentRepository:
        return ConsentRepository(self._connection)

    @cached_property
    def facts(self) -> FactRepository:
        return FactRepository(self._connection)

    @cached_property
    def runs(self) -> RunRepository:
        return RunRepository(self._connection)

    @cached_property
    def coupons(self) -> CouponRepository:
        return CouponRepository(self._connection)

    @cached_property
    def outbox(self) -> EffectLog:
        return EffectLog(self._connection)

    @cached_property
    def audit(self) -> AuditRecords:
        return AuditRecords(self._connection, audit_records)
