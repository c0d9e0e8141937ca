"""The order flows across the four real services, as channel frontends, store terminals and ops
call them: placing orders from every channel and till, the store's queue and state machine,
re-routing, completion, cancellation, idempotency and the reports stores are measured by.

One platform serves most of the module (a second, where stores must accept within 2 s, serves
the tests of timeouts and outages); every test works in an area of its own (stores tens of kilometres
from any other test's) with SKUs, phones and accounts of its own, so tests never see each other's
orders or stock. What the outbox relay does later is polled for with a deadline."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from quanyu.auth import Role
from quanyu.clients import error_info, error_reason, field_violations
from quanyu.common.v1 import common_pb2
from quanyu.fulfilment.v1 import fulfilment_pb2, fulfilment_pb2_grpc
from quanyu.identity.v1 import identity_pb2, identity_pb2_grpc
from quanyu.membership.v1 import membership_pb2, membership_pb2_grpc
from quanyu.orders.v1 import orders_pb2, orders_pb2_grpc
from tests.orders.platform import Metadata, Platform, platform
from tests.processes import poll

T = TypeVar("T")

MINI = "CHANNEL_WECHAT_MINI_PROGRAM"
APP = "CHANNEL_APP"
DELIVERY = common_pb2.FULFILMENT_TYPE_DELIVERY
PICKUP = common_pb2.FULFILMENT_TYPE_PICKUP
IN_STORE = common_pb2.FULFILMENT_TYPE_IN_STORE
S = orders_pb2  # statuses: S.ORDER_STATUS_ASSIGNED, ...
EARN = membership_pb2.ENTRY_KIND_EARN
REDEEM = membership_pb2.ENTRY_KIND_REDEEM
REFERRAL_BONUS = membership_pb2.ENTRY_KIND_REFERRAL_BONUS
ADDRESS = "88 Example Road"
RELAY = 20.0  # how long an effect may take to reach its service
GIVE_BACK = 40.0  # a refused order's coupon and points wait ~15 s on purpose before they go back


# --- the platform ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def p(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    # Orders wait at their store for the whole module unless a test moves them on.
    with platform(tmp_path_factory.mktemp("flows"), QUANYU_ORDERS_ACCEPT_WINDOW_SECONDS="3600") as running:
        yield running


@pytest.fixture(scope="module")
def hasty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """A platform where a store has 2 s to accept an order, checked every 0.3 s."""
    with platform(
        tmp_path_factory.mktemp("hasty"),
        QUANYU_ORDERS_ACCEPT_WINDOW_SECONDS="2",
        QUANYU_ORDERS_ACCEPT_CHECK_SECONDS="0.3",
    ) as running:
        yield running


@dataclass
class World:
    """Stubs, tokens and fresh names for one test, in an area of its own."""

    p: Platform
    lat: float
    lng: float
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    orders: orders_pb2_grpc.OrderServiceStub = field(init=False)
    fulfilment: fulfilment_pb2_grpc.FulfilmentServiceStub = field(init=False)
    membership: membership_pb2_grpc.MembershipServiceStub = field(init=False)
    identity: identity_pb2_grpc.IdentityServiceStub = field(init=False)
    ops: Metadata = field(init=False)
    service: Metadata = field(init=False)
    mini: Metadata = field(init=False)

    def __post_init__(self) -> None:
        self.orders = self.p.orders
        self.fulfilment = self.p.fulfilment
        self.membership = self.p.membership
        self.identity = self.p.identity
        self.ops = self.p.token(Role.OPS, subject="alice")
        self.service = self.p.token(Role.SERVICE)
        self.mini = self.p.token(Role.CHANNEL, channel=MINI)

    # names of this test's own

    def name(self, what: str) -> str:
        return f"{what}-{self.tag}"

    @staticmethod
    def phone() -> str:
        """A mobile number no other test uses."""
        return f"139{next(_PHONES):08d}"

    def store_token(self, store_id: str, subject: str = "") -> Metadata:
        return self.p.token(Role.STORE, store_id=store_id, subject=subject)

    # places

    def here(self, north_m: float = 0.0) -> common_pb2.LatLng:
        """A point `north_m` metres north of the area's centre."""
        return common_pb2.LatLng(
            latitude=self.lat + north_m / 111_000,
            longitude=self.lng,
            system=common_pb2.COORDINATE_SYSTEM_WGS84,
        )

    def store(self, letter: str, north_m: float, stock: dict[str, int], **fields: Any) -> str:
        store_id = self.name(f"S{letter}")
        self.fulfilment.UpsertStore(
            fulfilment_pb2.UpsertStoreRequest(
                store=fulfilment_pb2.Store(
                    store_id=store_id,
                    name=f"Store {letter}",
                    location=self.here(north_m),
                    delivery_radius_m=3000.0,
                    **fields,
                )
            ),
            metadata=self.ops,
        )
        if stock:
            self.fulfilment.SetStock(
                fulfilment_pb2.SetStockRequest(
                    store_id=store_id,
                    levels=[fulfilment_pb2.SkuQuantity(sku=k, on_hand=v) for k, v in stock.items()],
                ),
                metadata=self.ops,
            )
        return store_id

    def stock(self, store_id: str, sku: str) -> fulfilment_pb2.StockLevel:
        answer = self.fulfilment.GetStock(
            fulfilment_pb2.GetStockRequest(store_id=store_id, skus=[sku]), metadata=self.ops
        )
        level: fulfilment_pb2.StockLevel
        (level,) = answer.levels
        return level

    # customers and members

    def member(
        self, *, home_store_id: str = "", guide_id: str = "", referrer: str = ""
    ) -> tuple[str, membership_pb2.Member]:
        """A customer of the mini-program (a fresh openid and phone) enrolled as a member:
        (customer id, member)."""
        openid = common_pb2.ChannelAccount(
            channel=common_pb2.CHANNEL_WECHAT_MINI_PROGRAM,
            external_id=self.name(f"openid-{uuid.uuid4().hex[:6]}"),
        )
        customer = self.identity.ResolveCustomer(
            identity_pb2.ResolveCustomerRequest(account=openid, phone=self.phone()), metadata=self.service
        ).customer
        member = self.membership.Enroll(
            membership_pb2.EnrollRequest(
                customer_id=customer.customer_id,
                home_store_id=home_store_id,
                guide_id=guide_id,
                channel=common_pb2.CHANNEL_APP,
                referrer_member_id=referrer,
            ),
            metadata=self.service,
        ).member
        return customer.customer_id, member

    def guide(self, store_id: str, name: str = "guide") -> str:
        """A guide of the store: only a store's own guides are credited with its members and sales."""
        guide_id = self.name(f"{name}-{store_id}")
        guide = membership_pb2.Guide(guide_id=guide_id, store_id=store_id, active=True)
        self.membership.UpsertGuide(membership_pb2.UpsertGuideRequest(guide=guide), metadata=self.ops)
        return guide_id

    def code(self, member_id: str) -> str:
        """The member code the member's app shows at the till, as the mini-program gets it."""
        answer = self.membership.CreateMemberCode(
            membership_pb2.CreateMemberCodeRequest(member_id=member_id), metadata=self.mini
        )
        return str(answer.code)

    def earn(self, member_id: str, spend_cents: int) -> None:
        self.membership.EarnPoints(
            membership_pb2.EarnPointsRequest(
                member_id=member_id,
                source_id=self.name(f"seed-{uuid.uuid4().hex[:6]}"),
                spend_cents=spend_cents,
            ),
            metadata=self.service,
        )

    def coupon(self, member_id: str, discount_cents: int) -> str:
        expire = Timestamp()
        expire.FromDatetime(datetime.now(UTC) + timedelta(days=30))
        answer: str = self.membership.IssueCoupon(
            membership_pb2.IssueCouponRequest(
                member_id=member_id,
                discount_cents=discount_cents,
                expire_time=expire,
                request_id=self.name(f"coupon-{uuid.uuid4().hex[:6]}"),
            ),
            metadata=self.ops,
        ).coupon.code
        return answer

    def balance(self, member_id: str) -> int:
        member = self.membership.GetMember(
            membership_pb2.GetMemberRequest(member_id=member_id), metadata=self.ops
        )
        return int(member.member.points_balance)

    def ledger(self, member_id: str) -> list[membership_pb2.LedgerEntry]:
        answer = self.membership.ListLedgerEntries(
            membership_pb2.ListLedgerEntriesRequest(member_id=member_id, page_size=1000), metadata=self.ops
        )
        return list(answer.entries)

    def coupon_redeemable(self, code: str, member_id: str) -> bool:
        """Whether the coupon can pay for another order now (which uses it up)."""
        reason = ""
        try:
            self.membership.RedeemCoupon(
                membership_pb2.RedeemCouponRequest(
                    code=code, member_id=member_id, order_id=self.name("probe"), order_amount_cents=100_000
                ),
                metadata=self.service,
            )
        except grpc.RpcError as error:
            reason = error_reason(error)
        assert reason in ("", "COUPON_ALREADY_REDEEMED")
        return reason == ""

    # orders

    def request(self, **fields: Any) -> orders_pb2.CreateOrderRequest:
        """A delivery order through the mini-program to the area's centre; fields override."""
        fields.setdefault("request_id", self.name(f"req-{uuid.uuid4().hex[:8]}"))
        fields.setdefault("channel", common_pb2.CHANNEL_WECHAT_MINI_PROGRAM)
        fields.setdefault("fulfilment_type", DELIVERY)
        if (
            fields["channel"] in (0, common_pb2.CHANNEL_WECHAT_MINI_PROGRAM)
            and fields["fulfilment_type"] != IN_STORE
            and not (fields.get("customer_id") or fields.get("account"))
        ):
            # The mini-program names its customer by their openid (with the phone they verified).
            fields["account"] = common_pb2.ChannelAccount(
                channel=common_pb2.CHANNEL_WECHAT_MINI_PROGRAM,
                external_id=self.name(f"openid-{uuid.uuid4().hex[:6]}"),
            )
        fields.setdefault("fulfilment_type", DELIVERY)
        if fields["fulfilment_type"] == DELIVERY:
            fields.setdefault("delivery_location", self.here())
            fields.setdefault("delivery_address", ADDRESS)
        return orders_pb2.CreateOrderRequest(**fields)

    def place(self, meta: Metadata | None = None, **fields: Any) -> orders_pb2.Order:
        answer: orders_pb2.Order = self.orders.CreateOrder(
            self.request(**fields), metadata=meta or self.mini
        ).order
        return answer

    def get(self, order_id: str) -> orders_pb2.Order:
        answer: orders_pb2.Order = self.orders.GetOrder(
            orders_pb2.GetOrderRequest(order_id=order_id), metadata=self.ops
        ).order
        return answer

    def history(self, order_id: str) -> list[orders_pb2.StatusChange]:
        answer = self.orders.GetOrderHistory(
            orders_pb2.GetOrderHistoryRequest(order_id=order_id), metadata=self.ops
        )
        return list(answer.changes)

    def accept(self, order_id: str, meta: Metadata | None = None) -> orders_pb2.Order:
        request = orders_pb2.AcceptOrderRequest(order_id=order_id)
        answer: orders_pb2.Order = self.orders.AcceptOrder(request, metadata=meta or self.ops).order
        return answer

    def ready(self, order_id: str, meta: Metadata | None = None) -> orders_pb2.Order:
        request = orders_pb2.MarkOrderReadyRequest(order_id=order_id)
        answer: orders_pb2.Order = self.orders.MarkOrderReady(request, metadata=meta or self.ops).order
        return answer

    def complete(self, order_id: str, meta: Metadata | None = None) -> orders_pb2.Order:
        request = orders_pb2.CompleteOrderRequest(order_id=order_id)
        answer: orders_pb2.Order = self.orders.CompleteOrder(request, metadata=meta or self.ops).order
        return answer

    def finish(self, order_id: str, meta: Metadata | None = None) -> orders_pb2.Order:
        """Accept, ready and complete, as the fulfilling store's terminal does."""
        self.accept(order_id, meta)
        self.ready(order_id, meta)
        return self.complete(order_id, meta)

    def reject(
        self, order_id: str, meta: Metadata, reason: str = "no staff", store_id: str = ""
    ) -> orders_pb2.Order:
        request = orders_pb2.RejectOrderRequest(order_id=order_id, reason=reason, store_id=store_id)
        answer: orders_pb2.Order = self.orders.RejectOrder(request, metadata=meta).order
        return answer

    def cancel(self, order_id: str, meta: Metadata, reason: str = "") -> orders_pb2.Order:
        request = orders_pb2.CancelOrderRequest(order_id=order_id, reason=reason)
        answer: orders_pb2.Order = self.orders.CancelOrder(request, metadata=meta).order
        return answer

    def report(self, store_id: str, meta: Metadata | None = None) -> orders_pb2.GetStoreReportResponse:
        answer: orders_pb2.GetStoreReportResponse = self.orders.GetStoreReport(
            orders_pb2.GetStoreReportRequest(store_id=store_id), metadata=meta or self.ops
        )
        return answer


