"""Services killed (SIGKILL) or frozen (SIGSTOP) in the middle of the order flow, round after
round: membership while orders delivers the points of a completed order, fulfilment while orders
asks it for a store, and orders itself between its commit and its reply.

Where a kill must land after a service's commit and before its answer reaches the caller, the
service's relay holds its replies back while the test watches the service's database for the
commit, then the service is killed and the relay drops the reply, as a crash or a partition would.

Each round's caller must get an answer or a clean retryable error (UNAVAILABLE or
DEADLINE_EXCEEDED), and a retry with the same request id must return the same order. Once every
service is back and the orders outbox has drained, every round's order must be COMPLETED with its
effects applied exactly once: one EARN in membership's ledger (and its points noted on the order),
and its stock taken from the shelf once with nothing left reserved. Whatever is missing counts as
lost, whatever is extra as doubled, and membership's books must still balance.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar

from sqlalchemy import func, select

from quanyu.orders.v1 import orders_pb2
from services.fulfilment.domain.reservations import ReservationState
from services.fulfilment.storage import reservations, stock
from services.membership.domain import EntryKind
from services.membership.storage import ledger_entries
from services.orders.grpc_servicer import request_from
from services.orders.handlers import EARN_POINTS
from services.orders.storage import orders as orders_table
from services.orders.storage import outbox
from tests.membership.test_ledger_invariants import check_books
from tests.processes import poll
from tests.reliability.deployment import Deployment
from tests.reliability.world import RETRYABLE, Background, Outcome, World, attempt, retrying

T = TypeVar("T")

ON_HAND = 10
WATCH = 30.0  # how long a test waits for a service to reach the point where the fault strikes
SETTLE = 240.0  # how long every effect may take to arrive once the services are back
DEADLINE = 30.0  # a client's deadline for one call
SHORT_DEADLINE = 3.0  # a client's deadline when the service it calls is frozen
S = orders_pb2


class Signal(StrEnum):
    KILL = "killed"
    FREEZE = "frozen"


@dataclass(frozen=True)
class Fault:
    service: str
    signal: Signal
    during: str

    def __str__(self) -> str:
        return f"{self.service} {self.signal.value} during {self.during}"


FAULTS = (
    Fault("membership", Signal.KILL, "completion"),
    Fault("membership", Signal.FREEZE, "completion"),
    Fault("fulfilment", Signal.KILL, "creation"),
    Fault("fulfilment", Signal.FREEZE, "creation"),
    Fault("orders", Signal.KILL, "creation"),
    Fault("orders", Signal.KILL, "completion"),
    Fault("orders", Signal.FREEZE, "creation"),
)


@dataclass
class FaultFigures:
    rounds: int = 0
    answered: int = 0  # calls hit by a fault that answered anyway
    retryable: int = 0  # calls hit by a fault that failed UNAVAILABLE or DEADLINE_EXCEEDED
    unclean: int = 0  # calls hit by a fault that failed any other way
    retries_differing: int = 0  # retries with the same request id that named another order
    lost: int = 0  # effects that never arrived
    doubled: int = 0  # effects that arrived more than once
    ledger_violations: int = 0
    problems: list[str] = field(default_factory=list)


@dataclass
class _Round:
    number: int
    fault: Fault
    sku: str
    quantity: int
    request: orders_pb2.CreateOrderRequest
    order_id: str = ""


def faults_in_the_order_flow(d: Deployment, *, rounds: int, seed: int = 7) -> FaultFigures:
    """`rounds` rounds, the faults taken in turn; then the effects of all of them are counted."""
    figures = FaultFigures()
    w = World(d)
    store = w.store("F", 0, {})
    rng = random.Random(seed)
    phone = f"137{rng.randrange(10**8):08d}"
    played: list[_Round] = []
    for number in range(rounds):
        fault = FAULTS[number % len(FAULTS)]
        sku = w.name(f"sku-{number}")
        w.set_stock(store, {sku: ON_HAND})
        quantity = rng.randint(1, 3)
        lines = {sku: quantity}
        request = (
            w.in_store(w.name(f"r{number}"), store, phone, lines)
            if fault == Fault("orders", Signal.KILL, "creation") and number % 2 == 0
            else w.delivery(w.name(f"r{number}"), w.name("buyer"), lines)
        )
        played.append(_Round(number, fault, sku, quantity, request))
        try:
            _play(d, w, played[-1], figures)
        except AssertionError as failure:
            figures.problems.append(f"round {number} ({fault}): {failure}")
        finally:
            d.restore()
        figures.rounds += 1
    _count_effects(d, w, store, played, figures)
    return figures


# --- one round ---------------------------------------------------------------------------------


def _play(d: Deployment, w: World, r: _Round, figures: FaultFigures) -> None:
    r.order_id = request_from(r.request, owner="").order_id()  # placed by ops
    fault = r.fault
    if fault.during == "creation":
        hit = _create_under(d, w, r)
    else:
        _until_assigned(w, r, _create(d, w, r, figures))
        _step(d, w, r, "AcceptOrder")
        _step(d, w, r, "MarkOrderReady")
        hit = _complete_under(d, w, r)
    _judge(hit, fault, r, figures)
    # The caller retries with the same request id and gets the same order, then finishes the flow.
    order = _until_assigned(w, r, _create(d, w, r, figures))
    if order.status == S.ORDER_STATUS_ASSIGNED:
        _step(d, w, r, "AcceptOrder")
        order = _step(d, w, r, "MarkOrderReady")
    if order.status == S.ORDER_STATUS_READY:
        order = _step(d, w, r, "CompleteOrder")
    assert order.status == S.ORDER_STATUS_COMPLETED, f"the order ended {S.OrderStatus.Name(order.status)}"


def _until_assigned(w: World, r: _Round, order: orders_pb2.Order) -> orders_pb2.Order:
    """The order once a store has it. A service still catching up after the last round's fault
    may not answer orders in time, which then keeps the order PENDING_ASSIGNMENT for its relay
    to assign, as it should."""
    if order.status != S.ORDER_STATUS_PENDING_ASSIGNMENT:
        return order
    return poll(
        lambda: w.order(r.order_id), lambda o: o.status != S.ORDER_STATUS_PENDING_ASSIGNMENT, "assigned"
    )


def _create_under(d: Deployment, w: World, r: _Round) -> Outcome[orders_pb2.Order]:
    fault = r.fault
    if fault.service == "fulfilment" and fault.signal is Signal.KILL:
        # Fulfilment reserves and commits; its answer is lost with it.
        return _lose_the_answer(
            d,
            "fulfilment",
            lambda: d.orders.CreateOrder(r.request, metadata=w.ops, timeout=DEADLINE).order,
            lambda: _reserved(d, r.order_id),
        )
    if fault.service == "fulfilment":
        d.freeze("fulfilment")
        try:
            return attempt(lambda: d.orders.CreateOrder(r.request, metadata=w.ops, timeout=DEADLINE).order)
        finally:
            d.thaw("fulfilment")
    if fault.signal is Signal.KILL:
        return _lose_the_answer(
            d,
            "orders",
            lambda: d.orders_through_relay.CreateOrder(r.request, metadata=w.ops, timeout=DEADLINE).order,
            lambda: _stored_status(d, r.request.request_id) is not None,
        )
    return _freeze_before_answering(
        d,
        lambda: d.orders_through_relay.CreateOrder(r.request, metadata=w.ops, timeout=SHORT_DEADLINE).order,
        lambda: _stored_status(d, r.request.request_id) is not None,
    )


def _complete_under(d: Deployment, w: World, r: _Round) -> Outcome[orders_pb2.Order]:
    complete = orders_pb2.CompleteOrderRequest(order_id=r.order_id)
    fault = r.fault
    if fault.service == "membership" and fault.signal is Signal.KILL:
        # Orders' relay delivers the points; membership writes them and dies before answering.
        return _lose_the_answer(
            d,
            "membership",
            lambda: d.orders.CompleteOrder(complete, metadata=w.ops, timeout=DEADLINE).order,
            lambda: bool(_earned(d, r.order_id)),
        )
    if fault.service == "membership":
        d.freeze("membership")
        try:
            done = attempt(lambda: d.orders.CompleteOrder(complete, metadata=w.ops, timeout=DEADLINE).order)
            poll(
                lambda: _earn_attempts(d, r.order_id),
                lambda n: n > 0,
                "orders gives up on the hung membership",
            )
            return done
        finally:
            d.thaw("membership")
    return _lose_the_answer(
        d,
        "orders",
        lambda: d.orders_through_relay.CompleteOrder(complete, metadata=w.ops, timeout=DEADLINE).order,
        lambda: _stored_status(d, r.request.request_id) == "COMPLETED",
    )


def _lose_the_answer(
    d: Deployment, service: str, call: Callable[[], T], committed: Callable[[], bool]
) -> Outcome[T]:
    """Make the call with `service`'s replies held back; once `committed()` shows the service did
    its work, kill it and drop the reply, and bring it back."""
    relay = d.relays[service]
    relay.hold()
    try:
        with Background(call) as pending:
            poll(committed, bool, f"{service} commits its work", WATCH)
            d.kill(service)
            relay.cut()
            outcome = pending.outcome()
    finally:
        relay.cut()
        if service not in d.processes:
            d.start(service)
    return outcome


def _freeze_before_answering(
    d: Deployment, call: Callable[[], T], committed: Callable[[], bool]
) -> Outcome[T]:
    """Orders does its work and hangs before its answer is out; the caller's deadline passes."""
    relay = d.relays["orders"]
    relay.hold()
    try:
        with Background(call) as pending:
            poll(committed, bool, "orders commits the order", WATCH)
            d.freeze("orders")
            outcome = pending.outcome()
    finally:
        d.thaw("orders")
        relay.cut()
    return outcome


