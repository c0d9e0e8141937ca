"""The order aggregate on its own: every move it allows and refuses, what each move records and
the effects it answers, and where an order is placed, new or re-routed. No database."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from quanyu.errors import FailedPrecondition
from services.orders.domain import (
    ACCEPT_TIMEOUT,
    CustomerRef,
    FulfilmentType,
    Line,
    Member,
    Order,
    OrderRequest,
    Price,
    Status,
    Where,
    placement,
)
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

PLACED = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
LATER = PLACED + timedelta(minutes=5)
WINDOW = timedelta(seconds=120)
HERE = (31.23, 121.47, 1)


def an_order(status: Status = Status.ASSIGNED, **changes: object) -> Order:
    fields: dict[str, object] = {
        "order_id": "ord-1",
        "request_id": "req-1",
        "customer_id": "cus-1",
        "member_id": "mem-1",
        "channel": "CHANNEL_APP",
        "fulfilment_type": FulfilmentType.DELIVERY,
        "lines": [Line("tea", 2, 1_500)],
        "price": Price(3_000, 500, 200),
        "delivery_location": HERE,
        "delivery_address": "1 Road",
        "origin_store_id": "HOME",
        "fulfilling_store_id": "" if status in (Status.PENDING_ASSIGNMENT, Status.UNFULFILLABLE) else "S1",
        "guide_id": "",
        "status": status,
        "status_reason": "",
        "coupon_code": "SAVE5",
        "points_earned": 0,
        "create_time": PLACED,
        "update_time": PLACED,
        **changes,
    }
    return Order(**fields)  # type: ignore[arg-type]


Move = Callable[[Order], list[Effect]]
MOVES: dict[str, Move] = {
    "accept": lambda o: o.accept("store:S1/till", LATER),
    "mark_ready": lambda o: o.mark_ready("store:S1/till", LATER),
    "complete": lambda o: o.complete("store:S1/till", LATER),
    "cancel": lambda o: o.cancel("channel:CHANNEL_APP", "changed my mind", LATER),
    "reject": lambda o: o.reject("", "no staff", "store:S1/till", LATER),
}
# (move, from) -> to, as the contract says; every other pair is refused.
ALLOWED = {
    ("accept", Status.ASSIGNED): Status.ACCEPTED,
    ("mark_ready", Status.ACCEPTED): Status.READY,
    ("complete", Status.READY): Status.COMPLETED,
    ("reject", Status.ASSIGNED): Status.PENDING_ASSIGNMENT,
    ("reject", Status.ACCEPTED): Status.PENDING_ASSIGNMENT,
    **{
        ("cancel", s): Status.CANCELLED
        for s in (
            Status.PENDING_ASSIGNMENT,
            Status.ASSIGNED,
            Status.ACCEPTED,
            Status.READY,
            Status.UNFULFILLABLE,
        )
    },
}
# A move to where the order already is, is a retry: it changes nothing and has no effect.
RETRIES = {("accept", Status.ACCEPTED), ("mark_ready", Status.READY), ("complete", Status.COMPLETED)}
RETRIES |= {("cancel", Status.CANCELLED)}
REFUSED = [(m, s) for m in MOVES for s in Status if (m, s) not in ALLOWED and (m, s) not in RETRIES]


@pytest.mark.parametrize(("move", "status"), list(ALLOWED), ids=str)
def test_each_allowed_move_lands_where_the_contract_says_and_is_recorded(move: str, status: Status) -> None:
    order = an_order(status)
    MOVES[move](order)
    assert order.status is ALLOWED[move, status]
    assert order.update_time == LATER
    [change] = order.changes
    assert (change.from_status, change.to_status, change.change_time) == (
        status.value,
        order.status.value,
        LATER,
    )


@pytest.mark.parametrize(("move", "status"), REFUSED, ids=str)
def test_every_other_move_is_invalid_transition_and_changes_nothing(move: str, status: Status) -> None:
    order = an_order(status)
    with pytest.raises(FailedPrecondition) as refused:
        MOVES[move](order)
    assert refused.value.reason in ("INVALID_TRANSITION", "NOT_FULFILLING_STORE")
    if refused.value.reason == "INVALID_TRANSITION":
        assert refused.value.metadata == {"status": f"ORDER_STATUS_{status.value}"}
    assert (order.status, order.changes, order.update_time) == (status, [], PLACED)


@pytest.mark.parametrize(("move", "status"), sorted(RETRIES), ids=str)
def test_a_move_to_where_the_order_already_is_is_a_retry_with_no_effect(move: str, status: Status) -> None:
    order = an_order(status)
    assert MOVES[move](order) == []
    assert (order.status, order.changes) == (status, [])


def test_accepting_and_marking_ready_have_no_effect_elsewhere() -> None:
    order = an_order()
    assert order.accept("till", LATER) == []
    assert order.mark_ready("till", LATER) == []
    assert order.status_reason == ""


def test_completing_commits_the_stock_and_earns_on_what_was_paid_at_the_fulfilling_store() -> None:
    order = an_order(Status.READY)
    assert order.complete("till", LATER) == [
        CommitStock("ord-1"),
        EarnPoints("ord-1", "mem-1", 2_300, "S1"),
        OrderCompleted(
            "ord-1", "mem-1", "cus-1", 2_300, "S1", "CHANNEL_APP", LATER.isoformat(), ("tea",), "SAVE5"
        ),
    ]
    assert order.complete_time == LATER


def test_marketing_hears_of_a_members_order_completed_or_cancelled_by_ids_that_follow_from_it() -> None:
    completed = an_order(Status.READY, lines=[Line("tea", 1, 1_000), Line("cup", 1, 500), Line("tea", 1, 9)])
    told = completed.complete("till", LATER)[-1]
    assert told.kind == "marketing_event"
    assert told.payload() == {
        "event_id": "orders/ord-1/completed",
        "occur_time": LATER.isoformat(),
        "order_completed": {
            "order_id": "ord-1",
            "member_id": "mem-1",
            "customer_id": "cus-1",
            "total_cents": 2_300,
            "store_id": "S1",
            "skus": ["tea", "cup"],
            "channel": "CHANNEL_APP",
            # The coupon it redeemed, for the campaign that issued it to count.
            "coupon_code": "SAVE5",
        },
    }
    # An order without a coupon names none, as the JSON form of marketing's Event leaves it out.
    plain = an_order(Status.READY, coupon_code="").complete("till", LATER)[-1].payload()
    assert "coupon_code" not in plain["order_completed"]
    cancelled = an_order(Status.ACCEPTED).cancel("app", "", LATER)[-1]
    assert cancelled.payload() == {
        "event_id": "orders/ord-1/cancelled",
        "occur_time": LATER.isoformat(),
        "order_cancelled": {"order_id": "ord-1", "member_id": "mem-1", "customer_id": "cus-1"},
    }
    # Marketing takes at most 100 SKUs of an order, each once.
    assert event_skus([f"sku-{n % 150}" for n in range(300)]) == tuple(f"sku-{n}" for n in range(100))


def test_an_order_without_a_member_tells_marketing_nothing() -> None:
    completed = an_order(Status.READY, member_id="").complete("till", LATER)
    cancelled = an_order(Status.ACCEPTED, member_id="").cancel("app", "", LATER)
    assert completed
    assert cancelled
    assert not [e for e in completed + cancelled if e.kind == "marketing_event"]


def test_cancelling_releases_the_stock_and_gives_back_the_points_and_coupon_it_spent() -> None:
    order = an_order(Status.ACCEPTED)
    assert order.cancel("app", "changed my mind", LATER) == [
        ReleaseStock("ord-1"),
        ReversePoints("ord-1", "CANCELLED"),
        ReleaseCoupon("SAVE5", "ord-1"),
        OrderCancelled("ord-1", "mem-1", "cus-1", LATER.isoformat()),
    ]
    assert order.status_reason == "changed my mind"
    plain = an_order(price=Price(3_000, 0, 0), coupon_code="")
    assert plain.cancel("app", "", LATER) == [
        ReleaseStock("ord-1"),
        OrderCancelled("ord-1", "mem-1", "cus-1", LATER.isoformat()),
    ]
    # A retry moves nothing and tells nobody again.
    assert plain.cancel("app", "", LATER) == []


def test_a_rejection_leaves_the_store_for_good_and_asks_for_the_next() -> None:
    order = an_order(accept_deadline=PLACED + WINDOW)
    assert order.reject("S1", "no staff", "store:S1/till", LATER) == [Reroute("ord-1", "S1")]
    assert (order.status, order.status_reason) == (Status.PENDING_ASSIGNMENT, "no staff")
    assert (order.fulfilling_store_id, order.accept_deadline) == ("", None)
    assert order.rejected_store_ids == ["S1"]
    assert [(r.store_id, r.reason) for r in order.rejections] == [("S1", "no staff")]
    # The change names the store that rejected, not the empty store it leaves for.
    assert order.changes[-1].store_id == "S1"
    assert order.has_rejected("S1")
    # The same store again: a retry, nothing more.
    assert order.reject("S1", "no staff", "store:S1/till", LATER) == []
    assert len(order.changes) == 1


def test_only_the_fulfilling_store_rejects() -> None:
    with pytest.raises(FailedPrecondition) as refused:
        an_order().reject("S2", "no staff", "ops", LATER)
    assert refused.value.reason == "NOT_FULFILLING_STORE"


def test_the_accept_window_rejects_for_the_store_only_while_it_has_not_accepted() -> None:
    order = an_order()
    assert order.time_out("S1", LATER) == [Reroute("ord-1", "S1")]
    assert (order.status_reason, order.changes[-1].actor) == (ACCEPT_TIMEOUT, "system")
    accepted = an_order(Status.ACCEPTED)
    assert accepted.time_out("S1", LATER) == []
    assert accepted.reject("S1", ACCEPT_TIMEOUT, "system", LATER) == []
    moved_on = an_order(fulfilling_store_id="S2")
    assert moved_on.time_out("S1", LATER) == []
    assert (accepted.changes, moved_on.changes) == ([], [])


def test_a_waiting_order_is_assigned_keeping_the_reason_it_was_rejected_for() -> None:
    order = an_order()
    order.reject("S1", "no staff", "till", PLACED)
    assert order.assign("S2", LATER, WINDOW) == []
    assert (order.status, order.fulfilling_store_id, order.status_reason) == (
        Status.ASSIGNED,
        "S2",
        "no staff",
    )
    assert order.accept_deadline == LATER + WINDOW
    last = order.changes[-1]
    assert (last.to_status, last.store_id, last.reason, last.actor) == ("ASSIGNED", "S2", "", "system")
    # A second re-route that lost the race changes nothing.
    assert order.assign("S3", LATER, WINDOW) == []
    assert order.fulfilling_store_id == "S2"


def test_an_order_cancelled_while_fulfilment_was_deciding_gives_back_what_it_reserved() -> None:
    order = an_order(Status.CANCELLED)
    assert order.assign("S2", LATER, WINDOW) == [ReleaseStock("ord-1")]
    assert (order.status, order.changes) == (Status.CANCELLED, [])


def test_a_waiting_order_no_store_can_take_is_unfulfillable_with_fulfilments_reason() -> None:
    order = an_order(Status.PENDING_ASSIGNMENT)
    order.give_up("NO_STORE_IN_RANGE", LATER)
    assert (order.status, order.status_reason) == (Status.UNFULFILLABLE, "NO_STORE_IN_RANGE")
    assert order.changes[-1].store_id == ""
    assigned = an_order()
    assigned.give_up("NO_STORE_IN_RANGE", LATER)
    assert assigned.status is Status.ASSIGNED


# --- placing ---------------------------------------------------------------------------------


def a_request(kind: FulfilmentType, **changes: object) -> OrderRequest:
    fields: dict[str, object] = {
        "request_id": "req-1",
        "owner": "channel:CHANNEL_APP",
        "customer": CustomerRef(customer_id="cus-1"),
        "channel": "CHANNEL_APP",
        "fulfilment_type": kind,
        "lines": (Line("tea", 2, 1_500),),
        "delivery_location": HERE if kind is FulfilmentType.DELIVERY else None,
        "delivery_address": "1 Road" if kind is FulfilmentType.DELIVERY else "",
        "origin_store_id": "" if kind is FulfilmentType.DELIVERY else "CHOSEN",
        "guide_id": "",
        "coupon_code": "",
        "points_to_redeem": 0,
        **changes,
    }
    return OrderRequest(**fields)  # type: ignore[arg-type]


def placed(request: OrderRequest, store_id: str | None, home: str = "HOME") -> tuple[Order, list[Effect]]:
    return Order.place(
        request,
        customer_id="cus-1",
        member=Member("mem-1", home, "guide-1"),
        price=Price(3_000, 0, 0),
        store_id=store_id,
        now=PLACED,
        accept_window=WINDOW,
    )


def test_a_new_order_waits_at_its_store_and_asks_whether_the_origin_was_open() -> None:
    order, effects = placed(a_request(FulfilmentType.DELIVERY), "S1")
    assert (order.status, order.fulfilling_store_id, order.accept_deadline) == (
        Status.ASSIGNED,
        "S1",
        PLACED + WINDOW,
    )
    assert (order.origin_store_id, order.pickup_store_id, order.order_id) == (
        "HOME",
        "",
        a_request(FulfilmentType.DELIVERY).order_id(),
    )
    assert effects == [RecordOriginHours(order.order_id, "HOME", PLACED.isoformat())]
    assert [(c.from_status, c.to_status, c.store_id) for c in order.changes] == [("", "ASSIGNED", "S1")]


def test_a_new_order_fulfilment_did_not_answer_for_waits_to_be_routed() -> None:
    order, effects = placed(a_request(FulfilmentType.DELIVERY), None, home="")
    assert (order.status, order.fulfilling_store_id, order.accept_deadline) == (
        Status.PENDING_ASSIGNMENT,
        "",
        None,
    )
    assert effects == [Reroute(order.order_id)]


def test_a_pickup_order_keeps_the_chosen_store_apart_from_the_origin_for_reports() -> None:
    order, _ = placed(a_request(FulfilmentType.PICKUP), "CHOSEN")
    assert (order.pickup_store_id, order.origin_store_id) == ("CHOSEN", "HOME")
    without_home, _ = placed(a_request(FulfilmentType.PICKUP), "CHOSEN", home="")
    assert (without_home.pickup_store_id, without_home.origin_store_id) == ("CHOSEN", "CHOSEN")


def test_a_till_sale_completes_at_once_takes_its_stock_and_earns() -> None:
    sale = a_request(FulfilmentType.IN_STORE, origin_store_id="TILL", channel="CHANNEL_STORE_POS")
    order, effects = placed(sale, "TILL")
    assert (order.status, order.fulfilling_store_id, order.complete_time) == (
        Status.COMPLETED,
        "TILL",
        PLACED,
    )
    assert effects == [
        CommitStock(order.order_id),
        EarnPoints(order.order_id, "mem-1", 3_000, "TILL"),
        OrderCompleted(
            order.order_id,
            "mem-1",
            order.customer_id,
            3_000,
            "TILL",
            "CHANNEL_STORE_POS",
            PLACED.isoformat(),
            ("tea",),
        ),
        RecordOriginHours(order.order_id, "TILL", PLACED.isoformat()),
    ]
    offline, effects = placed(sale, None)
    assert effects[0] == TakeInStoreStock(offline.order_id)


def test_one_placement_rule_for_new_and_rerouted_orders() -> None:
    # Delivery: from the delivery location, never back to a store that rejected it.
    assert placement(FulfilmentType.DELIVERY, location=HERE, chosen_store_id="") == Where(HERE)
    assert placement(FulfilmentType.DELIVERY, location=HERE, chosen_store_id="", rejected=("S1",)) == Where(
        HERE, exclude=("S1",)
    )
    # In store: the till's store.
    assert placement(FulfilmentType.IN_STORE, location=None, chosen_store_id="TILL") == Where(
        None, preferred_store_id="TILL"
    )
    # Pickup, new: the chosen store first, else the nearest to the customer.
    assert placement(FulfilmentType.PICKUP, location=HERE, chosen_store_id="C") == Where(
        HERE, preferred_store_id="C"
    )
    # Pickup, re-routed: the nearest to the customer, or without a location to the chosen store.
    assert placement(FulfilmentType.PICKUP, location=HERE, chosen_store_id="C", rejected=("C",)) == Where(
        HERE, exclude=("C",)
    )
    assert placement(FulfilmentType.PICKUP, location=None, chosen_store_id="C", rejected=("C",)) == Where(
        None, near_store_id="C", exclude=("C",)
    )


def test_a_rejected_pickup_order_is_never_placed_by_the_members_home_store() -> None:
    order, _ = placed(a_request(FulfilmentType.PICKUP), "CHOSEN")
    order.reject("CHOSEN", "no staff", "till", LATER)
    where = order.where()
    assert "HOME" not in (where.preferred_store_id, where.near_store_id)
    assert where == Where(None, near_store_id="CHOSEN", exclude=("CHOSEN",))


def test_a_pickup_order_with_neither_a_chosen_store_nor_a_location_has_nowhere_to_look_from() -> None:
    order = an_order(fulfilment_type=FulfilmentType.PICKUP, delivery_location=None, pickup_store_id="")
    order.reject("S1", "no staff", "till", LATER)
    assert not order.where().is_anywhere
    assert placement(FulfilmentType.PICKUP, location=None, chosen_store_id="C", rejected=("C",)).is_anywhere
