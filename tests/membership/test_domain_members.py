"""Members on their own: enrolment, purchases moving tier and stage, engagement, the tier
evaluation, a merge's arithmetic; guides, member codes, coupons and each request's checks."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from quanyu.errors import FailedPrecondition, InvalidArgument
from services.membership.domain import (
    Coupon,
    Guide,
    Member,
    MemberCode,
    MergeRecord,
    Programme,
    Stage,
    requests,
)
from services.membership.domain.coupons import coupon_fingerprint
from services.membership.domain.members import is_birthday

DEFAULT = Programme()
NOON = datetime(2026, 3, 10, 4, 0, tzinfo=UTC)


def enrolled(member_id: str = "mem-1", customer_id: str = "cus-1", at: datetime = NOON) -> Member:
    return Member.enrolled(
        member_id,
        customer_id,
        programme=DEFAULT,
        home_store_id="SH-001",
        guide_id="",
        channel="CHANNEL_APP",
        referrer_member_id="",
        at=at,
    )


def test_a_new_member_starts_at_the_entry_tier_aware_with_nothing() -> None:
    member = enrolled()
    assert (member.tier, member.points_balance, member.lifetime_spend_cents) == ("BRONZE", 0, 0)
    assert (member.stage, member.stage_times[Stage.AWARENESS]) == (Stage.AWARENESS, NOON)


def test_a_purchase_counts_the_spend_raises_the_tier_and_moves_the_stage() -> None:
    member = enrolled()
    member.purchase(120_000, NOON, DEFAULT, 120_000)
    assert (member.tier, member.lifetime_spend_cents, member.stage) == ("SILVER", 120_000, Stage.PURCHASE)
    assert member.stage_times[Stage.INTEREST] == member.stage_times[Stage.PURCHASE] == NOON
    later = NOON + timedelta(days=30)
    member.purchase(1_000, later, DEFAULT, 0)
    assert (member.tier, member.stage, member.last_purchase_time) == ("SILVER", Stage.LOYALTY, later)


def test_an_engagement_moves_an_aware_member_to_interest_once() -> None:
    member = enrolled()
    assert member.engage(NOON)
    assert not member.engage(NOON + timedelta(days=1))
    assert member.stage_times[Stage.INTEREST] == NOON


def test_the_evaluation_moves_a_tier_down_as_well_as_up() -> None:
    member = enrolled()
    member.tier = "GOLD"
    assert member.reevaluate_tier(DEFAULT, 100_000)
    assert member.tier == "SILVER"
    assert not member.reevaluate_tier(DEFAULT, 150_000)


def test_a_merge_adds_up_balances_and_takes_what_the_survivor_lacks() -> None:
    survivor, merged = enrolled(at=NOON), enrolled("mem-2", "cus-2", at=NOON - timedelta(days=50))
    survivor.points_balance, merged.points_balance = 100, 250
    survivor.home_store_id = ""
    merged.guide_id, merged.referrer_member_id = "g-1", "mem-9"
    merged.purchase(600_000, NOON - timedelta(days=40), DEFAULT, 600_000)
    survivor.absorb(merged, DEFAULT, 0)
    assert (survivor.points_balance, survivor.lifetime_spend_cents) == (350, 600_000)
    assert (survivor.home_store_id, survivor.guide_id, survivor.referrer_member_id) == (
        "SH-001",
        "g-1",
        "mem-9",
    )
    assert (survivor.tier, survivor.stage) == ("GOLD", Stage.PURCHASE)
    assert survivor.stage_times[Stage.AWARENESS] == NOON - timedelta(days=50)
    assert survivor.last_purchase_time == NOON - timedelta(days=40)


def test_a_merge_raises_the_higher_tier_by_the_combined_rolling_spend() -> None:
    survivor, merged = enrolled(), enrolled("mem-2", "cus-2")
    merged.tier = "SILVER"
    survivor.absorb(merged, DEFAULT, 2_000_000)
    assert survivor.tier == "PLATINUM"


def test_a_merge_request_id_reused_for_another_merge_is_refused() -> None:
    record = MergeRecord("req-1", "cus-1", "cus-2", "mem-1")
    record.require_same("cus-1", "cus-2")
    with pytest.raises(InvalidArgument) as refused:
        record.require_same("cus-1", "cus-3")
    assert refused.value.reason == "REQUEST_ID_REUSED"


@pytest.mark.parametrize(
    ("guide", "home", "till", "ok"),
    [
        (Guide("g", "SH-001", "", True), "", "", True),
        (Guide("g", "SH-001", "", True), "SH-001", "SH-001", True),
        (Guide("g", "SH-001", "", False), "", "", False),
        (Guide("g", "SH-001", "", True), "BJ-002", "", False),
        (Guide("g", "SH-001", "", True), "", "BJ-002", False),
    ],
)
def test_a_guide_looks_after_members_of_their_own_store_only(
    guide: Guide, home: str, till: str, ok: bool
) -> None:
    assert guide.may_look_after(home, till) is ok


def test_a_member_code_binds_to_the_first_store_it_is_shown_at_while_it_lasts() -> None:
    code = MemberCode("mem-1", NOON + timedelta(minutes=2), "")
    assert code.binds_to("SH-001", NOON)
    assert not code.binds_to("", NOON)
    assert not code.binds_to("SH-001", NOON + timedelta(minutes=2))
    assert not MemberCode("mem-1", NOON + timedelta(minutes=2), "BJ-002").binds_to("SH-001", NOON)


# --- coupons ---------------------------------------------------------------------------------


def coupon(**changes: object) -> Coupon:
    fingerprint = coupon_fingerprint("mem-1", 500, 2_000, NOON + timedelta(days=7))
    issued = Coupon.issued(
        "CODE",
        "mem-1",
        discount_cents=500,
        min_spend_cents=2_000,
        expire_time=NOON + timedelta(days=7),
        fingerprint=fingerprint,
    )
    return replace(issued, **changes)  # type: ignore[arg-type]


def test_a_coupon_takes_off_its_discount_at_most_the_order() -> None:
    assert coupon().discount_for(3_000) == 500
    assert coupon().discount_for(300) == 300


@pytest.mark.parametrize(
    ("changes", "amount", "at", "reason"),
    [
        ({"redeemed_order_id": "o-1"}, 3_000, NOON, "COUPON_ALREADY_REDEEMED"),
        ({}, 3_000, NOON + timedelta(days=7), "COUPON_EXPIRED"),
        ({}, 1_999, NOON, "MIN_SPEND_NOT_MET"),
    ],
)
def test_a_coupon_is_refused_when_taken_expired_or_the_order_too_small(
    changes: dict[str, object], amount: int, at: datetime, reason: str
) -> None:
    with pytest.raises(FailedPrecondition) as refused:
        coupon(**changes).require_redeemable(amount, at)
    assert refused.value.reason == reason


def test_a_coupon_held_by_an_order_is_that_orders_retry_only_at_the_same_store() -> None:
    held = coupon(redeemed_order_id="o-1", redeemed_store_id="SH-001")
    assert held.redeemed_by("o-1", "SH-001")
    assert not held.redeemed_by("o-1", "BJ-002")
    assert not held.redeemed_by("o-2", "SH-001")


def test_a_coupon_request_id_reused_for_another_coupon_is_refused() -> None:
    issued = coupon()
    issued.require_same_request(coupon_fingerprint("mem-1", 500, 2_000, NOON + timedelta(days=7)))
    with pytest.raises(InvalidArgument) as refused:
        issued.require_same_request(coupon_fingerprint("mem-1", 600, 2_000, NOON + timedelta(days=7)))
    assert refused.value.reason == "REQUEST_ID_REUSED"


# --- each request's checks ---------------------------------------------------------------------


def fields(error: InvalidArgument) -> list[str]:
    return [v.field for v in error.violations]


def test_a_guides_fields_are_named_within_the_guide() -> None:
    with pytest.raises(InvalidArgument) as refused:
        requests.guide(Guide("", "S" * 65, "n" * 65, True))
    assert fields(refused.value) == ["guide.guide_id", "guide.store_id", "guide.name"]
    with pytest.raises(InvalidArgument) as missing:
        requests.guide(None)
    assert fields(missing.value) == ["guide"]


def test_every_bad_tag_is_named_by_its_place_in_the_list() -> None:
    with pytest.raises(InvalidArgument) as refused:
        requests.tag_update("", ["ok", "x" * 65], ["bad\n"])
    assert fields(refused.value) == ["member_id", "add_tags[1]", "remove_tags[0]"]


def test_an_earn_names_every_bad_value_at_once() -> None:
    with pytest.raises(InvalidArgument) as refused:
        requests.earning(DEFAULT, "", "s" * 129, DEFAULT.max_spend_cents + 1, "")
    assert fields(refused.value) == ["member_id", "source_id", "spend_cents"]


def test_a_coupon_must_expire_in_the_future() -> None:
    issue = requests.CouponIssue("mem-1", 500, 0, NOON, "req-1")
    with pytest.raises(InvalidArgument) as refused:
        issue.checked(NOON)
    assert fields(refused.value) == ["expire_time"]
    assert requests.CouponIssue("mem-1", 500, 0, NOON, "req-1").checked(NOON - timedelta(seconds=1)) == NOON


@pytest.mark.parametrize(
    ("key", "value", "field"),
    [(None, "", "key"), ("member_id", "", "member_id"), ("member_code", "c" * 33, "member_code")],
)
def test_a_member_is_looked_up_one_way(key: str | None, value: str, field: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        requests.member_lookup(key, value)
    assert fields(refused.value) == [field]


def test_a_customer_is_not_merged_into_itself() -> None:
    with pytest.raises(InvalidArgument) as refused:
        requests.merge("cus-1", "cus-1", "req-1")
    assert fields(refused.value) == ["merged_customer_id"]


# --- birthdays, campaign coupons, grants and coupon pages --------------------------------------


@pytest.mark.parametrize("text", ["01-01", "02-29", "12-31", "04-30", "09-09"])
def test_a_birthday_is_a_month_and_day_of_the_calendar_leap_day_included(text: str) -> None:
    assert is_birthday(text)
    requests.enrolment("cus-1", "", "", "", text)


@pytest.mark.parametrize(
    "text",
    [
        "02-30",
        "04-31",
        "13-01",
        "00-01",
        "01-00",
        "1-01",
        "01-1",
        "0101",
        "01/01",
        " 01-01",
        "01-01\n",
        "٠١-٠١",
    ],
)
def test_anything_but_a_calendar_day_as_mm_dd_is_no_birthday(text: str) -> None:
    assert not is_birthday(text)
    with pytest.raises(InvalidArgument) as refused:
        requests.enrolment("cus-1", "", "", "", text)
    assert fields(refused.value) == ["birthday"]


def test_a_member_is_enrolled_with_a_birthday_and_a_merge_keeps_the_one_known() -> None:
    survivor = enrolled()
    assert survivor.birthday == ""
    merged = replace(enrolled("mem-2", "cus-2"), birthday="07-14")
    survivor.absorb(merged, DEFAULT, 0)
    assert survivor.birthday == "07-14"
    known = replace(enrolled("mem-3", "cus-3"), birthday="01-02")
    known.absorb(replace(enrolled("mem-4", "cus-4"), birthday="03-04"), DEFAULT, 0)
    assert known.birthday == "01-02"


def test_a_coupon_is_active_until_redeemed_or_expired() -> None:
    assert coupon().active(NOON)
    assert not coupon().active(NOON + timedelta(days=7))
    assert not coupon(redeemed_order_id="o-1").active(NOON)


def test_a_campaign_is_part_of_what_a_coupon_request_asked_for() -> None:
    expire = NOON + timedelta(days=7)
    plain = coupon_fingerprint("mem-1", 500, 2_000, expire)
    assert coupon_fingerprint("mem-1", 500, 2_000, expire, "") == plain  # coupons issued before campaigns
    stamped = coupon_fingerprint("mem-1", 500, 2_000, expire, "cmp-1")
    assert stamped not in (plain, coupon_fingerprint("mem-1", 500, 2_000, expire, "cmp-2"))
    with pytest.raises(InvalidArgument) as refused:
        coupon(request_fingerprint=stamped).require_same_request(plain)
    assert refused.value.reason == "REQUEST_ID_REUSED"
    with pytest.raises(InvalidArgument) as too_long:
        requests.CouponIssue("mem-1", 500, 0, expire, "req-1", "c" * 65).checked(NOON)
    assert fields(too_long.value) == ["campaign_id"]


def test_a_grant_request_names_every_bad_value() -> None:
    requests.grant("mem-1", 100_000_000, "cmp-1:v1:mem-1:1", "CAMPAIGN")
    with pytest.raises(InvalidArgument) as refused:
        requests.grant("", 0, "", "r" * 257)
    assert sorted(fields(refused.value)) == [
        "member_id",
        "points",
        "reason",
        "source_id",
    ]
    for points in (-1, 100_000_001):
        with pytest.raises(InvalidArgument) as out_of_bounds:
            requests.grant("mem-1", points, "s", "")
        assert fields(out_of_bounds.value) == ["points"]


def test_a_coupon_page_needs_a_member_and_a_token_of_sane_length() -> None:
    requests.coupon_page("mem-1", "")
    with pytest.raises(InvalidArgument) as refused:
        requests.coupon_page("", "t" * 2_049)
    assert sorted(fields(refused.value)) == ["member_id", "page_token"]
