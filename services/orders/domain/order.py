"""The order aggregate: an order owns its state machine. Each change is a method that checks the
move, records it in the order's history and answers what must happen elsewhere (the effects)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import ClassVar

from quanyu.errors import FailedPrecondition
from services.orders.domain.events import (
    CommitStock,
    EarnPoints,
    Effect,
    OrderCancelled,
    OrderCompleted,
    RecordOriginHours,
    ReleaseCoupon,
    ReleaseStock,
    Reroute,
    ReversePoints,
    TakeInStoreStock,
    event_skus,
)
from services.orders.domain.requests import OrderRequest
from services.orders.domain.values import FulfilmentType, Line, Location, Price, Status

SYSTEM = "system"  # the actor of automatic changes, such as an accept timeout
ACCEPT_TIMEOUT = "ACCEPT_TIMEOUT"


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
class StatusChange:
    from_status: str  # "" for the order's first status
    to_status: str
    actor: str
    reason: str
    store_id: str
    change_time: datetime


@dataclass(frozen=True)
class Rejection:
    store_id: str
    reason: str
    reject_time: datetime


@dataclass(frozen=True)
class Member:
    """What membership says of the customer an order is for."""

    member_id: str
    home_store_id: str
    guide_id: str


@dataclass(frozen=True)
class Where:
    """What fulfilment is asked to place an order by."""

    location: Location | None
    preferred_store_id: str = ""  # taken first when it can serve
    near_store_id: str = ""  # without a location: measured from this store's own location
    exclude: tuple[str, ...] = ()

    @property
    def is_anywhere(self) -> bool:
        """False when there is nothing to look for a store from (a pickup order stored before
        the chosen store was kept, with no location): no store is in range of nowhere."""
        return self.location is not None or bool(self.preferred_store_id or self.near_store_id)


def placement(
    kind: FulfilmentType, *, location: Location | None, chosen_store_id: str, rejected: tuple[str, ...] = ()
) -> Where:
    """Where an order is placed, new (nothing rejected yet) or re-routed after a rejection.

    Delivery: the nearest store to the delivery location. In-store: the till's store. Pickup: the
    store the customer chose while it can serve; once a store has rejected the order, the eligible
    store nearest the customer's location, or, when the order has none, nearest the store the
    customer chose. The member's home store plays no part.
    """
    if kind is FulfilmentType.IN_STORE:
        return Where(None, preferred_store_id=chosen_store_id)
    if kind is FulfilmentType.DELIVERY:
        return Where(location, exclude=rejected)
    if not rejected:
        return Where(location, preferred_store_id=chosen_store_id)
    if location is not None:
        return Where(location, exclude=rejected)
    return Where(None, near_store_id=chosen_store_id, exclude=rejected)


def credited_guide(request: OrderRequest, member_guide_id: str, member_home_store_id: str) -> str:
    """The guide an order is credited to: the one the caller names (membership has checked it is
    of the right store), else the member's own guide, but a till's sale only to its own store's:
    a sale at one store never counts for another store's guide."""
    if request.guide_id:
        return request.guide_id
    if request.fulfilment_type is FulfilmentType.IN_STORE and member_home_store_id != request.origin_store_id:
        return ""
    return member_guide_id


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
    delivery_location: Location | None
    delivery_address: str
    # Where the customer belongs or ordered, for the reports: the till's store in store, else
    # the member's home store, else the store the customer chose.
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
    # The store the customer chose for pickup (empty for other kinds).
    pickup_store_id: str = ""
    complete_time: datetime | None = None
    origin_open: bool | None = None  # whether the origin store was open when the order was placed
    # What has happened to the order since it was loaded, for its repository to save.
    changes: list[StatusChange] = field(default_factory=list, compare=False, repr=False)
    rejections: list[Rejection] = field(default_factory=list, compare=False, repr=False)

    # --- placing --------------------------------------------------------------------------

    @classmethod
    def place(
        cls,
        request: OrderRequest,
        *,
        customer_id: str,
        member: Member,
        price: Price,
        store_id: str | None,
        now: datetime,
        accept_window: timedelta,
    ) -> tuple[Order, list[Effect]]:
        """A new order, at `store_id` (None: fulfilment could not be reached, so it waits for
        one), and what placing it requires."""
        kind = request.fulfilment_type
        in_store = kind is FulfilmentType.IN_STORE
        order_id = request.order_id()
        origin = request.origin_store_id if in_store else (member.home_store_id or request.origin_store_id)
        if in_store:
            status, store = Status.COMPLETED, request.origin_store_id
        elif store_id:
            status, store = Status.ASSIGNED, store_id
        else:
            status, store = Status.PENDING_ASSIGNMENT, ""
        order = cls(
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
            accept_deadline=now + accept_window if status is Status.ASSIGNED else None,
            pickup_store_id=request.origin_store_id if kind is FulfilmentType.PICKUP else "",
            complete_time=now if in_store else None,
        )
        order.changes.append(StatusChange("", status.value, SYSTEM, "", store, now))
        effects: list[Effect] = []
        if in_store:
            effects += [CommitStock(order_id) if store_id else TakeInStoreStock(order_id), order._earn()]
            effects += order._completed(now)
        elif store_id is None:
            effects.append(Reroute(order_id))
        if origin:
            effects.append(RecordOriginHours(order_id, origin, now.isoformat()))
        return order, effects

    def where(self) -> Where:
        """Where to look for the order's (next) store."""
        return placement(
            self.fulfilment_type,
            location=self.delivery_location,
            chosen_store_id=self.fulfilling_store_id
            if self.fulfilment_type is FulfilmentType.IN_STORE
            else self.pickup_store_id,
            rejected=tuple(self.rejected_store_ids),
        )

    def assign(self, store_id: str, now: datetime, accept_window: timedelta) -> list[Effect]:
        """The store fulfilment found for a waiting order. Already placed meanwhile (two
        re-routes at once): nothing. Cancelled while fulfilment was deciding: what it reserved
        goes back."""
        if self.status is Status.CANCELLED:
            return [ReleaseStock(self.order_id)]
        if self.status is not Status.PENDING_ASSIGNMENT:
            return []
        why = self.status_reason  # the reason the store before gave for rejecting it
        self._move(Status.ASSIGNED, actor=SYSTEM, reason="", now=now, store_id=store_id)
        self.status_reason = why
        self.fulfilling_store_id = store_id
        self.accept_deadline = now + accept_window
        return []

    def give_up(self, reason: str, now: datetime) -> None:
        """No store can take the waiting order: UNFULFILLABLE, with fulfilment's reason."""
        if self.status is Status.PENDING_ASSIGNMENT:
            self._move(Status.UNFULFILLABLE, actor=SYSTEM, reason=reason, now=now)

    # --- the store's work -----------------------------------------------------------------

    def accept(self, actor: str, now: datetime) -> list[Effect]:
        self._step(Action.ACCEPT, actor, "", now)
        return []

    def mark_ready(self, actor: str, now: datetime) -> list[Effect]:
        self._step(Action.READY, actor, "", now)
        return []

    def complete(self, actor: str, now: datetime) -> list[Effect]:
        """The stock leaves the shelf and the member earns on what they paid."""
        if not self._step(Action.COMPLETE, actor, "", now):
            return []
        self.complete_time = now
        return [CommitStock(self.order_id), self._earn(), *self._completed(now)]

    def cancel(self, actor: str, reason: str, now: datetime) -> list[Effect]:
        """The stock goes back, and so do the points and the coupon the order spent."""
        if not self._step(Action.CANCEL, actor, reason, now):
            return []
        effects: list[Effect] = [ReleaseStock(self.order_id)]
        if self.price.points_redeemed:
            effects.append(ReversePoints(self.order_id, "CANCELLED"))
        if self.coupon_code:
            effects.append(ReleaseCoupon(self.coupon_code, self.order_id))
        if self.member_id:
            effects.append(OrderCancelled(self.order_id, self.member_id, self.customer_id, now.isoformat()))
        return effects

    def has_rejected(self, store_id: str) -> bool:
        return bool(store_id) and store_id in self.rejected_store_ids

    def reject(self, store_id: str, reason: str, actor: str, now: datetime) -> list[Effect]:
        """The fulfilling store (`store_id`, or whichever it is when empty) turns the order down:
        it waits for its next store, never that one again. A store's retry changes nothing."""
        rejecting = store_id or self.fulfilling_store_id
        if rejecting in self.rejected_store_ids:
            return []
        if rejecting != self.fulfilling_store_id:
            raise FailedPrecondition("that store is not fulfilling the order", reason="NOT_FULFILLING_STORE")
        if reason == ACCEPT_TIMEOUT and self.status is not Status.ASSIGNED:
            return []  # the store accepted it just before its window ran out
        to = OrderStateMachine.next(Action.REJECT, self.status)
        self.rejected_store_ids.append(rejecting)
        self.rejections.append(Rejection(rejecting, reason, now))
        # The change names the store that rejected; then the order leaves it.
        self._move(to, actor=actor, reason=reason, now=now, store_id=rejecting)
        self.fulfilling_store_id = ""
        self.accept_deadline = None
        return [Reroute(self.order_id, rejecting)]

    def time_out(self, store_id: str, now: datetime) -> list[Effect]:
        """`store_id` let the accept window pass: rejected for it, unless it has accepted the
        order or the order has moved on meanwhile."""
        if self.status is not Status.ASSIGNED or self.fulfilling_store_id != store_id:
            return []
        return self.reject(store_id, ACCEPT_TIMEOUT, SYSTEM, now)

    # --- what the other services answered -------------------------------------------------

    def note_points_earned(self, points: int) -> None:
        self.points_earned = points

    def note_origin_hours(self, was_open: bool) -> None:
        self.origin_open = was_open

    # --- who sees it ----------------------------------------------------------------------

    def is_for_store(self, store_id: str) -> bool:
        return store_id in (self.fulfilling_store_id, self.origin_store_id)

    # --- inside ---------------------------------------------------------------------------

    def _step(self, action: Action, actor: str, reason: str, now: datetime) -> bool:
        """Make the move `action` names; False when the order is already there (a retry)."""
        if self.status is OrderStateMachine.target(action):
            return False
        self._move(OrderStateMachine.next(action, self.status), actor=actor, reason=reason, now=now)
        return True

    def _move(
        self, to: Status, *, actor: str, reason: str, now: datetime, store_id: str | None = None
    ) -> None:
        store = self.fulfilling_store_id if store_id is None else store_id
        self.changes.append(StatusChange(self.status.value, to.value, actor, reason[:256], store, now))
        self.status = to
        self.status_reason = reason
        self.update_time = now

    def _completed(self, now: datetime) -> list[Effect]:
        """Marketing is told of a member's completed order; an order without a member is none
        of its campaigns' business."""
        if not self.member_id:
            return []
        return [
            OrderCompleted(
                self.order_id,
                self.member_id,
                self.customer_id,
                self.price.total_cents,
                self.fulfilling_store_id,
                self.channel,
                now.isoformat(),
                event_skus(line.sku for line in self.lines),
                self.coupon_code,
            )
        ]

    def _earn(self) -> EarnPoints:
        return EarnPoints(self.order_id, self.member_id, self.price.total_cents, self.fulfilling_store_id)
