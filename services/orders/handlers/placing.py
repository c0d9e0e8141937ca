"""Placing an order: the only use case that calls other services before it answers (identity
for the customer, membership for the member, coupon and points, fulfilment for the store).

A returning customer is known to orders (services.orders.domain.known): identity and membership
are asked only for a customer or member orders does not know for sure, and what they answer is
kept with the order, so the customer's next order asks neither."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import structlog

from quanyu.auth import Principal, Role
from quanyu.errors import InvalidArgument, NotFound, QuanyuError, Unavailable
from quanyu.phones import Phone, keyed_digest
from quanyu.unit_of_work import Transaction
from services.orders.domain import (
    Effect,
    FulfilmentType,
    Member,
    Order,
    OrderRequest,
    PlaceOrder,
    Price,
    placement,
    points_to_spend,
)
from services.orders.domain.events import GiveBackCoupon, GiveBackPoints
from services.orders.domain.known import CustomerState, Known, MemberState, known_customer, known_member
from services.orders.handlers.access import as_answered_by, check_caller
from services.orders.handlers.base import UseCases
from services.orders.ports import Customer, Orders, Stores

log = structlog.get_logger("quanyu.orders")

# Long enough for any concurrent retry of a refused order to have stored it, if it could.
GIVE_BACK_DELAY = timedelta(seconds=15)


class Placing(UseCases):
    def create(self, principal: Principal, command: PlaceOrder) -> Order:
        request = command.checked(self.behaviour.limits)
        check_caller(principal, request)
        phone_hash = self._phone_hash(request.customer.phone)
        existing, (customer, member) = self.uow.read(
            lambda tx: (
                self._existing(tx.stores.orders, request),
                _known(tx.stores.known, principal, request, phone_hash),
            )
        )
        if existing is not None:
            return existing
        lookups = self.behaviour.phone_lookups
        if request.customer.phone and lookups is not None:
            # Placing an order by phone finds the customer by it: counted as a look-up of the
            # caller's, or orders would be the way round the quota.
            lookups.take(principal)
        order_id = request.order_id()
        learnt: list[CustomerState | MemberState] = []
        if customer is None:
            customer = self.downstream.resolve_customer(request.customer)
            if principal.role is Role.CHANNEL and principal.channel not in customer.channels:
                # A customer known only through other channels is not this channel's to order
                # for: answered as identity answers an id it does not know.
                raise as_answered_by("identity", NotFound("customer", request.customer.customer_id))
            learnt += _customer_learnt(request, customer, phone_hash)
        if member is None:
            # Paying at the till makes a member, with that store and guide as home; a guide named
            # on an online order is checked too (membership knows the guides and their stores).
            in_store = request.fulfilment_type is FulfilmentType.IN_STORE
            member = self.downstream.enroll(
                customer.customer_id,
                home_store_id=request.origin_store_id if in_store else "",
                guide_id=request.guide_id,
                channel=request.channel,
            )
            learnt.append(
                MemberState(
                    member.member_id,
                    0,
                    customer.customer_id,
                    member.member_id,
                    member.home_store_id,
                    member.guide_id,
                )
            )
        held = _Held()
        try:
            discount, points = self._spend(request, member.member_id, order_id, held)
            store_id = self._place(request, order_id)
        except QuanyuError:
            if held.coupon or held.points:
                self._give_back(order_id, request.coupon_code if held.coupon else "", points=held.points)
            raise
        price = Price(request.subtotal_cents, discount, points)
        return self._store(request, customer.customer_id, member, price, store_id, learnt=learnt)

    def _phone_hash(self, raw: str) -> str | None:
        """The keyed hash identity finds the phone by; None when there is no phone, no key, or
        no phone identity would take (identity is asked, and says what is wrong with it)."""
        if not raw or self.behaviour.phone_key is None:
            return None
        try:
            return keyed_digest(self.behaviour.phone_key, Phone.parse(raw))
        except InvalidArgument:
            return None

    def _spend(self, request: OrderRequest, member_id: str, order_id: str, held: _Held) -> tuple[int, int]:
        """The coupon, then the points, taken for the order: (discount, points spent). A till
        passes the member code on; membership checks it for this member at this store."""
        till_store = request.origin_store_id if request.fulfilment_type is FulfilmentType.IN_STORE else ""
        discount = 0
        if request.coupon_code:
            with held.taking("coupon"):
                discount = self.downstream.redeem_coupon(
                    request.coupon_code,
                    member_id,
                    order_id,
                    request.subtotal_cents,
                    store_id=till_store,
                    member_code=request.member_code,
                )
        points = points_to_spend(request.subtotal_cents, discount, request.points_to_redeem)
        if points:
            with held.taking("points"):
                self.downstream.redeem_points(
                    member_id, points, order_id, store_id=till_store, member_code=request.member_code
                )
        return discount, points

    def _place(self, request: OrderRequest, order_id: str) -> str | None:
        """The store fulfilment reserved for the order; None when fulfilment is unreachable."""
        where = placement(
            request.fulfilment_type,
            location=request.delivery_location,
            chosen_store_id=request.origin_store_id,
        )
        try:
            placed = self.downstream.assign(
                order_id, request.lines, request.fulfilment_type, where, at=self.clock()
            )
        except Unavailable:
            log.warning("fulfilment unavailable; the order waits for assignment", order_id=order_id)
            return None
        return placed[0].store_id if placed else None

    def _store(
        self,
        request: OrderRequest,
        customer_id: str,
        member: Member,
        price: Price,
        store_id: str | None,
        *,
        learnt: Sequence[CustomerState | MemberState] = (),
    ) -> Order:
        now = self.clock()
        fingerprint = request.fingerprint(self.behaviour.fingerprint_key)
        # The read before the calls found no order for the request. A concurrent retry of it
        # may have stored one since: this insert then collides with it on the request's key
        # (and on the order id the request names), and the unit of work runs this again, which
        # asks first and answers with that order. The first run does not ask: a round trip
        # every order paid for what only a colliding retry needs.
        runs = 0

        def work(tx: Transaction[Stores]) -> Order:
            nonlocal runs
            runs += 1
            found = self._existing(tx.stores.orders, request) if runs > 1 else None
            if found is not None:
                return found
            order, effects = Order.place(
                request,
                customer_id=customer_id,
                member=member,
                price=price,
                store_id=store_id,
                now=now,
                accept_window=self.behaviour.accept_window,
            )
            tx.stores.orders.add(order, fingerprint, owner=request.owner)
            self._record(tx, effects, now)
            # What identity and membership answered, kept with the order: the customer's next
            # order asks neither. Kept only where nothing is (a state told is newer).
            for state in learnt:
                if isinstance(state, CustomerState):
                    tx.stores.known.remember_customer(state)
                else:
                    tx.stores.known.remember_member(state)
            return order  # what was written is what is answered: no need to read it back

        return self.uow.run(work)

    def _give_back(self, order_id: str, coupon_code: str, *, points: bool) -> None:
        """A refused order leaves nothing behind: the coupon and points go back, through the
        outbox so an unreachable membership delays them but cannot lose them.

        They wait a little and are given back only if no order was stored after all: a concurrent
        retry of the same request may have succeeded and now holds them rightly.
        """

        def work(tx: Transaction[Stores]) -> None:
            if tx.stores.orders.get(order_id) is not None:
                return
            effects: list[Effect] = [GiveBackPoints(order_id, coupon_code)] if points else []
            if coupon_code:
                effects.append(GiveBackCoupon(order_id, coupon_code))
            self._record(tx, effects, self.clock(), delay=GIVE_BACK_DELAY)

        self.uow.run(work)

    def _existing(self, orders: Orders, request: OrderRequest) -> Order | None:
        found = orders.fingerprint(request.owner, request.request_id) or _placed_before_owners(
            orders, request
        )
        if found is None:
            return None
        order_id, fingerprint = found
        # An order stored before fingerprints were keyed has none left to compare (the old one
        # gave phones away): its retry is answered with it.
        if fingerprint and fingerprint != request.fingerprint(self.behaviour.fingerprint_key):
            raise InvalidArgument("request_id", "was used for a different order", reason="REQUEST_ID_REUSED")
        return orders.get(order_id)


def _known(
    known: Known, principal: Principal, request: OrderRequest, phone_hash: str | None
) -> tuple[Customer | None, Member | None]:
    """The customer and member orders knows for the request, each None where identity or
    membership must be asked. A channel orders only for a customer known to hold an account on
    it: one not known to (an account linked a moment ago, say) is asked of identity. A named
    guide is always checked by membership."""
    found = known_customer(known, request.customer, phone_hash)
    if found is None or (principal.role is Role.CHANNEL and principal.channel not in found.channels):
        return None, None
    customer = Customer(found.customer_id, found.channels)
    return customer, None if request.guide_id else known_member(known, found.customer_id)


def _customer_learnt(
    request: OrderRequest, customer: Customer, phone_hash: str | None
) -> list[CustomerState]:
    """What identity's answer tells for sure: the customer and every account they hold; the
    phone when it was how identity found them (named with an account, the phone may be another
    customer's); and, for an id merged away, the customer it stands for now."""
    ref = request.customer
    by_phone = phone_hash is not None and not ref.customer_id and not ref.account_external_id
    learnt = [
        CustomerState(
            customer.customer_id, 0, "", customer.accounts, (phone_hash,) if by_phone and phone_hash else ()
        )
    ]
    if ref.customer_id and ref.customer_id != customer.customer_id:
        learnt.append(CustomerState(ref.customer_id, 0, customer.customer_id, (), ()))
    return learnt


def _placed_before_owners(orders: Orders, request: OrderRequest) -> tuple[str, str] | None:
    """An order a store or channel placed before request ids had owners, kept in the shared
    namespace with its fingerprint cleared by the upgrade: a retry of it after the upgrade finds it
    rather than placing it again. Only an order the caller placed could be it: a sale at that
    store's till, or an order through that channel. Orders written since always have a
    fingerprint, so no order of the platform's own callers is ever taken for one."""
    found = orders.fingerprint("", request.request_id)
    if not request.owner or found is None or found[1]:
        return None
    order = orders.get(found[0])
    kind, _, name = request.owner.partition(":")
    placed_by_caller = order is not None and (
        (
            kind == "store"
            and order.fulfilment_type is FulfilmentType.IN_STORE
            and order.origin_store_id == name
        )
        or (kind == "channel" and order.channel == name)
    )
    return found if placed_by_caller else None


@dataclass
class _Held:
    """What membership may hold for an order being placed, should placing it fail: a refusal
    took nothing, an unanswered call may have taken it."""

    coupon: bool = False
    points: bool = False

    @contextmanager
    def taking(self, what: str) -> Iterator[None]:
        setattr(self, what, True)
        try:
            yield
        except Unavailable:
            raise
        except QuanyuError:
            setattr(self, what, False)
            raise
