"""Membership killed or frozen while orders delivers the points of a completed order, fulfilment
killed or frozen while orders asks it for a store, and orders killed or frozen between its commit
and its reply: the caller gets an answer or a clean retryable error, a retry with the same request
id returns the same order, and once the services are back every effect has arrived exactly once."""

from __future__ import annotations

from tests.reliability.deployment import Deployment
from tests.reliability.faults import FAULTS, faults_in_the_order_flow


def test_a_service_killed_or_frozen_mid_flow_leaves_every_effect_applied_exactly_once(
    each_backend: Deployment,
) -> None:
    figures = faults_in_the_order_flow(each_backend, rounds=len(FAULTS))
    assert figures.problems == []
    assert figures.rounds == len(FAULTS)
    assert figures.answered + figures.retryable == figures.rounds
    assert (figures.unclean, figures.retries_differing) == (0, 0)
    assert (figures.lost, figures.doubled, figures.ledger_violations) == (0, 0, 0)
