"""Orders' rules on their own: the order state machine, what a valid CreateOrder request is, how an
order is priced, and the keys that make placing an order idempotent. No gRPC, no database."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quanyu.auth import Principal, Role
from quanyu.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from services.orders.domain import (
    MAX_ID_LENGTH,
    Action,
    CustomerRef,
    FulfilmentType,
    Limits,
    Line,
    OrderRequest,
    OrderStateMachine,
    Price,
    Status,
    check_request,
    points_to_spend,
)
from services.orders.handlers.access import check_caller

# --- the state machine -----------------------------------------------------------------------

# What the contract allows, written out on its own: (action, from) -> to.
ALLOWED: dict[tuple[Action, Status], Status] = {
    (Action.ACCEPT, Status.ASSIGNED): Status.ACCEPTED,
    (Action.READY, Status.ACCEPTED): Status.READY,
    (Action.COMPLETE, Status.READY): Status.COMPLETED,
    # A rejection sends the order back to be assigned to the next store (or UNFULFILLABLE).
    (Action.REJECT, Status.ASSIGNED): Status.PENDING_ASSIGNMENT,
    (Action.REJECT, Status.ACCEPTED): Status.PENDING_ASSIGNMENT,
    (Action.CANCEL, Status.PENDING_ASSIGNMENT): Status.CANCELLED,
    (Action.CANCEL, Status.ASSIGNED): Status.CANCELLED,
    (Action.CANCEL, Status.ACCEPTED): Status.CANCELLED,
    (Action.CANCEL, Status.READY): Status.CANCELLED,
    (Action.CANCEL, Status.UNFULFILLABLE): Status.CANCELLED,
}
FORBIDDEN = [(a, s) for a in Action for s in Status if (a, s) not in ALLOWED]


@pytest.mark.parametrize(("action", "status"), list(ALLOWED), ids=str)
def test_every_allowed_transition_leads_to_its_target(action: Action, status: Status) -> None:
    assert OrderStateMachine.allows(action, status)
    assert OrderStateMachine.next(action, status) is ALLOWED[action, status]


@pytest.mark.parametrize(("action", "status"), FORBIDDEN, ids=str)
def test_every_other_transition_is_failed_precondition_invalid_transition_naming_the_status(
    action: Action, status: Status
) -> None:
    assert not OrderStateMachine.allows(action, status)
    with pytest.raises(FailedPrecondition) as refused:
        OrderStateMachine.next(action, status)
    assert refused.value.reason == "INVALID_TRANSITION"
    assert refused.value.metadata == {"status": f"ORDER_STATUS_{status.value}"}


def test_completed_and_cancelled_orders_are_final() -> None:
    for final in (Status.COMPLETED, Status.CANCELLED):
        assert not any(OrderStateMachine.allows(action, final) for action in Action)


def test_the_forbidden_list_covers_every_pair_the_allowed_list_does_not() -> None:
    assert len(ALLOWED) + len(FORBIDDEN) == len(Action) * len(Status)
    assert len(FORBIDDEN) == 25


# --- checking a request ----------------------------------------------------------------------

PEOPLES_SQUARE = (31.2304, 121.4737, 1)


def a_request(**changes: Any) -> OrderRequest:
    """A valid delivery order; each test changes what it is about."""
    request = OrderRequest(
        request_id="req-1",
        owner="channel:CHANNEL_WECHAT_MINI_PROGRAM",
        customer=CustomerRef(account_channel="CHANNEL_WECHAT_MINI_PROGRAM", account_external_id="openid-1"),
        channel="CHANNEL_WECHAT_MINI_PROGRAM",
        fulfilment_type=FulfilmentType.DELIVERY,
        lines=(Line("tea", 2, 1500), Line("cake", 1, 3000)),
        delivery_location=PEOPLES_SQUARE,
        delivery_address="1 People's Avenue, Shanghai",
        origin_store_id="",
        guide_id="",
        coupon_code="",
        points_to_redeem=0,
    )
    return dataclasses.replace(request, **changes)


def problems(request: OrderRequest, *, channel_known: bool = True, type_known: bool = True) -> list[str]:
    """The fields check_request names, in order; [] when the request is valid."""
    try:
        check_request(request, channel_known=channel_known, type_known=type_known)
    except InvalidArgument as error:
        return [violation.field for violation in error.violations]
    return []


def test_a_complete_delivery_pickup_and_in_store_request_passes() -> None:
    assert problems(a_request()) == []
    assert problems(a_request(fulfilment_type=FulfilmentType.PICKUP, origin_store_id="S1")) == []
    assert problems(a_request(fulfilment_type=FulfilmentType.PICKUP)) == []  # the location finds a store
    in_store = a_request(
        fulfilment_type=FulfilmentType.IN_STORE,
        customer=CustomerRef(phone="+86 138-0013-8000"),
        channel="CHANNEL_STORE_POS",
        delivery_location=None,
        delivery_address="",
        origin_store_id="S1",
        guide_id="G1",
    )
    assert problems(in_store) == []
    assert problems(a_request(customer=CustomerRef(customer_id="cus_1"))) == []


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"request_id": ""}, "request_id"),
        ({"request_id": "r" * 129}, "request_id"),
        ({"customer": CustomerRef()}, "customer_id"),
        ({"customer": CustomerRef(account_external_id="openid-1")}, "account.channel"),
        ({"lines": ()}, "lines"),
        ({"lines": (Line("", 1, 100),)}, "lines[0].sku"),
        ({"lines": (Line("tea", 0, 100),)}, "lines[0].quantity"),
        ({"lines": (Line("tea", 1, 100), Line("cake", -2, 100))}, "lines[1].quantity"),
        ({"lines": (Line("tea", 1, -1),)}, "lines[0].unit_price_cents"),
        ({"delivery_location": None}, "delivery_location"),
        ({"delivery_address": ""}, "delivery_address"),
        ({"delivery_location": (float("nan"), 121.0, 0)}, "delivery_location.latitude"),
        ({"delivery_location": (91.0, 121.0, 0)}, "delivery_location.latitude"),
        ({"delivery_location": (31.0, float("inf"), 0)}, "delivery_location.longitude"),
        ({"fulfilment_type": FulfilmentType.IN_STORE, "origin_store_id": ""}, "origin_store_id"),
        (
            {"fulfilment_type": FulfilmentType.PICKUP, "origin_store_id": "", "delivery_location": None},
            "origin_store_id",
        ),
        ({"points_to_redeem": -1}, "points_to_redeem"),
        ({"guide_id": "g\n1"}, "guide_id"),
        ({"origin_store_id": "s" * (MAX_ID_LENGTH + 1)}, "origin_store_id"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_each_bad_input_is_named_by_its_field(changes: dict[str, Any], field: str) -> None:
    assert problems(a_request(**changes)) == [field]


def test_an_unspecified_channel_or_fulfilment_type_is_named() -> None:
    assert problems(a_request(), channel_known=False) == ["channel"]
    assert problems(a_request(), type_known=False) == ["fulfilment_type"]


def test_an_unspecified_fulfilment_type_asks_for_nothing_type_specific() -> None:
    bare = a_request(delivery_location=None, delivery_address="", origin_store_id="")
    assert problems(bare, type_known=False) == ["fulfilment_type"]


def test_every_problem_is_reported_at_once() -> None:
    bad = a_request(
        request_id="",
        customer=CustomerRef(),
        lines=(Line("tea", 0, -5), Line("cake", -1, 100)),
        delivery_location=(float("nan"), 121.0, 0),
        delivery_address="",
        points_to_redeem=-10,
    )
    found = problems(bad, channel_known=False)
    assert set(found) == {
        "request_id",
        "customer_id",
        "channel",
        "lines[0].quantity",
        "lines[0].unit_price_cents",
        "lines[1].quantity",
        "delivery_location.latitude",
        "delivery_address",
        "points_to_redeem",
    }
    with pytest.raises(InvalidArgument) as refused:
        check_request(bad, channel_known=False, type_known=True)
    for name in found:
        assert name in refused.value.message


def test_an_in_store_request_missing_everything_names_lines_store_and_type_together() -> None:
    bad = a_request(
        fulfilment_type=FulfilmentType.IN_STORE, lines=(), origin_store_id="", delivery_location=None
    )
    assert set(problems(bad)) == {"lines", "origin_store_id"}
    assert set(problems(bad, channel_known=False)) == {"lines", "origin_store_id", "channel"}


# --- pricing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subtotal", "coupon", "wanted", "spent"),
    [
        (6000, 1000, 300, 300),  # what is asked, when it fits
        (1500, 1000, 800, 500),  # capped at what is left after the coupon
        (1500, 1500, 800, 0),  # the coupon paid for everything
        (1000, 0, 1000, 1000),  # exactly the subtotal
        (1000, 0, 0, 0),
        (0, 0, 50, 0),  # a free order spends no points
    ],
)
def test_points_never_pay_for_more_than_is_left_after_the_coupon(
    subtotal: int, coupon: int, wanted: int, spent: int
) -> None:
    assert points_to_spend(subtotal, coupon, wanted) == spent


@given(
    subtotal=st.integers(min_value=0, max_value=10**9),
    coupon=st.integers(min_value=0, max_value=10**9),
    wanted=st.integers(min_value=0, max_value=10**9),
)
def test_points_spent_are_never_negative_nor_more_than_wanted_or_left(
    subtotal: int, coupon: int, wanted: int
) -> None:
    coupon = min(coupon, subtotal)  # membership caps a coupon at the order amount
    spent = points_to_spend(subtotal, coupon, wanted)
    assert 0 <= spent <= wanted
    assert spent <= subtotal - coupon
    assert Price(subtotal, coupon, spent).total_cents >= 0


def test_the_total_is_the_subtotal_less_discount_and_points() -> None:
    assert Price(6000, 1000, 300).total_cents == 4700
    assert Price(1500, 1000, 500).total_cents == 0
    assert Price(1234, 0, 0).total_cents == 1234


def test_the_subtotal_is_quantity_times_unit_price_over_the_lines() -> None:
    assert a_request().subtotal_cents == 2 * 1500 + 3000
    assert Line("tea", 3, 250).amount_cents == 750


# --- idempotency keys ------------------------------------------------------------------------

# One change to every field but request_id; each must change the fingerprint.
CHANGES: dict[str, list[dict[str, Any]]] = {
    "customer": [
        {"customer": CustomerRef(customer_id="cus_1")},
        {"customer": CustomerRef(account_channel="CHANNEL_APP", account_external_id="openid-1")},
        {"customer": CustomerRef(account_channel="CHANNEL_WECHAT_MINI_PROGRAM", account_external_id="o-2")},
        {
            "customer": CustomerRef(
                account_channel="CHANNEL_WECHAT_MINI_PROGRAM", account_external_id="openid-1", phone="138"
            )
        },
    ],
    "channel": [{"channel": "CHANNEL_APP"}],
    "fulfilment_type": [{"fulfilment_type": FulfilmentType.PICKUP}],
    "lines": [
        {"lines": (Line("tea", 2, 1500),)},
        {"lines": (Line("cake", 1, 3000), Line("tea", 2, 1500))},
        {"lines": (Line("teas", 2, 1500), Line("cake", 1, 3000))},
        {"lines": (Line("tea", 3, 1500), Line("cake", 1, 3000))},
        {"lines": (Line("tea", 2, 1501), Line("cake", 1, 3000))},
    ],
    "delivery_location": [
        {"delivery_location": None},
        {"delivery_location": (31.2305, 121.4737, 1)},
        {"delivery_location": (31.2304, 121.4738, 1)},
        {"delivery_location": (31.2304, 121.4737, 2)},
    ],
    "delivery_address": [{"delivery_address": "2 People's Avenue, Shanghai"}],
    "origin_store_id": [{"origin_store_id": "S1"}],
    "guide_id": [{"guide_id": "G1"}],
    "coupon_code": [{"coupon_code": "CPN-1"}],
    "points_to_redeem": [{"points_to_redeem": 1}],
}


KEY = b"the deployment's key, 32 bytes.."


def test_the_fingerprint_is_stable_and_ignores_the_request_id_and_member_code() -> None:
    first = a_request().fingerprint(KEY)
    assert a_request().fingerprint(KEY) == first
    assert a_request(request_id="another-request").fingerprint(KEY) == first
    # A till scans a fresh code for each try: the retry is still the same sale.
    assert a_request(member_code="123456789012345678").fingerprint(KEY) == first
    assert re.fullmatch(r"[0-9a-f]{64}", first)


def test_the_fingerprint_is_keyed_so_a_phone_cannot_be_recovered_from_it() -> None:
    """A plain hash of the payload gives the phone back to whoever tries the 10^4 numbers behind
    its masked form; without the deployment's key, no guess can be checked."""
    request = a_request(customer=CustomerRef(phone="13912345678"))
    assert request.fingerprint(KEY) != request.fingerprint(b"another deployment's key, 32 b..")
    payload = json.dumps(
        {
            "customer": ["", "", "", "13912345678"],
            "channel": request.channel,
            "type": request.fulfilment_type.value,
            "lines": [[ln.sku, ln.quantity, ln.unit_price_cents] for ln in request.lines],
            "location": list(request.delivery_location or ()),
            "address": request.delivery_address,
            "origin": "",
            "guide": "",
            "coupon": "",
            "points": 0,
        },
        sort_keys=True,
    )
    assert request.fingerprint(KEY) != hashlib.sha256(payload.encode()).hexdigest()


