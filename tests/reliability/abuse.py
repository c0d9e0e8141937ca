"""The attacks a caller holding an ordinary token could make on another caller's customers,
members, stores and orders, replayed against the running services.

Each attack is a function of the deployment that plays it, checks that it came to nothing, and
returns what it found: calls that gave the attacker what is not theirs (leaks), points or coupon
value spent without the member, points credited beyond the programme's caps. A found problem is a
sentence saying which call did what.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import func, select

from quanyu.auth import Role
from quanyu.common.v1 import common_pb2
from quanyu.fulfilment.v1 import fulfilment_pb2
from quanyu.identity.v1 import identity_pb2
from quanyu.membership.v1 import membership_pb2
from quanyu.orders.v1 import orders_pb2
from services.orders.grpc_servicer import request_from
from services.orders.storage import outbox
from tests.conftest import hand_signed
from tests.orders.platform import Metadata
from tests.reliability.deployment import Deployment
from tests.reliability.world import MINI, SERVER_ERRORS, Outcome, World, attempt

TMALL = "CHANNEL_TMALL"
APP_CHANNEL = "CHANNEL_APP"
POS = common_pb2.CHANNEL_STORE_POS
IN_STORE = common_pb2.FULFILMENT_TYPE_IN_STORE
DELIVERY = common_pb2.FULFILMENT_TYPE_DELIVERY
DENIED = grpc.StatusCode.PERMISSION_DENIED
NOT_FOUND = grpc.StatusCode.NOT_FOUND
INVALID = grpc.StatusCode.INVALID_ARGUMENT
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


@dataclass
class AbuseFigures:
    attacks: int = 0
    leaks: int = 0
    value_spent_without_member: int = 0  # points, and coupon face value in fen
    points_minted_over_caps: int = 0
    problems: list[str] = field(default_factory=list)

    def expect(self, ok: bool, what: str) -> None:
        """One attempt of an attack: `ok` when it came to nothing, as it must."""
        self.attacks += 1
        if not ok:
            self.leaks += 1
            self.problems.append(what)

    def refused(self, outcome: Outcome[object], code: grpc.StatusCode, reason: str, what: str) -> None:
        self.expect(
            outcome.code == code and (not reason or outcome.reason == reason), f"{what}: answered {outcome}"
        )


def _alike(one: Outcome[object], other: Outcome[object], ids: tuple[str, str]) -> bool:
    """Two answers that tell a caller nothing apart: code, reason and message (ids masked), and
    no data in either."""

    def masked(outcome: Outcome[object]) -> tuple[str, str, str, bool]:
        message = outcome.message
        for value in ids:
            if value:
                message = message.replace(value, "<id>")
        return outcome.code.name, outcome.reason, message, outcome.ok

    return masked(one) == masked(other)


def _account(channel: str, external_id: str) -> common_pb2.ChannelAccount:
    return common_pb2.ChannelAccount(channel=common_pb2.Channel.Value(channel), external_id=external_id)


def _line(sku: str, quantity: int = 1, price: int = 5_000) -> common_pb2.Line:
    return common_pb2.Line(sku=sku, quantity=quantity, unit_price_cents=price)


def _phone() -> str:
    return f"137{uuid.uuid4().int % 10**8:08d}"


# --- account takeover across channels ------------------------------------------------------------


def account_takeover(d: Deployment, figures: AbuseFigures) -> None:
    """A Tmall backend and a till go after a WeChat customer: read them, link their own accounts
    to them, or link by the victim's phone."""
    w = World(d)
    i = d.identity
    tmall, store = w.channel_token(TMALL), w.store_token(w.store("T", 0, {}))
    openid, phone, card = w.name("victim-openid"), _phone(), w.name("victim-card")
    victim = w.customer(MINI, openid, phone)
    i.ResolveCustomer(
        identity_pb2.ResolveCustomerRequest(account=_account("CHANNEL_STORE_POS", card), phone=phone),
        metadata=store,
    )
    unknown = _account(MINI, w.name("nobody-openid"))

    def lookup(account: common_pb2.ChannelAccount, meta: Metadata) -> Outcome[object]:
        return attempt(
            lambda: i.LookupCustomer(identity_pb2.LookupCustomerRequest(account=account), metadata=meta)
        )

    figures.expect(
        _alike(lookup(_account(MINI, openid), tmall), lookup(unknown, tmall), (openid, unknown.external_id)),
        "Tmall looking up a WeChat openid is told apart from an unknown one",
    )
    got = attempt(lambda: i.GetCustomer(identity_pb2.GetCustomerRequest(customer_id=victim), metadata=tmall))
    figures.refused(got, NOT_FOUND, "", "Tmall reading a WeChat-only customer")
    by_phone = attempt(
        lambda: i.LookupCustomer(identity_pb2.LookupCustomerRequest(phone=phone), metadata=tmall)
    )
    figures.refused(by_phone, NOT_FOUND, "", "Tmall finding a WeChat-only customer by phone")
    attacker = _account(MINI, w.name("attacker-openid"))
    linked = attempt(
        lambda: i.LinkAccount(
            identity_pb2.LinkAccountRequest(customer_id=victim, account=attacker), metadata=tmall
        )
    )
    figures.refused(linked, DENIED, "OTHER_CHANNEL", "Tmall linking a WeChat openid to a WeChat customer")
    figures.refused(
        lookup(attacker, w.ops), NOT_FOUND, "", "the attacker's WeChat login now resolving somewhere"
    )
    own = _account(TMALL, w.name("attacker-buyer"))
    linked = attempt(
        lambda: i.LinkAccount(
            identity_pb2.LinkAccountRequest(customer_id=victim, account=own), metadata=tmall
        )
    )
    figures.refused(linked, NOT_FOUND, "", "Tmall linking its own buyer id to a customer not its own")
    by_till = attempt(
        lambda: i.ResolveCustomer(
            identity_pb2.ResolveCustomerRequest(account=_account(TMALL, w.name("till-tmall")), phone=phone),
            metadata=store,
        )
    )
    figures.refused(by_till, DENIED, "OTHER_CHANNEL", "a till linking a Tmall account by the victim's phone")
    figures.refused(
        lookup(_account(TMALL, w.name("till-tmall")), w.ops), NOT_FOUND, "", "the till's Tmall account linked"
    )
    at_till = attempt(
        lambda: i.LinkAccount(
            identity_pb2.LinkAccountRequest(customer_id=victim, account=attacker), metadata=store
        )
    )
    figures.refused(at_till, DENIED, "OTHER_CHANNEL", "a till linking a WeChat openid")

    # What each is shown of the customer: the mini-program its openid, the till its card, nobody
    # the other's.
    def shown_to(meta: Metadata) -> set[int]:
        found = i.GetCustomer(identity_pb2.GetCustomerRequest(customer_id=victim), metadata=meta)
        return {int(a.channel) for a in found.customer.accounts}

    for meta, channel in ((w.mini, common_pb2.CHANNEL_WECHAT_MINI_PROGRAM), (store, POS)):
        channels = shown_to(meta)
        figures.expect(channels == {channel}, f"a caller of {channel} shown accounts {channels}")