def _judge(hit: Outcome[orders_pb2.Order], fault: Fault, r: _Round, figures: FaultFigures) -> None:
    if hit.ok:
        figures.answered += 1
        if hit.answer().order_id != r.order_id:
            figures.retries_differing += 1
    elif hit.code in RETRYABLE:
        figures.retryable += 1
    else:
        figures.unclean += 1
        figures.problems.append(f"round {r.number} ({fault}): the caller got {hit}")


def _create(d: Deployment, w: World, r: _Round, figures: FaultFigures) -> orders_pb2.Order:
    outcome, _ = retrying(lambda: d.orders.CreateOrder(r.request, metadata=w.ops, timeout=DEADLINE))
    order: orders_pb2.Order = outcome.answer().order
    if order.order_id != r.order_id or order.request_id != r.request.request_id:
        figures.retries_differing += 1
        raise AssertionError(f"a retry of {r.request.request_id} answered with order {order.order_id}")
    return order


def _step(d: Deployment, w: World, r: _Round, method: str) -> orders_pb2.Order:
    stub = d.orders
    calls: dict[str, Callable[[], orders_pb2.Order]] = {
        "AcceptOrder": lambda: (
            stub.AcceptOrder(S.AcceptOrderRequest(order_id=r.order_id), metadata=w.ops).order
        ),
        "MarkOrderReady": lambda: (
            stub.MarkOrderReady(S.MarkOrderReadyRequest(order_id=r.order_id), metadata=w.ops).order
        ),
        "CompleteOrder": lambda: (
            stub.CompleteOrder(S.CompleteOrderRequest(order_id=r.order_id), metadata=w.ops).order
        ),
    }
    outcome, _ = retrying(calls[method])
    return outcome.answer()


