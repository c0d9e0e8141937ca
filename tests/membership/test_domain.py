"""Membership's rules on their own: the programme's points, tiers, member day, expiry dates and
redemption windows, how points are drawn and clawed back, the AIPL stages, the funnel and tags."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from pydantic import ValidationError

from quanyu.auth import Principal, Role
from quanyu.errors import InvalidArgument, PermissionDenied
from services.membership.config import MembershipSettings
from services.membership.domain import (
    Lot,
    MemberCode,
    Programme,
    RedemptionWindow,
    Stage,
    TagChange,
    Tier,
    add_months,
    claw_back,
    conversion_rates,
    draw_oldest_first,
    stage_after_event,
    stage_after_purchase,
)
from services.membership.handlers.access import require_code_to_spend, sees

DEFAULT = Programme()
# 2026-03-10 is a Tuesday; noon in Shanghai is 04:00 UTC.
TUESDAY_NOON = datetime(2026, 3, 10, 4, 0, tzinfo=UTC)
WEDNESDAY = 3


# --- points ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spend_cents", "tier", "points"),
    [
        (0, "BRONZE", 0),
        (99, "BRONZE", 0),
        (100, "BRONZE", 1),
        (12_399, "BRONZE", 123),
        (500, "SILVER", 6),  # 5 x 1.2 is 6, not 5.999...
        (1_000, "SILVER", 12),
        (300, "GOLD", 4),  # 4.5 rounds down
        (1_000, "GOLD", 15),
        (700, "PLATINUM", 14),
        (12_345, "PLATINUM", 246),
    ],
)
def test_points_are_whole_yuan_times_the_tier_multiplier_rounded_down(
    spend_cents: int, tier: str, points: int
) -> None:
    assert DEFAULT.points_for(spend_cents, tier, TUESDAY_NOON) == points


def test_a_tier_the_programme_does_not_know_earns_at_the_entry_rate() -> None:
    assert DEFAULT.points_for(10_000, "DIAMOND", TUESDAY_NOON) == 100


def test_the_member_weekday_doubles_points_after_the_multiplier() -> None:
    programme = Programme(member_weekday=WEDNESDAY)
    wednesday_noon = TUESDAY_NOON + timedelta(days=1)
    assert programme.points_for(10_000, "BRONZE", TUESDAY_NOON) == 100
    assert programme.points_for(10_000, "BRONZE", wednesday_noon) == 200
    assert programme.points_for(500, "SILVER", wednesday_noon) == 12
    assert programme.points_for(300, "GOLD", wednesday_noon) == 8


def test_the_member_day_begins_at_local_midnight_not_utc_midnight() -> None:
    programme = Programme(member_weekday=WEDNESDAY)
    # 16:00 UTC on Tuesday is 00:00 on Wednesday in Shanghai.
    local_midnight = datetime(2026, 3, 10, 16, 0, tzinfo=UTC)
    assert programme.points_for(10_000, "BRONZE", local_midnight - timedelta(seconds=1)) == 100
    assert programme.points_for(10_000, "BRONZE", local_midnight) == 200
    # Wednesday 23:59 in Shanghai is still the member day; Thursday 00:00 is not, though both are
    # Wednesday in UTC.
    thursday_local = datetime(2026, 3, 11, 16, 0, tzinfo=UTC)
    assert programme.points_for(10_000, "BRONZE", thursday_local - timedelta(seconds=1)) == 200
    assert programme.points_for(10_000, "BRONZE", thursday_local) == 100


def test_the_member_day_follows_the_programmes_time_zone() -> None:
    in_utc = Programme(member_weekday=WEDNESDAY, timezone="UTC")
    assert not in_utc.is_member_day(datetime(2026, 3, 10, 16, 0, tzinfo=UTC))
    assert in_utc.is_member_day(datetime(2026, 3, 11, 0, 0, tzinfo=UTC))


def test_a_member_day_of_the_month_doubles_points_on_that_local_day() -> None:
    programme = Programme(member_day_of_month=18)
    assert programme.is_member_day(datetime(2026, 5, 17, 16, 0, tzinfo=UTC))  # 18th, 00:00 local
    assert not programme.is_member_day(datetime(2026, 5, 17, 15, 59, tzinfo=UTC))
    assert programme.points_for(10_000, "GOLD", datetime(2026, 5, 18, 4, 0, tzinfo=UTC)) == 300
    assert programme.points_for(10_000, "GOLD", datetime(2026, 5, 19, 4, 0, tzinfo=UTC)) == 150


def test_without_a_member_day_no_day_doubles() -> None:
    for days in range(31):
        assert not DEFAULT.is_member_day(TUESDAY_NOON + timedelta(days=days))


# --- tiers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rolling_spend_cents", "tier"),
    [
        (0, "BRONZE"),
        (99_999, "BRONZE"),
        (100_000, "SILVER"),
        (499_999, "SILVER"),
        (500_000, "GOLD"),
        (1_999_999, "GOLD"),
        (2_000_000, "PLATINUM"),
        (10**12, "PLATINUM"),
    ],
)
def test_the_tier_is_the_highest_threshold_the_rolling_spend_reaches(
    rolling_spend_cents: int, tier: str
) -> None:
    assert DEFAULT.tier_for(rolling_spend_cents).name == tier


def test_the_default_multipliers_are_the_contracts() -> None:
    assert [(t.name, t.multiplier) for t in DEFAULT.tiers] == [
        ("BRONZE", 1.0),
        ("SILVER", 1.2),
        ("GOLD", 1.5),
        ("PLATINUM", 2.0),
    ]
    assert DEFAULT.entry_tier == "BRONZE"


def test_a_spend_moves_a_member_up_at_once_and_never_down() -> None:
    assert DEFAULT.upgraded("BRONZE", 100_000) == "SILVER"
    assert DEFAULT.upgraded("BRONZE", 2_500_000) == "PLATINUM"
    assert DEFAULT.upgraded("SILVER", 99_999) == "SILVER"
    assert DEFAULT.upgraded("GOLD", 0) == "GOLD"
    assert DEFAULT.upgraded("GOLD", 600_000) == "GOLD"


@pytest.mark.parametrize(
    "tiers",
    [
        (),
        (Tier("BASIC", 100, 1.0),),
        (Tier("BRONZE", 0, 1.0), Tier("GOLD", 500_000, 1.5), Tier("SILVER", 100_000, 1.2)),
    ],
)
def test_a_programme_needs_tiers_from_zero_in_increasing_order(tiers: tuple[Tier, ...]) -> None:
    with pytest.raises(ValueError, match="tier"):
        Programme(tiers=tiers)


# --- months, expiry ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "months", "expected"),
    [
        (datetime(2026, 1, 31, 9, 30, tzinfo=UTC), 1, datetime(2026, 2, 28, 9, 30, tzinfo=UTC)),
        (datetime(2024, 1, 31, 9, 30, tzinfo=UTC), 1, datetime(2024, 2, 29, 9, 30, tzinfo=UTC)),
        (datetime(2024, 2, 29, tzinfo=UTC), 12, datetime(2025, 2, 28, tzinfo=UTC)),
        (datetime(2024, 2, 29, tzinfo=UTC), 48, datetime(2028, 2, 29, tzinfo=UTC)),
        (datetime(2024, 2, 29, tzinfo=UTC), 1, datetime(2024, 3, 29, tzinfo=UTC)),
        (datetime(2026, 3, 31, tzinfo=UTC), -1, datetime(2026, 2, 28, tzinfo=UTC)),
        (datetime(2026, 5, 31, tzinfo=UTC), 1, datetime(2026, 6, 30, tzinfo=UTC)),
        (datetime(2026, 12, 15, tzinfo=UTC), 1, datetime(2027, 1, 15, tzinfo=UTC)),
        (datetime(2026, 1, 15, tzinfo=UTC), -1, datetime(2025, 12, 15, tzinfo=UTC)),
        (datetime(2026, 3, 10, tzinfo=UTC), -13, datetime(2025, 2, 10, tzinfo=UTC)),
        (datetime(2026, 3, 10, tzinfo=UTC), 0, datetime(2026, 3, 10, tzinfo=UTC)),
    ],
)
def test_adding_months_keeps_the_day_or_falls_back_to_the_months_last(
    start: datetime, months: int, expected: datetime
) -> None:
    assert add_months(start, months) == expected


def test_points_expire_after_the_programmes_validity() -> None:
    earned = datetime(2024, 2, 29, 10, 0, tzinfo=UTC)
    assert DEFAULT.expiry(earned) == datetime(2025, 2, 28, 10, 0, tzinfo=UTC)
    assert Programme(validity_months=6).expiry(earned) == datetime(2024, 8, 29, 10, 0, tzinfo=UTC)
    assert DEFAULT.spend_window_start(datetime(2026, 3, 10, tzinfo=UTC)) == datetime(2025, 3, 10, tzinfo=UTC)


# --- drawing and clawing back --------------------------------------------------------------


NOW = datetime(2026, 6, 1, tzinfo=UTC)


def lot(lot_id: str, months_left: int, remaining: int) -> Lot:
    return Lot(lot_id, add_months(NOW, months_left), remaining)


def test_a_redemption_draws_from_the_lots_that_expire_soonest() -> None:
    lots = [lot("late", 11, 100), lot("early", 2, 30), lot("middle", 6, 50)]
    assert draw_oldest_first(lots, 30, NOW) == [("early", 30)]
    assert draw_oldest_first(lots, 60, NOW) == [("early", 30), ("middle", 30)]
    assert draw_oldest_first(lots, 180, NOW) == [("early", 30), ("middle", 50), ("late", 100)]


def test_lots_expiring_together_are_drawn_in_id_order() -> None:
    lots = [lot("b", 3, 10), lot("a", 3, 10)]
    assert draw_oldest_first(lots, 15, NOW) == [("a", 10), ("b", 5)]


def test_lapsed_and_empty_lots_are_not_drawn_from() -> None:
    lots = [
        lot("lapsed", -1, 500),
        Lot("lapses-now", NOW, 500),
        lot("empty", 1, 0),
        lot("live", 4, 40),
    ]
    assert draw_oldest_first(lots, 40, NOW) == [("live", 40)]
    with pytest.raises(ValueError, match="40 points, not 41"):
        draw_oldest_first(lots, 41, NOW)


def test_drawing_nothing_takes_nothing() -> None:
    assert draw_oldest_first([lot("a", 3, 10)], 0, NOW) == []


@pytest.mark.parametrize(
    ("earned", "unspent", "recovered", "shortfall"),
    [
        (100, 100, 100, 0),
        (100, 40, 40, 60),
        (100, 0, 0, 100),
        (100, 250, 100, 0),  # a lot never gives back more than the earn put in
        (0, 0, 0, 0),
        (100, -5, 0, 100),
    ],
)
def test_an_earn_is_clawed_back_as_far_as_its_points_are_unspent(
    earned: int, unspent: int, recovered: int, shortfall: int
) -> None:
    result = claw_back(earned, unspent)
    assert (result.recovered, result.shortfall) == (recovered, shortfall)
    assert result.recovered + result.shortfall == earned


# --- stages --------------------------------------------------------------------------------


def test_an_engagement_event_moves_awareness_to_interest_and_nothing_back() -> None:
    assert stage_after_event(Stage.AWARENESS) is Stage.INTEREST
    assert stage_after_event(Stage.INTEREST) is Stage.INTEREST
    assert stage_after_event(Stage.PURCHASE) is Stage.PURCHASE
    assert stage_after_event(Stage.LOYALTY) is Stage.LOYALTY


@pytest.mark.parametrize("before", [Stage.AWARENESS, Stage.INTEREST])
def test_a_first_purchase_is_purchase(before: Stage) -> None:
    assert stage_after_purchase(before, None, NOW, DEFAULT) is Stage.PURCHASE


def test_a_repeat_purchase_within_twelve_months_is_loyalty() -> None:
    assert stage_after_purchase(Stage.PURCHASE, NOW - timedelta(days=1), NOW, DEFAULT) is Stage.LOYALTY
    assert stage_after_purchase(Stage.PURCHASE, add_months(NOW, -12), NOW, DEFAULT) is Stage.LOYALTY


def test_a_repeat_purchase_after_more_than_twelve_months_stays_purchase() -> None:
    previous = add_months(NOW, -12) - timedelta(seconds=1)
    assert stage_after_purchase(Stage.PURCHASE, previous, NOW, DEFAULT) is Stage.PURCHASE
    assert stage_after_purchase(Stage.PURCHASE, add_months(NOW, -13), NOW, DEFAULT) is Stage.PURCHASE


def test_a_loyal_member_stays_loyal_after_a_late_purchase() -> None:
    assert stage_after_purchase(Stage.LOYALTY, add_months(NOW, -13), NOW, DEFAULT) is Stage.LOYALTY


def test_the_loyalty_window_is_the_programmes() -> None:
    short = Programme(loyalty_window_months=3)
    assert stage_after_purchase(Stage.PURCHASE, add_months(NOW, -4), NOW, short) is Stage.PURCHASE
    assert stage_after_purchase(Stage.PURCHASE, add_months(NOW, -2), NOW, short) is Stage.LOYALTY


# --- redemption windows ------------------------------------------------------------------


def test_a_redemption_window_includes_both_ends() -> None:
    november = RedemptionWindow.parse("11-01..11-30")
    assert november == RedemptionWindow((11, 1), (11, 30))
    assert november.contains(date(2026, 11, 1))
    assert november.contains(date(2026, 11, 30))
    assert not november.contains(date(2026, 10, 31))
    assert not november.contains(date(2026, 12, 1))


def test_a_redemption_window_may_wrap_the_year() -> None:
    festive = RedemptionWindow.parse(" 12-15 .. 01-15 ")
    for inside in (date(2026, 12, 15), date(2026, 12, 31), date(2027, 1, 1), date(2027, 1, 15)):
        assert festive.contains(inside), inside
    for outside in (date(2026, 12, 14), date(2027, 1, 16), date(2026, 6, 1)):
        assert not festive.contains(outside), outside


def test_a_leap_day_may_bound_a_window_in_any_year() -> None:
    window = RedemptionWindow.parse("02-29..03-01")
    assert window.contains(date(2024, 2, 29))
    assert window.contains(date(2025, 3, 1))
    assert not window.contains(date(2025, 2, 28))


@pytest.mark.parametrize("text", ["13-01..13-02", "02-30..03-01", "11-01", "nov..dec", "11-01..11-31"])
def test_a_malformed_redemption_window_is_refused(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - int() and date() word their own messages
        RedemptionWindow.parse(text)


def test_redemption_windows_are_judged_on_the_local_date() -> None:
    programme = Programme(redemption_windows=(RedemptionWindow.parse("11-01..11-30"),))
    assert not programme.may_redeem(datetime(2026, 10, 31, 15, 59, tzinfo=UTC))
    assert programme.may_redeem(datetime(2026, 10, 31, 16, 0, tzinfo=UTC))  # Nov 1, 00:00 local
    assert programme.may_redeem(datetime(2026, 11, 30, 15, 59, tzinfo=UTC))
    assert not programme.may_redeem(datetime(2026, 11, 30, 16, 0, tzinfo=UTC))


def test_without_windows_points_may_be_redeemed_any_day() -> None:
    assert all(DEFAULT.may_redeem(NOW + timedelta(days=d)) for d in range(366))


def test_any_of_several_windows_admits_a_redemption() -> None:
    programme = Programme(
        redemption_windows=(RedemptionWindow.parse("06-18..06-18"), RedemptionWindow.parse("11-11..11-11"))
    )
    assert programme.may_redeem(datetime(2026, 6, 18, 4, tzinfo=UTC))
    assert programme.may_redeem(datetime(2026, 11, 11, 4, tzinfo=UTC))
    assert not programme.may_redeem(datetime(2026, 11, 12, 4, tzinfo=UTC))


# --- configuration -------------------------------------------------------------------------


def test_the_default_settings_run_the_contracts_programme() -> None:
    assert MembershipSettings().programme() == DEFAULT


def test_settings_configure_tiers_member_day_validity_and_windows() -> None:
    programme = MembershipSettings(
        tiers="BASIC:0:1.0, VIP:50000:3.0",
        member_weekday=5,
        points_validity_months=24,
        redemption_windows="11-01..11-30, 12-20..01-05",
        referral_bonus_points=250,
        timezone="UTC",
    ).programme()
    assert programme.tiers == (Tier("BASIC", 0, 1.0), Tier("VIP", 50_000, 3.0))
    assert programme.member_weekday == 5
    assert programme.validity_months == 24
    assert programme.redemption_windows == (
        RedemptionWindow((11, 1), (11, 30)),
        RedemptionWindow((12, 20), (1, 5)),
    )
    assert programme.referral_bonus_points == 250
    assert programme.points_for(10_000, "VIP", NOW) == 300


@pytest.mark.parametrize(
    "fields",
    [
        {"redemption_windows": "11-01..11-31"},
        {"tiers": "BRONZE:0"},
        {"member_weekday": 8},
        {"member_day_of_month": 32},
        {"points_validity_months": 0},
    ],
)
def test_bad_settings_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        MembershipSettings(**fields)  # type: ignore[arg-type]


# --- funnel --------------------------------------------------------------------------------


def test_conversion_rates_compare_members_at_or_beyond_each_stage() -> None:
    counts = {Stage.AWARENESS: 4, Stage.INTEREST: 3, Stage.PURCHASE: 2, Stage.LOYALTY: 1}
    rates = conversion_rates(counts)
    assert [(a, b) for a, b, _ in rates] == [
        (Stage.AWARENESS, Stage.INTEREST),
        (Stage.INTEREST, Stage.PURCHASE),
        (Stage.PURCHASE, Stage.LOYALTY),
    ]
    assert [rate for _, _, rate in rates] == pytest.approx([6 / 10, 3 / 6, 1 / 3])


def test_conversion_rates_are_zero_where_nobody_reached_the_earlier_stage() -> None:
    empty = {stage: 0 for stage in Stage}
    assert [rate for _, _, rate in conversion_rates(empty)] == [0.0, 0.0, 0.0]
    only_aware = {Stage.AWARENESS: 5, Stage.INTEREST: 0, Stage.PURCHASE: 0, Stage.LOYALTY: 0}
    assert [rate for _, _, rate in conversion_rates(only_aware)] == [0.0, 0.0, 0.0]
    all_loyal = {Stage.AWARENESS: 0, Stage.INTEREST: 0, Stage.PURCHASE: 0, Stage.LOYALTY: 7}
    assert [rate for _, _, rate in conversion_rates(all_loyal)] == [1.0, 1.0, 1.0]


# --- tags ----------------------------------------------------------------------------------


def test_a_tag_change_is_sorted_and_without_repeats() -> None:
    change = TagChange.checked(["vip", "coffee", "vip"], ["lapsed", "lapsed"])
    assert change == TagChange(add=["coffee", "vip"], remove=["lapsed"])
    assert TagChange.checked([], []) == TagChange()
    assert TagChange.checked(["x" * 64], []).add == ["x" * 64]


@pytest.mark.parametrize(
    ("add", "remove", "field"),
    [
        (["ok", ""], [], "add_tags[1]"),
        (["x" * 65], [], "add_tags[0]"),
        (["bad\ntag"], [], "add_tags[0]"),
        ([], ["ok", "y" * 65], "remove_tags[1]"),
        ([], [""], "remove_tags[0]"),
        (["vip", "new"], ["vip"], "remove_tags"),
    ],
)
def test_a_bad_tag_change_names_the_field(add: list[str], remove: list[str], field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        TagChange.checked(add, remove)
    assert field in [v.field for v in caught.value.violations]


def test_every_bad_tag_is_reported_at_once() -> None:
    with pytest.raises(InvalidArgument) as caught:
        TagChange.checked(["", "z" * 65], ["a" * 70])
    assert [v.field for v in caught.value.violations] == ["add_tags[0]", "add_tags[1]", "remove_tags[0]"]


# --- caps --------------------------------------------------------------------------------------


def test_an_earn_credits_no_more_than_the_caps_of_one_earn_and_of_the_members_day() -> None:
    capped = Programme(max_points_per_earn=500, max_points_per_member_day=1_200)
    assert capped.earnable(300, earned_today=0) == 300
    assert capped.earnable(9_000, earned_today=0) == 500
    assert capped.earnable(400, earned_today=1_000) == 200  # what is left of the day
    assert capped.earnable(400, earned_today=1_200) == 0
    assert capped.earnable(400, earned_today=5_000) == 0  # never below nothing


def test_a_members_day_starts_at_midnight_in_the_programmes_time_zone() -> None:
    # 23:30 UTC on 9 March is 07:30 on 10 March in Shanghai: that day started 16:00 UTC on the 9th.
    start = DEFAULT.day_start(datetime(2026, 3, 9, 23, 30, tzinfo=UTC))
    assert start.astimezone(UTC) == datetime(2026, 3, 9, 16, 0, tzinfo=UTC)


# --- who reaches a member ----------------------------------------------------------------------

TILL_A = Principal(Role.STORE, "till-1", store_id="A")
MINI = Principal(Role.CHANNEL, "mini", channel="CHANNEL_WECHAT_MINI_PROGRAM")


def test_a_store_sees_its_own_members_a_channel_its_customers_and_the_platform_everyone() -> None:
    def never() -> bool:
        raise AssertionError("only a channel's caller needs identity's answer")

    assert sees(TILL_A, "A", holds_channel_account=never)
    assert not sees(TILL_A, "B", holds_channel_account=never)
    assert not sees(TILL_A, "", holds_channel_account=never)  # a member of no store is no store's
    assert sees(MINI, "B", holds_channel_account=lambda: True)
    assert not sees(MINI, "A", holds_channel_account=lambda: False)
    for platform in (Principal(Role.OPS, "ops"), Principal(Role.SERVICE, "orders")):
        assert sees(platform, "", holds_channel_account=never)


def test_a_till_spends_only_with_the_members_code_and_nobody_else_needs_one() -> None:
    with pytest.raises(PermissionDenied) as refused:
        require_code_to_spend(TILL_A, "")
    assert refused.value.reason == "MEMBER_CODE_REQUIRED"
    require_code_to_spend(TILL_A, "123456789012345678")
    require_code_to_spend(MINI, "")
    require_code_to_spend(Principal(Role.SERVICE, "orders"), "")


def test_a_member_code_admits_its_member_until_it_expires_at_the_store_it_was_first_shown() -> None:
    expires = TUESDAY_NOON + timedelta(minutes=2)
    fresh = MemberCode("mem_1", expires, store_id="")
    shown_at_a = MemberCode("mem_1", expires, store_id="A")
    before = TUESDAY_NOON
    assert fresh.admits("mem_1", "mem_1", "A", before)
    assert shown_at_a.admits("mem_1", "mem_1", "A", before)
    assert not shown_at_a.admits("mem_1", "mem_1", "B", before)  # shown at A first
    assert not fresh.admits("mem_2", "mem_1", "A", before)  # another member's code
    assert not fresh.admits("mem_1", "mem_1", "A", expires)  # expired
    assert not fresh.admits("mem_1", None, "A", before)  # its member is gone