# --- spending a member's value without the member --------------------------------------------------


def spending_without_member(d: Deployment, figures: AbuseFigures) -> None:
    """Store A and a Tmall backend spend the points and coupons of a WeChat member of store B."""
    w = World(d)
    m = d.membership
    sku = w.name("tea")
    store_a, store_b = w.store("A", 0, {sku: 50}), w.store("B", 2_000, {sku: 50})
    till_a, tmall = w.store_token(store_a), w.channel_token(TMALL)
    victim = w.enrolled(MINI, w.name("victim"), home_store_id=store_b)
    w.earn(victim.member_id, 50_000)
    coupons = [w.coupon(victim.member_id, 800) for _ in range(3)]
    before = w.balance(victim.member_id)

    def redeem_points(meta: Metadata, code: str = "") -> Outcome[object]:
        request = membership_pb2.RedeemPointsRequest(
            member_id=victim.member_id,
            points=100,
            source_id=w.name(f"steal-{uuid.uuid4().hex[:6]}"),
            member_code=code,
        )
        return attempt(lambda: m.RedeemPoints(request, metadata=meta))

    def redeem_coupon(meta: Metadata, code: str = "") -> Outcome[object]:
        request = membership_pb2.RedeemCouponRequest(
            code=coupons[1],
            member_id=victim.member_id,
            order_id=f"ord_{uuid.uuid4().hex}",
            order_amount_cents=10_000,
            member_code=code,
        )
        return attempt(lambda: m.RedeemCoupon(request, metadata=meta))

    figures.refused(
        redeem_points(till_a), DENIED, "MEMBER_CODE_REQUIRED", "store A redeeming B's member's points"
    )
    figures.refused(
        redeem_coupon(till_a), DENIED, "MEMBER_CODE_REQUIRED", "store A burning a coupon on no order"
    )
    # Codes that are not this member's at this till: another member's, made up, shown first at B.
    other = w.enrolled(MINI, w.name("other"), home_store_id=store_a)
    for code, what in (
        (w.member_code(other.member_id), "another member's code"),
        ("123456789012345678", "a made-up code"),
    ):
        figures.refused(redeem_points(till_a, code), DENIED, "MEMBER_CODE_INVALID", f"store A with {what}")
    shown_at_b = w.member_code(victim.member_id)
    seen = attempt(
        lambda: m.GetMember(
            membership_pb2.GetMemberRequest(member_code=shown_at_b), metadata=w.store_token(store_b)
        )
    )
    figures.expect(seen.ok, f"store B scanning the member's code: {seen}")
    figures.refused(
        redeem_points(till_a, shown_at_b), DENIED, "MEMBER_CODE_INVALID", "store A with a code shown at B"
    )
    figures.refused(redeem_points(tmall), NOT_FOUND, "", "Tmall redeeming a WeChat member's points")
    sale = orders_pb2.CreateOrderRequest(
        request_id=w.name("steal-sale"),
        customer_id=victim.customer_id,
        fulfilment_type=IN_STORE,
        origin_store_id=store_a,
        lines=[_line(sku)],
        coupon_code=coupons[0],
        points_to_redeem=200,
    )
    figures.refused(
        attempt(lambda: d.orders.CreateOrder(sale, metadata=till_a)),
        DENIED,
        "MEMBER_CODE_REQUIRED",
        "store A's till sale paid with B's member's points and coupon",
    )
    online = orders_pb2.CreateOrderRequest(
        request_id=w.name("steal-online"),
        customer_id=victim.customer_id,
        fulfilment_type=DELIVERY,
        lines=[_line(sku)],
        delivery_location=w.here(100),
        delivery_address="1 Steal Street",
        points_to_redeem=200,
    )
    figures.refused(
        attempt(lambda: d.orders.CreateOrder(online, metadata=tmall)),
        NOT_FOUND,
        "",
        "a Tmall order for a WeChat member, paid with their points",
    )
    # A code store B was shown, used by store A through its till sale (orders spends it for A with
    # the platform's own token): it is B's, not A's.
    through_orders = orders_pb2.CreateOrderRequest(
        request_id=w.name("steal-with-bs-code"),
        customer_id=victim.customer_id,
        fulfilment_type=IN_STORE,
        origin_store_id=store_a,
        lines=[_line(sku)],
        points_to_redeem=200,
        member_code=shown_at_b,
    )
    figures.refused(
        attempt(lambda: d.orders.CreateOrder(through_orders, metadata=till_a)),
        DENIED,
        "MEMBER_CODE_INVALID",
        "store A's till sale paid with a code shown at B",
    )
    # Nothing of the victim's is spent now or later: the refusals took nothing, so there is
    # nothing to give back either.
    after = w.balance(victim.member_id)

    def taken(code: str) -> bool:
        """Whether the coupon was used up (trying it now uses it, as it is no longer needed)."""
        probe = membership_pb2.RedeemCouponRequest(
            code=code, member_id=victim.member_id, order_id=w.name(f"probe-{code}"), order_amount_cents=10_000
        )
        return attempt(lambda: m.RedeemCoupon(probe, metadata=w.service)).reason == "COUPON_ALREADY_REDEEMED"

    spent = max(0, before - after) + sum(800 for code in coupons if taken(code))
    figures.value_spent_without_member += spent
    figures.expect(spent == 0, f"{spent} of the member's points and coupon value spent without them")
    # With the code the member shows at A, A's till spends their points: the way it should work,
    # also for a store whose id and source ids are as long as they may be.
    here = w.member_code(victim.member_id)
    figures.expect(redeem_points(till_a, here).ok, "store A refused the member's own code")
    longest = w.store("L" * 54, 4_000, {})
    assert len(longest) == 64
    long_till = w.store_token(longest)
    code = w.member_code(victim.member_id)
    request = membership_pb2.RedeemPointsRequest(
        member_id=victim.member_id, points=1, source_id="s" * 128, member_code=code
    )
    outcome = attempt(lambda: m.RedeemPoints(request, metadata=long_till))
    figures.expect(outcome.ok, f"a redemption with the longest ids answered {outcome}")


