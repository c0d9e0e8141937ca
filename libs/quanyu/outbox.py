"""The transactional outbox: effects another service must see are written in the same transaction
as the change that causes them, then delivered at least once by a relay beside the server.

The receiving RPCs are idempotent by the key each effect carries, so at-least-once delivery is
exactly-once in effect. A service that is down delays an effect; it never loses it. Several
replicas may relay one outbox: a row is leased before it is delivered, so they rarely collide,
and when a lease runs out mid-delivery the repeat is absorbed by the idempotency key.

Effects bound for different services travel in lanes of their own, each with its own thread, so
a service that hangs (each call waiting out its deadline) holds up only the effects bound for it.

A kind of effect whose receiver takes many in one call (a batch RPC, AIP-233: all or none) may be
delivered in batches: a run of due effects of that kind is delivered in one call, and the batches
of a pass are leased with one statement and marked delivered with one more, instead of three
transactions and a call per effect. When the receiver refuses a batch for good, its effects are
delivered one by one, so one malformed effect is refused alone and the others go through.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import grpc
import structlog
from sqlalchemy import (
    Column,
    Index,
    Insert,
    Integer,
    MetaData,
    Select,
    String,
    Table,
    Text,
    bindparam,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection, Row

from quanyu import tracing
from quanyu.clients import failure_of
from quanyu.db import SEQUENCE, Database, UtcDateTime, utcnow
from quanyu.errors import QuanyuError, Unavailable

log = structlog.get_logger("quanyu.outbox")

LEASE = timedelta(seconds=30)
MAX_BACKOFF_SECONDS = 60.0
# Batches a lane leases with one write, delivers one after another and marks delivered with one
# more. On SQLite a process has one writer at a time: while a scheduled run commits page after
# page, the relay waits a page for each write it makes, and three writes a batch of 500 left it
# far behind the run's decisions.
BATCHES_A_PASS = 8
# A relay's writes (lease, delivered, backoff) go ahead of a busy process's request transactions
# for the writer (Database.transaction(ahead=True)): they are a few short writes a pass, and each
# waiting its turn behind every request thread left a lane seconds behind under order load.
# How often the unnamed lane looks for effects of kinds nobody delivers, when that is all it takes.
SWEEP_SECONDS = 30.0


class PermanentFailure(Exception):
    """The receiver refused the effect for good (it is malformed): retrying cannot help."""


def outbox_table(metadata: MetaData) -> Table:
    return Table(
        "outbox",
        metadata,
        Column("effect_id", SEQUENCE, primary_key=True, autoincrement=True),
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
        _insert_into(table),
        {
            "kind": kind,
            "payload": json.dumps({**payload, **_trace_of_now()}, sort_keys=True),
            "create_time": now,
            "attempts": 0,
            "next_attempt_time": now + delay,
            "lease_until": None,
            "delivered_time": None,
            "failed": 0,
            "last_error": "",
        },
    )


def add_effects(
    connection: Connection,
    table: Table,
    effects: Sequence[tuple[str, Mapping[str, Any]]],
    now: datetime,
) -> None:
    """add_effect for many effects, (kind, payload) each, in one statement: a use case that
    decides for a whole page of members at once records their effects as one executemany."""
    if not effects:
        return
    trace = _trace_of_now()
    connection.execute(
        _insert_into(table),
        [
            {
                "kind": kind,
                "payload": json.dumps({**payload, **trace}, sort_keys=True),
                "create_time": now,
                "attempts": 0,
                "next_attempt_time": now,
                "lease_until": None,
                "delivered_time": None,
                "failed": 0,
                "last_error": "",
            }
            for kind, payload in effects
        ],
    )


@functools.cache
def _insert_into(table: Table) -> Insert:
    # One statement per outbox table, built once: every state change with an effect adds a row.
    return insert(table)


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
# What a batch's receiver answered is handed to its BatchDeliverer's `keep`, if it has one.
DeliverMany = Callable[[list[dict[str, Any]]], object]
Keep = Callable[[Connection, Any], object]
Payloads = TypeVar("Payloads", dict[str, Any], list[dict[str, Any]])
Answer = TypeVar("Answer")


@dataclass(frozen=True)
class BatchDeliverer:
    """Delivers up to `size` effects of one kind in one call, all or none: `deliver_many` takes
    their payloads in the order they were written and raises as a single deliverer does (a
    PermanentFailure when the batch is refused for good). The kind's single deliverer is still
    needed: it delivers the effects of a refused batch one by one.

    `keep`, when given, records what `deliver_many` returned (codes the receiver made up, say) in
    the transaction that marks the batch delivered: kept if and only if the batch counts as
    delivered, with one write a batch instead of two."""

    deliver_many: DeliverMany
    size: int = 500
    keep: Keep | None = None

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError("a batch holds at least one effect")


def refusals_are_final(service: str, deliver: Callable[[Payloads], Answer]) -> Callable[[Payloads], Answer]:
    """`deliver` with every outbox's one rule for what the receiving service answered: a call that
    went unanswered (quanyu.clients.failure_of says which) is tried again later, while a refusal
    will not change on retry and is recorded as failed for ops to look at. `deliver` may raise a
    gRPC error of its call to `service` or the domain error it already made of one."""

    def guarded(payload: Payloads) -> Answer:
        try:
            return deliver(payload)
        except grpc.RpcError as error:
            failure = failure_of(service, error)
            if isinstance(failure, Unavailable):
                raise failure from error
            raise PermanentFailure(f"{failure.code.value} {failure.reason}: {failure.message}") from error
        except Unavailable:
            raise
        except QuanyuError as refusal:
            raise PermanentFailure(f"{refusal.code.value} {refusal.reason}: {refusal.message}") from refusal

    return guarded


class OutboxRelay:
    """Delivers a service's outbox within each lane in the order its effects fall due (the order
    they were written in, for effects never delayed nor retried), retrying with backoff.

    `lanes` names the kinds of effect that go together (those bound for one service); kinds no
    lane names share one more lane. Without lanes, every effect goes in one. `batched` names the
    kinds delivered in batches (BatchDeliverer), each also in `deliverers`: a run of consecutive
    due effects of such a kind in its lane goes in one call, so order within a lane still holds.
    """

    def __init__(
        self,
        database: Database,
        table: Table,
        deliverers: Mapping[str, Deliver],
        *,
        lanes: Mapping[str, Collection[str]] | None = None,
        poll_seconds: float = 0.5,
        batch: int = 50,
        batched: Mapping[str, BatchDeliverer] | None = None,
    ) -> None:
        self._db = database
        self._table = table
        self._deliverers = dict(deliverers)
        self._batched = dict(batched or {})
        unpaired = sorted(set(self._batched) - set(self._deliverers))
        if unpaired:
            raise ValueError(f"batched kinds {unpaired} need a single deliverer for a refused batch")
        self._poll_seconds = poll_seconds
        self._batch = batch
        self._lanes = _lanes(lanes or {})
        # Built once per relay, as each pass and each effect runs them: only parameters change.
        self._due = {name: self._due_query(kinds, others) for name, (kinds, others) in self._lanes.items()}
        self._one = update(table).where(table.c.effect_id == bindparam("effect"))
        unleased = (
            table.c.delivered_time.is_(None),
            (table.c.lease_until.is_(None)) | (table.c.lease_until < bindparam("now")),
        )
        self._lease_one = self._one.where(*unleased)
        some = table.c.effect_id.in_(bindparam("effects", expanding=True))
        # Which of a batch this relay took: another relay may have leased some since they were read.
        self._lease_some = (
            update(table)
            .where(some, *unleased)
            .values(lease_until=bindparam("lease_until"))
            .returning(table.c.effect_id)
        )
        self._delivered_some = (
            update(table)
            .where(some)
            .values(delivered_time=bindparam("at"), attempts=table.c.attempts + 1, lease_until=None)
        )
        self._release_some = update(table).where(some).values(lease_until=None)
        self._wakes = {name: threading.Event() for name in self._lanes}
        # When the named lanes take every kind there is a deliverer for, the unnamed lane only
        # ever finds kinds nobody delivers, to refuse them: it need not be woken by each commit,
        # and looked for often it would read every pending effect each time (it selects by the
        # kinds it does not take), seconds a pass behind a campaign's million.
        self._sweeps_only = bool(lanes) and set(self._deliverers) <= set().union(*(lanes or {}).values())
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for name in self._lanes:
            thread = threading.Thread(
                target=self._run, args=(name,), name=f"outbox-relay-{name}".rstrip("-"), daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stopping.set()
        for wake in self._wakes.values():
            wake.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def wake(self) -> None:
        """Deliver now rather than at the next poll (called after a commit that added effects)."""
        for name, wake in self._wakes.items():
            if name or not self._sweeps_only:
                wake.set()

    def _run(self, lane: str) -> None:
        wake = self._wakes[lane]
        poll = SWEEP_SECONDS if not lane and self._sweeps_only else self._poll_seconds
        while not self._stopping.is_set():
            try:
                delivered_some = self._deliver_lane(lane) > 0
            except Exception:
                log.exception("outbox relay pass failed; retrying", lane=lane)
                delivered_some = False
            if not delivered_some:
                wake.wait(poll)
            wake.clear()

    def deliver_due(self) -> int:
        """One pass over the effects that are due, lane after lane; how many were delivered."""
        return sum(self._deliver_lane(lane) for lane in self._lanes)

    def _due_query(self, kinds: Collection[str], others: Collection[str]) -> Select[Any]:
        """A lane's effects due at `now`, soonest due first: undelivered, not failed, not leased;
        as many as BATCHES_A_PASS of its largest batches hold, for a pass to lease together."""
        table = self._table
        batched = [
            b.size for kind, b in self._batched.items() if (kind in kinds if kinds else kind not in others)
        ]
        query = (
            select(table.c.effect_id, table.c.kind, table.c.payload, table.c.attempts)
            .where(
                table.c.delivered_time.is_(None),
                table.c.failed == 0,
                table.c.next_attempt_time <= bindparam("now"),
                (table.c.lease_until.is_(None)) | (table.c.lease_until < bindparam("now")),
            )
            # Walks the pending index in its own order and stops at the limit: ordered by effect id
            # alone, the database would sort every pending effect on each pass (a campaign leaves
            # a million). For an effect never retried, due order is creation order.
            .order_by(table.c.next_attempt_time, table.c.effect_id)
            .limit(max([self._batch, *(BATCHES_A_PASS * size for size in batched)]))
        )
        if kinds:
            return query.where(table.c.kind.in_(sorted(kinds)))
        if others:
            return query.where(table.c.kind.not_in(sorted(others)))
        return query

    def _deliver_lane(self, lane: str) -> int:
        with self._db.snapshot() as connection:
            due = connection.execute(self._due[lane], {"now": utcnow()}).all()
        delivered = 0
        batches: list[tuple[str, list[Row[Any]]]] = []
        for kind, run in _runs(due, self._batched):
            if kind in self._batched:
                batches.append((kind, run))
                continue
            # The batches due before an effect delivered alone go before it.
            delivered += self._deliver_batches(batches)
            batches = []
            if self._stopping.is_set():
                break
            (row,) = run
            # Leased from now, not from the start of the pass: a hung call before it may have
            # taken longer than a lease.
            if self._lease(row.effect_id, utcnow()):
                delivered += self._deliver_one(row.effect_id, kind, json.loads(row.payload), row.attempts)
        return delivered + self._deliver_batches(batches)

    def _deliver_batches(self, batches: Sequence[tuple[str, list[Row[Any]]]]) -> int:
        """Consecutive batches of a pass: leased with one write, delivered one call after another,
        and those answered marked delivered with one more write (which also keeps what their
        deliverers keep of the answers), two writes for up to BATCHES_A_PASS calls. A batch
        refused for good is then delivered one by one; one unanswered is tried again later, and
        the batches after it, not sent, are given back, to go after it."""
        if not batches or self._stopping.is_set():
            return 0
        leased_at = utcnow()
        with self._db.transaction(ahead=True) as connection:
            taken = set(
                connection.execute(
                    self._lease_some,
                    {
                        "effects": [row.effect_id for _, run in batches for row in run],
                        "now": leased_at,
                        "lease_until": leased_at + LEASE,
                    },
                ).scalars()
            )
        # Another relay may have leased some since they were read.
        leased = [(kind, kept) for kind, run in batches if (kept := [r for r in run if r.effect_id in taken])]
        answered: list[tuple[str, list[Row[Any]], object]] = []
        failed: tuple[str, list[Row[Any]], Exception] | None = None
        unsent: list[Row[Any]] = []
        for index, (kind, run) in enumerate(leased):
            # A call is begun with at least half the lease ahead of it, as a single batch's is.
            if self._stopping.is_set() or utcnow() - leased_at > LEASE / 2:
                unsent = [row for _, rest in leased[index:] for row in rest]
                break
            try:
                answered.append((kind, run, self._call(kind, run)))
            except Exception as error:
                failed = (kind, run, error)
                unsent = [row for _, rest in leased[index + 1 :] for row in rest]
                break
        if answered or unsent:
            with self._db.transaction(ahead=True) as connection:
                for kind, _, answer in answered:
                    keep = self._batched[kind].keep
                    if keep is not None:
                        keep(connection, answer)
                if answered:
                    ids = [row.effect_id for _, run, _ in answered for row in run]
                    connection.execute(self._delivered_some, {"effects": ids, "at": utcnow()})
                if unsent:
                    connection.execute(self._release_some, {"effects": [row.effect_id for row in unsent]})
        delivered = sum(len(run) for _, run, _ in answered)
        if failed is None:
            return delivered
        kind, run, failure = failed
        if isinstance(failure, PermanentFailure):
            log.warning(
                "outbox batch refused; delivering its effects one by one",
                kind=kind,
                effects=len(run),
                error=str(failure)[:300],
            )
            return delivered + self._deliver_each(kind, run)
        self._back_off(kind, run, failure)
        return delivered

    def _call(self, kind: str, run: list[Row[Any]]) -> object:
        """One batch's call to its receiver; what it answered."""
        payloads = [json.loads(row.payload) for row in run]
        traces = [payload.pop(tracing.TRACE_KEY, None) for payload in payloads]
        with tracing.continued(next(filter(None, traces), None), f"outbox {kind} x{len(run)}"):
            return self._batched[kind].deliver_many(payloads)

    def _deliver_each(self, kind: str, run: list[Row[Any]]) -> int:
        """A refused batch's effects as single effects are delivered: each leased afresh when its
        turn comes (the batch's lease may run out before the last), each refused or retried on
        its own."""
        with self._db.transaction(ahead=True) as connection:
            connection.execute(self._release_some, {"effects": [row.effect_id for row in run]})
        delivered = 0
        for row in run:
            if self._stopping.is_set() or not self._lease(row.effect_id, utcnow()):
                continue
            delivered += self._deliver_one(row.effect_id, kind, json.loads(row.payload), row.attempts)
        return delivered

    def _back_off(self, kind: str, run: list[Row[Any]], error: Exception) -> None:
        attempts = max(row.attempts for row in run)
        backoff = min(MAX_BACKOFF_SECONDS, 0.5 * 2**attempts)
        log.warning(
            "outbox batch delivery failed; will retry",
            kind=kind,
            effects=len(run),
            attempt=attempts + 1,
            retry_in_s=backoff,
            error=str(error).splitlines()[0][:300] if str(error) else type(error).__name__,
        )
        retry_at = utcnow() + timedelta(seconds=backoff)
        with self._db.transaction(ahead=True) as connection:
            connection.execute(
                self._one,
                [
                    {
                        "effect": row.effect_id,
                        "attempts": row.attempts + 1,
                        "next_attempt_time": retry_at,
                        "lease_until": None,
                        "last_error": str(error)[:2000],
                    }
                    for row in run
                ],
            )

    def _lease(self, effect_id: int, now: datetime) -> bool:
        with self._db.transaction(ahead=True) as connection:
            taken = connection.execute(
                self._lease_one, {"effect": effect_id, "now": now, "lease_until": now + LEASE}
            )
        return bool(taken.rowcount == 1)

    def _deliver_one(self, effect_id: int, kind: str, payload: dict[str, Any], attempts: int) -> int:
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
            with self._db.transaction(ahead=True) as connection:
                connection.execute(
                    self._one,
                    {
                        "effect": effect_id,
                        "attempts": attempts + 1,
                        "next_attempt_time": utcnow() + timedelta(seconds=backoff),
                        "lease_until": None,
                        "last_error": str(error)[:2000],
                    },
                )
            return 0
        self._finish(effect_id, delivered_time=utcnow(), attempts=attempts + 1)
        return 1

    def _finish(self, effect_id: int, **values: Any) -> None:
        with self._db.transaction(ahead=True) as connection:
            connection.execute(self._one, {"effect": effect_id, "lease_until": None, **values})

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