# --- reading what the services wrote ------------------------------------------------------------


def _stored_status(d: Deployment, request_id: str) -> str | None:
    with d.databases["orders"].snapshot() as db:
        status: str | None = db.execute(
            select(orders_table.c.status).where(orders_table.c.request_id == request_id)
        ).scalar_one_or_none()
    return status


def _reserved(d: Deployment, order_id: str) -> bool:
    with d.databases["fulfilment"].snapshot() as db:
        return bool(
            db.execute(
                select(func.count()).select_from(reservations).where(reservations.c.order_id == order_id)
            ).scalar_one()
        )


def _earned(d: Deployment, order_id: str) -> list[int]:
    with d.databases["membership"].snapshot() as db:
        return [
            int(points)
            for points in db.execute(
                select(ledger_entries.c.points).where(
                    ledger_entries.c.source_id == order_id, ledger_entries.c.kind == EntryKind.EARN.value
                )
            ).scalars()
        ]


def _earn_attempts(d: Deployment, order_id: str) -> int:
    with d.databases["orders"].snapshot() as db:
        rows = db.execute(
            select(outbox.c.payload, outbox.c.attempts).where(outbox.c.kind == EARN_POINTS)
        ).all()
    return sum(attempts for payload, attempts in rows if json.loads(payload)["order_id"] == order_id)