# --- prices that mint points ---------------------------------------------------------------------


def amounts(d: Deployment, figures: AbuseFigures) -> None:
    """Prices no shop charges, IN_STORE orders from a channel, spends past every cap."""
    w = World(d)
    sku = w.name("tea")
    store_a, store_b = w.store("A", 0, {sku: 100}), w.store("B", 3_000, {sku: 100})
    till_a, tmall = w.store_token(store_a), w.channel_token(TMALL)
    phone = _phone()
    for fields, named in (
        ({"unit_price_cents": 2**53 - 1}, "lines[0].unit_price_cents"),
        ({"unit_price_cents": 2**63 - 1}, "lines[0].unit_price_cents"),
        ({"quantity": 2**31 - 1, "unit_price_cents": 1}, "lines[0].quantity"),
        ({"quantity": 9_999, "unit_price_cents": 9_999_999}, "lines[0]"),
    ):
        line = common_pb2.Line(sku=sku, **{"quantity": 1, **fields})
        sale = orders_pb2.CreateOrderRequest(
            request_id=w.name(f"mint-{uuid.uuid4().hex[:6]}"),
            phone=phone,
            fulfilment_type=IN_STORE,
            origin_store_id=store_a,
            lines=[line],
        )
        outcome = attempt(lambda sale=sale: d.orders.CreateOrder(sale, metadata=till_a))  # type: ignore[misc]
        figures.expect(outcome.code == INVALID and named in outcome.message, f"a sale of {fields}: {outcome}")
    many = orders_pb2.CreateOrderRequest(
        request_id=w.name("mint-many"),
        phone=phone,
        fulfilment_type=IN_STORE,
        origin_store_id=store_a,
        lines=[_line(w.name(f"sku-{n}"), 1, 9_000_000) for n in range(3)],
    )
    outcome = attempt(lambda: d.orders.CreateOrder(many, metadata=till_a))
    figures.expect(
        outcome.code == INVALID and "lines" in outcome.message, f"an order over ¥100,000: {outcome}"
    )
    # A channel never sells at a till: not at another store's, not taking its stock.
    tmall_customer = w.customer(TMALL, w.name("buyer"))
    till_sale = orders_pb2.CreateOrderRequest(
        request_id=w.name("tmall-till"),
        customer_id=tmall_customer,
        fulfilment_type=IN_STORE,
        origin_store_id=store_b,
        lines=[_line(sku, 5)],
    )
    figures.refused(
        attempt(lambda: d.orders.CreateOrder(till_sale, metadata=tmall)),
        DENIED,
        "IN_STORE_AT_TILL_ONLY",
        "a Tmall IN_STORE order at store B",
    )
    figures.expect(w.level(store_b, sku).on_hand == 100, "store B's stock taken by a channel's till sale")
    # Straight at membership: a spend beyond any order is refused; the caps hold whatever comes.
    member = w.enrolled(MINI, w.name("whale"))
    earn = attempt(
        lambda: d.membership.EarnPoints(
            membership_pb2.EarnPointsRequest(
                member_id=member.member_id, source_id=w.name("huge"), spend_cents=2**53
            ),
            metadata=w.service,
        )
    )
    figures.expect(earn.code == INVALID, f"EarnPoints of 2^53 fen: {earn}")
    for n in range(6):  # ¥1,000,000 each: 2,000,000+ points each uncapped
        d.membership.EarnPoints(
            membership_pb2.EarnPointsRequest(
                member_id=member.member_id, source_id=w.name(f"big-{n}"), spend_cents=100_000_000
            ),
            metadata=w.service,
        )
    over = w.balance(member.member_id) - 1_000_000
    figures.points_minted_over_caps += max(0, over)
    figures.expect(over <= 0, f"{over} points credited in a day beyond the daily cap")
    report = attempt(
        lambda: d.orders.GetStoreReport(orders_pb2.GetStoreReportRequest(store_id=store_a), metadata=w.ops)
    )
    figures.expect(report.ok, f"the store report after it all: {report}")
    # Referral bonuses minted by a till: made-up customers, each naming one referrer, each buying
    # nothing at all, then a little. A purchase of nothing pays nobody; the rest stop at the cap of
    # bonuses a referrer is paid a day.
    referrer = w.enrolled(TMALL, w.name("referrer"))
    for n in range(25):
        card = w.name(f"card-{n}")
        newcomer = d.identity.ResolveCustomer(
            identity_pb2.ResolveCustomerRequest(account=_account("CHANNEL_STORE_POS", card)), metadata=till_a
        ).customer.customer_id
        d.membership.Enroll(
            membership_pb2.EnrollRequest(customer_id=newcomer, referrer_member_id=referrer.member_id),
            metadata=till_a,
        )
        for price in (0, 100):
            sale = orders_pb2.CreateOrderRequest(
                request_id=w.name(f"referral-{n}-{price}"),
                customer_id=newcomer,
                fulfilment_type=IN_STORE,
                origin_store_id=store_a,
                lines=[_line(sku, 1, price)],
            )
            attempt(lambda sale=sale: d.orders.CreateOrder(sale, metadata=till_a))  # type: ignore[misc]
    # Every earn those sales set off has gone through the outbox before the referrer is counted.
    _eventually(
        lambda: d.orders.GetOutboxStatus(orders_pb2.GetOutboxStatusRequest(), metadata=w.ops).undelivered,
        lambda undelivered: undelivered == 0,
        within=60.0,
    )
    bonuses = w.balance(referrer.member_id)
    minted = max(0, bonuses - 20 * 100)
    figures.points_minted_over_caps += minted
    figures.expect(minted == 0, f"a referrer paid {bonuses} points in a day by one till's sales")