_AREAS = itertools.count()
_PHONES = itertools.count(10_000_001)


def area() -> tuple[float, float]:
    """A fresh area, 0.5° of latitude (about 55 km) from every other test's."""
    return 22.0 + 0.5 * next(_AREAS), 113.0


@pytest.fixture
def w(p: Platform) -> World:
    return World(p, *area())


@pytest.fixture
def h(hasty: Platform) -> World:
    return World(hasty, *area())


def failure(call: Callable[..., Any], *args: Any, **kwargs: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, **kwargs)
    return caught.value


def eventually(read: Callable[[], T], done: Callable[[T], bool], what: str, within: float = RELAY) -> T:
    """Poll `read` until `done` holds of its answer; fail after `within` (RELAY unless told)."""
    return poll(read, done, what, within)


def retried(call: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """The answer of a call, or None while the service is unavailable."""
    try:
        return call(*args, **kwargs)
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.UNAVAILABLE:
            raise
        return None


def line(sku: str, quantity: int = 1, price: int = 3000) -> common_pb2.Line:
    return common_pb2.Line(sku=sku, quantity=quantity, unit_price_cents=price)


def entries(
    ledger: list[membership_pb2.LedgerEntry], kind: int, source_id: str
) -> list[membership_pb2.LedgerEntry]:
    return [e for e in ledger if e.kind == kind and e.source_id == source_id]


def invalid_transition(error: grpc.RpcError, status: str) -> bool:
    info = error_info(error)
    return (
        error.code() == grpc.StatusCode.FAILED_PRECONDITION
        and info is not None
        and info.reason == "INVALID_TRANSITION"
        and info.metadata["status"] == status
    )


# --- placing orders --------------------------------------------------------------------------


def test_a_mini_program_delivery_enrols_the_customer_and_reserves_at_the_nearest_store_with_stock(
    w: World,
) -> None:
    sku = w.name("tea")
    empty = w.store("A", 200, {sku: 0})  # nearest, but nothing on the shelf
    stocked = w.store("B", 600, {sku: 10})
    farther = w.store("C", 1200, {sku: 10})
    account = common_pb2.ChannelAccount(
        channel=common_pb2.CHANNEL_WECHAT_MINI_PROGRAM, external_id=w.name("openid")
    )
    phone = w.phone()

    order = w.place(account=account, phone=phone, lines=[line(sku, 2, 1500)])

    assert order.status == S.ORDER_STATUS_ASSIGNED
    assert order.fulfilling_store_id == stocked
    assert order.channel == common_pb2.CHANNEL_WECHAT_MINI_PROGRAM
    assert order.fulfilment_type == DELIVERY
    assert (order.subtotal_cents, order.discount_cents, order.points_redeemed, order.total_cents) == (
        3000,
        0,
        0,
        3000,
    )
    assert order.delivery_address == ADDRESS
    assert order.delivery_location.latitude == pytest.approx(w.lat)
    assert order.origin_store_id == ""  # a new member has no home store
    assert order.create_time.seconds > 0
    # The customer is found by the account and by the phone alike, and is a member now.
    by_account = w.identity.LookupCustomer(
        identity_pb2.LookupCustomerRequest(account=account), metadata=w.ops
    )
    by_phone = w.identity.LookupCustomer(identity_pb2.LookupCustomerRequest(phone=phone), metadata=w.ops)
    assert order.customer_id == by_account.customer.customer_id == by_phone.customer.customer_id != ""
    member = w.membership.GetMember(
        membership_pb2.GetMemberRequest(customer_id=order.customer_id), metadata=w.ops
    ).member
    assert order.member_id == member.member_id != ""
    assert member.enrolled_channel == common_pb2.CHANNEL_WECHAT_MINI_PROGRAM
    # The stock is held at the store chosen, and only there.
    assert (w.stock(stocked, sku).reserved, w.stock(stocked, sku).on_hand) == (2, 10)
    assert w.stock(empty, sku).reserved == 0
    assert w.stock(farther, sku).reserved == 0
    # The channel reads its order back; another channel learns nothing of it.
    assert (
        w.orders.GetOrder(orders_pb2.GetOrderRequest(order_id=order.order_id), metadata=w.mini).order == order
    )
    app = w.p.token(Role.CHANNEL, channel=APP)
    denied = failure(w.orders.GetOrder, orders_pb2.GetOrderRequest(order_id=order.order_id), metadata=app)
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_delivery_order_is_priced_with_the_members_coupon_and_points(w: World) -> None:
    sku = w.name("tea")
    w.store("A", 300, {sku: 10})
    customer_id, member = w.member()
    w.earn(member.member_id, 50_000)  # ¥500: 500 points
    assert w.balance(member.member_id) == 500
    code = w.coupon(member.member_id, 1000)

    order = w.place(
        customer_id=customer_id, lines=[line(sku, 2, 3000)], coupon_code=code, points_to_redeem=300
    )

    assert order.subtotal_cents == 6000
    assert order.discount_cents == 1000
    assert order.points_redeemed == 300
    assert order.total_cents == 6000 - 1000 - 300
    assert order.coupon_code == code
    assert order.member_id == member.member_id
    assert w.balance(member.member_id) == 200
    redeemed = entries(w.ledger(member.member_id), REDEEM, order.order_id)
    assert [e.points for e in redeemed] == [-300]
    assert not w.coupon_redeemable(code, member.member_id)


def test_points_pay_at_most_what_is_left_after_the_coupon(w: World) -> None:
    sku = w.name("tea")
    w.store("A", 300, {sku: 10})
    customer_id, member = w.member()
    w.earn(member.member_id, 80_000)  # 800 points
    code = w.coupon(member.member_id, 1000)

    order = w.place(
        customer_id=customer_id, lines=[line(sku, 1, 1500)], coupon_code=code, points_to_redeem=800
    )

    assert (order.subtotal_cents, order.discount_cents, order.points_redeemed, order.total_cents) == (
        1500,
        1000,
        500,
        0,
    )
    assert w.balance(member.member_id) == 300


def test_a_pickup_order_goes_to_the_store_the_customer_chose_or_else_the_nearest_with_stock(w: World) -> None:
    sku = w.name("tea")
    near = w.store("A", 100, {sku: 5})
    chosen = w.store("B", 2500, {sku: 5})
    bare = w.store("C", 1500, {})

    order = w.place(fulfilment_type=PICKUP, origin_store_id=chosen, phone=w.phone(), lines=[line(sku, 2)])
    assert order.status == S.ORDER_STATUS_ASSIGNED
    assert order.fulfilling_store_id == chosen
    assert order.origin_store_id == chosen
    assert order.fulfilment_type == PICKUP
    assert w.stock(chosen, sku).reserved == 2
    assert w.stock(near, sku).reserved == 0

    # The chosen store has none on the shelf: the nearest store with stock to the customer.
    fallback = w.place(
        fulfilment_type=PICKUP,
        origin_store_id=bare,
        delivery_location=w.here(),
        phone=w.phone(),
        lines=[line(sku)],
    )
    assert fallback.fulfilling_store_id == near
    assert w.stock(near, sku).reserved == 1


def test_an_in_store_order_enrols_the_customer_with_the_till_store_and_guide_completes_at_once_and_earns(
    w: World,
) -> None:
    sku = w.name("tea")
    till = w.store("T", 0, {sku: 5})
    guide = w.guide(till)
    phone = w.phone()

    order = w.place(
        w.store_token(till),
        phone=phone,
        channel=common_pb2.CHANNEL_STORE_POS,
        fulfilment_type=IN_STORE,
        origin_store_id=till,
        guide_id=guide,
        lines=[line(sku, 2, 2550)],
    )

    assert order.status == S.ORDER_STATUS_COMPLETED
    assert order.fulfilling_store_id == order.origin_store_id == till
    assert order.guide_id == guide
    assert order.total_cents == 5100
    customer = w.identity.LookupCustomer(
        identity_pb2.LookupCustomerRequest(phone=phone), metadata=w.ops
    ).customer
    assert order.customer_id == customer.customer_id
    member = w.membership.GetMember(
        membership_pb2.GetMemberRequest(customer_id=customer.customer_id), metadata=w.ops
    ).member
    assert (member.home_store_id, member.guide_id) == (till, guide)
    assert order.member_id == member.member_id
    # The stock leaves the shelf once the relay has committed it; the points follow.
    level = eventually(lambda: w.stock(till, sku), lambda s: s.on_hand == 3, "stock taken off the shelf")
    assert level.reserved == 0
    done = eventually(lambda: w.get(order.order_id), lambda o: o.points_earned > 0, "points earned")
    assert done.points_earned == 51  # ¥51 at the entry tier
    earned = entries(w.ledger(member.member_id), EARN, order.order_id)
    assert [e.points for e in earned] == [51]
    assert earned[0].store_id == till


def test_a_till_order_with_no_channel_comes_through_the_store_pos(w: World) -> None:
    sku = w.name("tea")
    till = w.store("T", 0, {sku: 5})
    order = w.place(
        w.store_token(till),
        phone=w.phone(),
        channel=0,
        fulfilment_type=IN_STORE,
        origin_store_id=till,
        lines=[line(sku)],
    )
    assert order.channel == common_pb2.CHANNEL_STORE_POS


def test_a_store_terminal_places_only_in_store_orders_from_its_own_store(w: World) -> None:
    sku = w.name("tea")
    mine = w.store("A", 0, {sku: 5})
    other = w.store("B", 500, {sku: 5})
    till = w.store_token(mine)

    delivery = failure(
        w.orders.CreateOrder,
        w.request(phone=w.phone(), channel=common_pb2.CHANNEL_STORE_POS, lines=[line(sku)]),
        metadata=till,
    )
    assert delivery.code() == grpc.StatusCode.PERMISSION_DENIED
    for_another = failure(
        w.orders.CreateOrder,
        w.request(
            phone=w.phone(),
            channel=common_pb2.CHANNEL_STORE_POS,
            fulfilment_type=IN_STORE,
            origin_store_id=other,
            lines=[line(sku)],
        ),
        metadata=till,
    )
    assert for_another.code() == grpc.StatusCode.PERMISSION_DENIED
    assert w.stock(other, sku).on_hand == 5
    assert w.stock(mine, sku).reserved == 0


def test_a_channel_token_places_orders_only_through_its_own_channel(w: World) -> None:
    sku = w.name("tea")
    store = w.store("A", 0, {sku: 5})
    refused = failure(
        w.orders.CreateOrder,
        w.request(phone=w.phone(), channel=common_pb2.CHANNEL_APP, lines=[line(sku)]),
        metadata=w.mini,
    )
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
    assert w.stock(store, sku).reserved == 0
    # Unspecified, the channel is the token's.
    order = w.place(phone=w.phone(), channel=0, lines=[line(sku)])
    assert order.channel == common_pb2.CHANNEL_WECHAT_MINI_PROGRAM


# --- rejection and re-routing ----------------------------------------------------------------


def test_a_rejected_order_moves_to_the_next_nearest_store_never_back_and_at_last_is_unfulfillable(
    w: World,
) -> None:
    sku = w.name("tea")
    a = w.store("A", 200, {sku: 5})
    b = w.store("B", 700, {sku: 5})
    c = w.store("C", 1400, {sku: 5})
    order = w.place(phone=w.phone(), lines=[line(sku, 2)])
    assert order.fulfilling_store_id == a

    # The store that rejects learns that its rejection stood, and nothing of where the order went.
    answer = w.reject(order.order_id, w.store_token(a), "no staff")
    assert answer == orders_pb2.Order(order_id=order.order_id)
    moved = w.get(order.order_id)
    assert moved.status == S.ORDER_STATUS_ASSIGNED
    assert moved.fulfilling_store_id == b
    assert list(moved.rejected_store_ids) == [a]
    assert moved.status_reason == "no staff"
    assert (w.stock(a, sku).reserved, w.stock(b, sku).reserved) == (0, 2)

    # The rejecting store asks again (a retry): nothing changes, and it is not routed back there.
    assert w.reject(order.order_id, w.store_token(a), "no staff") == answer
    again = w.get(order.order_id)
    assert again.fulfilling_store_id == b
    assert list(again.rejected_store_ids) == [a]
    assert w.stock(b, sku).reserved == 2

    # Accepted and then rejected: to the next, still never back to A, which has stock.
    w.accept(order.order_id, w.store_token(b))
    w.reject(order.order_id, w.store_token(b), "damaged stock")
    moved = w.get(order.order_id)
    assert (moved.status, moved.fulfilling_store_id) == (S.ORDER_STATUS_ASSIGNED, c)
    assert list(moved.rejected_store_ids) == [a, b]
    assert (w.stock(a, sku).reserved, w.stock(b, sku).reserved, w.stock(c, sku).reserved) == (0, 0, 2)

    # None left.
    stuck = w.reject(order.order_id, w.ops, "closing early", store_id=c)
    assert stuck.status == S.ORDER_STATUS_UNFULFILLABLE
    assert stuck.fulfilling_store_id == ""
    assert list(stuck.rejected_store_ids) == [a, b, c]
    assert stuck.status_reason == "NO_STORE_IN_RANGE"  # every store in range has turned it down
    assert w.stock(c, sku).reserved == 0
    # Retries by ops and by the last store change nothing.
    assert w.reject(order.order_id, w.ops, "closing early", store_id=c) == stuck
    assert w.reject(order.order_id, w.store_token(c), "closing early") == orders_pb2.Order(
        order_id=order.order_id
    )
    assert w.get(order.order_id) == stuck

    changes = w.history(order.order_id)
    rejected = [ch for ch in changes if ch.to_status == S.ORDER_STATUS_PENDING_ASSIGNMENT]
    assert [(ch.store_id, ch.reason) for ch in rejected] == [
        (a, "no staff"),
        (b, "damaged stock"),
        (c, "closing early"),
    ]
    last = changes[-1]
    assert (last.to_status, last.actor, last.reason) == (
        S.ORDER_STATUS_UNFULFILLABLE,
        "system",
        stuck.status_reason,
    )


def test_a_rejected_pickup_order_goes_to_the_store_nearest_the_customer_never_to_the_members_home(
    w: World,
) -> None:
    sku = w.name("tea")
    chosen = w.store("C", 0, {sku: 5})
    near = w.store("N", 1000, {sku: 5})
    home = w.store("H", 23_000, {sku: 5})
    customer_id, _ = w.member(home_store_id=home)

    # With the customer's location: the eligible store nearest to it.
    located = w.place(
        customer_id=customer_id,
        fulfilment_type=PICKUP,
        origin_store_id=chosen,
        delivery_location=w.here(200),
        lines=[line(sku)],
    )
    assert (located.fulfilling_store_id, located.origin_store_id) == (chosen, home)
    w.reject(located.order_id, w.store_token(chosen), "no staff")
    moved = w.get(located.order_id)
    assert (moved.status, moved.fulfilling_store_id) == (S.ORDER_STATUS_ASSIGNED, near)
    assert moved.origin_store_id == home  # the reports still count it for the member's home store

    # Without one: the eligible store nearest the store the customer chose.
    unlocated = w.place(
        customer_id=customer_id, fulfilment_type=PICKUP, origin_store_id=chosen, lines=[line(sku)]
    )
    assert unlocated.fulfilling_store_id == chosen
    w.reject(unlocated.order_id, w.store_token(chosen), "no staff")
    moved = w.get(unlocated.order_id)
    assert (moved.status, moved.fulfilling_store_id) == (S.ORDER_STATUS_ASSIGNED, near)
    assert (w.stock(home, sku).reserved, w.stock(near, sku).reserved, w.stock(chosen, sku).reserved) == (
        0,
        2,
        0,
    )


def test_a_pickup_order_without_a_location_rejected_by_its_store_goes_to_a_store_near_the_chosen_one(
    w: World,
) -> None:
    sku = w.name("tea")
    chosen = w.store("C", 0, {sku: 5})
    near = w.store("N", 1500, {sku: 5})
    order = w.place(phone=w.phone(), fulfilment_type=PICKUP, origin_store_id=chosen, lines=[line(sku, 2)])
    assert order.fulfilling_store_id == chosen
    w.reject(order.order_id, w.store_token(chosen), "no staff")
    moved = w.get(order.order_id)
    assert (moved.status, moved.status_reason) == (S.ORDER_STATUS_ASSIGNED, "no staff")
    assert moved.fulfilling_store_id == near
    assert list(moved.rejected_store_ids) == [chosen]
    assert (w.stock(chosen, sku).reserved, w.stock(near, sku).reserved) == (0, 2)
    # And when none is left near it, UNFULFILLABLE with fulfilment's reason (the stores of other
    # tests' areas within the pickup radius hold none of this test's SKU).
    w.reject(order.order_id, w.store_token(near), "no staff")
    stuck = w.get(order.order_id)
    assert stuck.status == S.ORDER_STATUS_UNFULFILLABLE
    assert stuck.status_reason in ("NO_STORE_IN_RANGE", "INSUFFICIENT_STOCK")


def test_only_the_fulfilling_store_may_reject_and_ops_must_name_the_fulfilling_store(w: World) -> None:
    sku = w.name("tea")
    a = w.store("A", 200, {sku: 5})
    b = w.store("B", 700, {sku: 5})
    order = w.place(phone=w.phone(), lines=[line(sku)])
    assert order.fulfilling_store_id == a

    denied = failure(w.reject, order.order_id, w.store_token(b))
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
    wrong = failure(w.reject, order.order_id, w.ops, store_id=b)
    assert wrong.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(wrong) == "NOT_FULFILLING_STORE"
    no_reason = failure(w.reject, order.order_id, w.store_token(a), reason="")
    assert no_reason.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert w.get(order.order_id).fulfilling_store_id == a


# --- the store's work ------------------------------------------------------------------------


def test_a_store_lists_its_queue_by_status_page_by_page_and_a_channel_lists_a_customers_orders(
    w: World,
) -> None:
    sku = w.name("tea")
    q = w.store("Q", 0, {sku: 20})
    other = w.store("R", 20_000, {sku: 20})  # far away: never chosen here
    customer_id, _ = w.member()
    placed = [w.place(customer_id=customer_id, lines=[line(sku)]) for _ in range(3)]
    w.accept(placed[0].order_id, w.store_token(q))
    # The customer signs in to the app too: the app orders for them from then on.
    w.identity.LinkAccount(
        identity_pb2.LinkAccountRequest(
            customer_id=customer_id,
            account=common_pb2.ChannelAccount(channel=common_pb2.CHANNEL_APP, external_id=w.name("app-user")),
        ),
        metadata=w.ops,
    )
    from_app = w.place(
        w.p.token(Role.CHANNEL, channel=APP),
        customer_id=customer_id,
        channel=common_pb2.CHANNEL_APP,
        lines=[line(sku)],
    )
    terminal = w.store_token(q)

    def listed(meta: Metadata, **fields: Any) -> orders_pb2.ListOrdersResponse:
        answer: orders_pb2.ListOrdersResponse = w.orders.ListOrders(
            orders_pb2.ListOrdersRequest(**fields), metadata=meta
        )
        return answer

    waiting = listed(terminal, statuses=[S.ORDER_STATUS_ASSIGNED])
    assert [o.order_id for o in waiting.orders] == [from_app.order_id, placed[2].order_id, placed[1].order_id]
    assert waiting.next_page_token == ""

    queue = [S.ORDER_STATUS_ASSIGNED, S.ORDER_STATUS_ACCEPTED, S.ORDER_STATUS_READY]
    first = listed(terminal, store_id=q, statuses=queue, page_size=3)
    assert len(first.orders) == 3
    assert first.next_page_token
    second = listed(terminal, store_id=q, statuses=queue, page_size=3, page_token=first.next_page_token)
    assert [o.order_id for o in second.orders] == [placed[0].order_id]
    assert second.orders[0].status == S.ORDER_STATUS_ACCEPTED
    assert second.next_page_token == ""
    times = [o.create_time.ToNanoseconds() for o in [*first.orders, *second.orders]]
    assert times == sorted(times, reverse=True)
    # A page token is for the query it came from.
    reused = failure(listed, terminal, statuses=[S.ORDER_STATUS_ACCEPTED], page_token=first.next_page_token)
    assert reused.code() == grpc.StatusCode.INVALID_ARGUMENT

    denied = failure(listed, terminal, store_id=other)
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
    assert listed(w.store_token(other)).orders == []

    # A channel lists one customer's orders, and only those placed through it.
    mine = listed(w.mini, customer_id=customer_id)
    assert [o.order_id for o in mine.orders] == [o.order_id for o in reversed(placed)]
    assert failure(listed, w.mini).code() == grpc.StatusCode.INVALID_ARGUMENT


def test_only_the_fulfilling_store_or_ops_moves_an_order_along_and_the_history_says_who_when_and_why(
    w: World,
) -> None:
    sku = w.name("tea")
    a = w.store("A", 200, {sku: 5})
    b = w.store("B", 900, {sku: 5})
    started = datetime.now(UTC) - timedelta(seconds=1)
    order = w.place(phone=w.phone(), lines=[line(sku)])
    mine, theirs = w.store_token(a, subject="tablet-1"), w.store_token(b)

    for step in (w.accept, w.ready, w.complete):
        assert failure(step, order.order_id, theirs).code() == grpc.StatusCode.PERMISSION_DENIED
    assert w.accept(order.order_id, mine).status == S.ORDER_STATUS_ACCEPTED
    assert failure(w.ready, order.order_id, theirs).code() == grpc.StatusCode.PERMISSION_DENIED
    assert w.ready(order.order_id, w.ops).status == S.ORDER_STATUS_READY
    assert failure(w.complete, order.order_id, theirs).code() == grpc.StatusCode.PERMISSION_DENIED
    assert failure(w.complete, order.order_id, w.mini).code() == grpc.StatusCode.PERMISSION_DENIED
    assert w.complete(order.order_id, mine).status == S.ORDER_STATUS_COMPLETED

    changes = w.history(order.order_id)
    assert [(c.from_status, c.to_status, c.actor, c.store_id) for c in changes] == [
        (S.ORDER_STATUS_UNSPECIFIED, S.ORDER_STATUS_ASSIGNED, changes[0].actor, a),
        (S.ORDER_STATUS_ASSIGNED, S.ORDER_STATUS_ACCEPTED, f"store:{a}/tablet-1", a),
        (S.ORDER_STATUS_ACCEPTED, S.ORDER_STATUS_READY, "ops/alice", a),
        (S.ORDER_STATUS_READY, S.ORDER_STATUS_COMPLETED, f"store:{a}/tablet-1", a),
    ]
    stamps = [c.change_time.ToDatetime(tzinfo=UTC) for c in changes]
    assert stamps == sorted(stamps)
    assert started <= stamps[0]
    assert stamps[-1] <= datetime.now(UTC) + timedelta(seconds=1)
    # The store's own history, but not another's.
    asked = orders_pb2.GetOrderHistoryRequest(order_id=order.order_id)
    assert list(w.orders.GetOrderHistory(asked, metadata=mine).changes) == changes
    denied = failure(w.orders.GetOrderHistory, asked, metadata=theirs)
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_transition_out_of_order_is_invalid_transition_and_a_repeat_changes_nothing(w: World) -> None:
    sku = w.name("tea")
    w.store("A", 200, {sku: 5})
    order = w.place(phone=w.phone(), lines=[line(sku)])

    assert invalid_transition(failure(w.ready, order.order_id), "ORDER_STATUS_ASSIGNED")
    assert invalid_transition(failure(w.complete, order.order_id), "ORDER_STATUS_ASSIGNED")
    accepted = w.accept(order.order_id)
    assert w.accept(order.order_id) == accepted  # a retry
    assert invalid_transition(failure(w.complete, order.order_id), "ORDER_STATUS_ACCEPTED")
    w.ready(order.order_id)
    assert invalid_transition(failure(w.accept, order.order_id), "ORDER_STATUS_READY")
    assert invalid_transition(failure(w.reject, order.order_id, w.ops), "ORDER_STATUS_READY")
    w.complete(order.order_id)
    assert invalid_transition(failure(w.accept, order.order_id), "ORDER_STATUS_COMPLETED")
    assert len(w.history(order.order_id)) == 4


# --- completion and cancellation -------------------------------------------------------------


def test_completion_takes_the_stock_off_the_shelf_and_earns_points_once(w: World) -> None:
    sku = w.name("tea")
    a = w.store("A", 200, {sku: 5})
    customer_id, member = w.member()
    order = w.place(customer_id=customer_id, lines=[line(sku, 2, 3000)])
    assert (w.stock(a, sku).on_hand, w.stock(a, sku).reserved) == (5, 2)

    done = w.finish(order.order_id, w.store_token(a))
    retried = w.complete(order.order_id, w.store_token(a))  # a retry
    # The relay may credit the points between the two answers; nothing else may differ.
    retried.points_earned = done.points_earned
    assert retried == done

    level = eventually(lambda: w.stock(a, sku), lambda s: s.on_hand == 3, "stock committed")
    assert level.reserved == 0
    earned = eventually(lambda: w.get(order.order_id), lambda o: o.points_earned > 0, "points earned")
    assert earned.points_earned == 60
    assert [e.points for e in entries(w.ledger(member.member_id), EARN, order.order_id)] == [60]
    assert w.balance(member.member_id) == 60


def test_a_referred_members_first_completed_order_credits_the_referrer_100_points_once(w: World) -> None:
    sku = w.name("tea")
    a = w.store("A", 200, {sku: 5})
    _, referrer = w.member()
    customer_id, referred = w.member(referrer=referrer.member_id)

    first = w.place(customer_id=customer_id, lines=[line(sku)])
    w.finish(first.order_id)
    bonus = eventually(
        lambda: [e for e in w.ledger(referrer.member_id) if e.kind == REFERRAL_BONUS],
        lambda found: len(found) > 0,
        "referral bonus",
    )
    assert [e.points for e in bonus] == [100]

    second = w.place(customer_id=customer_id, lines=[line(sku)])
    w.finish(second.order_id, w.store_token(a))
    eventually(lambda: w.get(second.order_id), lambda o: o.points_earned > 0, "second order's points")
    assert [e.points for e in w.ledger(referrer.member_id) if e.kind == REFERRAL_BONUS] == [100]
    assert w.balance(referrer.member_id) == 100
    assert w.balance(referred.member_id) == 60


def test_cancelling_before_completion_releases_the_stock_and_gives_back_the_coupon_and_points(
    w: World,
) -> None:
    sku = w.name("tea")
    a = w.store("A", 200, {sku: 5})
    customer_id, member = w.member()
    w.earn(member.member_id, 50_000)
    code = w.coupon(member.member_id, 500)
    order = w.place(customer_id=customer_id, lines=[line(sku, 2)], coupon_code=code, points_to_redeem=400)
    w.accept(order.order_id, w.store_token(a))
    assert w.balance(member.member_id) == 100

    cancelled = w.cancel(order.order_id, w.mini, "changed my mind")
    assert cancelled.status == S.ORDER_STATUS_CANCELLED
    assert cancelled.status_reason == "changed my mind"
    assert w.cancel(order.order_id, w.mini, "changed my mind") == cancelled  # a retry

    eventually(lambda: w.stock(a, sku), lambda s: s.reserved == 0, "reservation released")
    assert w.stock(a, sku).on_hand == 5
    eventually(lambda: w.balance(member.member_id), lambda b: b == 500, "points given back")
    assert eventually(lambda: w.coupon_redeemable(code, member.member_id), bool, "coupon given back")
    last = w.history(order.order_id)[-1]
    assert (last.to_status, last.reason, last.actor) == (
        S.ORDER_STATUS_CANCELLED,
        "changed my mind",
        "channel:CHANNEL_WECHAT_MINI_PROGRAM",
    )


def test_the_home_store_reads_its_members_order_but_only_the_fulfilling_store_or_its_channel_cancels(
    w: World,
) -> None:
    sku = w.name("tea")
    home = w.store("H", 100, {})
    far = w.store("F", 800, {sku: 5})
    customer_id, _ = w.member(home_store_id=home)
    order = w.place(customer_id=customer_id, lines=[line(sku)])
    assert (order.origin_store_id, order.fulfilling_store_id) == (home, far)

    read = w.orders.GetOrder(
        orders_pb2.GetOrderRequest(order_id=order.order_id), metadata=w.store_token(home)
    )
    assert read.order.order_id == order.order_id
    for meta in (w.store_token(home), w.p.token(Role.CHANNEL, channel=APP)):
        assert failure(w.cancel, order.order_id, meta).code() == grpc.StatusCode.PERMISSION_DENIED
    assert w.get(order.order_id).status == S.ORDER_STATUS_ASSIGNED
    assert w.cancel(order.order_id, w.store_token(far), "out of stock").status == S.ORDER_STATUS_CANCELLED


def test_a_completed_order_cannot_be_cancelled(w: World) -> None:
    sku = w.name("tea")
    till = w.store("T", 0, {sku: 5})
    online = w.place(phone=w.phone(), lines=[line(sku)])
    assert online.fulfilling_store_id == till
    w.finish(online.order_id)
    assert invalid_transition(failure(w.cancel, online.order_id, w.ops), "ORDER_STATUS_COMPLETED")
    sale = w.place(
        w.store_token(till),
        phone=w.phone(),
        channel=common_pb2.CHANNEL_STORE_POS,
        fulfilment_type=IN_STORE,
        origin_store_id=till,
        lines=[line(sku)],
    )
    assert invalid_transition(failure(w.cancel, sale.order_id, w.store_token(till)), "ORDER_STATUS_COMPLETED")


# --- idempotency ----------------------------------------------------------------------------


def test_twenty_concurrent_retries_make_one_order_one_reservation_one_coupon_use_one_redemption(
    w: World,
) -> None:
    sku = w.name("tea")
    a = w.store("A", 200, {sku: 50})
    customer_id, member = w.member()
    w.earn(member.member_id, 50_000)
    code = w.coupon(member.member_id, 1000)
    request = w.request(
        customer_id=customer_id, lines=[line(sku, 3, 2000)], coupon_code=code, points_to_redeem=250
    )

    def place(_: int) -> orders_pb2.Order:
        answer: orders_pb2.Order = w.orders.CreateOrder(request, metadata=w.mini, timeout=30).order
        return answer

    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(place, range(20)))

    assert all(answer == answers[0] for answer in answers)
    order = answers[0]
    assert (order.fulfilling_store_id, order.discount_cents, order.points_redeemed) == (a, 1000, 250)
    assert w.stock(a, sku).reserved == 3
    assert w.balance(member.member_id) == 250
    assert len(entries(w.ledger(member.member_id), REDEEM, order.order_id)) == 1
    assert not w.coupon_redeemable(code, member.member_id)
    listed = w.orders.ListOrders(orders_pb2.ListOrdersRequest(customer_id=customer_id), metadata=w.ops)
    assert [o.order_id for o in listed.orders] == [order.order_id]
    # One more retry later is the same answer still.
    assert w.orders.CreateOrder(request, metadata=w.mini).order == order


