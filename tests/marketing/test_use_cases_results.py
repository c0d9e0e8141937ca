"""A campaign's results through the use cases: the reached against the held-out, by orders placed
within the conversion window after each was reached or held out, beside what the campaign spent."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from quanyu.unit_of_work import SqlUnitOfWork
from services.marketing.handlers import ResultCases
from services.marketing.storage import SqlStores
from tests.marketing.factory import campaign
from tests.marketing.test_use_cases_grants import held_out_member
from tests.marketing.use_case_support import T0, Clock, enrolled, make_cases, order_completed, running

Uow = SqlUnitOfWork[SqlStores]


def test_results_compare_the_reached_with_the_held_out(uow: Uow) -> None:
    # The triggering orders complete a minute before they are handled: they are not conversions.
    clock = Clock(T0 + timedelta(minutes=1))
    campaigns, triggers = make_cases(uow, clock)
    live = running(campaigns, campaign(holdout_percent=50))
    reached = held_out_member(live.campaign_id, 50, held=False)
    held = held_out_member(live.campaign_id, 50, held=True)
    triggers.ingest([enrolled(reached), enrolled(held)])
    triggers.ingest([order_completed(reached, "evt_1"), order_completed(held, "evt_2")])
    later = dataclasses.replace(order_completed(reached, "evt_3", 5000), occur_time=T0 + timedelta(days=3))
    too_late = dataclasses.replace(order_completed(held, "evt_4", 7000), occur_time=T0 + timedelta(days=20))
    triggers.ingest([later, too_late])

    found = ResultCases(uow).campaign_results(live.campaign_id)

    assert (found.members_reached, found.members_held_out) == (1, 1)
    assert (found.comparison.reached_conversion, found.comparison.holdout_conversion) == (1.0, 0.0)
    assert (found.comparison.reached_revenue_cents, found.comparison.holdout_revenue_cents) == (5000, 0)
    assert found.comparison.uplift_low < found.comparison.uplift <= found.comparison.uplift_high
    assert (found.totals.grants, found.totals.coupon_cents) == (1, 2000)