# --- one store in another's business -------------------------------------------------------------


def store_in_another(d: Deployment, figures: AbuseFigures) -> None:
    """Store A reads B's members, enrols members and credits guides for B, follows an order that
    left it, and takes the request ids B's tills will use."""
    w = World(d)
    m, o = d.membership, d.orders
    sku = w.name("tea")
    store_a, store_b = w.store("A", 0, {sku: 100}), w.store("B", 1_500, {sku: 100})
    till_a, till_b = w.store_token(store_a), w.store_token(store_b)
    guide_b = w.guide(store_b)
    member_b = w.enrolled(MINI, w.name("member-b"), home_store_id=store_b, guide_id=guide_b)
    w.earn(member_b.member_id, 30_000)
    nobody = f"mem_{uuid.uuid4().hex}"

    def read(what: str, who: str) -> Outcome[object]:
        if what == "GetMember":
            return attempt(
                lambda: m.GetMember(membership_pb2.GetMemberRequest(member_id=who), metadata=till_a)
            )
        request = membership_pb2.ListLedgerEntriesRequest(member_id=who)
        return attempt(lambda: m.ListLedgerEntries(request, metadata=till_a))

    for what in ("GetMember", "ListLedgerEntries"):
        figures.expect(
            _alike(read(what, member_b.member_id), read(what, nobody), (member_b.member_id, nobody)),
            f"store A's {what} of B's member told apart from nobody's",
        )

    def members_of_b() -> int:
        listed = m.ListMembers(membership_pb2.ListMembersRequest(home_store_id=store_b), metadata=w.ops)
        return len(listed.members)

    before = members_of_b()
    fake = w.customer(MINI, w.name("fake"))
    enrolled = attempt(
        lambda: m.Enroll(
            membership_pb2.EnrollRequest(customer_id=fake, home_store_id=store_b), metadata=till_a
        )
    )
    figures.refused(enrolled, DENIED, "OTHER_STORE", "store A enrolling a member with B as home")
    made_up = attempt(
        lambda: m.Enroll(membership_pb2.EnrollRequest(customer_id=f"cus_{uuid.uuid4().hex}"), metadata=till_a)
    )
    figures.refused(made_up, NOT_FOUND, "", "store A enrolling a customer nobody knows")
    figures.expect(members_of_b() == before, "B's members changed by store A")
    credited = attempt(
        lambda: o.CreateOrder(
            orders_pb2.CreateOrderRequest(
                request_id=w.name("credit-b"),
                phone=_phone(),
                fulfilment_type=IN_STORE,
                origin_store_id=store_a,
                guide_id=guide_b,
                lines=[_line(sku)],
            ),
            metadata=till_a,
        )
    )
    figures.refused(credited, NOT_FOUND, "GUIDE_NOT_FOUND", "store A crediting a sale to B's guide")
    # A sale at A to B's member (B's guide looks after them) is not B's guide's sale either.
    o.CreateOrder(
        orders_pb2.CreateOrderRequest(
            request_id=w.name("sale-to-b-member"),
            customer_id=member_b.customer_id,
            fulfilment_type=IN_STORE,
            origin_store_id=store_a,
            lines=[_line(sku)],
        ),
        metadata=till_a,
    )
    guide_report = o.GetGuideReport(orders_pb2.GetGuideReportRequest(guide_id=guide_b), metadata=w.ops)
    figures.expect(guide_report.orders == 0, f"B's guide credited with {guide_report.orders} orders")
    # An order A rejects goes on to B; asked again, A learns nothing of it.
    order = o.CreateOrder(w.delivery(w.name("moves-on"), w.name("buyer"), {sku: 1}), metadata=w.app).order
    if order.fulfilling_store_id == store_a:
        o.RejectOrder(
            orders_pb2.RejectOrderRequest(order_id=order.order_id, reason="no staff"), metadata=till_a
        )
        again = o.RejectOrder(
            orders_pb2.RejectOrderRequest(order_id=order.order_id, reason="no staff"), metadata=till_a
        )
        figures.expect(
            again.order == orders_pb2.Order(order_id=order.order_id),
            f"store A shown an order that moved on: {again.order.delivery_address!r} "
            f"{again.order.fulfilling_store_id!r}",
        )
    else:
        figures.problems.append(f"the order went to {order.fulfilling_store_id}, not store A")
    # Request ids are each store's own: A taking B's next id neither blocks nor shows B's sale.
    taken = w.name("till-b-0001")
    first = o.CreateOrder(w.in_store(taken, store_a, _phone(), {sku: 1}), metadata=till_a).order
    sale_b = attempt(lambda: o.CreateOrder(w.in_store(taken, store_b, _phone(), {sku: 1}), metadata=till_b))
    figures.expect(
        sale_b.ok and sale_b.answer().order.order_id != first.order_id,
        f"B's sale with a request id A used first: {sale_b}",
    )


