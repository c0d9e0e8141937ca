"""What an order's changes require of other services: each effect is recorded with the change
(the outbox) and delivered later by its kind. The fields of each are its payload, named as the
deliverers have always read them."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

ASSIGN = "assign_order"
TAKE_IN_STORE_STOCK = "take_in_store_stock"
COMMIT_STOCK = "commit_reservation"
RELEASE_STOCK = "release_reservation"
EARN_POINTS = "earn_points"
REVERSE_POINTS = "reverse_points"
RELEASE_COUPON = "release_coupon"
RECORD_ORIGIN_HOURS = "record_origin_hours"


class Effect:
    kind: ClassVar[str]

    def payload(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload, no-any-return]


@dataclass(frozen=True)
class Reroute(Effect):
    """Find the order its (next) store, releasing what the store it leaves had reserved."""

    kind: ClassVar[str] = ASSIGN
    order_id: str
    release_store_id: str = ""


@dataclass(frozen=True)
class TakeInStoreStock(Effect):
    """A till sale made while fulfilment was unreachable: its stock leaves the shelf later."""

    kind: ClassVar[str] = TAKE_IN_STORE_STOCK
    order_id: str


@dataclass(frozen=True)
class CommitStock(Effect):
    kind: ClassVar[str] = COMMIT_STOCK
    order_id: str


@dataclass(frozen=True)
class ReleaseStock(Effect):
    kind: ClassVar[str] = RELEASE_STOCK
    order_id: str
    store_id: str = ""  # empty: at every store


@dataclass(frozen=True)
class EarnPoints(Effect):
    kind: ClassVar[str] = EARN_POINTS
    order_id: str
    member_id: str
    spend_cents: int
    store_id: str


@dataclass(frozen=True)
class ReversePoints(Effect):
    kind: ClassVar[str] = REVERSE_POINTS
    order_id: str
    reason: str


@dataclass(frozen=True)
class ReleaseCoupon(Effect):
    kind: ClassVar[str] = RELEASE_COUPON
    code: str
    order_id: str


@dataclass(frozen=True)
class GiveBack(Effect):
    """What membership holds for an order that was refused, given back unless a concurrent retry
    of the same request stored the order after all (`unless_stored`)."""

    kind: ClassVar[str]
    order_id: str
    code: str
    reason: str = "ORDER_REFUSED"
    unless_stored: bool = True


@dataclass(frozen=True)
class GiveBackPoints(GiveBack):
    kind: ClassVar[str] = REVERSE_POINTS


@dataclass(frozen=True)
class GiveBackCoupon(GiveBack):
    kind: ClassVar[str] = RELEASE_COUPON


@dataclass(frozen=True)
class RecordOriginHours(Effect):
    """Ask whether the origin store was open when the order was placed (for the reports)."""

    kind: ClassVar[str] = RECORD_ORIGIN_HOURS
    order_id: str
    store_id: str
    at: str  # ISO 8601