def test_a_request_id_reused_with_another_payload_is_refused(w: World) -> None:
    sku = w.name("tea")
    a = w.store("A", 200, {sku: 5})
    request = w.request(phone=w.phone(), lines=[line(sku)])
    order = w.orders.CreateOrder(request, metadata=w.mini).order

    changed = orders_pb2.CreateOrderRequest()
    changed.CopyFrom(request)
    changed.lines[0].quantity = 2
    refused = failure(w.orders.CreateOrder, changed, metadata=w.mini)
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(refused) == "REQUEST_ID_REUSED"
    assert [f for f, _ in field_violations(refused)] == ["request_id"]
    assert w.stock(a, sku).reserved == 1
    assert w.get(order.order_id).lines[0].quantity == 1


def test_an_order_no_store_can_serve_is_refused_with_fulfilments_reason_and_leaves_nothing_behind(
    w: World,
) -> None:
    sku = w.name("tea")
    a = w.store("A", 200, {sku: 1})
    w.store("B", 800, {sku: 2})
    customer_id, member = w.member()
    w.earn(member.member_id, 50_000)
    code = w.coupon(member.member_id, 1000)
    request = w.request(customer_id=customer_id, lines=[line(sku, 3)], coupon_code=code, points_to_redeem=200)

    refused = failure(w.orders.CreateOrder, request, metadata=w.mini)

    assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(refused) == "INSUFFICIENT_STOCK"
    of_customer = orders_pb2.ListOrdersRequest(customer_id=customer_id)
    assert list(w.orders.ListOrders(of_customer, metadata=w.ops).orders) == []
    assert w.stock(a, sku).reserved == 0
    # The coupon and points it took come back (after a pause that lets a concurrent retry win).
    eventually(lambda: w.balance(member.member_id), lambda b: b == 500, "points back", within=GIVE_BACK)
    assert eventually(
        lambda: w.coupon_redeemable(code, member.member_id), bool, "coupon back", within=GIVE_BACK
    )
    assert list(w.orders.ListOrders(of_customer, metadata=w.ops).orders) == []


