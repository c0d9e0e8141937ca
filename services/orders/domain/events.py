"""What an order's changes require of other services: each effect is recorded with the change
(the outbox) and delivered later by its kind. The fields of each are its payload, named as the
deliverers have always read them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

ASSIGN = "assign_order"
TAKE_IN_STORE_STOCK = "take_in_store_stock"
COMMIT_STOCK = "commit_reservation"
RELEASE_STOCK = "release_reservation"
EARN_POINTS = "earn_points"
REVERSE_POINTS = "reverse_points"
RELEASE_COUPON = "release_coupon"
RECORD_ORIGIN_HOURS = "record_origin_hours"
MARKETING_EVENT = "marketing_event"

# Marketing's limit on the SKUs of one order it is told of.
MAX_EVENT_SKUS = 100


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


@dataclass(frozen=True)
class OrderCompleted(Effect):
    """Tell marketing a member's order completed, for the campaigns it triggers. The payload is
    marketing's Event in its JSON form; its id follows from the order, so telling it twice
    (a retried delivery) is one event to marketing."""

    kind: ClassVar[str] = MARKETING_EVENT
    order_id: str
    member_id: str
    customer_id: str
    total_cents: int
    store_id: str
    channel: str
    occur_time: str  # ISO 8601
    skus: tuple[str, ...] = field(default=())
    # The coupon the order redeemed: marketing counts a campaign's coupons used by it.
    coupon_code: str = ""

    def payload(self) -> dict[str, Any]:
        return {
            "event_id": f"orders/{self.order_id}/completed",
            "occur_time": self.occur_time,
            "order_completed": {
                "order_id": self.order_id,
                "member_id": self.member_id,
                "customer_id": self.customer_id,
                "total_cents": self.total_cents,
                "store_id": self.store_id,
                "skus": list(self.skus),
                "channel": self.channel,
                **({"coupon_code": self.coupon_code} if self.coupon_code else {}),
            },
        }


@dataclass(frozen=True)
class OrderCancelled(Effect):
    """Tell marketing a member's order was cancelled."""

    kind: ClassVar[str] = MARKETING_EVENT
    order_id: str
    member_id: str
    customer_id: str
    occur_time: str  # ISO 8601

    def payload(self) -> dict[str, Any]:
        return {
            "event_id": f"orders/{self.order_id}/cancelled",
            "occur_time": self.occur_time,
            "order_cancelled": {
                "order_id": self.order_id,
                "member_id": self.member_id,
                "customer_id": self.customer_id,
            },
        }


def event_skus(skus: Iterable[str]) -> tuple[str, ...]:
    """An order's SKUs as marketing takes them: each once, in line order, at most MAX_EVENT_SKUS."""
    return tuple(dict.fromkeys(skus))[:MAX_EVENT_SKUS]
