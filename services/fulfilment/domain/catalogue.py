"""The in-memory catalogue of stores: a spatial index that lists stores nearest first, exactly.

It is a cache of the database, kept fresh by whoever owns it (see storage and handlers): a
snapshot is immutable, and a change produces a new snapshot, so a query never sees half an update.

Exactness: a k-d tree over the stores' geocentric unit vectors yields them in order of a rigorous
lower bound of the geodesic distance (b·angle, see geodesy). Every store also has an upper bound
(a·angle·(1+1e-5): the radial projection of the great-circle arc onto the ellipsoid is a path at
most that long, and the geodesic is the shortest path). Candidates are released in exact order of
(distance, -priority, store_id): the geodesic itself is computed only when two stores' bounds
overlap, or when a caller asks a candidate for its distance. A brute-force geodesic scan gives
the same order.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

from services.fulfilment.domain.geodesy import (
    EQUATORIAL_RADIUS_M,
    POLAR_RADIUS_M,
    geodesic_distance_m,
    unit_vector,
)
from services.fulfilment.domain.hours import OpeningHours, WeeklySchedule
from services.fulfilment.domain.stores import DeliveryZone, Store

# |dr/dψ| of the WGS-84 ellipsoid peaks near 21.4 km per radian, so a path along the radial
# projection of a great circle is at most a·θ·sqrt(1 + (21.4/6378)²) ≈ a·θ·(1 + 5.7e-6) long.
_UPPER_FACTOR = EQUATORIAL_RADIUS_M * (1.0 + 1e-5)
# Both bounds come from a chord between rounded unit vectors, off by a few 1e-16 radians (about a
# nanometre): this much slack keeps them bounds for points nanometres apart too.
_ROUNDING_M = 1e-6
_FIRST_BATCH = 16


@dataclass(frozen=True, slots=True)
class StoreEntry:
    """A store with what assignment needs precomputed: its zone, schedule and direction."""

    store: Store
    zone: DeliveryZone
    schedule: WeeklySchedule
    unit: tuple[float, float, float]

    @property
    def store_id(self) -> str:
        return self.store.store_id


class Candidate:
    """A store met on the way out from a location, with its distance bounds, lazily exact."""

    __slots__ = ("_distance", "entry", "latitude", "longitude", "lower", "upper")

    def __init__(self, entry: StoreEntry, latitude: float, longitude: float, angle: float) -> None:
        self.entry = entry
        self.latitude = latitude
        self.longitude = longitude
        self.lower = max(0.0, POLAR_RADIUS_M * angle - _ROUNDING_M)
        self.upper = _UPPER_FACTOR * angle + _ROUNDING_M
        self._distance: float | None = None

    @property
    def store(self) -> Store:
        return self.entry.store

    @property
    def distance(self) -> float:
        """The geodesic distance in metres from the location to the store."""
        if self._distance is None:
            store = self.entry.store
            self._distance = geodesic_distance_m(
                self.latitude, self.longitude, store.latitude, store.longitude
            )
            self.lower = self.upper = self._distance
        return self._distance

    def within(self, limit_m: float) -> bool:
        """distance <= limit_m, computing the geodesic only when the bounds cannot tell."""
        if self.upper <= limit_m:
            return True
        if self.lower > limit_m:
            return False
        return self.distance <= limit_m

    def in_zone(self) -> bool:
        zone = self.entry.zone
        if zone.is_polygon:
            return zone.covers(self.latitude, self.longitude, self.lower)
        return zone.radius_m > 0 and self.within(zone.radius_m)

    def sort_key(self) -> tuple[float, int, str]:
        return (self.distance, -self.entry.store.priority, self.entry.store.store_id)


# A judge says why a store cannot serve (a reason), or None when it may.
Judge = Callable[[Candidate], str | None]


class _Schedules:
    """Stores with the same hours share one schedule: a million stores, a few hundred shapes."""

    def __init__(self) -> None:
        self._known: dict[tuple[OpeningHours, ...], WeeklySchedule] = {}

    def of(self, hours: tuple[OpeningHours, ...]) -> WeeklySchedule:
        schedule = self._known.get(hours)
        if schedule is None:
            schedule = self._known[hours] = WeeklySchedule(hours)
        return schedule


@dataclass(frozen=True)
class _Tree:
    """The k-d tree part of a snapshot, built once over many stores."""

    entries: tuple[StoreEntry, ...]
    tree: cKDTree | None

    @classmethod
    def build(cls, entries: Iterable[StoreEntry]) -> _Tree:
        ordered = tuple(entries)
        if not ordered:
            return cls((), None)
        points = np.array([e.unit for e in ordered], dtype=np.float64)
        return cls(ordered, cKDTree(points, leafsize=32, balanced_tree=False, compact_nodes=False))


@dataclass(frozen=True)
class CatalogueSnapshot:
    """All stores at one moment: a tree over most of them plus the recent changes beside it.

    `recent` holds stores added or changed since the tree was built (None: removed). They are
    measured directly on every query until the next rebuild folds them into the tree.
    """

    base: _Tree
    recent: dict[str, StoreEntry | None] = field(default_factory=dict)
    reach_m: float = 0.0

    def get(self, store_id: str) -> StoreEntry | None:
        if store_id in self.recent:
            return self.recent[store_id]
        return self._base_ids().get(store_id)

    def _base_ids(self) -> dict[str, StoreEntry]:
        cached: dict[str, StoreEntry] | None = getattr(self, "_ids", None)
        if cached is None:
            cached = {e.store_id: e for e in self.base.entries}
            object.__setattr__(self, "_ids", cached)
        return cached

    def __len__(self) -> int:
        stale = sum(1 for store_id in self.recent if store_id in self._base_ids())
        fresh = sum(1 for entry in self.recent.values() if entry is not None)
        return len(self.base.entries) - stale + fresh

    def entries(self) -> Iterator[StoreEntry]:
        for entry in self.base.entries:
            if entry.store_id not in self.recent:
                yield entry
        for maybe in self.recent.values():
            if maybe is not None:
                yield maybe

    def _by_lower_bound(
        self, unit: tuple[float, float, float], max_chord: float
    ) -> Iterator[tuple[float, StoreEntry]]:
        """(angle, store) in non-decreasing angle, for stores within max_chord of `unit`."""
        streams: list[Iterator[tuple[float, StoreEntry]]] = [self._from_tree(unit, max_chord)]
        if self.recent:
            near: list[tuple[float, StoreEntry]] = []
            for entry in self.recent.values():
                if entry is None:
                    continue
                chord = math.dist(unit, entry.unit)
                if chord <= max_chord:
                    near.append((_angle(chord), entry))
            near.sort(key=lambda pair: pair[0])
            streams.append(iter(near))
        return heapq.merge(*streams, key=lambda pair: pair[0])

    def _from_tree(
        self, unit: tuple[float, float, float], max_chord: float
    ) -> Iterator[tuple[float, StoreEntry]]:
        tree, entries, recent = self.base.tree, self.base.entries, self.recent
        if tree is None:
            return
        total = len(entries)
        # Stores at equal chords (several at one spot) may come back in a different order from
        # a larger query than from the last, so what was yielded is told by index, not position.
        # Any store not yet yielded is at least as far as every one that was.
        yielded: set[int] = set()
        k = _FIRST_BATCH
        bound = max_chord * (1 + 1e-12) + 1e-15
        while len(yielded) < total:
            k = min(k, total)
            chords, indexes = tree.query(unit, k=k, distance_upper_bound=bound)
            chords, indexes = np.atleast_1d(chords), np.atleast_1d(indexes)
            for chord, index in zip(chords.tolist(), indexes.tolist(), strict=True):
                if index >= total:  # past the distance bound: nothing further exists
                    return
                if index in yielded:
                    continue
                yielded.add(index)
                entry = entries[index]
                if entry.store_id not in recent:
                    yield _angle(chord), entry
            if k == total:
                return
            k *= 4

    def nearest(
        self,
        latitude: float,
        longitude: float,
        *,
        max_distance_m: float = math.inf,
        judge: Judge | None = None,
    ) -> Iterator[Candidate]:
        """Stores within max_distance_m in exact (distance, -priority, store_id) order.

        `judge` runs on each store met, before any ordering work: one it gives a reason for is
        left out (the judge keeps its own record of why).
        """
        unit = unit_vector(latitude, longitude)
        reach_m = max_distance_m + _ROUNDING_M  # as the lower bound has it
        max_chord = 2.0 if reach_m >= math.pi * POLAR_RADIUS_M else _chord(reach_m / POLAR_RADIUS_M)
        stream = self._by_lower_bound(unit, max_chord)

        def admitted() -> Candidate | None:
            for angle, entry in stream:
                candidate = Candidate(entry, latitude, longitude, angle)
                if judge is None or judge(candidate) is None:
                    return candidate
            return None

        pending: list[Candidate] = []
        upcoming = admitted()
        while pending or upcoming is not None:
            if not pending:
                pending.append(upcoming)  # type: ignore[arg-type]
                upcoming = admitted()
            # Bring in every store that could come before the best pending one. Once the next
            # store's lower bound exceeds `floor`, it and all after it are strictly farther
            # than some pending store, so they can neither win nor tie.
            floor = min(c.upper for c in pending)
            while upcoming is not None and upcoming.lower <= floor:
                pending.append(upcoming)
                floor = min(floor, upcoming.upper)
                upcoming = admitted()
            contenders = [c for c in pending if c.lower <= floor]
            best = contenders[0] if len(contenders) == 1 else min(contenders, key=Candidate.sort_key)
            pending.remove(best)
            if not best.within(max_distance_m):
                return
            yield best


def _angle(chord: float) -> float:
    return 2.0 * math.asin(min(1.0, chord / 2.0))


def _chord(angle: float) -> float:
    return 2.0 * math.sin(min(math.pi, angle) / 2.0)


class StoreCatalogue:
    """Builds snapshots: from scratch, or from the last one and a batch of changes."""

    def __init__(self, *, rebuild_after: int = 2048) -> None:
        self._schedules = _Schedules()
        self._rebuild_after = rebuild_after

    def entry(self, store: Store) -> StoreEntry:
        return StoreEntry(
            store=store,
            zone=DeliveryZone.of(store),
            schedule=self._schedules.of(store.opening_hours),
            unit=unit_vector(store.latitude, store.longitude),
        )

    def build(self, stores: Iterable[Store]) -> CatalogueSnapshot:
        entries = [self.entry(store) for store in stores]
        return CatalogueSnapshot(_Tree.build(entries), {}, _reach(entries))

    def update(
        self, snapshot: CatalogueSnapshot, changed: Iterable[Store], removed: Iterable[str] = ()
    ) -> CatalogueSnapshot:
        recent: dict[str, StoreEntry | None] = dict(snapshot.recent)
        for store in changed:
            recent[store.store_id] = self.entry(store)
        for store_id in removed:
            recent[store_id] = None
        merged = CatalogueSnapshot(snapshot.base, recent, snapshot.reach_m)
        if len(recent) > max(self._rebuild_after, len(snapshot.base.entries) // 50):
            entries = list(merged.entries())
            return CatalogueSnapshot(_Tree.build(entries), {}, _reach(entries))
        fresh = [e for e in recent.values() if e is not None]
        return CatalogueSnapshot(snapshot.base, recent, max(snapshot.reach_m, _reach(fresh)))


def _reach(entries: Iterable[StoreEntry]) -> float:
    """The farthest any store delivers: delivery searches stop there."""
    return max((e.zone.reach_m for e in entries), default=0.0)
