"""What the reliability checks set up and how they call: an area of their own with stores and
stock, customers enrolled with points and coupons, tokens, the outcome of a call whether it worked
or not."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Generic, TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from quanyu.auth import Role
from quanyu.clients import error_reason
from quanyu.common.v1 import common_pb2
from quanyu.fulfilment.v1 import fulfilment_pb2
from quanyu.identity.v1 import identity_pb2
from quanyu.membership.v1 import membership_pb2
from quanyu.orders.v1 import orders_pb2
from tests.orders.platform import Metadata
from tests.reliability.deployment import Deployment

T = TypeVar("T")

APP = common_pb2.CHANNEL_APP
MINI = "CHANNEL_WECHAT_MINI_PROGRAM"
UNIT_PRICE = 5_000
# A caller retries these, with the same request id: the service or the way to it failed.
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
# A service answers these only for a bug.
SERVER_ERRORS = frozenset({grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL})
BACKOFF = 0.1  # seconds a load generator's caller waits after a failed call


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """How a call ended: its status code, the ErrorInfo reason and message, and the answer."""

    code: grpc.StatusCode
    reason: str = ""
    message: str = ""
    value: T | None = None

    @property
    def ok(self) -> bool:
        return self.code is grpc.StatusCode.OK

    def answer(self) -> T:
        assert self.value is not None, f"{self.code.name} {self.reason}: {self.message}"
        return self.value

    def __str__(self) -> str:
        return f"{self.code.name}" + (f" {self.reason}" if self.reason else "") + f": {self.message[:200]}"


def attempt(call: Callable[[], T]) -> Outcome[T]:
    try:
        return Outcome(grpc.StatusCode.OK, value=call())
    except grpc.RpcError as error:
        try:
            reason = error_reason(error)
        except ValueError:  # details that contradict the status code (cut short on the way)
            reason = "MALFORMED_STATUS"
        return Outcome(error.code(), reason, error.details() or "")


def retrying(call: Callable[[], T], *, within: float = 60.0) -> tuple[Outcome[T], list[Outcome[T]]]:
    """Call until it answers with something other than a retryable error, as a client with a
    request id does: (the last outcome, the retryable failures before it)."""
    deadline = time.monotonic() + within
    failures: list[Outcome[T]] = []
    while True:
        outcome = attempt(call)
        if outcome.code not in RETRYABLE or time.monotonic() > deadline:
            return outcome, failures
        failures.append(outcome)
        time.sleep(0.05 * min(len(failures), 10))


class Background(Generic[T]):
    """A call made on a thread of its own, so the test can strike while it is under way."""

    def __init__(self, call: Callable[[], T], *, within: float = 120.0) -> None:
        self._within = within
        self._result: list[Outcome[T]] = []
        self._thread = threading.Thread(target=lambda: self._result.append(attempt(call)), daemon=True)

    def __enter__(self) -> Background[T]:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._thread.join(timeout=self._within)

    def outcome(self) -> Outcome[T]:
        self._thread.join(timeout=self._within)
        assert self._result, "the call never ended"
        return self._result[0]


@dataclass
class World:
    """Stubs, tokens and fresh names for one check, in an area of its own far from the others'."""

    d: Deployment
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    lat: float = field(default_factory=lambda: random.uniform(22.0, 40.0))
    lng: float = field(default_factory=lambda: random.uniform(100.0, 120.0))

    @cached_property
    def ops(self) -> Metadata:
        return self.d.token(Role.OPS, subject=f"ops-{self.tag}")

    @cached_property
    def service(self) -> Metadata:
        return self.d.token(Role.SERVICE, subject=f"service-{self.tag}")

    @cached_property
    def app(self) -> Metadata:
        return self.d.token(Role.CHANNEL, channel="CHANNEL_APP", subject=f"app-{self.tag}")

    @cached_property
    def mini(self) -> Metadata:
        return self.d.token(Role.CHANNEL, channel=MINI, subject=f"mini-{self.tag}")

    def channel_token(self, channel: str) -> Metadata:
        return self.d.token(Role.CHANNEL, channel=channel, subject=f"{channel.lower()}-{self.tag}")

    def store_token(self, store_id: str, terminal: str = "") -> Metadata:
        return self.d.token(Role.STORE, store_id=store_id, subject=terminal or f"till-{self.tag}")

    def name(self, what: str) -> str:
        return f"{what}-{self.tag}"

    # --- places and stock ---------------------------------------------------------------------

    def here(self, north_m: float = 0.0) -> common_pb2.LatLng:
        return common_pb2.LatLng(
            latitude=self.lat + north_m / 111_000,
            longitude=self.lng,
            system=common_pb2.COORDINATE_SYSTEM_WGS84,
        )

    def store(self, letter: str, north_m: float, stock: dict[str, int], radius_m: float = 5_000.0) -> str:
        store_id = self.name(f"S{letter}")
        self.d.fulfilment.UpsertStore(
            fulfilment_pb2.UpsertStoreRequest(
                store=fulfilment_pb2.Store(
                    store_id=store_id,
                    name=f"Store {letter}",
                    location=self.here(north_m),
                    delivery_radius_m=radius_m,
                )
            ),
            metadata=self.ops,
        )
        if stock:
            self.set_stock(store_id, stock)
        return store_id

    def set_stock(self, store_id: str, stock: dict[str, int]) -> None:
        self.d.fulfilment.SetStock(
            fulfilment_pb2.SetStockRequest(
                store_id=store_id,
                levels=[fulfilment_pb2.SkuQuantity(sku=k, on_hand=v) for k, v in stock.items()],
            ),
            metadata=self.ops,
        )

    def level(self, store_id: str, sku: str) -> fulfilment_pb2.StockLevel:
        answer = self.d.fulfilment.GetStock(
            fulfilment_pb2.GetStockRequest(store_id=store_id, skus=[sku]), metadata=self.ops, timeout=30
        )
        level: fulfilment_pb2.StockLevel = answer.levels[0]
        return level

    # --- customers and members ----------------------------------------------------------------

    @staticmethod
    def account(external_id: str) -> common_pb2.ChannelAccount:
        return common_pb2.ChannelAccount(channel=APP, external_id=external_id)

    def member(self, external_id: str) -> membership_pb2.Member:
        """The customer behind an app account, enrolled."""
        customer = self.d.identity.ResolveCustomer(
            identity_pb2.ResolveCustomerRequest(account=self.account(external_id)), metadata=self.service
        ).customer
        member: membership_pb2.Member = self.d.membership.Enroll(
            membership_pb2.EnrollRequest(customer_id=customer.customer_id, channel=APP), metadata=self.service
        ).member
        return member

    def customer(self, channel: str, external_id: str, phone: str = "") -> str:
        """A customer identity knows by an account on `channel` (and the phone, when given)."""
        account = common_pb2.ChannelAccount(
            channel=common_pb2.Channel.Value(channel), external_id=external_id
        )
        request = identity_pb2.ResolveCustomerRequest(account=account, phone=phone)
        customer_id: str = self.d.identity.ResolveCustomer(
            request, metadata=self.service
        ).customer.customer_id
        return customer_id

    def enrolled(
        self, channel: str, external_id: str, *, home_store_id: str = "", guide_id: str = ""
    ) -> membership_pb2.Member:
        """A customer of `channel`, enrolled with that home store and guide."""
        request = membership_pb2.EnrollRequest(
            customer_id=self.customer(channel, external_id),
            home_store_id=home_store_id,
            guide_id=guide_id,
            channel=common_pb2.Channel.Value(channel),
        )
        member: membership_pb2.Member = self.d.membership.Enroll(request, metadata=self.service).member
        return member

    def guide(self, store_id: str) -> str:
        guide_id = self.name(f"guide-{store_id}")
        guide = membership_pb2.Guide(guide_id=guide_id, store_id=store_id, active=True)
        self.d.membership.UpsertGuide(membership_pb2.UpsertGuideRequest(guide=guide), metadata=self.ops)
        return guide_id

    def member_code(self, member_id: str) -> str:
        """The code the member's app would show at a till (asked for here by ops)."""
        answer = self.d.membership.CreateMemberCode(
            membership_pb2.CreateMemberCodeRequest(member_id=member_id), metadata=self.ops
        )
        return str(answer.code)

    def balance(self, member_id: str) -> int:
        answer = self.d.membership.GetMember(
            membership_pb2.GetMemberRequest(member_id=member_id), metadata=self.ops, timeout=30
        )
        return int(answer.member.points_balance)

    def earn(self, member_id: str, spend_cents: int) -> int:
        answer = self.d.membership.EarnPoints(
            membership_pb2.EarnPointsRequest(
                member_id=member_id,
                source_id=self.name(f"seed-{uuid.uuid4().hex[:6]}"),
                spend_cents=spend_cents,
            ),
            metadata=self.service,
        )
        return int(answer.member.points_balance)

    def coupon(self, member_id: str, discount_cents: int) -> str:
        expire = Timestamp()
        expire.FromDatetime(datetime.now(UTC) + timedelta(days=30))
        code: str = self.d.membership.IssueCoupon(
            membership_pb2.IssueCouponRequest(
                member_id=member_id,
                discount_cents=discount_cents,
                expire_time=expire,
                request_id=self.name(f"coupon-{uuid.uuid4().hex[:6]}"),
            ),
            metadata=self.ops,
        ).coupon.code
        return code

    # --- orders -------------------------------------------------------------------------------

    def delivery(
        self, request_id: str, external_id: str, lines: dict[str, int], **fields: str | int
    ) -> orders_pb2.CreateOrderRequest:
        return orders_pb2.CreateOrderRequest(
            request_id=request_id,
            account=self.account(external_id),
            channel=APP,
            fulfilment_type=common_pb2.FULFILMENT_TYPE_DELIVERY,
            lines=[
                common_pb2.Line(sku=sku, quantity=q, unit_price_cents=UNIT_PRICE) for sku, q in lines.items()
            ],
            delivery_location=self.here(100),
            delivery_address="1 Test Road",
            **fields,  # type: ignore[arg-type]
        )

    def in_store(
        self, request_id: str, store_id: str, phone: str, lines: dict[str, int]
    ) -> orders_pb2.CreateOrderRequest:
        return orders_pb2.CreateOrderRequest(
            request_id=request_id,
            phone=phone,
            channel=common_pb2.CHANNEL_STORE_POS,
            fulfilment_type=common_pb2.FULFILMENT_TYPE_IN_STORE,
            lines=[
                common_pb2.Line(sku=sku, quantity=q, unit_price_cents=UNIT_PRICE) for sku, q in lines.items()
            ],
            origin_store_id=store_id,
        )

    def order(self, order_id: str) -> orders_pb2.Order:
        order: orders_pb2.Order = self.d.orders.GetOrder(
            orders_pb2.GetOrderRequest(order_id=order_id), metadata=self.ops, timeout=30
        ).order
        return order


