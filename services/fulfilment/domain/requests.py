"""What each request of fulfilment asks, checked once: every problem is reported in one answer,
each at the field path google.rpc.BadRequest gives it (`lines[2].sku`, `location.latitude`).

The transport hands in plain values: a location as its map gave it, enums by their names ("" for
unspecified, anything else for a value this service does not know), and these checks say what is
wrong with them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

from quanyu.errors import Violations, field_path
from services.fulfilment.domain.assignment import AssignmentRequest, FulfilmentType, Line, NearestQuery
from services.fulfilment.domain.coordinates import MapPoint, wgs84_of

MAX_ID_LENGTH = 64
MAX_SKU_LENGTH = 64
MAX_EXCLUDED_STORES = 500
MAX_LINES = 200
# Levels a SetStock call sets, SKUs a GetStock call names: a store's whole range fits in a few
# calls, and no one call holds the stock table long.
MAX_STOCK_LEVELS = 1000
# Orders a BatchCommitReservations call commits: each is a few statements in one transaction, so
# a call stays well inside its deadline while orders' outbox works off a backlog.
MAX_COMMITS = 100
DEFAULT_NEAREST_LIMIT = 10
MAX_NEAREST_LIMIT = 100

_TYPES = frozenset(FulfilmentType)


def commits(order_ids: Sequence[str]) -> None:
    """A BatchCommitReservations (AIP-233): 1 to MAX_COMMITS requests, each order id checked as
    CommitReservation checks it, named `requests[i].order_id`; every problem in one answer."""
    violations = Violations()
    if not order_ids:
        violations.add("requests", "at least one request is needed")
    elif len(order_ids) > MAX_COMMITS:
        violations.add("requests", f"at most {MAX_COMMITS} requests a call")
    else:
        for index, order_id in enumerate(order_ids):
            violations.text(
                order_id, field_path(field_path("requests", index), "order_id"), max_length=MAX_ID_LENGTH
            )
    violations.raise_if_any()


def require_id(value: str, field_name: str, *, required: bool = True) -> None:
    """An id a request names (a store, an order)."""
    violations = Violations()
    violations.text(value, field_name, max_length=MAX_ID_LENGTH, required=required)
    violations.raise_if_any()


def nearest_query(
    location: MapPoint | None,
    *,
    limit: int,
    max_distance_m: float,
    lines: Sequence[Line],
    fulfilment_type: str,
    at: datetime,
) -> NearestQuery:
    """FindNearestStores; an unspecified fulfilment type is a pickup."""
    violations = Violations()
    where = _location(location, violations)
    if location is None:
        violations.add("location", "is required")
    checked = _lines(lines, violations, required=False)
    kind = _type(fulfilment_type) if fulfilment_type else FulfilmentType.PICKUP
    violations.check(kind is not None, "fulfilment_type", "is not a known fulfilment type")
    violations.check(limit >= 0, "limit", "must not be negative")
    violations.check(max_distance_m >= 0, "max_distance_m", "must not be negative")  # NaN too
    violations.raise_if_any()
    assert kind is not None
    return NearestQuery(
        AssignmentRequest("", where, checked, kind, at),
        limit=min(limit or DEFAULT_NEAREST_LIMIT, MAX_NEAREST_LIMIT),
        max_distance_m=max_distance_m or math.inf,
    )


def assignment_request(
    order_id: str,
    location: MapPoint | None,
    lines: Sequence[Line],
    fulfilment_type: str,
    at: datetime,
    *,
    exclude: Sequence[str] = (),
    preferred_store_id: str = "",
    allow_split: bool = False,
) -> AssignmentRequest:
    """AssignStore: a delivery needs the customer's location, a pickup that or a preferred
    store, an in-store order its till's store."""
    violations = Violations()
    violations.text(order_id, "order_id", max_length=MAX_ID_LENGTH)
    kind = _type(fulfilment_type)
    violations.check(kind is not None, "fulfilment_type", "must be DELIVERY, PICKUP or IN_STORE")
    where = _location(location, violations)
    if location is None and kind is FulfilmentType.DELIVERY:
        violations.add("location", "is required for delivery")
    if kind is FulfilmentType.IN_STORE and not preferred_store_id:
        violations.add("preferred_store_id", "is required for an in-store order")
    if kind is FulfilmentType.PICKUP and location is None and not preferred_store_id:
        violations.add("location", "give the customer's location or a preferred store for pickup")
    violations.text(preferred_store_id, "preferred_store_id", max_length=MAX_ID_LENGTH, required=False)
    if len(exclude) > MAX_EXCLUDED_STORES:
        violations.add("exclude_store_ids", f"at most {MAX_EXCLUDED_STORES} stores")
    else:
        for index, store_id in enumerate(exclude):
            violations.text(store_id, field_path("exclude_store_ids", index), max_length=MAX_ID_LENGTH)
    checked = _lines(lines, violations, required=True)
    violations.raise_if_any()
    assert kind is not None
    return AssignmentRequest(
        order_id=order_id,
        location=where,
        lines=checked,
        fulfilment_type=kind,
        at=at,
        exclude=frozenset(exclude),
        preferred_store_id=preferred_store_id,
        allow_split=allow_split,
    )


