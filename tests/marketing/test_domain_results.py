"""Results against the control group: conversion, revenue and the uplift's 95 % interval, checked
against the worked examples of Newcombe (1998), Statistics in Medicine 17:873-890, Table II."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.marketing.domain import Group, converted, newcombe, results, wilson
from tests.marketing.factory import T0


@pytest.mark.parametrize(
    ("counts", "interval"),
    [
        # Method 10 of Newcombe's Table II, to the four places the paper gives.
        ((56, 70, 48, 80), (0.0524, 0.3339)),
        ((9, 10, 3, 10), (0.1705, 0.8090)),
        ((6, 7, 2, 7), (0.0582, 0.8062)),
        ((5, 56, 0, 29), (-0.0381, 0.1926)),
        ((0, 10, 0, 20), (-0.1611, 0.2775)),
        ((0, 10, 0, 10), (-0.2775, 0.2775)),
        ((10, 10, 0, 20), (0.6791, 1.0000)),
        ((10, 10, 0, 10), (0.6075, 1.0000)),
    ],
)
def test_the_interval_matches_newcombe_s_published_values(
    counts: tuple[int, int, int, int], interval: tuple[float, float]
) -> None:
    x1, n1, x2, n2 = counts
    difference = newcombe(x1, n1, x2, n2)
    assert difference.estimate == pytest.approx(x1 / n1 - x2 / n2)
    assert (round(difference.low, 4), round(difference.high, 4)) == interval


def test_wilson_matches_its_textbook_values() -> None:
    # Newcombe (1998) Table I: 81/263 gives 0.2553-0.3662; 0/10 gives 0-0.2775.
    low, high = wilson(81, 263)
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)
    assert wilson(0, 10)[0] == 0.0
    assert round(wilson(0, 10)[1], 4) == 0.2775
    assert wilson(10, 10)[1] == 1.0


@given(st.integers(1, 400), st.integers(1, 400), st.data())
def test_the_interval_holds_the_estimate_and_stays_within_minus_one_and_one(
    n1: int, n2: int, data: st.DataObject
) -> None:
    x1 = data.draw(st.integers(0, n1))
    x2 = data.draw(st.integers(0, n2))
    d = newcombe(x1, n1, x2, n2)
    assert -1.0 <= d.low <= d.estimate + 1e-12
    assert d.estimate - 1e-12 <= d.high <= 1.0
    # Never the Wald interval's zero width, even at 0 % against 0 %.
    assert d.high - d.low > 0


@given(st.integers(1, 200), st.integers(1, 200), st.data())
def test_swapping_the_groups_mirrors_the_interval(n1: int, n2: int, data: st.DataObject) -> None:
    x1 = data.draw(st.integers(0, n1))
    x2 = data.draw(st.integers(0, n2))
    forward, backward = newcombe(x1, n1, x2, n2), newcombe(x2, n2, x1, n1)
    assert forward.low == pytest.approx(-backward.high)
    assert forward.high == pytest.approx(-backward.low)


def test_the_interval_narrows_as_the_groups_grow() -> None:
    small = newcombe(20, 100, 10, 100)
    large = newcombe(2000, 10_000, 1000, 10_000)
    assert large.high - large.low < (small.high - small.low) / 5
    assert large.low > 0


def test_an_empty_group_has_no_conversion_and_no_interval() -> None:
    report = results(Group(members=100, converted=30, revenue_cents=90_000), Group())
    assert report.reached_conversion == pytest.approx(0.3)
    assert math.isnan(report.holdout_conversion)
    assert all(math.isnan(v) for v in (report.uplift, report.uplift_low, report.uplift_high))
    assert (report.reached_revenue_cents, report.holdout_revenue_cents) == (90_000, 0)
    assert all(math.isnan(v) for v in (wilson(0, 0)))


def test_results_compare_the_two_groups() -> None:
    report = results(Group(70, 56, 1_000_000), Group(80, 48, 700_000))
    assert report.uplift == pytest.approx(0.2)
    assert (round(report.uplift_low, 4), round(report.uplift_high, 4)) == (0.0524, 0.3339)


def test_wilson_refuses_more_successes_than_trials() -> None:
    with pytest.raises(ValueError, match="successes"):
        wilson(11, 10)


def test_conversion_counts_a_completed_order_within_the_window_after_reaching() -> None:
    orders = [T0 + timedelta(days=14)]
    assert not converted(T0, orders)
    assert converted(T0, orders, days=15)
    assert converted(T0, [T0], days=14)
    assert not converted(T0, [T0 - timedelta(seconds=1)])
    assert not converted(T0, [])