# --- reports --------------------------------------------------------------------------------


def closed_now() -> list[fulfilment_pb2.OpeningHours]:
    """Opening hours (UTC) that leave the store closed now: an hour starting three hours hence."""
    start = datetime.now(UTC) + timedelta(hours=3)
    end = start + timedelta(hours=1)
    return [
        fulfilment_pb2.OpeningHours(weekday=day, open=start.strftime("%H:%M"), close=end.strftime("%H:%M"))
        for day in range(1, 8)
    ]


def test_store_and_guide_reports_count_origin_fulfilment_and_the_increments_in_space_and_time(
    w: World,
) -> None:
    sku = w.name("tea")
    home = w.store("H", 100, {}, opening_hours=closed_now(), timezone="UTC")
    far = w.store("F", 800, {sku: 10})
    guide, till_guide = w.guide(home), w.guide(far, "till-guide")
    customer_id, member = w.member(home_store_id=home, guide_id=guide)

    # The member orders while the home store is closed; the other store delivers.
    online = w.place(customer_id=customer_id, lines=[line(sku, 2, 3000)])
    assert (online.origin_store_id, online.fulfilling_store_id, online.guide_id) == (home, far, guide)
    assert online.member_id == member.member_id
    w.finish(online.order_id, w.store_token(far))
    # A cancelled order never counts.
    dropped = w.place(customer_id=customer_id, lines=[line(sku)])
    w.cancel(dropped.order_id, w.ops)
    # A sale at the other store's till.
    sale = w.place(
        w.store_token(far),
        phone=w.phone(),
        channel=common_pb2.CHANNEL_STORE_POS,
        fulfilment_type=IN_STORE,
        origin_store_id=far,
        guide_id=till_guide,
        lines=[line(sku, 1, 2500)],
    )

    at_home = eventually(lambda: w.report(home), lambda r: r.originated_while_closed == 1, "hours recorded")
    assert (
        at_home.orders_originated,
        at_home.orders_fulfilled,
        at_home.fulfilled_for_other_stores,
        at_home.revenue_cents,
    ) == (1, 0, 0, 0)
    away = eventually(
        lambda: w.report(far, w.store_token(far)), lambda r: r.orders_originated == 1, "till sale"
    )
    assert away.orders_fulfilled == 2
    assert away.fulfilled_for_other_stores == 1
    assert away.originated_while_closed == 0
    assert away.revenue_cents == online.total_cents + sale.total_cents == 8500

    denied = failure(w.report, home, w.store_token(far))
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
    window = w.orders.GetStoreReport(
        orders_pb2.GetStoreReportRequest(
            store_id=far,
            start_time=Timestamp(seconds=int(time.time()) + 3600),
            end_time=Timestamp(seconds=int(time.time()) + 7200),
        ),
        metadata=w.ops,
    )
    assert window.orders_fulfilled == 0

    def guide_report(guide_id: str, meta: Metadata) -> orders_pb2.GetGuideReportResponse:
        answer: orders_pb2.GetGuideReportResponse = w.orders.GetGuideReport(
            orders_pb2.GetGuideReportRequest(guide_id=guide_id), metadata=meta
        )
        return answer

    mine = guide_report(guide, w.ops)
    assert (mine.members, mine.orders, mine.online_orders, mine.in_store_orders, mine.revenue_cents) == (
        1,
        1,
        1,
        0,
        6000,
    )
    till = guide_report(till_guide, w.store_token(far))
    assert (till.members, till.orders, till.online_orders, till.in_store_orders, till.revenue_cents) == (
        1,
        1,
        0,
        1,
        2500,
    )
    # A store sees only what its own customers bought through the guide.
    assert guide_report(guide, w.store_token(far)).orders == 0