@pytest.mark.parametrize("changes", [c for group in CHANGES.values() for c in group], ids=",".join)
def test_the_fingerprint_changes_with_every_field_but_the_request_id(changes: dict[str, Any]) -> None:
    assert a_request(**changes).fingerprint(KEY) != a_request().fingerprint(KEY)


def test_every_field_of_a_request_but_its_keys_is_covered_by_the_fingerprint_checks() -> None:
    names = {f.name for f in dataclasses.fields(OrderRequest)}
    assert names - {"request_id", "owner", "member_code"} == set(CHANGES)


def test_the_order_id_follows_from_the_callers_request_id_alone() -> None:
    one = a_request().order_id()
    assert a_request(lines=(Line("other", 1, 1),), channel="CHANNEL_APP").order_id() == one
    assert a_request(request_id="req-2").order_id() != one
    # Another caller's request id of the same spelling names another order.
    assert a_request(owner="channel:CHANNEL_TMALL").order_id() != one
    assert a_request(owner="store:SH-001").order_id() != one
    assert re.fullmatch(r"ord_[0-9a-f]{32}", one)
    assert len(one) <= MAX_ID_LENGTH  # every RPC accepts it back as an order id


# --- bounds and callers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "field"),
    [
        (Line("tea", 1, 2**53 - 1), "lines[0].unit_price_cents"),
        (Line("tea", 1, 10_000_001), "lines[0].unit_price_cents"),
        (Line("tea", 10_000, 1), "lines[0].quantity"),
        (Line("tea", 9_999, 9_999), "lines[0]"),  # each within bounds, together ¥999,800
    ],
)
def test_a_price_no_shop_charges_is_refused_naming_what_is_out_of_bounds(line: Line, field: str) -> None:
    assert field in problems(a_request(lines=(line,)))


