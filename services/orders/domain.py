"""Orders' rules, free of gRPC and the database: what a valid order is, its price, and the
state machine every order follows from placement to completion or cancellation."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import ClassVar

from quanyu.auth import STORE_POS, Principal, Role
from quanyu.errors import FailedPrecondition, InvalidArgument, PermissionDenied, Violations

MAX_ID_LENGTH = 64
MAX_REQUEST_ID_LENGTH = 128
MAX_LINES = 200
MAX_ADDRESS_LENGTH = 512
MAX_PHONE_LENGTH = 32
MAX_MEMBER_CODE_LENGTH = 32
MAX_REASON_LENGTH = 256
MAX_STATUSES = 10


@dataclass(frozen=True)
class Limits:
    """What one order may amount to. A price no shop charges is a mistake or an attack: it would
    mint points, inflate reports and overflow sums, so it is refused at the door."""

    max_unit_price_cents: int = 10_000_000  # ¥100,000
    max_quantity: int = 9_999
    max_line_cents: int = 10_000_000
    max_order_cents: int = 10_000_000


DEFAULT_LIMITS = Limits()


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


class Action(StrEnum):
    ACCEPT = "ACCEPT"
    REJECT = "REJECT"
    READY = "READY"
    COMPLETE = "COMPLETE"
    CANCEL = "CANCEL"


class OrderStateMachine:
    """ASSIGNED → ACCEPTED → READY → COMPLETED; a rejection sends ASSIGNED or ACCEPTED back to
    assignment (ASSIGNED at the next store, or UNFULFILLABLE); anything before COMPLETED may be
    CANCELLED. Every other move is FAILED_PRECONDITION."""

    _FROM: ClassVar[dict[Action, frozenset[Status]]] = {
        Action.ACCEPT: frozenset({Status.ASSIGNED}),
        Action.REJECT: frozenset({Status.ASSIGNED, Status.ACCEPTED}),
        Action.READY: frozenset({Status.ACCEPTED}),
        Action.COMPLETE: frozenset({Status.READY}),
        Action.CANCEL: frozenset(
            {Status.PENDING_ASSIGNMENT, Status.ASSIGNED, Status.ACCEPTED, Status.READY, Status.UNFULFILLABLE}
        ),
    }
    _TO: ClassVar[dict[Action, Status]] = {
        Action.ACCEPT: Status.ACCEPTED,
        Action.READY: Status.READY,
        Action.COMPLETE: Status.COMPLETED,
        Action.CANCEL: Status.CANCELLED,
        Action.REJECT: Status.PENDING_ASSIGNMENT,  # until the next store is found
    }

    @classmethod
    def allows(cls, action: Action, status: Status) -> bool:
        return status in cls._FROM[action]

    @classmethod
    def target(cls, action: Action) -> Status:
        return cls._TO[action]

    @classmethod
    def next(cls, action: Action, status: Status) -> Status:
        if not cls.allows(action, status):
            raise FailedPrecondition(
                f"an order that is {status.value} cannot be {_PAST[action]}",
                reason="INVALID_TRANSITION",
                metadata={"status": f"ORDER_STATUS_{status.value}"},
            )
        return cls._TO[action]


_PAST = {
    Action.ACCEPT: "accepted",
    Action.REJECT: "rejected",
    Action.READY: "marked ready",
    Action.COMPLETE: "completed",
    Action.CANCEL: "cancelled",
}


@dataclass(frozen=True)
class Line:
    sku: str
    quantity: int
    unit_price_cents: int

    @property
    def amount_cents(self) -> int:
        return self.quantity * self.unit_price_cents


@dataclass(frozen=True)
class CustomerRef:
    """How the caller named the customer: an id, or a channel account and/or a phone."""

    customer_id: str = ""
    account_channel: str = ""
    account_external_id: str = ""
    phone: str = ""


@dataclass(frozen=True)
class OrderRequest:
    """A CreateOrder request, checked before any other service is called."""

    request_id: str
    # Whose request id it is (quanyu.auth.Principal.owner): two stores' or channels' ids never meet.
    owner: str
    customer: CustomerRef
    channel: str
    fulfilment_type: FulfilmentType
    lines: tuple[Line, ...]
    delivery_location: tuple[float, float, int] | None  # latitude, longitude, coordinate system
    delivery_address: str
    origin_store_id: str
    guide_id: str
    coupon_code: str
    points_to_redeem: int
    member_code: str = ""

    def fingerprint(self, key: bytes) -> str:
        """What makes a retry the same request: everything but the request id (and the member
        code, a fresh one on each scan). Keyed with the deployment's secret: the payload holds
        the customer's phone, which a plain hash would give back to anyone trying the 10^4
        numbers behind a masked one."""
        body = {
            "customer": [
                self.customer.customer_id,
                self.customer.account_channel,
                self.customer.account_external_id,
                self.customer.phone,
            ],
            "channel": self.channel,
            "type": self.fulfilment_type.value,
            "lines": [[ln.sku, ln.quantity, ln.unit_price_cents] for ln in self.lines],
            "location": list(self.delivery_location) if self.delivery_location else None,
            "address": self.delivery_address,
            "origin": self.origin_store_id,
            "guide": self.guide_id,
            "coupon": self.coupon_code,
            "points": self.points_to_redeem,
        }
        return hmac.new(key, json.dumps(body, sort_keys=True).encode(), hashlib.sha256).hexdigest()

    def order_id(self) -> str:
        """The order's id follows from the caller's request id, so concurrent retries of one
        request name one order in every service they reach, and every effect is keyed alike."""
        # The owner goes in with its length, so no spelling of store ids and request ids makes
        # two callers' requests one.
        owned = f"order|{len(self.owner)}:{self.owner}|{self.request_id}"
        name = f"order|{self.request_id}" if not self.owner else owned
        return "ord_" + hashlib.sha256(name.encode()).hexdigest()[:32]

    @property
    def subtotal_cents(self) -> int:
        return sum(line.amount_cents for line in self.lines)


def check_request(
    request: OrderRequest, *, channel_known: bool, type_known: bool, limits: Limits = DEFAULT_LIMITS
) -> None:
    """Every problem with a CreateOrder request, reported at once, before any call is made."""
    v = Violations()
    v.text(request.request_id, "request_id", max_length=MAX_REQUEST_ID_LENGTH)
    ref = request.customer
    if not (ref.customer_id or ref.account_external_id or ref.phone):
        v.add("customer_id", "name the customer by id, channel account or phone")
    v.text(ref.customer_id, "customer_id", max_length=MAX_ID_LENGTH, required=False)
    if ref.account_external_id or ref.account_channel:
        v.check(bool(ref.account_channel), "account.channel", "must name a channel")
        v.text(ref.account_external_id, "account.external_id", max_length=128)
    v.text(ref.phone, "phone", max_length=MAX_PHONE_LENGTH, required=False)
    v.check(channel_known, "channel", "must name a channel")
    v.check(type_known, "fulfilment_type", "must be DELIVERY, PICKUP or IN_STORE")
    if not request.lines:
        v.add("lines", "name at least one line")
    if len(request.lines) > MAX_LINES:
        v.add("lines", f"at most {MAX_LINES} lines")
    lines_fit = True
    for index, line in enumerate(request.lines[:MAX_LINES]):
        v.text(line.sku, f"lines[{index}].sku", max_length=MAX_ID_LENGTH)
        v.check(line.quantity > 0, f"lines[{index}].quantity", "must be greater than zero")
        v.check(
            line.quantity <= limits.max_quantity,
            f"lines[{index}].quantity",
            f"must be at most {limits.max_quantity}",
        )
        v.check(line.unit_price_cents >= 0, f"lines[{index}].unit_price_cents", "must not be negative")
        v.check(
            line.unit_price_cents <= limits.max_unit_price_cents,
            f"lines[{index}].unit_price_cents",
            f"must be at most {limits.max_unit_price_cents}",
        )
        fits = line.amount_cents <= limits.max_line_cents
        v.check(fits, f"lines[{index}]", f"quantity × unit price must be at most {limits.max_line_cents}")
        lines_fit = lines_fit and fits
    if lines_fit and len(request.lines) <= MAX_LINES:
        v.check(
            request.subtotal_cents <= limits.max_order_cents,
            "lines",
            f"the order's amount must be at most {limits.max_order_cents}",
        )
    if request.delivery_location is not None:
        lat, lng, _ = request.delivery_location
        v.check(
            math.isfinite(lat) and -90 <= lat <= 90, "delivery_location.latitude", "must be -90 to 90 degrees"
        )
        v.check(
            math.isfinite(lng) and -180 <= lng <= 180,
            "delivery_location.longitude",
            "must be -180 to 180 degrees",
        )
    v.text(request.delivery_address, "delivery_address", max_length=MAX_ADDRESS_LENGTH, required=False)
    kind = request.fulfilment_type if type_known else None
    if kind is FulfilmentType.DELIVERY:
        v.check(request.delivery_location is not None, "delivery_location", "is required for delivery")
        v.check(bool(request.delivery_address), "delivery_address", "is required for delivery")
    if kind is FulfilmentType.IN_STORE:
        v.check(bool(request.origin_store_id), "origin_store_id", "is required for an in-store order")
    if kind is FulfilmentType.PICKUP:
        v.check(
            bool(request.origin_store_id) or request.delivery_location is not None,
            "origin_store_id",
            "give the chosen store or the customer's location for pickup",
        )
    v.text(request.origin_store_id, "origin_store_id", max_length=MAX_ID_LENGTH, required=False)
    v.text(request.guide_id, "guide_id", max_length=MAX_ID_LENGTH, required=False)
    v.text(request.coupon_code, "coupon_code", max_length=32, required=False)
    v.text(request.member_code, "member_code", max_length=MAX_MEMBER_CODE_LENGTH, required=False)
    v.check(request.points_to_redeem >= 0, "points_to_redeem", "must not be negative")
    v.check(
        request.points_to_redeem <= limits.max_order_cents,
        "points_to_redeem",
        f"must be at most {limits.max_order_cents} (1 point = 1 fen)",
    )
    v.raise_if_any()


def check_caller(principal: Principal, request: OrderRequest) -> None:
    """Who may place what. A till sells at its own store, to customers it names by phone, till
    account or id, and spends a member's value only with their member code. A channel places
    online orders for its own customers, named by an account of its channel (or an id that holds
    one), and never a till sale: that would take another store's stock at its till price."""
    if principal.role is Role.STORE:
        if (
            request.fulfilment_type is not FulfilmentType.IN_STORE
            or request.origin_store_id != principal.store_id
        ):
            raise PermissionDenied(
                "a store terminal places in-store orders for its own store only", reason="OTHER_STORE"
            )
        if request.channel != STORE_POS or (
            request.customer.account_channel and request.customer.account_channel != STORE_POS
        ):
            raise PermissionDenied(
                "a till sells through its own channel and till accounts", reason="OTHER_CHANNEL"
            )
        if (request.coupon_code or request.points_to_redeem) and not request.member_code:
            raise PermissionDenied(
                "spending a member's points or coupons at the till needs the member code their app shows",
                reason="MEMBER_CODE_REQUIRED",
            )
    if principal.role is Role.CHANNEL:
        if request.channel != principal.channel or (
            request.customer.account_channel and request.customer.account_channel != principal.channel
        ):
            raise PermissionDenied("a channel places orders for its own channel only", reason="OTHER_CHANNEL")
        if request.fulfilment_type is FulfilmentType.IN_STORE:
            raise PermissionDenied(
                "in-store orders are placed by the store's till", reason="IN_STORE_AT_TILL_ONLY"
            )
        if not (request.customer.account_external_id or request.customer.customer_id):
            raise InvalidArgument(
                "account", f"a channel names its customer by a {principal.channel} account or a customer_id"
            )