def stock_levels(store_id: str, levels: Sequence[tuple[str, int]]) -> dict[str, int]:
    """SetStock: on-hand units by SKU, each SKU once."""
    violations = Violations()
    violations.text(store_id, "store_id", max_length=MAX_ID_LENGTH)
    violations.check(bool(levels), "levels", "name at least one SKU")
    if len(levels) > MAX_STOCK_LEVELS:
        violations.add("levels", f"at most {MAX_STOCK_LEVELS} levels a call")
        levels = ()
    seen: set[str] = set()
    for index, (sku, on_hand) in enumerate(levels):
        level = violations.within("levels", index)
        level.text(sku, "sku", max_length=MAX_SKU_LENGTH)
        level.check(sku not in seen, "sku", "repeats an earlier level")
        level.check(on_hand >= 0, "on_hand", "must not be negative")
        seen.add(sku)
    violations.raise_if_any()
    return dict(levels)


def stock_query(store_id: str, skus: Sequence[str]) -> list[str]:
    """GetStock: the SKUs asked for (none: every SKU of the store)."""
    violations = Violations()
    violations.text(store_id, "store_id", max_length=MAX_ID_LENGTH)
    if len(skus) > MAX_STOCK_LEVELS:
        violations.add("skus", f"at most {MAX_STOCK_LEVELS} SKUs a call")
        skus = ()
    for index, sku in enumerate(skus):
        violations.text(sku, field_path("skus", index), max_length=MAX_SKU_LENGTH)
    violations.raise_if_any()
    return list(skus)


def release_request(order_id: str, store_id: str) -> None:
    """ReleaseReservation: an order, and one of its stores or (empty) all of them."""
    violations = Violations()
    violations.text(order_id, "order_id", max_length=MAX_ID_LENGTH)
    violations.text(store_id, "store_id", max_length=MAX_ID_LENGTH, required=False)
    violations.raise_if_any()


def _type(name: str) -> FulfilmentType | None:
    return FulfilmentType(name) if name in _TYPES else None


def _location(point: MapPoint | None, violations: Violations) -> tuple[float, float] | None:
    return None if point is None else wgs84_of(point, violations.within("location"))


def _lines(lines: Sequence[Line], violations: Violations, *, required: bool) -> tuple[Line, ...]:
    if required and not lines:
        violations.add("lines", "name at least one line")
    if len(lines) > MAX_LINES:
        violations.add("lines", f"at most {MAX_LINES} lines")
        return ()
    for index, line in enumerate(lines):
        checked = violations.within("lines", index)
        checked.text(line.sku, "sku", max_length=MAX_SKU_LENGTH)
        checked.check(line.quantity > 0, "quantity", "must be greater than zero")
        checked.check(line.unit_price_cents >= 0, "unit_price_cents", "must not be negative")
    return tuple(lines)
