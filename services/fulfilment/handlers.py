"""Fulfilment's use cases: stores, stock, assignment and its explanation, each one transaction."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import structlog
from sqlalchemy.engine import Connection

from quanyu.auth import Principal
from quanyu.db import Database, utcnow
from quanyu.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound, Violations
from quanyu.paging import PageTokens, page_size
from services.fulfilment.domain.assignment import (
    Assignment,
    AssignmentRequest,
    Availability,
    Decision,
    FulfilmentType,
    LocalClock,
    Reason,
    Verdict,
    at_capacity,
    covers,
    decide,
    static_reasons,
)
from services.fulfilment.domain.catalogue import CatalogueSnapshot, StoreCatalogue
from services.fulfilment.domain.geodesy import geodesic_distance_m
from services.fulfilment.domain.stores import Store, StoreDraft, StoreStatus, validate_store
from services.fulfilment.metrics import ASSIGNMENTS
from services.fulfilment.storage import (
    Contended,
    LiveLoad,
    ReservationRepository,
    StockLevel,
    StockRepository,
    StoreRepository,
    verdicts_from,
)

log = structlog.get_logger("quanyu.fulfilment")

MAX_SKU_LENGTH = 64
MAX_STORE_ID_LENGTH = 64
MAX_EXCLUDED_STORES = 500
MAX_LINES = 200
MAX_IMPORT_BATCH = 1000
# Levels a SetStock call sets, SKUs a GetStock call names: a store's whole range fits in a few
# calls, and no one call holds the stock table long.
MAX_STOCK_LEVELS = 1000
_ASSIGN_ATTEMPTS = 6
DEFAULT_NEAREST_LIMIT = 10
MAX_NEAREST_LIMIT = 100


class LiveCatalogue:
    """The catalogue snapshot of this replica, refreshed from the database.

    Another replica's store changes arrive through the store revision within one refresh
    period; this replica's own writes are applied at once.
    """

    def __init__(self, database: Database, *, refresh_seconds: float = 0.5) -> None:
        self._db = database
        self._builder = StoreCatalogue()
        self._refresh_seconds = refresh_seconds
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        with database.snapshot() as connection:
            everything, self._revision = StoreRepository(connection).all()
        self.snapshot: CatalogueSnapshot = self._builder.build(everything)

    def refresh(self) -> None:
        with self._lock:
            with self._db.snapshot() as connection:
                changed, newest = StoreRepository(connection).changed_since(self._revision)
            if changed:
                self.snapshot = self._builder.update(self.snapshot, changed)
                self._revision = newest

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="catalogue-refresh", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self._refresh_seconds):
            try:
                self.refresh()
            except Exception:
                log.exception("catalogue refresh failed; retrying")


@dataclass(frozen=True)
class StoreMatch:
    store: Store
    distance_m: float
    can_fulfil: bool
    reasons: list[str]


@dataclass(frozen=True)
class Explanation:
    order_id: str
    decide_time: datetime
    fulfilment_type: str
    location: tuple[float, float] | None
    assignments: list[Assignment]
    verdicts: list[Verdict]
    outcome_reason: str


@dataclass(frozen=True)
class RowError:
    index: int
    field: str
    description: str


class FulfilmentService:
    def __init__(
        self, database: Database, catalogue: LiveCatalogue, page_tokens: PageTokens, *, pickup_radius_m: float
    ) -> None:
        self._db = database
        self._catalogue = catalogue
        self._pages = page_tokens
        self._pickup_radius_m = pickup_radius_m

    # --- stores ---------------------------------------------------------------------------

    def upsert_store(self, draft: StoreDraft) -> Store:
        store = validate_store(draft)
        self._write_stores([store])
        return store

    def import_stores(self, drafts: Sequence[StoreDraft]) -> tuple[int, list[RowError]]:
        """Load the valid rows of a batch and report the others; a repeated id is an error."""
        if len(drafts) > MAX_IMPORT_BATCH:
            raise InvalidArgument("stores", f"at most {MAX_IMPORT_BATCH} stores per call")
        good: list[Store] = []
        errors: list[RowError] = []
        seen: set[str] = set()
        for index, draft in enumerate(drafts):
            try:
                store = validate_store(draft, field=f"stores[{index}]")
            except InvalidArgument as error:
                errors += [RowError(index, v.field, v.description) for v in error.violations]
                continue
            if store.store_id in seen:
                errors.append(
                    RowError(index, f"stores[{index}].store_id", "repeats an earlier row of this batch")
                )
                continue
            seen.add(store.store_id)
            good.append(store)
        self._write_stores(good)
        return len(good), errors

    def _write_stores(self, batch: list[Store]) -> None:
        if not batch:
            return
        now = utcnow()
        self._db.run(lambda connection: StoreRepository(connection).upsert(batch, now))
        self._catalogue.refresh()

    def get_store(self, store_id: str) -> Store:
        _require_id(store_id, "store_id")
        with self._db.snapshot() as connection:
            store = StoreRepository(connection).get(store_id)
        if store is None:
            raise NotFound("store", store_id)
        return store

    def list_stores(self, principal: Principal, requested_size: int, token: str) -> tuple[list[Store], str]:
        size = page_size(requested_size)
        caller = f"{principal.role.value}:{principal.subject}"
        position = self._pages.decode(token, query={}, caller=caller)
        after = str(position["after"]) if position else ""
        with self._db.snapshot() as connection:
            page = StoreRepository(connection).page(after, size + 1)
        more = len(page) > size
        page = page[:size]
        next_token = self._pages.encode({"after": page[-1].store_id}, query={}, caller=caller) if more else ""
        return page, next_token

    # --- stock ----------------------------------------------------------------------------

    def set_stock(
        self, principal: Principal, store_id: str, levels: Sequence[tuple[str, int]]
    ) -> list[StockLevel]:
        violations = Violations()
        violations.text(store_id, "store_id", max_length=MAX_STORE_ID_LENGTH)
        violations.check(bool(levels), "levels", "name at least one SKU")
        if len(levels) > MAX_STOCK_LEVELS:
            violations.add("levels", f"at most {MAX_STOCK_LEVELS} levels a call")
            levels = ()
        seen: set[str] = set()
        for index, (sku, on_hand) in enumerate(levels):
            violations.text(sku, f"levels[{index}].sku", max_length=MAX_SKU_LENGTH)
            violations.check(sku not in seen, f"levels[{index}].sku", "repeats an earlier level")
            violations.check(on_hand >= 0, f"levels[{index}].on_hand", "must not be negative")
            seen.add(sku)
        violations.raise_if_any()
        principal.require_store(store_id)
        wanted = dict(levels)

        def work(connection: Connection) -> list[StockLevel]:
            if not StoreRepository(connection).exists(store_id):
                raise NotFound("store", store_id)
            repo = StockRepository(connection)
            below = repo.set_on_hand(store_id, wanted, utcnow())
            if below:
                raise FailedPrecondition(
                    f"on hand would fall below what open orders have reserved for {', '.join(below)}; "
                    "release or complete those orders first",
                    reason="BELOW_RESERVED",
                    metadata={"skus": ",".join(below)},
                )
            return repo.levels(store_id, list(wanted))

        return self._db.run(work)

    def get_stock(self, principal: Principal, store_id: str, skus: Sequence[str]) -> list[StockLevel]:
        violations = Violations()
        violations.text(store_id, "store_id", max_length=MAX_STORE_ID_LENGTH)
        if len(skus) > MAX_STOCK_LEVELS:
            violations.add("skus", f"at most {MAX_STOCK_LEVELS} SKUs a call")
            skus = ()
        for index, sku in enumerate(skus):
            violations.text(sku, f"skus[{index}]", max_length=MAX_SKU_LENGTH)
        violations.raise_if_any()
        principal.require_store(store_id)
        with self._db.snapshot() as connection:
            if not StoreRepository(connection).exists(store_id):
                raise NotFound("store", store_id)
            return StockRepository(connection).levels(store_id, list(skus))

    # --- choosing stores --------------------------------------------------------------------

    def find_nearest(
        self,
        location: tuple[float, float],
        *,
        limit: int,
        max_distance_m: float,
        lines: Sequence[tuple[str, int]],
        fulfilment_type: FulfilmentType,
        at: datetime,
    ) -> list[StoreMatch]:
        if limit < 0:
            raise InvalidArgument("limit", "must not be negative")
        if max_distance_m < 0 or math.isnan(max_distance_m):
            raise InvalidArgument("max_distance_m", "must not be negative")
        wanted = min(limit or DEFAULT_NEAREST_LIMIT, MAX_NEAREST_LIMIT)
        snapshot = self._catalogue.snapshot
        request = AssignmentRequest("", location, (), fulfilment_type, at)
        demand: dict[str, int] = {}
        for sku, quantity in lines:
            demand[sku] = demand.get(sku, 0) + quantity
        nearest = snapshot.nearest(*location, max_distance_m=max_distance_m or math.inf)
        found = [next(nearest, None) for _ in range(wanted)]
        candidates = [c for c in found if c is not None]
        with self._db.snapshot() as connection:
            live = LiveLoad(connection).availability([c.store.store_id for c in candidates], sorted(demand))
        clock = LocalClock(at)
        matches = []
        for candidate in candidates:
            reasons = static_reasons(candidate, request, clock)
            availability = live.get(candidate.store.store_id, Availability(0, {}))
            if at_capacity(candidate.entry, availability):
                reasons.append(Reason.AT_CAPACITY)
            if demand and not covers(availability, demand):
                reasons.append(Reason.INSUFFICIENT_STOCK)
            matches.append(
                StoreMatch(candidate.store, candidate.distance, not reasons, [str(r) for r in reasons])
            )
        return matches

    def assign(self, request: AssignmentRequest) -> list[Assignment]:
        """Choose and reserve, idempotently by order id; FAILED_PRECONDITION when none can."""
        snapshot = self._catalogue.snapshot
        if request.preferred_store_id and snapshot.get(request.preferred_store_id) is None:
            raise NotFound("store", request.preferred_store_id, reason="PREFERRED_STORE_NOT_FOUND")

        def attempt(connection: Connection) -> tuple[list[Assignment], Decision | None]:
            # One transaction reads, decides and writes. On SQLite it holds the write lock from the
            # start, so nothing can change under the decision; on PostgreSQL the conditional
            # updates in reserve() catch stock or capacity taken meanwhile (Contended: decide again).
            reservations = ReservationRepository(connection)
            state = reservations.state_of(request.order_id)
            if state is not None:
                held = reservations.held(request.order_id)
                if held:
                    return held, None  # asked before (or by a concurrent call that got there first)
            decision = decide(snapshot, request, LiveLoad(connection), pickup_radius_m=self._pickup_radius_m)
            now = utcnow()
            if decision.assigned:
                reservations.reserve(
                    request.order_id,
                    decision.assignments,
                    request.fulfilment_type.value,
                    now,
                    known=state is not None,
                )
            reservations.record(
                request.order_id, request.fulfilment_type.value, request.location, decision, now
            )
            return decision.assignments, decision

        try:
            placed, decision = self._db.run(attempt, attempts=_ASSIGN_ATTEMPTS, retry_on=(Contended,))
        except Contended as exc:
            raise Aborted("other orders kept taking the stock chosen; retry", reason="CONTENDED") from exc
        if decision is not None:
            ASSIGNMENTS.labels(decision.outcome.value if decision.outcome else "ASSIGNED").inc()
        if decision is not None and decision.outcome is not None:
            raise FailedPrecondition(
                _OUTCOME_MESSAGES[decision.outcome],
                reason=decision.outcome.value,
                metadata={"order_id": request.order_id},
            )
        return placed

    def open_reservations(self) -> int:
        """Orders holding stock now, across every store (a gauge for ops)."""
        with self._db.snapshot() as connection:
            return ReservationRepository(connection).active_orders()

    def release(self, order_id: str, store_id: str) -> int:
        violations = Violations()
        violations.text(order_id, "order_id", max_length=64)
        violations.text(store_id, "store_id", max_length=64, required=False)
        violations.raise_if_any()
        return self._db.run(lambda c: ReservationRepository(c).release(order_id, store_id, utcnow()))

    def commit(self, order_id: str) -> None:
        _require_id(order_id, "order_id")

        def work(connection: Connection) -> None:
            reservations = ReservationRepository(connection)
            state = reservations.state_of(order_id)
            if state is None:
                raise NotFound("reservation", order_id, reason="RESERVATION_NOT_FOUND")
            committed, already = reservations.commit(order_id, utcnow())
            if committed == 0 and already == 0:
                raise FailedPrecondition(
                    "the order's reservation was released; assign it again first",
                    reason="RESERVATION_RELEASED",
                )

        self._db.run(work)

    def is_open(self, principal: Principal, store_id: str, at: datetime) -> bool:
        """Open for business at `at`: ACTIVE and within its hours, on its own clock."""
        _require_id(store_id, "store_id")
        principal.require_store(store_id)
        entry = self._catalogue.snapshot.get(store_id)
        if entry is None:
            raise NotFound("store", store_id)
        return entry.store.status is StoreStatus.ACTIVE and LocalClock(at).is_open(entry)

    def explain(self, order_id: str) -> Explanation:
        _require_id(order_id, "order_id")
        with self._db.snapshot() as connection:
            row = ReservationRepository(connection).latest_decision(order_id)
        if row is None:
            raise NotFound("assignment decision", order_id)
        placed, verdicts = verdicts_from(json.loads(row.detail))
        location = (row.latitude, row.longitude) if row.latitude is not None else None
        for verdict in verdicts:
            if verdict.distance_m is None and location is not None:
                verdict.distance_m = geodesic_distance_m(
                    location[0], location[1], verdict.latitude, verdict.longitude
                )
        # Nearest first, as the contract lists them: stores ruled out early were noted first.
        verdicts.sort(key=lambda v: (v.distance_m if v.distance_m is not None else float("inf"), v.store_id))
        return Explanation(
            order_id, row.decide_time, row.fulfilment_type, location, placed, verdicts, row.outcome_reason
        )


_OUTCOME_MESSAGES = {
    "NO_STORE_IN_RANGE": "no active store covers this location",
    "NO_STORE_OPEN": "the stores that cover this location are closed at this time",
    "AT_CAPACITY": "the open stores that cover this location are at capacity",
    "INSUFFICIENT_STOCK": "no store that could serve has stock for every line",
}


def _require_id(value: str, field_name: str) -> None:
    violations = Violations()
    violations.text(value, field_name, max_length=MAX_STORE_ID_LENGTH)
    violations.raise_if_any()
