"""The transactional outbox: effects another service must see are written in the same transaction
as the change that causes them, then delivered at least once by a relay beside the server.

The receiving RPCs are idempotent by the key each effect carries, so at-least-once delivery is
exactly-once in effect. A service that is down delays an effect; it never loses it. Several
replicas may relay one outbox: a row is leased before it is delivered, so they rarely collide,
and when a lease runs out mid-delivery the repeat is absorbed by the idempotency key.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection

from quanyu import tracing
from quanyu.db import Database, UtcDateTime, utcnow

log = structlog.get_logger("quanyu.outbox")

_SEQUENCE = BigInteger().with_variant(Integer(), "sqlite")
LEASE = timedelta(seconds=30)
MAX_BACKOFF_SECONDS = 60.0


class PermanentFailure(Exception):
    """The receiver refused the effect for good (it is malformed): retrying cannot help."""


def outbox_table(metadata: MetaData) -> Table:
    return Table(
        "outbox",
        metadata,
        Column("effect_id", _SEQUENCE, primary_key=True, autoincrement=True),
        Column("kind", String(64), nullable=False),
        Column("payload", Text, nullable=False),
        Column("create_time", UtcDateTime(), nullable=False),
        Column("attempts", Integer, nullable=False),
        Column("next_attempt_time", UtcDateTime(), nullable=False),
        Column("lease_until", UtcDateTime(), nullable=True),
        Column("delivered_time", UtcDateTime(), nullable=True),
        Column("failed", Integer, nullable=False),  # 1: refused for good, kept for ops to look at
        Column("last_error", Text, nullable=False),
        Index("ix_outbox_pending", "delivered_time", "failed", "next_attempt_time"),
    )


def add_effect(
    connection: Connection,
    table: Table,
    kind: str,
    payload: Mapping[str, Any],
    now: datetime,
    *,
    delay: timedelta = timedelta(0),
) -> None:
    """Record an effect in the caller's transaction: it is delivered only if that commits,
    and not before `delay` has passed."""
    connection.execute(
        insert(table).values(
            kind=kind,
            payload=json.dumps({**payload, **_trace_of_now()}, sort_keys=True),
            create_time=now,
            attempts=0,
            next_attempt_time=now + delay,
            lease_until=None,
            delivered_time=None,
            failed=0,
            last_error="",
        )
    )


def _trace_of_now() -> dict[str, dict[str, str]]:
    carrier = tracing.current_context()
    return {tracing.TRACE_KEY: carrier} if carrier else {}


@dataclass(frozen=True)
class OutboxState:
    undelivered: int
    failed: int
    oldest_undelivered: datetime | None

    def lag_seconds(self, now: datetime) -> float:
        return (now - self.oldest_undelivered).total_seconds() if self.oldest_undelivered else 0.0


Deliver = Callable[[dict[str, Any]], None]


class OutboxRelay:
    """Delivers a service's outbox in order of creation, retrying with backoff."""

    def __init__(
        self,
        database: Database,
        table: Table,
        deliverers: Mapping[str, Deliver],
        *,
        poll_seconds: float = 0.5,
        batch: int = 50,
    ) -> None:
        self._db = database
        self._table = table
        self._deliverers = dict(deliverers)
        self._poll_seconds = poll_seconds
        self._batch = batch
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="outbox-relay", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def wake(self) -> None:
        """Deliver now rather than at the next poll (called after a commit that added effects)."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                delivered_some = self.deliver_due() > 0
            except Exception:
                log.exception("outbox relay pass failed; retrying")
                delivered_some = False
            if not delivered_some:
                self._wake.wait(self._poll_seconds)
            self._wake.clear()

    def deliver_due(self) -> int:
        """One pass over the effects that are due; how many were delivered."""
        now = utcnow()
        table = self._table
        with self._db.snapshot() as connection:
            due = connection.execute(
                select(table.c.effect_id, table.c.kind, table.c.payload, table.c.attempts)
                .where(
                    table.c.delivered_time.is_(None),
                    table.c.failed == 0,
                    table.c.next_attempt_time <= now,
                    (table.c.lease_until.is_(None)) | (table.c.lease_until < now),
                )
                .order_by(table.c.effect_id)
                .limit(self._batch)
            ).all()
        delivered = 0
        for effect_id, kind, payload, attempts in due:
            if self._stopping.is_set():
                break
            # Leased from now, not from the start of the pass: a hung call before it may have
            # taken longer than a lease.
            if not self._lease(effect_id, utcnow()):
                continue
            delivered += self._deliver_one(effect_id, kind, json.loads(payload), attempts)
        return delivered

    def _lease(self, effect_id: int, now: datetime) -> bool:
        table = self._table
        with self._db.transaction() as connection:
            taken = connection.execute(
                update(table)
                .where(
                    table.c.effect_id == effect_id,
                    table.c.delivered_time.is_(None),
                    (table.c.lease_until.is_(None)) | (table.c.lease_until < now),
                )
                .values(lease_until=now + LEASE)
            )
        return bool(taken.rowcount == 1)

    def _deliver_one(self, effect_id: int, kind: str, payload: dict[str, Any], attempts: int) -> int:
        table = self._table
        deliverer = self._deliverers.get(kind)
        try:
            if deliverer is None:
                raise PermanentFailure(f"no deliverer for effect kind {kind!r}")
            with tracing.continued(payload.pop(tracing.TRACE_KEY, None), f"outbox {kind}"):
                deliverer(payload)
        except PermanentFailure as refusal:
            log.error("outbox effect refused for good", effect_id=effect_id, kind=kind, error=str(refusal))
            self._finish(effect_id, failed=1, last_error=str(refusal)[:2000], attempts=attempts + 1)
            return 0
        except Exception as error:
            backoff = min(MAX_BACKOFF_SECONDS, 0.5 * 2**attempts)
            log.warning(
                "outbox delivery failed; will retry",
                effect_id=effect_id,
                kind=kind,
                attempt=attempts + 1,
                retry_in_s=backoff,
                error=str(error).splitlines()[0][:300],
            )
            with self._db.transaction() as connection:
                connection.execute(
                    update(table)
                    .where(table.c.effect_id == effect_id)
                    .values(
                        attempts=attempts + 1,
                        next_attempt_time=utcnow() + timedelta(seconds=backoff),
                        lease_until=None,
                        last_error=str(error)[:2000],
                    )
                )
            return 0
        self._finish(effect_id, delivered_time=utcnow(), attempts=attempts + 1)
        return 1

    def _finish(self, effect_id: int, **values: Any) -> None:
        with self._db.transaction() as connection:
            connection.execute(
                update(self._table)
                .where(self._table.c.effect_id == effect_id)
                .values(lease_until=None, **values)
            )

    def state(self) -> OutboxState:
        table = self._table
        with self._db.snapshot() as connection:
            pending = connection.execute(
                select(func.count(), func.min(table.c.create_time)).where(
                    table.c.delivered_time.is_(None), table.c.failed == 0
                )
            ).one()
            failed = connection.execute(select(func.count()).where(table.c.failed == 1)).scalar_one()
        return OutboxState(int(pending[0]), int(failed), pending[1])


def export_metrics(relay: OutboxRelay) -> None:
    """Outbox lag and backlog as Prometheus gauges, read from the database at scrape time."""
    from quanyu.metrics import gauge_from

    gauge_from(
        "quanyu_outbox_undelivered",
        "Effects written but not yet delivered",
        lambda: relay.state().undelivered,
    )
    gauge_from(
        "quanyu_outbox_failed", "Effects refused for good, waiting for ops", lambda: relay.state().failed
    )
    gauge_from(
        "quanyu_outbox_lag_seconds",
        "Age of the oldest undelivered effect",
        lambda: relay.state().lag_seconds(utcnow()),
    )
