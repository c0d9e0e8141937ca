"""Choosing the store (or stores) that fulfil an order: the heart of fulfilment.

Pure rules over a catalogue snapshot and a view of the stores' live load (open orders and
available stock) that the caller reads from the database in small batches, nearest first.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from services.fulfilment.domain.catalogue import Candidate, CatalogueSnapshot, StoreEntry
from services.fulfilment.domain.geodesy import unit_vector
from services.fulfilment.domain.hours import local_time
from services.fulfilment.domain.stores import Store, StoreStatus

# The nearest stores a split may combine, and the most stores one order is split across.
SPLIT_POOL = 20
MAX_SPLIT_STORES = 4
# Candidates recorded per decision: enough to explain it, bounded so a record stays small.
MAX_RECORDED_VERDICTS = 100


class FulfilmentType(StrEnum):
    DELIVERY = "DELIVERY"
    PICKUP = "PICKUP"
    IN_STORE = "IN_STORE"


class Reason(StrEnum):
    """Why a store cannot serve, or lost to another."""

    OUT_OF_ZONE = "OUT_OF_ZONE"
    CLOSED = "CLOSED"
    PAUSED = "PAUSED"
    AT_CAPACITY = "AT_CAPACITY"
    INSUFFICIENT_STOCK = "INSUFFICIENT_STOCK"
    EXCLUDED = "EXCLUDED"
    FARTHER = "FARTHER"


class Outcome(StrEnum):
    """Why nothing qualified: the furthest step any store got past, in this order."""

    NO_STORE_IN_RANGE = "NO_STORE_IN_RANGE"
    NO_STORE_OPEN = "NO_STORE_OPEN"
    AT_CAPACITY = "AT_CAPACITY"
    INSUFFICIENT_STOCK = "INSUFFICIENT_STOCK"

    @property
    def message(self) -> str:
        """What the caller is told, for a person."""
        return _OUTCOME_MESSAGES[self]


_OUTCOME_MESSAGES = {
    Outcome.NO_STORE_IN_RANGE: "no active store covers this location",
    Outcome.NO_STORE_OPEN: "the stores that cover this location are closed at this time",
    Outcome.AT_CAPACITY: "the open stores that cover this location are at capacity",
    Outcome.INSUFFICIENT_STOCK: "no store that could serve has stock for every line",
}

_STAGE_OF = {
    Reason.EXCLUDED: 0,
    Reason.PAUSED: 0,
    Reason.OUT_OF_ZONE: 0,
    Reason.CLOSED: 1,
    Reason.AT_CAPACITY: 2,
    Reason.INSUFFICIENT_STOCK: 3,
}
_OUTCOMES = (
    Outcome.NO_STORE_IN_RANGE,
    Outcome.NO_STORE_OPEN,
    Outcome.AT_CAPACITY,
    Outcome.INSUFFICIENT_STOCK,
)


@dataclass(frozen=True)
class Line:
    sku: str
    quantity: int
    unit_price_cents: int = 0


@dataclass(frozen=True)
class AssignmentRequest:
    order_id: str
    location: tuple[float, float] | None  # WGS-84 (latitude, longitude)
    lines: tuple[Line, ...]
    fulfilment_type: FulfilmentType
    at: datetime
    exclude: frozenset[str] = frozenset()
    preferred_store_id: str = ""
    allow_split: bool = False

    def demand(self) -> dict[str, int]:
        """Units wanted per SKU (an order may name one SKU on several lines)."""
        wanted: dict[str, int] = {}
        for line in self.lines:
            wanted[line.sku] = wanted.get(line.sku, 0) + line.quantity
        return wanted


@dataclass(frozen=True)
class Availability:
    open_orders: int
    stock: Mapping[str, int]  # available units (on hand minus reserved) per SKU


class StoreLoad(Protocol):
    """The live part of eligibility, read in batches: open orders and available stock."""

    def availability(self, store_ids: Sequence[str], skus: Sequence[str]) -> Mapping[str, Availability]: ...


@dataclass(frozen=True)
class Assignment:
    store_id: str
    distance_m: float
    lines: tuple[Line, ...]


@dataclass
class Verdict:
    """One store considered for a decision: chosen, or the reasons it was not."""

    store_id: str
    latitude: float
    longitude: float
    distance_m: float | None  # None: never measured exactly (the explainer measures it)
    chosen: bool = False
    reasons: list[str] = field(default_factory=list)


@dataclass
class Decision:
    assignments: list[Assignment]
    verdicts: list[Verdict]
    outcome: Outcome | None  # None when assigned

    @property
    def assigned(self) -> bool:
        return bool(self.assignments)


def at_capacity(entry: StoreEntry, availability: Availability) -> bool:
    limit = entry.store.max_active_orders
    return limit > 0 and availability.open_orders >= limit


def covers(availability: Availability, demand: Mapping[str, int]) -> bool:
    return all(availability.stock.get(sku, 0) >= units for sku, units in demand.items())


def static_reasons(candidate: Candidate, request: AssignmentRequest, clock: LocalClock) -> Iterator[Reason]:
    """Every rule that rules a store out before any stock is read, in the order they apply:
    the choice stops at the first, FindNearestStores lists them all."""
    store = candidate.store
    if store.store_id in request.exclude:
        yield Reason.EXCLUDED
    if store.status is StoreStatus.PAUSED:
        yield Reason.PAUSED
    elif store.status is StoreStatus.CLOSED:
        yield Reason.CLOSED
    if request.fulfilment_type is FulfilmentType.DELIVERY and not candidate.in_zone():
        yield Reason.OUT_OF_ZONE
    if store.status is not StoreStatus.CLOSED and not clock.is_open(candidate.entry):
        yield Reason.CLOSED


def load_reasons(
    entry: StoreEntry, availability: Availability, demand: Mapping[str, int]
) -> Iterator[Reason]:
    """The rules on a store's live load, after the static ones: room for one more order, then
    stock for every line."""
    if at_capacity(entry, availability):
        yield Reason.AT_CAPACITY
    if not covers(availability, demand):
        yield Reason.INSUFFICIENT_STOCK


@dataclass(frozen=True)
class NearestQuery:
    """FindNearestStores: the nearest stores to a location, each with whether it could take an
    order of these lines at this time, and why not."""

    request: AssignmentRequest  # the order it would be (no id, nothing excluded)
    limit: int  # how many stores, at most
    max_distance_m: float  # math.inf: no limit


@dataclass(frozen=True)
class StoreMatch:
    store: Store
    distance_m: float
    can_fulfil: bool
    reasons: list[str]


def nearest_matches(snapshot: CatalogueSnapshot, query: NearestQuery, load: StoreLoad) -> list[StoreMatch]:
    """The stores nearest first, each judged by the rules the choice applies, every reason named."""
    request = query.request
    assert request.location is not None
    nearest = snapshot.nearest(*request.location, max_distance_m=query.max_distance_m)
    candidates = list(itertools.islice(nearest, query.limit))
    demand = request.demand()
    live = load.availability([c.store.store_id for c in candidates], sorted(demand))
    clock = LocalClock(request.at)
    matches = []
    for candidate in candidates:
        availability = live.get(candidate.store.store_id, Availability(0, {}))
        reasons = [
            *static_reasons(candidate, request, clock),
            *load_reasons(candidate.entry, availability, demand),
        ]
        matches.append(
            StoreMatch(candidate.store, candidate.distance, not reasons, [str(r) for r in reasons])
        )
    return matches


class LocalClock:
    """The request's time in each store's own zone, worked out once per zone."""

    def __init__(self, at: datetime) -> None:
        self._at = at
        self._zones: dict[str, tuple[int, int]] = {}

    def is_open(self, entry: StoreEntry) -> bool:
        if entry.schedule.always_open:
            return True
        zone = entry.store.timezone
        local = self._zones.get(zone)
        if local is None:
            local = self._zones[zone] = local_time(self._at, zone)
        return entry.schedule.is_open(*local)


def open_for_business(entry: StoreEntry, at: datetime) -> bool:
    """ACTIVE and within its hours at `at`, on the store's own clock (CheckStoreOpen)."""
    return entry.store.status is StoreStatus.ACTIVE and LocalClock(at).is_open(entry)


