"""The points ledger on its own: an account's earns, bonuses, redemptions, expiry and reversals
change the balance and the lots alike, and say what the ledger records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from quanyu.errors import FailedPrecondition, InvalidArgument
from services.membership.domain import Entry, EntryKind, Lot, Member, PointsAccount, Programme, Stage
from services.membership.domain.ledger import source_key

DEFAULT = Programme()
# A Tuesday, noon in Shanghai.
NOON = datetime(2026, 3, 10, 4, 0, tzinfo=UTC)


def member(balance: int = 0, tier: str = "BRONZE") -> Member:
    return Member(
        member_id="mem-1",
        customer_id="cus-1",
        tier=tier,
        points_balance=balance,
        home_store_id="SH-001",
        guide_id="",
        enrolled_channel="",
        enroll_time=NOON - timedelta(days=100),
        stage=Stage.AWARENESS,
        lifetime_spend_cents=0,
        referrer_member_id="",
        last_purchase_time=None,
    )


def lot(lot_id: str, remaining: int, days: int) -> Lot:
    return Lot(lot_id, NOON + timedelta(days=days), remaining)


def entry(kind: EntryKind, points: int, *, entry_id: str = "led-1", spend: int = 0) -> Entry:
    return Entry(
        entry_id=entry_id,
        member_id="mem-old",
        kind=kind,
        points=points,
        balance_after=0,
        source_id="order-1",
        store_id="SH-001",
        create_time=NOON - timedelta(days=10),
        expire_time=None,
        spend_cents=spend,
        spend_time=NOON - timedelta(days=10) if spend else None,
        shortfall_points=0,
        seq=1,
        owner="store:SH-001",
    )


def test_an_earn_credits_at_the_tier_held_before_the_spend_and_opens_a_lot_until_expiry() -> None:
    account = PointsAccount(member())
    posting = account.earn(
        DEFAULT,
        spend_cents=150_000,
        source_id="order-1",
        store_id="SH-001",
        at=NOON,
        earned_today=0,
        rolling_spend_cents=0,
    )
    assert (posting.kind, posting.points, posting.balance_after) == (EntryKind.EARN, 1_500, 1_500)
    assert posting.key == "earn:order-1"
    assert posting.lot_expire_time == posting.expire_time == DEFAULT.expiry(NOON)
    assert (posting.spend_cents, posting.spend_time) == (150_000, NOON)
    assert (account.member.tier, account.member.stage) == ("SILVER", Stage.PURCHASE)


def test_an_earn_within_the_days_cap_and_of_nothing_opens_no_lot() -> None:
    capped = Programme(max_points_per_member_day=1_000)
    posting = PointsAccount(member()).earn(
        capped,
        spend_cents=50_000,
        source_id="o",
        store_id="",
        at=NOON,
        earned_today=1_000,
        rolling_spend_cents=0,
    )
    assert posting.points == 0
    assert posting.lot_expire_time is None


def test_the_rolling_spend_with_this_one_moves_the_tier_up() -> None:
    account = PointsAccount(member())
    account.earn(
        DEFAULT,
        spend_cents=1_000,
        source_id="o",
        store_id="",
        at=NOON,
        earned_today=0,
        rolling_spend_cents=99_000,
    )
    assert account.member.tier == "SILVER"


def test_a_referral_bonus_is_keyed_by_the_referred_member_and_opens_a_lot() -> None:
    account = PointsAccount(member(balance=5))
    posting = account.referral_bonus(DEFAULT, 100, referred_member_id="mem-2", source_id="order-9", at=NOON)
    assert (posting.kind, posting.points, posting.balance_after) == (EntryKind.REFERRAL_BONUS, 100, 105)
    assert posting.key == "referral:mem-2"
    assert posting.lot_expire_time == DEFAULT.expiry(NOON)


@pytest.mark.parametrize(
    ("earned_today", "bonuses_today", "bonus"),
    [(0, 0, 100), (999_950, 0, 50), (1_000_000, 0, 0), (0, 20, 0), (0, 19, 100)],
)
def test_a_referrers_bonus_stays_within_the_days_caps(
    earned_today: int, bonuses_today: int, bonus: int
) -> None:
    assert DEFAULT.referral_bonus(earned_today, bonuses_today) == bonus


def test_a_programme_without_a_referral_bonus_pays_none() -> None:
    assert Programme(referral_bonus_points=0).referral_bonus(0, 0) == 0


def test_a_redemption_draws_the_soonest_to_expire_and_records_which_lots_paid() -> None:
    account = PointsAccount(member(balance=300), [lot("late", 200, 90), lot("soon", 100, 10)])
    posting = account.redeem(
        150, source_id="spend-1", store_id="SH-001", key="redeem:spend-1", owner="", at=NOON
    )
    assert (posting.points, posting.balance_after) == (-150, 150)
    assert posting.takes == posting.draws == (("soon", 100), ("late", 50))
    assert {lot_id: lot.remaining for lot_id, lot in account.lots.items()} == {"late": 150, "soon": 0}


def test_a_redemption_beyond_the_balance_is_refused_with_the_balance() -> None:
    account = PointsAccount(member(balance=99), [lot("a", 99, 10)])
    with pytest.raises(FailedPrecondition) as refused:
        account.redeem(100, source_id="s", store_id="", key="redeem:s", owner="", at=NOON)
    assert refused.value.reason == "INSUFFICIENT_POINTS"
    assert refused.value.metadata == {"balance": "99"}
    assert account.balance == 99


def test_expiry_writes_off_what_is_left_of_lapsed_lots_soonest_first_and_only_once() -> None:
    account = PointsAccount(member(balance=350), [lot("b", 200, -1), lot("a", 50, -5), lot("live", 100, 1)])
    later = NOON + timedelta(hours=1)
    postings = account.expire(NOON, later)
    assert [(p.source_id, p.points, p.balance_after, p.key) for p in postings] == [
        ("a", -50, 300, "expire:a"),
        ("b", -200, 100, "expire:b"),
    ]
    assert all(p.kind is EntryKind.EXPIRE and p.create_time == later and not p.draws for p in postings)
    assert account.expire(NOON, later) == []
    assert account.balance == 100


def test_reversing_a_redemption_gives_the_points_back_with_the_soonest_expiry_of_what_paid() -> None:
    account = PointsAccount(member(balance=0))
    redemption = entry(EntryKind.REDEEM, -150)
    posting = account.reverse(redemption, DEFAULT, NOON, paid_from=[lot("x", 0, 40), lot("y", 0, 20)])
    assert (posting.kind, posting.points, posting.balance_after) == (EntryKind.REVERSAL, 150, 150)
    assert posting.expire_time == posting.lot_expire_time == NOON + timedelta(days=20)
    assert (posting.key, posting.reverses, posting.owner) == ("reverse:led-1", "led-1", "store:SH-001")
    # The reversal is the entry's member's (merged or not); its lot is the survivor's.
    assert (posting.member_id, posting.root_member_id) == ("mem-old", "mem-1")


def test_reversing_an_earn_claws_back_what_is_unspent_and_records_the_shortfall() -> None:
    earn = entry(EntryKind.EARN, 100, entry_id="led-9", spend=10_000)
    current = member(balance=40)
    current.lifetime_spend_cents = 10_000
    account = PointsAccount(current, [lot("led-9", 40, 300)])
    posting = account.reverse(earn, DEFAULT, NOON)
    assert (posting.points, posting.shortfall, posting.takes) == (-40, 60, (("led-9", 40),))
    assert (posting.spend_cents, posting.spend_time) == (-10_000, earn.spend_time)
    assert (account.balance, account.member.lifetime_spend_cents) == (0, 0)
    assert posting.lot_expire_time is None


def test_reversing_an_earn_whose_lot_is_spent_takes_nothing() -> None:
    posting = PointsAccount(member(balance=0)).reverse(entry(EntryKind.EARN, 100), DEFAULT, NOON)
    assert (posting.points, posting.shortfall, posting.takes) == (0, 100, ())


def test_a_retry_must_name_the_same_member_and_amount() -> None:
    done = entry(EntryKind.EARN, 100, spend=10_000)
    done.require_same_request(True, spend=10_000)
    for same_member, spend in ((False, 10_000), (True, 9_999)):
        with pytest.raises(InvalidArgument) as refused:
            done.require_same_request(same_member, spend=spend)
        assert refused.value.reason == "SOURCE_ID_REUSED"


def test_a_callers_source_ids_never_name_another_callers_entries() -> None:
    assert source_key("redeem", "", "X") == "redeem:X"
    assert source_key("redeem", "store:A:1", "X") != source_key("redeem", "store:A", "1:X")


def test_a_grant_is_an_adjust_entry_keyed_by_its_source_opening_a_lot_that_expires_like_earned_ones() -> None:
    account = PointsAccount(member(balance=50), [lot("lot-0", 50, 30)])
    posting = account.grant(DEFAULT, 300, source_id="cmp-1:v1:mem-1:1", at=NOON)
    assert (posting.kind, posting.points, posting.balance_after) == (EntryKind.ADJUST, 300, 350)
    assert (posting.key, posting.source_id, posting.store_id) == (
        "grant:cmp-1:v1:mem-1:1",
        "cmp-1:v1:mem-1:1",
        "",
    )
    assert posting.lot_expire_time == posting.expire_time == DEFAULT.expiry(NOON)
    assert posting.takes == ()
    # Given, not spent for: no spend counts, the tier and stage stay.
    assert (posting.spend_cents, posting.spend_time) == (0, None)
    assert (account.member.tier, account.member.stage, account.member.lifetime_spend_cents) == (
        "BRONZE",
        Stage.AWARENESS,
        0,
    )


def test_a_grant_of_nothing_or_less_is_no_grant() -> None:
    for points in (0, -5):
        with pytest.raises(ValueError, match="credits points"):
            PointsAccount(member()).grant(DEFAULT, points, source_id="s", at=NOON)


def test_a_retried_grant_must_name_the_same_member_and_points() -> None:
    granted = entry(EntryKind.ADJUST, 300)
    granted.require_same_request(True, points=300)
    for same_member, points in ((False, 300), (True, 301)):
        with pytest.raises(InvalidArgument) as refused:
            granted.require_same_request(same_member, points=points)
        assert refused.value.reason == "SOURCE_ID_REUSED"
