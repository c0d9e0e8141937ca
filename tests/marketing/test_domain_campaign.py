"""A campaign's life: DRAFT → RUNNING ⇄ PAUSED → ENDED, edits only when not running."""

from __future__ import annotations

from datetime import timedelta

import pytest

from quanyu.errors import FailedPrecondition, InvalidArgument
from services.marketing.domain import Audience, CampaignState, Limits
from tests.marketing.factory import T0, TIERS, campaign


def test_a_new_campaign_is_a_draft_of_version_one() -> None:
    draft = campaign()
    assert draft.state is CampaignState.DRAFT
    assert draft.version == 1


def test_the_lifecycle_runs_draft_running_paused_running_ended() -> None:
    c = campaign()
    seen = []
    for move in (c.start, c.pause, c.start, c.end):
        move()
        seen.append(c.state)
    assert seen == [CampaignState.RUNNING, CampaignState.PAUSED, CampaignState.RUNNING, CampaignState.ENDED]


def test_a_paused_campaign_may_end() -> None:
    c = campaign()
    c.start()
    c.pause()
    c.end()
    assert c.state is CampaignState.ENDED


@pytest.mark.parametrize("move", ["start", "pause", "end"])
def test_each_move_is_idempotent_in_its_own_state(move: str) -> None:
    c = campaign()
    c.start()
    getattr(c, move)()
    state = c.state
    getattr(c, move)()
    assert c.state is state


@pytest.mark.parametrize(
    ("path", "move"),
    [
        ((), "pause"),
        ((), "end"),
        (("start", "end"), "start"),
        (("start", "end"), "pause"),
    ],
)
def test_any_other_move_fails_its_precondition(path: tuple[str, ...], move: str) -> None:
    c = campaign()
    for step in path:
        getattr(c, step)()
    before = c.state
    with pytest.raises(FailedPrecondition) as caught:
        getattr(c, move)()
    assert caught.value.reason == "INVALID_TRANSITION"
    assert before.value.lower() in caught.value.message
    assert c.state is before


def test_an_ended_campaign_says_it_is_final() -> None:
    c = campaign()
    c.start()
    c.end()
    with pytest.raises(FailedPrecondition, match="final"):
        c.start()


def test_is_live_only_while_running_and_within_its_window() -> None:
    c = campaign(start_time=T0, end_time=T0 + timedelta(days=7))
    assert not c.is_live(T0)
    c.start()
    assert not c.is_live(T0 - timedelta(seconds=1))
    assert c.is_live(T0)
    assert c.is_live(T0 + timedelta(days=7) - timedelta(microseconds=1))
    assert not c.is_live(T0 + timedelta(days=7))
    c.pause()
    assert not c.is_live(T0 + timedelta(days=1))


def test_no_start_or_end_means_now_and_never() -> None:
    c = campaign()
    c.start()
    assert c.is_live(T0 + timedelta(days=10_000))


def test_an_update_changes_only_the_masked_fields_and_bumps_the_version() -> None:
    c = campaign()
    c.update(campaign(name="Renamed", holdout_percent=40), ["name"], known_tiers=TIERS)
    assert (c.name, c.holdout_percent, c.version) == ("Renamed", 10, 2)


def test_an_update_may_name_one_field_of_the_limits_or_audience() -> None:
    c = campaign(limits=Limits(max_grants=5, points_budget=100))
    c.update(
        campaign(limits=Limits(max_grants=9), audience=Audience(tiers=("GOLD",))),
        ["limits.max_grants", "audience.tiers"],
        known_tiers=TIERS,
    )
    assert c.limits == Limits(max_grants=9, points_budget=100)
    assert c.audience.tiers == ("GOLD",)


def test_an_empty_mask_replaces_every_updatable_field_but_not_id_or_state() -> None:
    c = campaign()
    c.update(campaign(campaign_id="other", name="New", priority=7), [], known_tiers=TIERS)
    assert (c.campaign_id, c.name, c.priority, c.state) == ("cmp_1", "New", 7, CampaignState.DRAFT)


def test_a_paused_campaign_may_be_updated_a_running_or_ended_one_not() -> None:
    c = campaign()
    c.start()
    with pytest.raises(FailedPrecondition) as caught:
        c.update(campaign(name="x"), ["name"], known_tiers=TIERS)
    assert caught.value.reason == "INVALID_TRANSITION"
    c.pause()
    c.update(campaign(name="x"), ["name"], known_tiers=TIERS)
    assert c.version == 2
    c.end()
    with pytest.raises(FailedPrecondition):
        c.update(campaign(name="y"), ["name"], known_tiers=TIERS)


@pytest.mark.parametrize(
    "path", ["state", "version", "campaign_id", "actions[0]", "name.first", "limits.nothing"]
)
def test_a_mask_naming_what_an_update_may_not_change_is_refused(path: str) -> None:
    c = campaign()
    with pytest.raises(InvalidArgument) as caught:
        c.update(campaign(), [path], known_tiers=TIERS)
    assert caught.value.violations[0].field == "update_mask"
    assert c.version == 1


def test_an_update_that_would_make_the_campaign_invalid_changes_nothing() -> None:
    c = campaign()
    with pytest.raises(InvalidArgument) as caught:
        c.update(campaign(holdout_percent=51, name=""), ["holdout_percent", "name"], known_tiers=TIERS)
    assert {v.field for v in caught.value.violations} == {"campaign.holdout_percent", "campaign.name"}
    assert (c.holdout_percent, c.version, c.name) == (10, 1, "First purchase coupon")