class _Deliberation:
    """One decision in progress: the stores weighed, the furthest step any got past, and the
    stores with part of the order (what a split may combine)."""

    def __init__(self, request: AssignmentRequest, load: StoreLoad) -> None:
        self.request = request
        self.load = load
        self.demand = request.demand()
        self.skus = sorted(self.demand)
        self.clock = LocalClock(request.at)
        self.verdicts: list[Verdict] = []
        self.furthest = 0
        self.partial: list[tuple[Candidate, Availability]] = []

    def note(self, candidate: Candidate, reason: Reason | None, *, chosen: bool = False) -> None:
        if reason is not None:
            # A store closed for good is CLOSED too, but it is out of range, not shut for now.
            active = candidate.store.status is StoreStatus.ACTIVE
            self.furthest = max(self.furthest, _STAGE_OF.get(reason, 0) if active else 0)
        if len(self.verdicts) < MAX_RECORDED_VERDICTS:
            store = candidate.store
            # Only what was measured anyway is recorded exactly; the explainer measures the rest.
            exact = candidate.distance if chosen or candidate.lower == candidate.upper else None
            self.verdicts.append(
                Verdict(
                    store.store_id, store.latitude, store.longitude, exact, chosen, [reason] if reason else []
                )
            )

    def candidates(self, snapshot: CatalogueSnapshot, pickup_radius_m: float) -> Iterator[Candidate]:
        """The stores that pass the static rules: the preferred pickup store first, then the
        rest nearest first, within delivery reach or the pickup radius."""
        request = self.request
        preferred = ""
        if request.preferred_store_id and request.fulfilment_type is FulfilmentType.PICKUP:
            entry = snapshot.get(request.preferred_store_id)
            if entry is not None:
                preferred = entry.store_id
                candidate = _candidate_at(entry, request.location)
                reason = next(static_reasons(candidate, request, self.clock), None)
                if reason is None:
                    yield candidate
                else:
                    self.note(candidate, reason)
        if request.location is None:
            return

        def judge(candidate: Candidate) -> str | None:
            if candidate.store.store_id == preferred:
                return "WEIGHED"
            reason = next(static_reasons(candidate, request, self.clock), None)
            if reason is not None:
                self.note(candidate, reason)
            return reason

        delivery = request.fulfilment_type is FulfilmentType.DELIVERY
        reach = snapshot.reach_m if delivery else pickup_radius_m
        yield from snapshot.nearest(*request.location, max_distance_m=reach, judge=judge)

    def weigh(self, batch: Sequence[Candidate]) -> Candidate | None:
        """Read the batch's live load; the first store (nearest first) that can serve, if any."""
        live = self.load.availability([c.store.store_id for c in batch], self.skus)
        for index, candidate in enumerate(batch):
            availability = live.get(candidate.store.store_id, Availability(0, {}))
            reason = next(load_reasons(candidate.entry, availability, self.demand), None)
            if reason is not None:
                self.note(candidate, reason)
                if reason is Reason.INSUFFICIENT_STOCK and any(
                    availability.stock.get(sku, 0) > 0 for sku in self.skus
                ):
                    self.partial.append((candidate, availability))
            else:
                self.note(candidate, None, chosen=True)
                for later in batch[index + 1 :]:
                    self.note(later, Reason.FARTHER)
                return candidate
        return None

    def outcome(self) -> Outcome:
        return _OUTCOMES[self.furthest]


