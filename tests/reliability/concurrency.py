"""Concurrency on real processes: many copies of one CreateOrder at once make one order, and a
rush on scarce stock through orders and two fulfilment replicas sharing one database never
reserves more than is on hand, nor leaves stock unsold while callers are turned away."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc
from sqlalchemy import func, select

from quanyu.common.v1 import common_pb2
from quanyu.fulfilment.v1 import fulfilment_pb2, fulfilment_pb2_grpc
from quanyu.membership.v1 import membership_pb2
from quanyu.orders.v1 import orders_pb2
from services.fulfilment.domain.reservations import ReservationState
from services.fulfilment.storage import reservations
from services.membership.domain import EntryKind
from services.membership.storage import coupons, ledger_entries
from services.orders.handlers import RELEASE_COUPON, REVERSE_POINTS
from services.orders.storage import orders as orders_table
from services.orders.storage import outbox
from tests.processes import poll
from tests.reliability.deployment import Deployment
from tests.reliability.world import Outcome, World, attempt

CALL_DEADLINE = 120.0
DRAIN = 120.0  # how long effects may take to settle once the rush is over


# --- one request, many copies ------------------------------------------------------------------


@dataclass
class DuplicateFigures:
    rounds: int = 0
    calls: int = 0
    failed_calls: int = 0
    differing_answers: int = 0
    duplicates: int = 0  # orders, reservations, coupon uses and point redemptions beyond one
    problems: list[str] = field(default_factory=list)


def duplicate_orders(d: Deployment, *, rounds: int, copies: int = 50) -> DuplicateFigures:
    """`copies` identical CreateOrder calls (one request id, a coupon and points) at once, per round."""
    figures = DuplicateFigures()
    with ThreadPoolExecutor(copies) as pool:
        for number in range(rounds):
            _duplicate_round(d, pool, number, copies, figures)
    return figures


def _duplicate_round(
    d: Deployment, pool: ThreadPoolExecutor, number: int, copies: int, figures: DuplicateFigures
) -> None:
    w = World(d)
    sku = w.name("dup")
    w.store("A", 0, {sku: 100})
    external_id = w.name(f"buyer-{number}")
    member = w.member(external_id)
    balance = w.earn(member.member_id, 100_000)
    code = w.coupon(member.member_id, 500)
    request = w.delivery(
        w.name(f"dup-{number}"), external_id, {sku: 2}, coupon_code=code, points_to_redeem=300
    )
    start = threading.Barrier(copies)

    def place(_: int) -> Outcome[orders_pb2.CreateOrderResponse]:
        start.wait(timeout=60)
        return attempt(lambda: d.orders.CreateOrder(request, metadata=w.app, timeout=CALL_DEADLINE))

    outcomes = list(pool.map(place, range(copies)))
    figures.rounds += 1
    figures.calls += copies
    failed = [o for o in outcomes if not o.ok]
    figures.failed_calls += len(failed)
    figures.problems += [f"round {number}: a copy failed: {o}" for o in failed[:3]]
    answers = Counter(o.answer().SerializeToString(deterministic=True) for o in outcomes if o.ok)
    figures.differing_answers += max(0, len(answers) - 1)
    if len(answers) > 1:
        figures.problems.append(f"round {number}: {len(answers)} different answers to one request")
    if not answers:
        return
    order = orders_pb2.CreateOrderResponse.FromString(next(iter(answers))).order

    def settled() -> dict[str, int]:
        return _duplicate_effects(d, order.customer_id, sku, code, order.order_id)

    effects = settled()
    if failed and _give_backs_waiting(d, order.order_id):
        # A copy that failed may have asked for the coupon and points back: those effects are
        # void once the order exists, which only their delivery shows.
        poll(lambda: _give_backs_waiting(d, order.order_id), lambda waiting: not waiting, "give-backs", DRAIN)
        effects = settled()
    expected = {"orders": 1, "reserving_orders": 1, "reserved_units": 2, "coupon_uses": 1, "redemptions": 1}
    for what, count in expected.items():
        if effects[what] != count:
            figures.problems.append(f"round {number}: {what} {effects[what]}, expected {count}")
    figures.duplicates += sum(
        max(0, effects[what] - 1) for what in ("orders", "reserving_orders", "coupon_uses", "redemptions")
    )
    if (order.discount_cents, order.points_redeemed) != (500, 300):
        figures.problems.append(
            f"round {number}: {order.discount_cents} off and {order.points_redeemed} points"
        )
    left = d.membership.GetMember(membership_pb2.GetMemberRequest(member_id=member.member_id), metadata=w.ops)
    if left.member.points_balance != balance - 300:
        figures.problems.append(
            f"round {number}: {balance} points less 300 left {left.member.points_balance}"
        )


def _duplicate_effects(d: Deployment, customer_id: str, sku: str, code: str, order_id: str) -> dict[str, int]:
    with d.databases["orders"].snapshot() as db:
        placed = db.execute(
            select(func.count()).select_from(orders_table).where(orders_table.c.customer_id == customer_id)
        ).scalar_one()
    with d.databases["fulfilment"].snapshot() as db:
        held = db.execute(
            select(
                func.count(func.distinct(reservations.c.order_id)),
                func.coalesce(func.sum(reservations.c.quantity), 0),
            ).where(reservations.c.sku == sku, reservations.c.state == ReservationState.ACTIVE)
        ).one()
    with d.databases["membership"].snapshot() as db:
        coupon_order = db.execute(
            select(coupons.c.redeemed_order_id).where(coupons.c.code == code)
        ).scalar_one()
        redemptions = db.execute(
            select(func.count())
            .select_from(ledger_entries)
            .where(ledger_entries.c.source_id == order_id, ledger_entries.c.kind == EntryKind.REDEEM.value)
        ).scalar_one()
    return {
        "orders": int(placed),
        "reserving_orders": int(held[0]),
        "reserved_units": int(held[1]),
        "coupon_uses": 1 if coupon_order == order_id else 0,
        "redemptions": int(redemptions),
    }


def _give_backs_waiting(d: Deployment, order_id: str) -> bool:
    with d.databases["orders"].snapshot() as db:
        rows = db.execute(
            select(outbox.c.payload).where(
                outbox.c.kind.in_([REVERSE_POINTS, RELEASE_COUPON]),
                outbox.c.delivered_time.is_(None),
                outbox.c.failed == 0,
            )
        ).scalars()
        return any(json.loads(payload).get("order_id") == order_id for payload in rows)


# --- scarce stock, two replicas -----------------------------------------------------------------


@dataclass
class OversellFigures:
    rounds: int = 0
    attempts: int = 0
    on_hand: int = 0
    reserved: int = 0
    oversold: int = 0  # units reserved beyond what was on hand
    unsold: int = 0  # units left while callers were turned away
    unexpected: int = 0  # answers other than a store, a wait for one, or FAILED_PRECONDITION
    problems: list[str] = field(default_factory=list)


def oversell(
    d: Deployment, *, rounds: int, attempts: int = 200, scarce: int = 10, spare: int = 5
) -> OversellFigures:
    """Per round, `attempts` single-unit orders at once for one SKU: half through orders (to the
    first fulfilment replica), the rest straight to AssignStore on either replica. The nearest
    store has `scarce` units, another a little farther `spare`."""
    figures = OversellFigures()
    with d.replica("fulfilment") as channel, ThreadPoolExecutor(attempts) as pool:
        replicas = [d.fulfilment, fulfilment_pb2_grpc.FulfilmentServiceStub(channel)]
        for number in range(rounds):
            _oversell_round(
                d, replicas, pool, figures, number=number, attempts=attempts, scarce=scarce, spare=spare
            )
    return figures


def _oversell_round(
    d: Deployment,
    replicas: list[fulfilment_pb2_grpc.FulfilmentServiceStub],
    pool: ThreadPoolExecutor,
    figures: OversellFigures,
    *,
    number: int,
    attempts: int,
    scarce: int,
    spare: int,
) -> None:
    w = World(d)
    sku = w.name("scarce")
    stores = {w.store("N", 0, {sku: scarce}): scarce, w.store("F", 1_500, {sku: spare}): spare}
    # The second replica learns of the stores through the database before the rush.
    for replica in replicas:
        poll(
            lambda r=replica: {  # type: ignore[misc]
                m.store.store_id
                for m in r.FindNearestStores(
                    fulfilment_pb2.FindNearestStoresRequest(location=w.here(), limit=100), metadata=w.ops
                ).matches
            },
            lambda found: set(stores) <= found,
            "the replica's catalogue has the stores",
            30,
        )
    lowest = _StockWatch(replicas, stores, sku, w)
    start = threading.Barrier(attempts)

    def one(index: int) -> tuple[str, Outcome[str]]:
        start.wait(timeout=60)
        if index % 2 == 0:
            request = w.delivery(w.name(f"rush-{number}-{index}"), w.name(f"rusher-{index}"), {sku: 1})
            placed = attempt(
                lambda: d.orders.CreateOrder(request, metadata=w.app, timeout=CALL_DEADLINE).order
            )
            if not placed.ok:
                return "orders", Outcome(placed.code, placed.reason, placed.message)
            order = placed.answer()
            return "orders", Outcome(
                grpc.StatusCode.OK, value=f"{order.order_id}|{order.fulfilling_store_id}"
            )
        replica = replicas[(index // 2) % 2]
        assign = fulfilment_pb2.AssignStoreRequest(
            order_id=w.name(f"direct-{number}-{index}"),
            location=w.here(100),
            lines=[common_pb2.Line(sku=sku, quantity=1, unit_price_cents=1)],
            fulfilment_type=common_pb2.FULFILMENT_TYPE_DELIVERY,
        )
        done = attempt(lambda: replica.AssignStore(assign, metadata=w.service, timeout=CALL_DEADLINE))
        if not done.ok:
            return "direct", Outcome(done.code, done.reason, done.message)
        return "direct", Outcome(grpc.StatusCode.OK, value=f"|{done.answer().assignments[0].store_id}")

    with lowest:
        outcomes = list(pool.map(one, range(attempts)))
    held: Counter[str] = Counter()
    for via, outcome in outcomes:
        if outcome.ok:
            order_id, store_id = outcome.answer().split("|")
            if not store_id:  # orders waits for fulfilment: the relay assigns it or gives up
                final = poll(
                    lambda o=order_id: w.order(o),  # type: ignore[misc]
                    lambda order: order.status != orders_pb2.ORDER_STATUS_PENDING_ASSIGNMENT,
                    "a waiting order is assigned or given up",
                    DRAIN,
                )
                store_id = (
                    final.fulfilling_store_id if final.status == orders_pb2.ORDER_STATUS_ASSIGNED else ""
                )
            if store_id:
                held[store_id] += 1
        elif outcome.code != grpc.StatusCode.FAILED_PRECONDITION or outcome.reason != "INSUFFICIENT_STOCK":
            figures.unexpected += 1
            figures.problems.append(f"round {number} {via}: {outcome}")
    capacity = scarce + spare
    figures.rounds += 1
    figures.attempts += attempts
    figures.on_hand += capacity
    for store_id, on_hand in stores.items():
        levels = [
            r.GetStock(fulfilment_pb2.GetStockRequest(store_id=store_id, skus=[sku]), metadata=w.ops).levels[
                0
            ]
            for r in replicas
        ]
        if len({(lv.on_hand, lv.reserved) for lv in levels}) != 1:
            figures.problems.append(f"round {number}: the replicas disagree on {store_id}: {levels}")
        level = levels[0]
        figures.reserved += level.reserved
        figures.oversold += max(0, level.reserved - on_hand)
        if level.reserved != held[store_id]:
            figures.problems.append(
                f"round {number}: {store_id} holds {level.reserved} for {held[store_id]} placed orders"
            )
        active = _active_units(d, store_id, sku)
        if active != level.reserved:
            figures.problems.append(
                f"round {number}: {store_id} reserved {level.reserved}, reservations {active}"
            )
    figures.oversold += max(0, sum(held.values()) - capacity) + lowest.overdrawn
    figures.unsold += max(0, capacity - sum(held.values()))


def _active_units(d: Deployment, store_id: str, sku: str) -> int:
    with d.databases["fulfilment"].snapshot() as db:
        return int(
            db.execute(
                select(func.coalesce(func.sum(reservations.c.quantity), 0)).where(
                    reservations.c.store_id == store_id,
                    reservations.c.sku == sku,
                    reservations.c.state == ReservationState.ACTIVE,
                )
            ).scalar_one()
        )


class _StockWatch:
    """Reads the stores' levels from both replicas while the rush runs: the most ever reserved
    beyond what was on hand."""

    def __init__(
        self,
        replicas: list[fulfilment_pb2_grpc.FulfilmentServiceStub],
        stores: dict[str, int],
        sku: str,
        w: World,
    ) -> None:
        self._reads: list[Callable[[], list[fulfilment_pb2.StockLevel]]] = [
            lambda r=r, s=s: list(  # type: ignore[misc]
                r.GetStock(
                    fulfilment_pb2.GetStockRequest(store_id=s, skus=[sku]), metadata=w.ops, timeout=30
                ).levels
            )
            for r in replicas
            for s in stores
        ]
        self._done = threading.Event()
        self.overdrawn = 0
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> _StockWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join(timeout=60)

    def _watch(self) -> None:
        while not self._done.is_set():
            for read in self._reads:
                try:
                    levels = read()
                except grpc.RpcError:
                    continue
                for level in levels:
                    self.overdrawn = max(self.overdrawn, level.reserved - level.on_hand, -level.available)