def test_an_order_over_its_bound_is_refused_though_each_line_is_within_its_own() -> None:
    lines = tuple(Line(f"sku-{n}", 1, 4_000_000) for n in range(3))  # ¥120,000 in all
    assert problems(a_request(lines=lines)) == ["lines"]
    assert problems(a_request(lines=lines[:2])) == []
    assert "points_to_redeem" in problems(a_request(points_to_redeem=2**62))


def test_the_bounds_are_the_deployments_to_set() -> None:
    tight = Limits(max_unit_price_cents=100, max_quantity=2, max_line_cents=150, max_order_cents=200)
    request = a_request(lines=(Line("a", 1, 100), Line("b", 2, 75)))
    assert problems(request) == []
    with pytest.raises(InvalidArgument) as caught:
        check_request(
            a_request(lines=(Line("a", 3, 100),)), channel_known=True, type_known=True, limits=tight
        )
    assert [v.field for v in caught.value.violations] == ["lines[0].quantity", "lines[0]"]


TILL = Principal(Role.STORE, "till-1", store_id="S1")
MINI = Principal(Role.CHANNEL, "mini", channel="CHANNEL_WECHAT_MINI_PROGRAM")


def sale(**changes: Any) -> OrderRequest:
    return a_request(
        **{
            "owner": "store:S1",
            "customer": CustomerRef(phone="13912345678"),
            "channel": "CHANNEL_STORE_POS",
            "fulfilment_type": FulfilmentType.IN_STORE,
            "origin_store_id": "S1",
            **changes,
        }
    )


