"""Stock held for orders: the states of a reservation, the levels a till reads, and the record
of each assignment decision as ExplainAssignment tells it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from services.fulfilment.domain.assignment import Assignment, AssignmentRequest, Decision, Verdict
from services.fulfilment.domain.geodesy import geodesic_distance_m


class ReservationState(StrEnum):
    """Of one line of an order at one store, and of the order as a whole (stored as these
    words)."""

    ACTIVE = "ACTIVE"  # holds stock and a place in the store's open orders
    RELEASED = "RELEASED"  # gave both back (cancelled, rejected, re-routed)
    COMMITTED = "COMMITTED"  # the stock left the shelf with the order

    @classmethod
    def of_order(cls, lines: Iterable[ReservationState]) -> ReservationState:
        """An order is committed once any line is, active while any line holds stock, and
        released when every line gave it back."""
        states = set(lines)
        if cls.COMMITTED in states:
            return cls.COMMITTED
        return cls.ACTIVE if cls.ACTIVE in states else cls.RELEASED


@dataclass(frozen=True)
class StockLevel:
    store_id: str
    sku: str
    on_hand: int
    reserved: int

    @property
    def available(self) -> int:
        return max(0, self.on_hand - self.reserved)


@dataclass(frozen=True)
class DecisionRecord:
    """One assignment decision as it was recorded: where the order was placed, and the verdict
    on each store weighed (distances measured only where the decision needed them)."""

    order_id: str
    decide_time: datetime
    fulfilment_type: str
    location: tuple[float, float] | None
    assignments: list[Assignment]
    verdicts: list[Verdict]
    outcome_reason: str  # "" when assigned

    @classmethod
    def of(cls, request: AssignmentRequest, decision: Decision, now: datetime) -> DecisionRecord:
        outcome = decision.outcome.value if decision.outcome else ""
        return cls(
            request.order_id,
            now,
            request.fulfilment_type.value,
            request.location,
            decision.assignments,
            decision.verdicts,
            outcome,
        )

    def explained(self) -> DecisionRecord:
        """Every verdict with its distance, nearest first, as the contract lists them (stores
        ruled out early were noted first)."""
        location = self.location
        for verdict in self.verdicts:
            if verdict.distance_m is None and location is not None:
                verdict.distance_m = geodesic_distance_m(
                    location[0], location[1], verdict.latitude, verdict.longitude
                )
        self.verdicts.sort(
            key=lambda v: (v.distance_m if v.distance_m is not None else float("inf"), v.store_id)
        )
        return self