def decide(
    snapshot: CatalogueSnapshot,
    request: AssignmentRequest,
    load: StoreLoad,
    *,
    pickup_radius_m: float,
) -> Decision:
    """The store(s) for an order, or why there is none, exactly as ARCHITECTURE.md describes."""
    if request.fulfilment_type is FulfilmentType.IN_STORE:
        return _decide_in_store(snapshot, request, load)
    deliberation = _Deliberation(request, load)
    stream = deliberation.candidates(snapshot, pickup_radius_m)
    # Live load is read a few stores at a time: the nearest usually serves, and when many
    # cannot (closed at night, sold out) the batches grow so the reads stay few.
    size = 4
    while batch := list(itertools.islice(stream, size)):
        winner = deliberation.weigh(batch)
        if winner is not None:
            return Decision(
                [Assignment(winner.store.store_id, winner.distance, request.lines)],
                deliberation.verdicts,
                None,
            )
        size = min(size * 4, 256)
    if request.allow_split:
        split = _split(deliberation.partial[:SPLIT_POOL], request)
        if split:
            chosen = {a.store_id for a in split}
            for verdict in deliberation.verdicts:
                if verdict.store_id in chosen:
                    verdict.chosen, verdict.reasons = True, []
            return Decision(split, deliberation.verdicts, None)
    return Decision([], deliberation.verdicts, deliberation.outcome())


