"""The use cases' scenarios once more over stores kept in memory, so their rules are shown apart
from any database: the same tests, with the unit of work and the outbox they read swapped."""

from __future__ import annotations

import pytest

from quanyu.unit_of_work import InMemoryUnitOfWork
from services.marketing.ports import Stores
from tests.marketing.memory import MemoryStores
from tests.marketing.test_use_cases_campaigns import (
    test_a_campaign_naming_an_unknown_tier_is_refused,
    test_a_draft_cannot_be_paused_and_an_unknown_campaign_is_not_found,
    test_a_request_id_makes_one_campaign,
    test_an_update_is_checked_whole,
    test_campaigns_are_listed_by_state_a_page_at_a_time,
    test_the_lifecycle_runs_draft_running_paused_ended,
    test_updates_make_new_versions_and_keep_the_old,
)
from tests.marketing.test_use_cases_grants import (
    test_a_decision_is_counted_once_however_often_its_event_arrives,
    test_a_grants_effects_carry_the_action_keys,
    test_a_held_out_member_gets_nothing_but_is_recorded,
    test_a_member_outside_the_audience_is_not_granted,
    test_a_message_waits_for_consent_and_past_quiet_hours,
    test_a_paused_or_finished_campaign_grants_nothing,
    test_a_replayed_event_grants_once,
    test_an_event_delivered_again_after_an_update_repeats_the_first_versions_grant,
    test_first_purchase_fires_on_the_first_completed_order_only,
    test_of_campaigns_messaging_a_member_at_once_the_higher_priority_sends,
    test_the_audience_is_asked_when_the_trigger_happens,
    test_what_a_merged_member_was_given_counts_for_the_survivor,
)
from tests.marketing.test_use_cases_insight import (
    test_a_member_is_told_why,
    test_a_preview_counts_the_audience_and_grants_nothing,
)
from tests.marketing.test_use_cases_messages import (
    test_a_message_not_acknowledged_is_pulled_again_once_its_lease_lapses,
    test_withdrawing_consent_stops_what_is_queued,
)
from tests.marketing.test_use_cases_results import test_results_compare_the_reached_with_the_held_out

# Collected here as well as in their own modules: pytest runs what a module's namespace holds.
__all__ = [
    "test_a_campaign_naming_an_unknown_tier_is_refused",
    "test_a_decision_is_counted_once_however_often_its_event_arrives",
    "test_a_draft_cannot_be_paused_and_an_unknown_campaign_is_not_found",
    "test_a_grants_effects_carry_the_action_keys",
    "test_a_held_out_member_gets_nothing_but_is_recorded",
    "test_a_member_is_told_why",
    "test_a_member_outside_the_audience_is_not_granted",
    "test_a_message_not_acknowledged_is_pulled_again_once_its_lease_lapses",
    "test_a_message_waits_for_consent_and_past_quiet_hours",
    "test_a_paused_or_finished_campaign_grants_nothing",
    "test_a_preview_counts_the_audience_and_grants_nothing",
    "test_a_replayed_event_grants_once",
    "test_a_request_id_makes_one_campaign",
    "test_an_event_delivered_again_after_an_update_repeats_the_first_versions_grant",
    "test_an_update_is_checked_whole",
    "test_campaigns_are_listed_by_state_a_page_at_a_time",
    "test_first_purchase_fires_on_the_first_completed_order_only",
    "test_of_campaigns_messaging_a_member_at_once_the_higher_priority_sends",
    "test_results_compare_the_reached_with_the_held_out",
    "test_the_audience_is_asked_when_the_trigger_happens",
    "test_the_lifecycle_runs_draft_running_paused_ended",
    "test_updates_make_new_versions_and_keep_the_old",
    "test_what_a_merged_member_was_given_counts_for_the_survivor",
    "test_withdrawing_consent_stops_what_is_queued",
]


@pytest.fixture
def uow() -> InMemoryUnitOfWork[MemoryStores]:
    return InMemoryUnitOfWork(MemoryStores())


@pytest.fixture
def database(uow: InMemoryUnitOfWork[MemoryStores]) -> MemoryStores:
    """What the scenarios read the outbox from: here, the stores themselves."""
    return uow.stores


def test_the_memory_stores_are_the_ports_stores() -> None:
    stores: Stores = MemoryStores()
    assert stores.outbox is not None
