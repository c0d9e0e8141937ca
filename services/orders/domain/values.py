"""Orders' value objects: what an order is of, how it is fulfilled, where it is, what it costs."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

Location = tuple[float, float, int]  # latitude, longitude, coordinate system


class Status(StrEnum):
    PENDING_ASSIGNMENT = "PENDING_ASSIGNMENT"
    ASSIGNED = "ASSIGNED"
    ACCEPTED = "ACCEPTED"
    READY = "READY"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"
    UNFULFILLABLE = "UNFULFILLABLE"


class FulfilmentType(StrEnum):
    DELIVERY = "DELIVERY"
    PICKUP = "PICKUP"
    IN_STORE = "IN_STORE"


@dataclass(frozen=True)
class Line:
    sku: str
    quantity: int
    unit_price_cents: int

    @property
    def amount_cents(self) -> int:
        return self.quantity * self.unit_price_cents


@dataclass(frozen=True)
class Price:
    subtotal_cents: int
    discount_cents: int
    points_redeemed: int  # 1 point takes 1 fen off: 100 points = ¥1

    @property
    def total_cents(self) -> int:
        return self.subtotal_cents - self.discount_cents - self.points_redeemed


def points_to_spend(subtotal_cents: int, coupon_discount_cents: int, wanted: int) -> int:
    """Points never pay for more than what is left after the coupon."""
    return max(0, min(wanted, subtotal_cents - coupon_discount_cents))
