"""What a valid request to orders is, checked once, before anything is read or called: each
problem named by its field path (google.rpc.BadRequest), every one in one answer."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from quanyu.errors import Violations
from services.orders.domain.values import FulfilmentType, Line, Location

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
    delivery_location: Location | None
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
        at = v.within("lines", index)
        at.text(line.sku, "sku", max_length=MAX_ID_LENGTH)
        at.check(line.quantity > 0, "quantity", "must be greater than zero")
        at.check(line.quantity <= limits.max_quantity, "quantity", f"must be at most {limits.max_quantity}")
        at.check(line.unit_price_cents >= 0, "unit_price_cents", "must not be negative")
        at.check(
            line.unit_price_cents <= limits.max_unit_price_cents,
            "unit_price_cents",
            f"must be at most {limits.max_unit_price_cents}",
        )
        fits = line.amount_cents <= limits.max_line_cents
        at.check(fits, "", f"quantity × unit price must be at most {limits.max_line_cents}")
        lines_fit = lines_fit and fits
    if lines_fit and len(request.lines) <= MAX_LINES:
        v.check(
            request.subtotal_cents <= limits.max_order_cents,
            "lines",
            f"the order's amount must be at most {limits.max_order_cents}",
        )
    if request.delivery_location is not None:
        lat, lng, _ = request.delivery_location
        where = v.within("delivery_location")
        where.check(math.isfinite(lat) and -90 <= lat <= 90, "latitude", "must be -90 to 90 degrees")
        where.check(math.isfinite(lng) and -180 <= lng <= 180, "longitude", "must be -180 to 180 degrees")
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


@dataclass(frozen=True)
class PlaceOrder:
    """A CreateOrder request as it came: its channel and fulfilment type may be numbers the
    contract does not know, which only the check below reports (with every other problem)."""

    request: OrderRequest
    channel_known: bool = True
    type_known: bool = True

    def checked(self, limits: Limits = DEFAULT_LIMITS) -> OrderRequest:
        check_request(
            self.request, channel_known=self.channel_known, type_known=self.type_known, limits=limits
        )
        return self.request


def check_order_id(order_id: str) -> None:
    violations = Violations()
    violations.text(order_id, "order_id", max_length=MAX_ID_LENGTH)
    violations.raise_if_any()


def check_change(order_id: str, reason: str, *, reason_required: bool = False, store_id: str = "") -> None:
    """A change of an order's status: the order, why (a rejection must say), and for whom."""
    violations = Violations()
    violations.text(store_id, "store_id", max_length=MAX_ID_LENGTH, required=False)
    violations.text(order_id, "order_id", max_length=MAX_ID_LENGTH)
    violations.text(reason, "reason", max_length=MAX_REASON_LENGTH, required=reason_required)
    violations.raise_if_any()


def check_listing(customer_id: str, store_id: str) -> None:
    violations = Violations()
    violations.text(customer_id, "customer_id", max_length=MAX_ID_LENGTH, required=False)
    violations.text(store_id, "store_id", max_length=MAX_ID_LENGTH, required=False)
    violations.raise_if_any()


_DEFAULT_WINDOW = timedelta(days=3650)


def report_window(
    subject: str, subject_id: str, start: datetime | None, end: datetime | None, now: datetime
) -> tuple[datetime, datetime]:
    """A report's store or guide and its time window: by default everything up to `now`."""
    violations = Violations()
    violations.text(subject_id, subject, max_length=MAX_ID_LENGTH)
    start = start or now - _DEFAULT_WINDOW
    end = end or now + timedelta(seconds=1)
    if end <= start:
        violations.add("end_time", "must be after start_time")
    violations.raise_if_any()
    return start, end
