"""Marketing on real processes: a scheduled run and a campaign fed by orders, with marketing or
membership killed or frozen under them, leave every member reached with exactly one coupon; many
events at once over two replicas never spend past a campaign's caps; and no message is pulled for
a customer without consent on the channel, nor for one in their quiet hours."""

from __future__ import annotations

from tests.reliability.deployment import Deployment
from tests.reliability.marketing import (
    FAULTS,
    budgets_under_concurrency,
    grants_under_faults,
    messages_against_consent,
)


def test_a_service_killed_or_frozen_under_a_campaign_leaves_one_coupon_per_member_reached(
    each_backend: Deployment,
) -> None:
    figures = grants_under_faults(each_backend, rounds=len(FAULTS), members=120, buyers=3)
    assert figures.problems == []
    assert figures.rounds == len(FAULTS)
    assert (figures.lost, figures.doubled) == (0, 0)
    assert figures.owed == 4 * 120 + 4 * 3


def test_events_at_once_over_two_replicas_spend_each_cap_exactly(each_backend: Deployment) -> None:
    figures = budgets_under_concurrency(each_backend, rounds=1, events=60)
    assert figures.problems == []
    assert (figures.overrun, figures.underrun) == (0, 0)


def test_no_message_is_pulled_without_consent_or_in_quiet_hours(each_backend: Deployment) -> None:
    figures = messages_against_consent(each_backend, customers=30)
    assert figures.problems == []
    assert (figures.without_consent, figures.in_quiet_hours, figures.owed_not_pulled) == (0, 0, 0)
    assert figures.pulled == 5  # consent given and out of quiet hours: one customer in six