# --- after recovery: every effect once ----------------------------------------------------------


def _count_effects(d: Deployment, w: World, store: str, played: list[_Round], figures: FaultFigures) -> None:
    status = poll(
        lambda: d.orders.GetOutboxStatus(S.GetOutboxStatusRequest(), metadata=w.ops, timeout=DEADLINE),
        lambda s: s.undelivered == 0,
        "the orders outbox drains",
        SETTLE,
    )
    if status.failed:
        figures.problems.append(f"{status.failed} effects refused for good")
    with d.databases["fulfilment"].snapshot() as db:
        levels = {
            row.sku: (int(row.on_hand), int(row.reserved))
            for row in db.execute(
                select(stock.c.sku, stock.c.on_hand, stock.c.reserved).where(stock.c.store_id == store)
            )
        }
        committed = {
            row.order_id: int(row.units)
            for row in db.execute(
                select(reservations.c.order_id, func.sum(reservations.c.quantity).label("units"))
                .where(reservations.c.state == ReservationState.COMMITTED)
                .group_by(reservations.c.order_id)
            )
        }
    for r in played:
        if not r.order_id:
            continue
        order = attempt(lambda r=r: w.order(r.order_id))  # type: ignore[misc]
        if not order.ok:
            figures.lost += 2  # neither its stock nor its points can have been applied for it
            figures.problems.append(f"round {r.number} ({r.fault}): no order {r.order_id}: {order}")
            continue
        completed = order.answer().status == S.ORDER_STATUS_COMPLETED
        # Points: one EARN, noted on the order.
        earned = _earned(d, r.order_id)
        if completed and not earned:
            figures.lost += 1
            figures.problems.append(f"round {r.number} ({r.fault}): no points earned")
        figures.doubled += max(0, len(earned) - 1)
        if earned and order.answer().points_earned != earned[0]:
            figures.lost += 1
            figures.problems.append(f"round {r.number} ({r.fault}): points earned not noted on the order")
        # Stock: taken from the shelf once, nothing left reserved.
        on_hand, reserved = levels.get(r.sku, (ON_HAND, 0))
        taken = ON_HAND - on_hand
        expected_taken, expected_reserved = (r.quantity, 0) if completed else (0, r.quantity)
        if taken < expected_taken or reserved < expected_reserved:
            figures.lost += 1
            figures.problems.append(
                f"round {r.number} ({r.fault}): stock {on_hand} on hand, {reserved} reserved"
            )
        extra = (
            max(0, taken - expected_taken) // r.quantity + max(0, reserved - expected_reserved) // r.quantity
        )
        if extra:
            figures.doubled += extra
            figures.problems.append(
                f"round {r.number} ({r.fault}): stock {on_hand} on hand, {reserved} reserved"
            )
        if completed and committed.get(r.order_id, 0) != r.quantity:
            figures.problems.append(
                f"round {r.number}: {committed.get(r.order_id, 0)} units committed for it"
            )
    try:
        check_books(d.databases["membership"])
    except AssertionError as violation:
        figures.ledger_violations += 1
        figures.problems.append(f"membership's books: {violation}")