# --- on a platform where stores must accept quickly -------------------------------------------


def test_an_order_its_store_leaves_unaccepted_moves_on_by_itself_with_reason_accept_timeout(h: World) -> None:
    sku = h.name("tea")
    a = h.store("A", 200, {sku: 5})
    b = h.store("B", 900, {sku: 5})
    order = h.place(phone=h.phone(), lines=[line(sku)])
    assert order.fulfilling_store_id == a
    # Another order, accepted at once, stays where it is.
    other = World(h.p, *area())
    x = other.store("X", 0, {other.name("tea"): 5})
    kept = other.place(phone=other.phone(), lines=[line(other.name("tea"))])
    other.accept(kept.order_id, other.store_token(x))

    eventually(lambda: h.get(order.order_id), lambda o: len(o.rejected_store_ids) > 0, "moved on", within=15)
    # The rejection commits first; A's stock is released on the way to the next store, after it.
    eventually(lambda: h.stock(a, sku), lambda s: s.reserved == 0, "A's reservation released")
    # B lets it lapse too: nowhere left to go.
    stuck = eventually(
        lambda: h.get(order.order_id),
        lambda o: o.status == S.ORDER_STATUS_UNFULFILLABLE,
        "unfulfillable",
        within=15,
    )
    assert list(stuck.rejected_store_ids) == [a, b]
    assert h.stock(b, sku).reserved == 0
    changes = [(c.from_status, c.to_status, c.store_id, c.actor, c.reason) for c in h.history(order.order_id)]
    assert changes[1:] == [
        (S.ORDER_STATUS_ASSIGNED, S.ORDER_STATUS_PENDING_ASSIGNMENT, a, "system", "ACCEPT_TIMEOUT"),
        (S.ORDER_STATUS_PENDING_ASSIGNMENT, S.ORDER_STATUS_ASSIGNED, b, "system", ""),
        (S.ORDER_STATUS_ASSIGNED, S.ORDER_STATUS_PENDING_ASSIGNMENT, b, "system", "ACCEPT_TIMEOUT"),
        (S.ORDER_STATUS_PENDING_ASSIGNMENT, S.ORDER_STATUS_UNFULFILLABLE, "", "system", "NO_STORE_IN_RANGE"),
    ]
    assert other.get(kept.order_id).status == S.ORDER_STATUS_ACCEPTED
    assert other.get(kept.order_id).fulfilling_store_id == x


def test_bad_input_is_invalid_argument_naming_the_field_before_any_other_service_is_called(h: World) -> None:
    sku = h.name("tea")
    h.store("A", 200, {sku: 5})
    bad = h.request(phone=h.phone(), lines=[line(sku, 0)], delivery_address="", points_to_redeem=-1)
    h.p.stop("identity")
    try:
        refused = failure(h.orders.CreateOrder, bad, metadata=h.mini, timeout=10)
        assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert {f for f, _ in field_violations(refused)} == {
            "lines[0].quantity",
            "delivery_address",
            "points_to_redeem",
        }
        # A good request does need identity, and says so.
        good = h.request(phone=h.phone(), lines=[line(sku)])
        down = failure(h.orders.CreateOrder, good, metadata=h.mini, timeout=20)
        assert down.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        h.p.start("identity")
    # Once identity is back, a retry with the same request id goes through.
    placed = eventually(lambda: retried(h.orders.CreateOrder, good, metadata=h.mini), bool, "identity back")
    assert placed is not None
    assert placed.order.status == S.ORDER_STATUS_ASSIGNED