@pytest.mark.parametrize(
    ("principal", "request_", "reason"),
    [
        (TILL, sale(origin_store_id="S2"), "OTHER_STORE"),
        (TILL, sale(fulfilment_type=FulfilmentType.DELIVERY), "OTHER_STORE"),
        (TILL, sale(channel="CHANNEL_TMALL"), "OTHER_CHANNEL"),
        (
            TILL,
            sale(customer=CustomerRef(account_channel="CHANNEL_TMALL", account_external_id="b")),
            "OTHER_CHANNEL",
        ),
        (TILL, sale(points_to_redeem=100), "MEMBER_CODE_REQUIRED"),
        (TILL, sale(coupon_code="CPN"), "MEMBER_CODE_REQUIRED"),
        (MINI, a_request(channel="CHANNEL_APP"), "OTHER_CHANNEL"),
        (
            MINI,
            a_request(customer=CustomerRef(account_channel="CHANNEL_APP", account_external_id="u")),
            "OTHER_CHANNEL",
        ),
        (
            MINI,
            sale(channel="CHANNEL_WECHAT_MINI_PROGRAM", customer=CustomerRef(customer_id="c")),
            "IN_STORE_AT_TILL_ONLY",
        ),
    ],
)
def test_a_caller_places_only_what_is_its_own_to_place(
    principal: Principal, request_: OrderRequest, reason: str
) -> None:
    with pytest.raises(PermissionDenied) as refused:
        check_caller(principal, request_)
    assert refused.value.reason == reason


def test_a_channel_names_its_customer_by_its_own_account_or_an_id_never_by_phone_alone() -> None:
    with pytest.raises(InvalidArgument) as refused:
        check_caller(MINI, a_request(customer=CustomerRef(phone="13912345678")))
    assert [v.field for v in refused.value.violations] == ["account"]
    check_caller(MINI, a_request())
    check_caller(MINI, a_request(customer=CustomerRef(customer_id="cus_1")))
    check_caller(TILL, sale(points_to_redeem=100, member_code="123456789012345678"))
    check_caller(Principal(Role.OPS, "ops"), sale(origin_store_id="S9", points_to_redeem=10))