# --- size and rate -------------------------------------------------------------------------------


def size_and_rate(d: Deployment, figures: AbuseFigures) -> None:
    """Huge calls and floods from one store token."""
    w = World(d)
    store = w.store("S", 0, {})
    till = w.store_token(store, "flooding-till")
    for count in (200_000, 300_000):
        levels = [fulfilment_pb2.SkuQuantity(sku=f"junk-{n}", on_hand=1) for n in range(count)]
        started = time.monotonic()
        outcome = attempt(
            lambda levels=levels: d.fulfilment.SetStock(  # type: ignore[misc]
                fulfilment_pb2.SetStockRequest(store_id=store, levels=levels), metadata=till, timeout=60
            )
        )
        figures.expect(
            outcome.code == INVALID and "levels" in outcome.message,
            f"SetStock with {count:,} levels: {outcome} after {time.monotonic() - started:.1f} s",
        )
    # Phone look-ups: a till gets a burst, then is told to wait, whether it asks identity or
    # places sales naming phones (each finds a customer by phone too).
    sku = w.name("free")
    w.set_stock(store, {sku: 1_000})
    selling = w.store_token(store, "selling-till")

    def sale(n: int) -> Outcome[object]:
        request = w.in_store(w.name(f"probe-{n}"), store, _phone(), {sku: 1})
        return attempt(lambda: d.orders.CreateOrder(request, metadata=selling))

    sales = [sale(n) for n in range(40)]
    turned = [o for o in sales if o.code == EXHAUSTED]
    figures.expect(
        15 <= len(turned) <= 25 and all(o.reason == "PHONE_LOOKUP_QUOTA_EXCEEDED" for o in turned),
        f"40 sales by phone in a row from one till: {len(turned)} refused",
    )
    looked = [
        attempt(
            lambda: d.identity.LookupCustomer(
                identity_pb2.LookupCustomerRequest(phone=_phone()), metadata=till
            )
        )
        for _ in range(60)
    ]
    refused = [o for o in looked if o.code == EXHAUSTED]
    figures.expect(
        20 <= len(refused) <= 45 and all(o.reason == "PHONE_LOOKUP_QUOTA_EXCEEDED" for o in refused),
        f"60 phone look-ups in a row from one till: {len(refused)} refused",
    )
    figures.expect(
        all(o.code in (NOT_FOUND, EXHAUSTED) for o in looked),
        f"phone look-ups answered {set(o.code for o in looked)}",
    )
    try:
        d.identity.LookupCustomer(identity_pb2.LookupCustomerRequest(phone=_phone()), metadata=till)
        delay = None
    except grpc.RpcError as error:
        delay = retry_delay(error)
    figures.expect(delay is not None and 0 < delay <= 10, f"the refusal says when to retry: {delay}")