def _decide_in_store(snapshot: CatalogueSnapshot, request: AssignmentRequest, load: StoreLoad) -> Decision:
    """A till sale takes stock off its own shelf: no zone, hours or capacity apply."""
    entry = snapshot.get(request.preferred_store_id)
    if entry is None:
        return Decision([], [], Outcome.NO_STORE_IN_RANGE)
    candidate = _candidate_at(entry, request.location)
    demand = request.demand()
    availability = load.availability([entry.store_id], sorted(demand)).get(
        entry.store_id, Availability(0, {})
    )
    store = entry.store
    if not covers(availability, demand):
        verdict = Verdict(
            store.store_id,
            store.latitude,
            store.longitude,
            candidate.distance,
            False,
            [Reason.INSUFFICIENT_STOCK],
        )
        return Decision([], [verdict], Outcome.INSUFFICIENT_STOCK)
    verdict = Verdict(store.store_id, store.latitude, store.longitude, candidate.distance, True, [])
    return Decision([Assignment(store.store_id, candidate.distance, request.lines)], [verdict], None)


def _candidate_at(entry: StoreEntry, location: tuple[float, float] | None) -> Candidate:
    """A store measured from the customer; with no location, from the store itself (0 m)."""
    latitude, longitude = location if location is not None else (entry.store.latitude, entry.store.longitude)
    angle = 2.0 * math.asin(min(1.0, math.dist(entry.unit, unit_vector(latitude, longitude)) / 2.0))
    return Candidate(entry, latitude, longitude, angle)


def _split(pool: list[tuple[Candidate, Availability]], request: AssignmentRequest) -> list[Assignment]:
    """The fewest stores that together cover every line, preferring the nearest.

    Combinations are tried smallest first and, within a size, in nearest-first order, so the
    first that covers the order is the answer. Each line is taken from the nearest store of the
    combination that has it, spilling to the next when one store has too few.
    """
    demand = request.demand()
    for size in range(2, min(MAX_SPLIT_STORES, len(pool)) + 1):
        for combination in itertools.combinations(pool, size):
            if all(
                sum(a.stock.get(sku, 0) for _, a in combination) >= units for sku, units in demand.items()
            ):
                allocation = _allocate(combination, request.lines)
                if len(allocation) == size:
                    return allocation
    return []


def _allocate(
    combination: Sequence[tuple[Candidate, Availability]], lines: Sequence[Line]
) -> list[Assignment]:
    left = {c.store.store_id: dict(a.stock) for c, a in combination}
    taken: dict[str, list[Line]] = {}
    for line in lines:
        wanted = line.quantity
        for candidate, _ in combination:
            store_id = candidate.store.store_id
            units = min(wanted, left[store_id].get(line.sku, 0))
            if units > 0:
                left[store_id][line.sku] -= units
                taken.setdefault(store_id, []).append(Line(line.sku, units, line.unit_price_cents))
                wanted -= units
            if wanted == 0:
                break
    return [
        Assignment(c.store.store_id, c.distance, tuple(taken[c.store.store_id]))
        for c, _ in combination
        if c.store.store_id in taken
    ]
