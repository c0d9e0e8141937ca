"""Orders' use cases. A change of state and the effects it has on other services commit in one
transaction (the outbox); only placing an order calls other services before it answers."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from quanyu.auth import Principal, Role
from quanyu.db import Database, utcnow
from quanyu.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    QuanyuError,
    Unavailable,
    Violations,
)
from quanyu.outbox import OutboxRelay, OutboxState, add_effect
from quanyu.paging import PageTokens, page_size
from quanyu.quota import Quota
from services.orders.domain import (
    MAX_ID_LENGTH,
    MAX_REASON_LENGTH,
    Action,
    FulfilmentType,
    Order,
    OrderRequest,
    OrderStateMachine,
    Price,
    Status,
    check_caller,
    credited_guide,
    points_to_spend,
)
from services.orders.downstream import Downstream, MemberInfo, Placement, as_answered_by
from services.orders.repository import OrderRepository, StatusChange
from services.orders.storage import outbox

log = structlog.get_logger("quanyu.orders")

# The effects orders has on other services, each delivered by the relay (see effects.py).
ASSIGN = "assign_order"
TAKE_IN_STORE_STOCK = "take_in_store_stock"
COMMIT_STOCK = "commit_reservation"
RELEASE_STOCK = "release_reservation"
EARN_POINTS = "earn_points"
REVERSE_POINTS = "reverse_points"
RELEASE_COUPON = "release_coupon"
RECORD_ORIGIN_HOURS = "record_origin_hours"

SYSTEM = "system"
# Long enough for any concurrent retry of a refused order to have stored it, if it could.
GIVE_BACK_DELAY = timedelta(seconds=15)
ACCEPT_TIMEOUT = "ACCEPT_TIMEOUT"


def actor_of(principal: Principal) -> str:
    """Who did it, for the order's history: the terminal or backend, within its store or channel
    (`store:SH-001/till-3`)."""
    if principal is _SYSTEM_PRINCIPAL:
        return SYSTEM  # an automatic change, such as an accept timeout
    return principal.name


@dataclass(frozen=True)
class StoreReport:
    originated: int
    fulfilled: int
    for_others: int
    while_closed: int
    revenue_cents: int


class OrdersService:
    def __init__(
        self,
        database: Database,
        downstream: Downstream,
        page_tokens: PageTokens,
        *,
        fingerprint_key: bytes,
        accept_window: timedelta,
        phone_lookups: Quota | None = None,
        relay: OutboxRelay | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._db = database
        self._downstream = downstream
        self._pages = page_tokens
        self._fingerprint_key = fingerprint_key
        self._phone_lookups = phone_lookups
        self._accept_window = accept_window
        self.relay = relay
        self._clock = clock

    def close(self) -> None:
        self._db.dispose()

    def _wake(self) -> None:
        if self.relay is not None:
            self.relay.wake()

    # --- placing ------------------------------------------------------------------------------

    def create(self, principal: Principal, request: OrderRequest) -> Order:
        check_caller(principal, request)
        existing = self._existing(request)
        if existing is not None:
            return existing
        if request.customer.phone and self._phone_lookups is not None:
            # Placing an order by phone finds the customer by it: counted as a look-up of the
            # caller's, or orders would be the way round the quota.
            self._phone_lookups.take(principal)
        order_id = request.order_id()
        kind = request.fulfilment_type
        in_store = kind is FulfilmentType.IN_STORE
        customer = self._downstream.resolve_customer(request.customer)
        if principal.role is Role.CHANNEL and principal.channel not in customer.channels:
            # A customer known only through other channels is not this channel's to order for:
            # answered as identity answers an id it does not know.
            raise as_answered_by("identity", NotFound("customer", request.customer.customer_id))
        # Paying at the till makes a member, with that store and guide as home; a guide named on
        # an online order is checked too (membership knows the guides and their stores).
        member = self._downstream.enroll(
            customer.customer_id,
            home_store_id=request.origin_store_id if in_store else "",
            guide_id=request.guide_id,
            channel=request.channel,
        )
        held = _Held()
        try:
            discount, points = self._spend(request, member.member_id, order_id, held)
            placed = self._place(request, order_id)
        except QuanyuError:
            if held.coupon or held.points:
                self._give_back(order_id, request.coupon_code if held.coupon else "", points=held.points)
            raise
        return self._store(
            request,
            order_id=order_id,
            customer_id=customer.customer_id,
            member=member,
            price=Price(request.subtotal_cents, discount, points),
            placed=placed,
        )

    def _spend(self, request: OrderRequest, member_id: str, order_id: str, held: _Held) -> tuple[int, int]:
        """The coupon, then the points, taken for the order: (discount, points spent). A till
        passes the member code on; membership checks it for this member at this store."""
        till_store = request.origin_store_id if request.fulfilment_type is FulfilmentType.IN_STORE else ""
        discount = 0
        if request.coupon_code:
            with held.taking("coupon"):
                discount = self._downstream.redeem_coupon(
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
                self._downstream.redeem_points(
                    member_id, points, order_id, store_id=till_store, member_code=request.member_code
                )
        return discount, points

    def _place(self, request: OrderRequest, order_id: str) -> list[Placement] | None:
        """The store(s) fulfilment reserved for the order; None when fulfilment is unreachable."""
        kind = request.fulfilment_type
        try:
            return self._downstream.assign(
                order_id,
                request.delivery_location,
                request.lines,
                kind,
                preferred_store_id=request.origin_store_id if kind is not FulfilmentType.DELIVERY else "",
                exclude=(),
                at=self._clock(),
            )
        except Unavailable:
            log.warning("fulfilment unavailable; the order waits for assignment", order_id=order_id)
            return None

    def _store(
        self,
        request: OrderRequest,
        *,
        order_id: str,
        customer_id: str,
        member: MemberInfo,
        price: Price,
        placed: list[Placement] | None,
    ) -> Order:
        now = self._clock()
        kind = request.fulfilment_type
        in_store = kind is FulfilmentType.IN_STORE
        origin = request.origin_store_id if in_store else (member.home_store_id or request.origin_store_id)
        if in_store:
            status, store = Status.COMPLETED, request.origin_store_id
        elif placed:
            status, store = Status.ASSIGNED, placed[0].store_id
        else:
            status, store = Status.PENDING_ASSIGNMENT, ""
        order = Order(
            order_id=order_id,
            request_id=request.request_id,
            customer_id=customer_id,
            member_id=member.member_id,
            channel=request.channel,
            fulfilment_type=kind,
            lines=list(request.lines),
            price=price,
            delivery_location=request.delivery_location,
            delivery_address=request.delivery_address,
            origin_store_id=origin,
            fulfilling_store_id=store,
            guide_id=credited_guide(request, member.guide_id, member.home_store_id),
            status=status,
            status_reason="",
            coupon_code=request.coupon_code,
            points_earned=0,
            create_time=now,
            update_time=now,
            accept_deadline=now + self._accept_window if status is Status.ASSIGNED else None,
        )

        def work(connection: Connection) -> Order:
            repo = OrderRepository(connection)
            repo.insert(order, request.fingerprint(self._fingerprint_key), owner=request.owner, actor=SYSTEM)
            if in_store:
                add_effect(
                    connection,
                    outbox,
                    COMMIT_STOCK if placed else TAKE_IN_STORE_STOCK,
                    {"order_id": order_id},
                    now,
                )
                self._earn(connection, order, now)
            elif placed is None:
                add_effect(connection, outbox, ASSIGN, {"order_id": order_id, "release_store_id": ""}, now)
            if origin:
                add_effect(
                    connection,
                    outbox,
                    RECORD_ORIGIN_HOURS,
                    {"order_id": order_id, "store_id": origin, "at": now.isoformat()},
                    now,
                )
            # What was written is what is answered: no need to read it back.
            return order

        try:
            stored = self._db.run(work, attempts=1)
        except IntegrityError:
            # A concurrent retry of the same request stored it first: answer with that order.
            found = self._existing(request)
            if found is None:
                raise
            return found
        if in_store or placed is None or origin:
            self._wake()
        return stored

    def _earn(self, connection: Connection, order: Order, now: datetime) -> None:
        add_effect(
            connection,
            outbox,
            EARN_POINTS,
            {
                "order_id": order.order_id,
                "member_id": order.member_id,
                "spend_cents": order.price.total_cents,
                "store_id": order.fulfilling_store_id,
            },
            now,
        )

    def _give_back(self, order_id: str, coupon_code: str, *, points: bool) -> None:
        """A refused order leaves nothing behind: the coupon and points go back, through the
        outbox so an unreachable membership delays them but cannot lose them.

        They wait a little and are given back only if no order was stored after all: a concurrent
        retry of the same request may have succeeded and now holds them rightly.
        """

        def work(connection: Connection) -> None:
            if OrderRepository(connection).get(order_id) is not None:
                return
            now = self._clock()
            payload = {
                "order_id": order_id,
                "code": coupon_code,
                "reason": "ORDER_REFUSED",
                "unless_stored": True,
            }
            if points:
                add_effect(connection, outbox, REVERSE_POINTS, payload, now, delay=GIVE_BACK_DELAY)
            if coupon_code:
                add_effect(connection, outbox, RELEASE_COUPON, payload, now, delay=GIVE_BACK_DELAY)

        self._db.run(work)

    def _existing(self, request: OrderRequest) -> Order | None:
        with self._db.snapshot() as connection:
            repo = OrderRepository(connection)
            found = repo.fingerprint(request.owner, request.request_id) or _placed_before_owners(
                repo, request
            )
            if found is None:
                return None
            order_id, fingerprint = found
            # An order stored before fingerprints were keyed has none left to compare (the old one
            # gave phones away): its retry is answered with it.
            if fingerprint and fingerprint != request.fingerprint(self._fingerprint_key):
                raise InvalidArgument(
                    "request_id", "was used for a different order", reason="REQUEST_ID_REUSED"
                )
            return repo.get(order_id)

    # --- reading ------------------------------------------------------------------------------

    def get(self, principal: Principal, order_id: str) -> Order:
        _require_order_id(order_id)
        with self._db.snapshot() as connection:
            order = OrderRepository(connection).get(order_id)
        return self._visible(principal, order_id, order)

    @staticmethod
    def _visible(principal: Principal, order_id: str, order: Order | None) -> Order:
        """A store or channel learns nothing of orders not its own, not even that they exist."""
        if principal.role is Role.STORE and (order is None or not order.is_for_store(principal.store_id)):
            raise PermissionDenied("not this store's order", reason="OTHER_STORE")
        if principal.role is Role.CHANNEL and (order is None or order.channel != principal.channel):
            raise PermissionDenied("not this channel's order", reason="OTHER_CHANNEL")
        if order is None:
            raise NotFound("order", order_id)
        return order

    def list_orders(
        self,
        principal: Principal,
        *,
        customer_id: str,
        store_id: str,
        statuses: Sequence[Status],
        requested: int,
        token: str,
    ) -> tuple[list[Order], str]:
        channel = ""
        if principal.role is Role.STORE:
            if store_id and store_id != principal.store_id:
                raise PermissionDenied("a store sees only its own queue", reason="OTHER_STORE")
            store_id = principal.store_id
        if principal.role is Role.CHANNEL:
            if not customer_id:
                raise InvalidArgument("customer_id", "a channel lists the orders of one customer")
            channel = principal.channel
        violations = Violations()
        violations.text(customer_id, "customer_id", max_length=64, required=False)
        violations.text(store_id, "store_id", max_length=64, required=False)
        violations.raise_if_any()
        size = page_size(requested)
        query = {
            "customer": customer_id,
            "store": store_id,
            "channel": channel,
            "statuses": sorted(s.value for s in statuses),
        }
        caller = principal.name
        position = self._pages.decode(token, query=query, caller=caller)
        before = (datetime.fromisoformat(position["time"]), str(position["order"])) if position else None
        with self._db.snapshot() as connection:
            found = OrderRepository(connection).page(
                customer_id=customer_id,
                store_id=store_id,
                channel=channel,
                statuses=statuses,
                before=before,
                limit=size + 1,
            )
        more = len(found) > size
        found = found[:size]
        next_token = ""
        if more:
            last = found[-1]
            next_token = self._pages.encode(
                {"time": last.create_time.isoformat(), "order": last.order_id}, query=query, caller=caller
            )
        return found, next_token

    def history(self, principal: Principal, order_id: str) -> list[StatusChange]:
        _require_order_id(order_id)
        with self._db.snapshot() as connection:
            repo = OrderRepository(connection)
            self._visible(principal, order_id, repo.get(order_id))
            return repo.history(order_id)

    # --- the store's work ---------------------------------------------------------------------

    def accept(self, principal: Principal, order_id: str) -> Order:
        return self._transition(principal, order_id, Action.ACCEPT, "")

    def mark_ready(self, principal: Principal, order_id: str) -> Order:
        return self._transition(principal, order_id, Action.READY, "")

    def complete(self, principal: Principal, order_id: str) -> Order:
        return self._transition(principal, order_id, Action.COMPLETE, "")

    def cancel(self, principal: Principal, order_id: str, reason: str) -> Order:
        return self._transition(principal, order_id, Action.CANCEL, reason)

    def _transition(self, principal: Principal, order_id: str, action: Action, reason: str) -> Order:
        _check_order_and_reason(order_id, reason, reason_required=False)

        def work(connection: Connection) -> Order:
            repo = OrderRepository(connection)
            order = repo.get(order_id, lock=True)
            if action is Action.CANCEL and principal.role is not Role.STORE:
                order = self._visible(principal, order_id, order)
            else:
                # A store reads the orders it originated but changes only those it fulfils.
                order = self._fulfilling_store_only(principal, order_id, order)
            if order.status is OrderStateMachine.target(action):
                return order  # a retry of a change already made
            to = OrderStateMachine.next(action, order.status)
            now = self._clock()
            fields: dict[str, Any] = {}
            if to is Status.COMPLETED:
                fields["complete_time"] = now
            if not repo.move(
                order_id, order.status, to, actor=actor_of(principal), reason=reason, now=now, **fields
            ):
                raise FailedPrecondition(
                    "the order changed meanwhile; read it and retry", reason="CONCURRENT_CHANGE"
                )
            if to is Status.COMPLETED:
                add_effect(connection, outbox, COMMIT_STOCK, {"order_id": order_id}, now)
                self._earn(connection, order, now)
            if to is Status.CANCELLED:
                add_effect(connection, outbox, RELEASE_STOCK, {"order_id": order_id, "store_id": ""}, now)
                if order.price.points_redeemed:
                    add_effect(
                        connection, outbox, REVERSE_POINTS, {"order_id": order_id, "reason": "CANCELLED"}, now
                    )
                if order.coupon_code:
                    add_effect(
                        connection,
                        outbox,
                        RELEASE_COUPON,
                        {"code": order.coupon_code, "order_id": order_id},
                        now,
                    )
            changed = repo.get(order_id)
            assert changed is not None
            return changed

        order = self._db.run(work)
        self._wake()
        return order

    @staticmethod
    def _fulfilling_store_only(principal: Principal, order_id: str, order: Order | None) -> Order:
        if principal.role is Role.STORE and (
            order is None or order.fulfilling_store_id != principal.store_id
        ):
            raise PermissionDenied("only the fulfilling store's terminal may do this", reason="OTHER_STORE")
        if order is None:
            raise NotFound("order", order_id)
        return order

    def reject(self, principal: Principal, order_id: str, reason: str, store_id: str) -> Order | None:
        """The store turns the order down: release its stock and route the order on.

        The answer is the order after rerouting, when the caller may still read it; None when the
        order has moved on to a store that is not the caller (a till retrying its rejection
        learns only that it stood).
        """
        violations = Violations()
        violations.text(store_id, "store_id", max_length=MAX_ID_LENGTH, required=False)
        _check_order_and_reason(order_id, reason, reason_required=True, violations=violations)
        if principal.role is Role.STORE:
            if store_id and store_id != principal.store_id:
                raise PermissionDenied("a store rejects only for itself", reason="OTHER_STORE")
            store_id = principal.store_id

        def work(connection: Connection) -> tuple[Order, str]:
            repo = OrderRepository(connection)
            found = repo.get(order_id, lock=True)
            if found is not None and store_id and store_id in found.rejected_store_ids:
                # A retry, also by a store that is no longer fulfilling the order.
                return found, ""
            order = self._fulfilling_store_only(principal, order_id, found)
            rejecting = store_id or order.fulfilling_store_id
            if rejecting in order.rejected_store_ids:
                return order, ""
            if rejecting != order.fulfilling_store_id:
                raise FailedPrecondition(
                    "that store is not fulfilling the order", reason="NOT_FULFILLING_STORE"
                )
            if reason == ACCEPT_TIMEOUT and order.status is not Status.ASSIGNED:
                return order, ""  # the store accepted it just before its window ran out
            to = OrderStateMachine.next(Action.REJECT, order.status)
            now = self._clock()
            repo.reject(order_id, rejecting, reason, now)
            # The change names the store that rejected; then the order leaves it.
            repo.move(order_id, order.status, to, actor=actor_of(principal), reason=reason, now=now)
            repo.set_fields(order_id, fulfilling_store_id="", accept_deadline=None)
            add_effect(connection, outbox, ASSIGN, {"order_id": order_id, "release_store_id": rejecting}, now)
            return order, rejecting

        _, rejecting = self._db.run(work)
        if rejecting:
            try:
                self.reroute(order_id, rejecting)
            except Unavailable:
                log.warning(
                    "fulfilment unavailable; the rejected order waits for its next store", order_id=order_id
                )
        after = self.get(_SYSTEM_PRINCIPAL, order_id)
        if principal.role is Role.STORE and not after.is_for_store(principal.store_id):
            return None
        return after

    def reroute(self, order_id: str, release_store_id: str) -> None:
        """Give a waiting order its store (after a rejection, or once fulfilment is back).

        Safe to run twice at once (the relay and a rejecting call): fulfilment answers both alike
        for one order id, and only one of them moves the order.
        """
        with self._db.snapshot() as connection:
            order = OrderRepository(connection).get(order_id)
        if order is None or order.status is not Status.PENDING_ASSIGNMENT:
            return
        if release_store_id:
            self._downstream.release(order_id, release_store_id)
        try:
            placed = self._downstream.assign(
                order_id,
                order.delivery_location,
                order.lines,
                order.fulfilment_type,
                preferred_store_id=order.origin_store_id
                if order.fulfilment_type is FulfilmentType.PICKUP
                else "",
                exclude=order.rejected_store_ids,
                at=self._clock(),
            )
        except FailedPrecondition as nothing:
            reason = nothing.reason

            def give_up(connection: Connection) -> bool:
                return OrderRepository(connection).move(
                    order_id,
                    Status.PENDING_ASSIGNMENT,
                    Status.UNFULFILLABLE,
                    actor=SYSTEM,
                    reason=reason,
                    now=self._clock(),
                )

            self._db.run(give_up)
            return
        now = self._clock()

        def work(connection: Connection) -> bool:
            repo = OrderRepository(connection)
            moved = repo.move(
                order_id,
                Status.PENDING_ASSIGNMENT,
                Status.ASSIGNED,
                actor=SYSTEM,
                reason="",
                now=now,
                fulfilling_store_id=placed[0].store_id,
                accept_deadline=now + self._accept_window,
            )
            if moved and order.status_reason:
                # Why it is here: the reason the store before it gave for rejecting it.
                repo.set_fields(order_id, status_reason=order.status_reason)
            return moved

        if not self._db.run(work):
            # Cancelled while fulfilment was deciding: what it reserved goes back.
            with self._db.snapshot() as connection:
                current = OrderRepository(connection).get(order_id)
            if current is not None and current.status is Status.CANCELLED:
                self._downstream.release(order_id)

    def time_out_unaccepted(self) -> int:
        """Orders a store left unaccepted past its window are rejected for it (ACCEPT_TIMEOUT)."""
        with self._db.snapshot() as connection:
            due = OrderRepository(connection).due_for_timeout(self._clock(), 100)
        for order_id, store_id in due:
            try:
                self.reject(_SYSTEM_PRINCIPAL, order_id, ACCEPT_TIMEOUT, store_id)
            except FailedPrecondition:
                continue  # accepted or cancelled meanwhile
        return len(due)

    # --- reports ------------------------------------------------------------------------------

    def store_report(
        self, principal: Principal, store_id: str, start: datetime | None, end: datetime | None
    ) -> StoreReport:
        violations = Violations()
        violations.text(store_id, "store_id", max_length=64)
        start, end = _window(start, end, violations)
        violations.raise_if_any()
        principal.require_store(store_id)
        with self._db.snapshot() as connection:
            figures = OrderRepository(connection).store_report(store_id, start, end)
        return StoreReport(
            figures["originated"],
            figures["fulfilled"],
            figures["for_others"],
            figures["while_closed"],
            figures["revenue"],
        )

    def guide_report(
        self, principal: Principal, guide_id: str, start: datetime | None, end: datetime | None
    ) -> dict[str, int]:
        violations = Violations()
        violations.text(guide_id, "guide_id", max_length=64)
        start, end = _window(start, end, violations)
        violations.raise_if_any()
        origin = principal.store_id if principal.role is Role.STORE else ""
        with self._db.snapshot() as connection:
            return OrderRepository(connection).guide_report(guide_id, start, end, origin)

    def orders_by_status(self) -> dict[str, float]:
        with self._db.snapshot() as connection:
            counts = OrderRepository(connection).count_by_status()
        return {status.value: counts.get(status.value, 0.0) for status in Status}

    def outbox_state(self) -> OutboxState:
        assert self.relay is not None
        return self.relay.state()

    # --- effects, applied back on the order ---------------------------------------------------

    def note_points_earned(self, order_id: str, points: int) -> None:
        self._db.run(lambda c: OrderRepository(c).set_fields(order_id, points_earned=points))

    def note_origin_hours(self, order_id: str, was_open: bool) -> None:
        self._db.run(lambda c: OrderRepository(c).set_fields(order_id, origin_open=was_open))

    def order(self, order_id: str) -> Order | None:
        with self._db.snapshot() as connection:
            return OrderRepository(connection).get(order_id)


_SYSTEM_PRINCIPAL = Principal(Role.SERVICE, SYSTEM)


def _placed_before_owners(repo: OrderRepository, request: OrderRequest) -> tuple[str, str] | None:
    """An order a store or channel placed before request ids had owners, kept in the shared
    namespace with its fingerprint cleared by the upgrade: a retry of it after the upgrade finds it
    rather than placing it again. Only an order the caller placed could be it: a sale at that
    store's till, or an order through that channel. Orders written since always have a
    fingerprint, so no order of the platform's own callers is ever taken for one."""
    found = repo.fingerprint("", request.request_id)
    if not request.owner or found is None or found[1]:
        return None
    order = repo.get(found[0])
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


def _require_order_id(order_id: str) -> None:
    violations = Violations()
    violations.text(order_id, "order_id", max_length=MAX_ID_LENGTH)
    violations.raise_if_any()


def _check_order_and_reason(
    order_id: str, reason: str, *, reason_required: bool, violations: Violations | None = None
) -> None:
    violations = violations or Violations()
    violations.text(order_id, "order_id", max_length=MAX_ID_LENGTH)
    violations.text(reason, "reason", max_length=MAX_REASON_LENGTH, required=reason_required)
    violations.raise_if_any()


_DEFAULT_WINDOW = timedelta(days=3650)


def _window(
    start: datetime | None, end: datetime | None, violations: Violations
) -> tuple[datetime, datetime]:
    now = utcnow()
    start = start or now - _DEFAULT_WINDOW
    end = end or now + timedelta(seconds=1)
    if end <= start:
        violations.add("end_time", "must be after start_time")
    return start, end
