"""Fulfilment's use cases: stores, stock, assignment and its explanation, each one unit of work."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass
from datetime import datetime

from quanyu.audit_record import Actor
from quanyu.auth import Principal, Role
from quanyu.errors import Aborted, FailedPrecondition, NotFound, in_request
from quanyu.paging import PageTokens, page_size
from quanyu.unit_of_work import Clock, ConcurrentChange, Transaction, UnitOfWork
from services.fulfilment.domain import requests
from services.fulfilment.domain.assignment import (
    Assignment,
    Decision,
    Line,
    StoreMatch,
    decide,
    nearest_matches,
    open_for_business,
)
from services.fulfilment.domain.coordinates import MapPoint
from services.fulfilment.domain.reservations import DecisionRecord, StockLevel
from services.fulfilment.domain.stores import (
    RowError,
    Store,
    StoreDraft,
    checked_batch,
    validate_store,
)
from services.fulfilment.metrics import ASSIGNMENTS
from services.fulfilment.ports import Catalogue, Stores

Tx = Transaction[Stores]

# Privileged actions, kept on the audit trail in the transaction that makes them. A till counting
# its own stock is its daily work, not one of them.
STORE_CHANGED = "STORE_CHANGED"
STORES_IMPORTED = "STORES_IMPORTED"
STOCK_SET = "STOCK_SET"
_UNNAMED = Actor("unnamed", "")


@dataclass
class FulfilmentService:
    uow: UnitOfWork[Stores]
    catalogue: Catalogue
    page_tokens: PageTokens
    clock: Clock
    _: KW_ONLY
    pickup_radius_m: float

    # --- stores ---------------------------------------------------------------------------

    def upsert_store(self, draft: StoreDraft | None, actor: Actor = _UNNAMED) -> Store:
        store = validate_store(draft)
        self._write_stores([store], actor, STORE_CHANGED, f"store:{store.store_id}")
        return store

    def import_stores(
        self, drafts: Sequence[StoreDraft], actor: Actor = _UNNAMED
    ) -> tuple[int, list[RowError]]:
        """Load the sound rows of a batch and report the others."""
        good, errors = checked_batch(drafts)
        target = "stores:" + ",".join(store.store_id for store in good)
        self._write_stores(good, actor, STORES_IMPORTED, target, f"{len(good)} stores")
        return len(good), errors

    def _write_stores(
        self, batch: list[Store], actor: Actor, action: str, target: str, detail: str = ""
    ) -> None:
        if not batch:
            return
        now = self.clock()

        def work(tx: Tx) -> None:
            tx.stores.stores.upsert(batch, now)
            tx.stores.audit.add(actor.did(action, target, now, detail))

        self.uow.run(work)
        self.catalogue.refresh()

    def get_store(self, store_id: str) -> Store:
        requests.require_id(store_id, "store_id")
        store = self.uow.read(lambda tx: tx.stores.stores.get(store_id))
        if store is None:
            raise NotFound("store", store_id)
        return store

    def list_stores(self, principal: Principal, requested_size: int, token: str) -> tuple[list[Store], str]:
        size = page_size(requested_size)
        caller = f"{principal.role.value}:{principal.subject}"
        position = self.page_tokens.decode(token, query={}, caller=caller)
        after = str(position["after"]) if position else ""
        page = self.uow.read(lambda tx: tx.stores.stores.page(after, size + 1))
        more = len(page) > size
        page = page[:size]
        next_token = (
            self.page_tokens.encode({"after": page[-1].store_id}, query={}, caller=caller) if more else ""
        )
        return page, next_token

    # --- stock ----------------------------------------------------------------------------

    def set_stock(
        self,
        principal: Principal,
        store_id: str,
        levels: Sequence[tuple[str, int]],
        actor: Actor = _UNNAMED,
    ) -> list[StockLevel]:
        wanted = requests.stock_levels(store_id, levels)
        principal.require_store(store_id)

        def work(tx: Tx) -> list[StockLevel]:
            _require_store(tx, store_id)
            now = self.clock()
            below = tx.stores.stock.set_on_hand(store_id, wanted, now)
            if below:
                raise FailedPrecondition(
                    f"on hand would fall below what open orders have reserved for {', '.join(below)}; "
                    "release or complete those orders first",
                    reason="BELOW_RESERVED",
                    metadata={"skus": ",".join(below)},
                )
            if principal.role is Role.OPS:
                tx.stores.audit.add(actor.did(STOCK_SET, f"store:{store_id}", now, f"{len(wanted)} skus"))
            return tx.stores.stock.levels(store_id, list(wanted))

        return self.uow.run(work)

    def get_stock(self, principal: Principal, store_id: str, skus: Sequence[str]) -> list[StockLevel]:
        wanted = requests.stock_query(store_id, skus)
        principal.require_store(store_id)

        def work(tx: Tx) -> list[StockLevel]:
            _require_store(tx, store_id)
            return tx.stores.stock.levels(store_id, wanted)

        return self.uow.read(work)

    # --- choosing stores --------------------------------------------------------------------

    def find_nearest(
        self,
        location: MapPoint | None,
        *,
        limit: int,
        max_distance_m: float,
        lines: Sequence[Line],
        fulfilment_type: str,
        at: datetime | None,
    ) -> list[StoreMatch]:
        """The nearest stores to a location (`at` None: now), each with whether it could serve."""
        query = requests.nearest_query(
            location,
            limit=limit,
            max_distance_m=max_distance_m,
            lines=lines,
            fulfilment_type=fulfilment_type,
            at=at or self.clock(),
        )
        snapshot = self.catalogue.snapshot
        return self.uow.read(lambda tx: nearest_matches(snapshot, query, tx.stores.load))

    def assign(
        self,
        order_id: str,
        location: MapPoint | None,
        lines: Sequence[Line],
        fulfilment_type: str,
        at: datetime | None,
        *,
        exclude: Sequence[str] = (),
        preferred_store_id: str = "",
        allow_split: bool = False,
    ) -> list[Assignment]:
        """Choose and reserve, idempotently by order id; FAILED_PRECONDITION when none can."""
        request = requests.assignment_request(
            order_id,
            location,
            lines,
            fulfilment_type,
            at or self.clock(),
            exclude=exclude,
            preferred_store_id=preferred_store_id,
            allow_split=allow_split,
        )
        snapshot = self.catalogue.snapshot
        if request.preferred_store_id and snapshot.get(request.preferred_store_id) is None:
            raise NotFound("store", request.preferred_store_id, reason="PREFERRED_STORE_NOT_FOUND")

        def attempt(tx: Tx) -> tuple[list[Assignment], Decision | None]:
            # One transaction reads, decides and writes. On SQLite it holds the write lock from the
            # start, so nothing can change under the decision; on PostgreSQL the conditional
            # updates of reserve() catch stock or capacity taken meanwhile (ConcurrentChange:
            # decide again).
            reservations = tx.stores.reservations
            state = reservations.state_of(request.order_id)
            if state is not None:
                held = reservations.held(request.order_id)
                if held:
                    return held, None  # asked before (or by a concurrent call that got there first)
            decision = decide(snapshot, request, tx.stores.load, pickup_radius_m=self.pickup_radius_m)
            now = self.clock()
            record = DecisionRecord.of(request, decision, now)
            if decision.assigned:
                known = state is not None
                kind = request.fulfilment_type.value
                reservations.reserve(
                    request.order_id, decision.assignments, kind, now, known=known, record=record
                )
            else:
                reservations.record(record)
            outcome = decision.outcome.value if decision.outcome else "ASSIGNED"
            tx.after_commit(ASSIGNMENTS.labels(outcome).inc)
            return decision.assignments, decision

        try:
            placed, decision = self.uow.run(attempt)
        except ConcurrentChange as exc:
            raise Aborted("other orders kept taking the stock chosen; retry", reason="CONTENDED") from exc
        if decision is not None and decision.outcome is not None:
            raise FailedPrecondition(
                decision.outcome.message,
                reason=decision.outcome.value,
                metadata={"order_id": request.order_id},
            )
        return placed

    def open_reservations(self) -> int:
        """Orders holding stock now, across every store (a gauge for ops)."""
        return self.uow.read(lambda tx: tx.stores.reservations.active_orders())

    def oldest_reservation_seconds(self) -> float:
        """How long the longest-held reservation has held its stock; 0 when none is open."""
        since = self.uow.read(lambda tx: tx.stores.reservations.oldest_active())
        return 0.0 if since is None else max(0.0, (self.clock() - since).total_seconds())

    def release(self, order_id: str, store_id: str) -> int:
        requests.release_request(order_id, store_id)
        return self.uow.run(lambda tx: tx.stores.reservations.release(order_id, store_id, self.clock()))

    def commit(self, order_id: str) -> None:
        requests.require_id(order_id, "order_id")
        self.uow.run(lambda tx: _commit(tx, order_id, self.clock()))

    def commit_many(self, order_ids: Sequence[str]) -> None:
        """Each order's reservation committed as `commit` commits it, in the order given, all in
        one transaction or none: orders' outbox commits the stock of many sales with one call and
        one commit. A refusal names the request it was for."""
        requests.commits(order_ids)

        def work(tx: Tx) -> None:
            now = self.clock()
            for index, order_id in enumerate(order_ids):
                in_request(index, lambda: _commit(tx, order_id, now))  # noqa: B023 - called at once

        self.uow.run(work)

    def is_open(self, principal: Principal, store_id: str, at: datetime | None) -> bool:
        """Open for business at `at` (None: now): ACTIVE and within its hours, on its own clock."""
        requests.require_id(store_id, "store_id")
        principal.require_store(store_id)
        entry = self.catalogue.snapshot.get(store_id)
        if entry is None:
            raise NotFound("store", store_id)
        return open_for_business(entry, at or self.clock())

    def explain(self, order_id: str) -> DecisionRecord:
        requests.require_id(order_id, "order_id")
        record = self.uow.read(lambda tx: tx.stores.reservations.latest_decision(order_id))
        if record is None:
            raise NotFound("assignment decision", order_id)
        return record.explained()


def _commit(tx: Tx, order_id: str, now: datetime) -> None:
    reservations = tx.stores.reservations
    if reservations.state_of(order_id) is None:
        raise NotFound("reservation", order_id, reason="RESERVATION_NOT_FOUND")
    committed, already = reservations.commit(order_id, now)
    if committed == 0 and already == 0:
        raise FailedPrecondition(
            "the order's reservation was released; assign it again first",
            reason="RESERVATION_RELEASED",
        )


def _require_store(tx: Tx, store_id: str) -> None:
    if not tx.stores.stores.exists(store_id):
        raise NotFound("store", store_id)
