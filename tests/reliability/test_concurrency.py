"""Fifty copies of one CreateOrder at once make one order, one reservation, one coupon use and one
redemption, and every copy gets the same answer; two hundred orders at once for ten units (and
five more at a store farther away) through orders and two fulfilment replicas reserve exactly
what is on hand and refuse the rest with FAILED_PRECONDITION."""

from __future__ import annotations

from tests.reliability.concurrency import duplicate_orders, oversell
from tests.reliability.deployment import Deployment


def test_fifty_copies_of_one_create_order_make_one_order_and_get_one_answer(each_backend: Deployment) -> None:
    figures = duplicate_orders(each_backend, rounds=1, copies=50)
    assert figures.problems == []
    assert (figures.failed_calls, figures.differing_answers, figures.duplicates) == (0, 0, 0)


def test_two_hundred_orders_for_ten_units_across_two_replicas_reserve_exactly_what_is_on_hand(
    each_backend: Deployment,
) -> None:
    figures = oversell(each_backend, rounds=1, attempts=200, scarce=10, spare=5)
    assert figures.problems == []
    assert (figures.oversold, figures.unsold, figures.unexpected) == (0, 0, 0)
    assert figures.reserved == figures.on_hand == 15