@dataclass(frozen=True)
class Price:
    subtotal_cents: int
    discount_cents: int
    points_redeemed: int  # 1 point takes 1 fen off: 100 points = ¥1

    @property
    def total_cents(self) -> int:
        return self.subtotal_cents - self.discount_cents - self.points_redeemed


def credited_guide(request: OrderRequest, member_guide_id: str, member_home_store_id: str) -> str:
    """The guide an order is credited to: the one the caller names (membership has checked it is
    of the right store), else the member's own guide, but a till's sale only to its own store's:
    a sale at one store never counts for another store's guide."""
    if request.guide_id:
        return request.guide_id
    if request.fulfilment_type is FulfilmentType.IN_STORE and member_home_store_id != request.origin_store_id:
        return ""
    return member_guide_id


def points_to_spend(subtotal_cents: int, coupon_discount_cents: int, wanted: int) -> int:
    """Points never pay for more than what is left after the coupon."""
    return max(0, min(wanted, subtotal_cents - coupon_discount_cents))


@dataclass
class Order:
    order_id: str
    request_id: str
    customer_id: str
    member_id: str
    channel: str
    fulfilment_type: FulfilmentType
    lines: list[Line]
    price: Price
    delivery_location: tuple[float, float, int] | None
    delivery_address: str
    origin_store_id: str
    fulfilling_store_id: str
    guide_id: str
    status: Status
    status_reason: str
    coupon_code: str
    points_earned: int
    create_time: datetime
    update_time: datetime
    rejected_store_ids: list[str] = field(default_factory=list)
    accept_deadline: datetime | None = None

    def is_for_store(self, store_id: str) -> bool:
        return store_id in (self.fulfilling_store_id, self.origin_store_id)