@dataclass
class Call:
    """One call of a load generator: what it was, when it ran against a marked moment, how it ended."""

    worker: int
    key: str
    started_after_mark: bool
    started_at: float = field(default_factory=time.monotonic)
    outcome: Outcome[object] | None = None
    ended_after_mark: bool = False
    ended_at: float = 0.0


class Load:
    """Threads calling a service over and over until stopped, each call recorded.

    `make(worker, number)` gives a call's key and the call itself. `mark()` notes a moment (a
    signal sent, a database cut off) so every call can be placed before, across or after it.
    """

    def __init__(self, workers: int, make: Callable[[int, int], tuple[str, Callable[[], object]]]) -> None:
        self._make = make
        self._stop = threading.Event()
        self._marked = threading.Event()
        self._lock = threading.Lock()
        self.calls: list[Call] = []
        self._current: dict[int, Call] = {}
        self._threads = [threading.Thread(target=self._work, args=(n,), daemon=True) for n in range(workers)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)

    def mark(self) -> None:
        self._marked.set()

    def in_flight(self) -> list[Call]:
        with self._lock:
            return list(self._current.values())

    def finished(self) -> list[Call]:
        with self._lock:
            return [call for call in self.calls if call.outcome is not None]

    def _work(self, worker: int) -> None:
        number = 0
        while not self._stop.is_set():
            key, run = self._make(worker, number)
            number += 1
            call = Call(worker, key, self._marked.is_set())
            with self._lock:
                self.calls.append(call)
                self._current[worker] = call
            outcome = attempt(run)
            with self._lock:
                call.outcome = outcome
                call.ended_after_mark = self._marked.is_set()
                call.ended_at = time.monotonic()
                del self._current[worker]
            if not outcome.ok:
                self._stop.wait(BACKOFF)  # as a client backs off before its next call