def _runs(
    due: Sequence[Row[Any]], batched: Mapping[str, BatchDeliverer]
) -> Iterator[tuple[str, list[Row[Any]]]]:
    """The due effects as runs to deliver in turn, in the order they were written: each run of
    consecutive effects of a batched kind cut into batches of its size, every other effect alone."""
    run: list[Row[Any]] = []
    for row in due:
        if run and (row.kind != run[0].kind or len(run) == batched[run[0].kind].size):
            yield run[0].kind, run
            run = []
        if row.kind in batched:
            run.append(row)
        else:
            yield row.kind, [row]
    if run:
        yield run[0].kind, run


def _lanes(named: Mapping[str, Collection[str]]) -> dict[str, tuple[frozenset[str], frozenset[str]]]:
    """Each lane as (its kinds, kinds it leaves to others): a named lane takes its kinds; the
    last, unnamed lane takes every kind no named lane takes (an unknown kind included, which is
    then refused for good rather than left undelivered unseen)."""
    claimed: dict[str, str] = {}
    for name, kinds in named.items():
        if not name or not kinds:
            raise ValueError("a lane needs a name and at least one kind")
        for kind in kinds:
            if kind in claimed:
                raise ValueError(f"effect kind {kind!r} is in lanes {claimed[kind]!r} and {name!r}")
            claimed[kind] = name
    taken = frozenset(claimed)
    lanes = {name: (frozenset(kinds), frozenset[str]()) for name, kinds in named.items()}
    lanes[""] = (frozenset(), taken)
    return lanes


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