def _eventually(read: Callable[[], int], done: Callable[[int], bool], within: float = 20.0) -> int:
    """What `read` gives once `done` holds of it, or after `within` seconds (effects go through
    the outbox)."""
    deadline = time.monotonic() + within
    value = read()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(0.2)
        value = read()
    return value


def retry_delay(error: grpc.RpcError) -> float | None:
    """The google.rpc.RetryInfo delay a refusal carries, in seconds."""
    status = rpc_status.from_call(error)
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return float(info.retry_delay.ToTimedelta().total_seconds())
    return None


# --- the smaller ones ----------------------------------------------------------------------------


def smaller(d: Deployment, figures: AbuseFigures) -> None:
    w = World(d)
    sku = w.name("tea")
    store = w.store("S", 0, {sku: 20})
    key = d.var / "token-keys"
    # A hand-signed channel token naming a channel that does not exist is refused at the door.
    now = int(datetime.now(UTC).timestamp())
    claims = {
        "iss": "quanyu",
        "sub": "x",
        "role": "channel",
        "channel": "WECHAT",
        "iat": now,
        "exp": now + 600,
    }
    bogus = (("authorization", f"Bearer {hand_signed(key, claims)}"),)
    order = w.delivery(w.name("bogus-channel"), w.name("buyer"), {sku: 1})
    figures.refused(
        attempt(lambda: d.orders.CreateOrder(order, metadata=bogus)),
        grpc.StatusCode.UNAUTHENTICATED,
        "",
        "a token for channel WECHAT",
    )
    # A refused order with an unknown coupon leaves nothing in the outbox (to fail there for good).
    unknown_coupon = w.delivery(w.name("no-coupon"), w.name("buyer"), {sku: 1}, coupon_code="NOSUCHCOUPON")
    figures.refused(
        attempt(lambda: d.orders.CreateOrder(unknown_coupon, metadata=w.app)),
        NOT_FOUND,
        "COUPON_NOT_FOUND",
        "an order with an unknown coupon",
    )
    order_id = request_from(unknown_coupon, owner=f"channel:{APP_CHANNEL}").order_id()
    with d.databases["orders"].snapshot() as db:
        left = db.execute(
            select(func.count()).select_from(outbox).where(outbox.c.payload.contains(order_id))
        ).scalar_one()
    figures.expect(left == 0, f"a refused order left {left} effects behind")
    # History names the till, within its store.
    sale = d.orders.CreateOrder(
        w.in_store(w.name("named"), store, _phone(), {sku: 1}), metadata=d.token(Role.STORE, store_id=store)
    ).order
    actors = [
        c.actor
        for c in d.orders.GetOrderHistory(
            orders_pb2.GetOrderHistoryRequest(order_id=sale.order_id), metadata=w.ops
        ).changes
    ]
    figures.expect(all(a in ("system", f"store:{store}") for a in actors), f"history actors {actors}")
    # Bytes that are no message of the method are bad input, not a server error.
    raw = d.channel("orders").unary_unary(
        "/quanyu.orders.v1.OrderService/GetOrder",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    marks = d.log_marks()
    garbled = attempt(lambda: raw(b"\xff\xff\xff\xff\x0f", metadata=w.ops, timeout=10))
    figures.refused(garbled, INVALID, "", "a request of malformed bytes")
    d.logs_written()
    figures.expect(not d.server_errors(marks), f"malformed bytes logged as errors: {d.server_errors(marks)}")


ATTACKS: dict[str, Callable[[Deployment, AbuseFigures], None]] = {
    "account takeover across channels": account_takeover,
    "spending a member's value without the member": spending_without_member,
    "prices that mint points": amounts,
    "one store in another's business": store_in_another,
    "abuse of size and rate": size_and_rate,
    "the smaller ones": smaller,
}


def every_attack(d: Deployment, *, rounds: int = 1) -> AbuseFigures:
    figures = AbuseFigures()
    for _ in range(rounds):
        for name, attack in ATTACKS.items():
            try:
                attack(d, figures)
            except (AssertionError, grpc.RpcError) as error:
                figures.problems.append(f"{name} did not play out: {error!r}"[:400])
    return figures


# --- token claims --------------------------------------------------------------------------------


def token_claims(d: Deployment, figures: AbuseFigures, *, cases: int, seed: int = 20261207) -> int:
    """Tokens signed with the deployment's key, their claims drawn at random (unknown roles,
    channels and stores, subjects of every type), sent to an RPC of each service: how many
    answers were a server error (UNKNOWN, INTERNAL) or let an unknown caller in."""
    rng = random.Random(seed)
    key = d.var / "token-keys"
    now = int(datetime.now(UTC).timestamp())
    values: list[Any] = [
        None,
        True,
        0,
        -1,
        2**70,
        1.5,
        float("nan"),
        "",
        "x" * 300,
        "ops",
        "store",
        "channel",
        "service",
        "admin",
        "CHANNEL_TMALL",
        "TMALL",
        "CHANNEL_STORE_POS",
        "CHANNEL_UNSPECIFIED",
        "SH-001",
        "a\nb",
        ["ops"],
        {"role": "ops"},
    ]
    calls: list[Callable[[Metadata], object]] = [
        lambda meta: d.orders.GetOrder(orders_pb2.GetOrderRequest(order_id="ord_x"), metadata=meta),
        lambda meta: d.membership.GetMember(
            membership_pb2.GetMemberRequest(member_id="mem_x"), metadata=meta
        ),
        lambda meta: d.identity.GetCustomer(
            identity_pb2.GetCustomerRequest(customer_id="cus_x"), metadata=meta
        ),
        lambda meta: d.fulfilment.GetStock(fulfilment_pb2.GetStockRequest(store_id="SH-001"), metadata=meta),
    ]
    failures = 0
    for _ in range(cases):
        claims: dict[str, Any] = {"iss": "quanyu", "iat": now, "exp": now + 600}
        for name in ("role", "sub", "store_id", "channel"):
            if rng.random() < 0.8:
                claims[name] = rng.choice(values)
        try:
            token = hand_signed(key, claims)
        except (TypeError, ValueError):
            continue
        outcome = attempt(lambda token=token: rng.choice(calls)((("authorization", f"Bearer {token}"),)))  # type: ignore[misc]
        figures.attacks += 1
        if outcome.code in SERVER_ERRORS:
            failures += 1
            figures.problems.append(f"claims {claims!r}: {outcome}"[:300])
    return failures
