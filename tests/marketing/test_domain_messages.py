"""Messages: rendering without phones in clear, consent, the weekly allowance, quiet hours held in
the member's zone, and one campaign at a time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.marketing.domain import (
    Channel,
    Contact,
    ContactPolicy,
    Contender,
    Outcome,
    arbitrate,
    placeholder_values,
    render,
)
from tests.marketing.factory import T0, member

POLICY = ContactPolicy()


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=UTC)


def contact(*sent: datetime, consent: bool = True, account: bool = True) -> Contact:
    return Contact(Channel.APP, has_account=account, consent=consent, sent_times=sent)


# Rendering


def test_every_placeholder_is_filled() -> None:
    text = render(
        "{display_name} ({tier}): {points_balance} points, code {coupon_code}",
        placeholder_values(member(), coupon_code="AB2CD3EF4GH5"),
    )
    assert text == "Li Lei (GOLD): 1200 points, code AB2CD3EF4GH5"


def test_a_phone_never_leaves_in_clear() -> None:
    values = placeholder_values(member(display_name="13800138000"))
    text = render("Hello {display_name}, call +86 139-0013-9000", values)
    assert "13800138000" not in text
    assert "139-0013-9000" not in text
    assert "138****8000" in text


def test_an_unknown_placeholder_and_lone_braces_stay_as_written() -> None:
    assert render("{nope} {tier} { }", {"tier": "GOLD"}) == "{nope} GOLD { }"


def test_a_value_is_not_rendered_again() -> None:
    text = render("{display_name}", placeholder_values(member(display_name="{tier}")))
    assert text == "{tier}"


# Quiet hours (21:00-09:00 local by default)


@pytest.mark.parametrize(
    ("due", "zone", "held_until"),
    [
        # 21:30 in Shanghai is quiet until 09:00 the next morning; it is 19:30 in Ürümqi.
        (at(1, 13, 30), "Asia/Shanghai", at(2, 1)),
        (at(1, 13, 30), "Asia/Urumqi", None),
        # After midnight: held until 09:00 the same local day, in each zone's own morning.
        (at(1, 23), "Asia/Shanghai", at(2, 1)),
        (at(1, 23), "Asia/Urumqi", at(2, 3)),
        # The window's start is quiet, its end is not.
        (at(1, 13), "Asia/Shanghai", at(2, 1)),
        (at(1, 1), "Asia/Shanghai", None),
        (at(1, 1), "Asia/Urumqi", at(1, 3)),
        (at(1, 12, 59), "Asia/Shanghai", None),
        # No zone: Shanghai's hours.
        (at(1, 13, 30), "", at(2, 1)),
    ],
)
def test_quiet_hours_hold_a_message_until_the_member_s_morning(
    due: datetime, zone: str, held_until: datetime | None
) -> None:
    assert POLICY.quiet_until(due, zone) == held_until
    delivery = POLICY.deliver(contact(), due, zone)
    assert delivery.send_at == (held_until or due)
    assert delivery.outcome is (Outcome.DEFERRED_QUIET_HOURS if held_until else Outcome.SEND)


def test_a_window_within_one_day_and_an_empty_one() -> None:
    lunch = ContactPolicy(quiet_start="12:00", quiet_end="14:00")
    assert lunch.quiet_until(at(1, 4, 30), "Asia/Shanghai") == at(1, 6)
    assert lunch.quiet_until(at(1, 6), "Asia/Shanghai") is None
    assert lunch.quiet_until(at(1, 13, 30), "Asia/Shanghai") is None
    assert ContactPolicy(quiet_start="09:00", quiet_end="09:00").quiet_until(at(1, 13, 30), "") is None


@given(
    st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC)),
    st.sampled_from(["Asia/Shanghai", "Asia/Urumqi", ""]),
)
def test_no_message_is_sent_in_quiet_hours_and_none_is_dropped_for_them(due: datetime, zone: str) -> None:
    delivery = POLICY.deliver(contact(), due, zone)
    assert delivery.send_at is not None
    assert due <= delivery.send_at <= due + timedelta(hours=12)
    local = delivery.send_at.astimezone(ZoneInfo(zone or "Asia/Shanghai"))
    assert 9 <= local.hour < 21


# Consent and the weekly allowance


def test_no_account_or_no_consent_sends_nothing() -> None:
    assert POLICY.deliver(contact(account=False), at(1, 3), "").outcome is Outcome.NO_ACCOUNT
    no_consent = POLICY.deliver(contact(consent=False), at(1, 3), "")
    assert (no_consent.outcome, no_consent.sent) == (Outcome.NO_CONSENT, False)


def test_three_messages_a_week_and_no_fourth() -> None:
    due = at(8, 3)
    sent = (due - timedelta(days=6), due - timedelta(days=1), due - timedelta(hours=1))
    assert POLICY.deliver(contact(*sent[:2]), due, "").outcome is Outcome.SEND
    capped = POLICY.deliver(contact(*sent), due, "")
    assert (capped.outcome, capped.sent) == (Outcome.FREQUENCY_CAPPED, False)


def test_a_message_seven_days_old_no_longer_counts() -> None:
    due = at(8, 3)
    sent = (due - timedelta(days=7), due - timedelta(days=1), due - timedelta(hours=1))
    assert POLICY.deliver(contact(*sent), due, "").outcome is Outcome.SEND


def test_a_held_message_counts_the_week_of_its_morning() -> None:
    # Due at 21:30 local on the 8th, sent at 09:00 on the 9th: a message from 07:30 on the 2nd
    # has left the week by then.
    due = at(8, 13, 30)
    sent = (at(1, 23, 30), at(5, 3), at(7, 3))
    delivery = POLICY.deliver(contact(*sent), due, "Asia/Shanghai")
    assert (delivery.outcome, delivery.send_at) == (Outcome.DEFERRED_QUIET_HOURS, at(9, 1))


def test_the_allowance_is_configurable() -> None:
    policy = ContactPolicy(max_per_window=1)
    assert policy.deliver(contact(at(1, 3)), at(2, 3), "").outcome is Outcome.FREQUENCY_CAPPED


# Arbitration


def test_the_higher_priority_wins_and_the_others_are_suppressed() -> None:
    a = Contender("cmp_a", 1, T0)
    b = Contender("cmp_b", 5, T0 + timedelta(days=1))
    c = Contender("cmp_c", 3, T0 - timedelta(days=1))
    winner, suppressed = arbitrate([a, b, c])
    assert winner == b
    assert suppressed == (c, a)


def test_of_equal_priority_the_older_then_the_smaller_id_wins() -> None:
    older = Contender("cmp_z", 2, T0)
    newer = Contender("cmp_a", 2, T0 + timedelta(seconds=1))
    assert arbitrate([newer, older])[0] == older
    twin = Contender("cmp_b", 2, T0)
    assert arbitrate([older, twin])[0] == twin


def test_no_contenders_no_winner() -> None:
    assert arbitrate([]) == (None, ())


@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 3), st.text(min_size=1, max_size=4)),
        min_size=1,
        max_size=8,
        unique_by=lambda t: t[2],
    )
)
def test_every_replica_picks_the_same_winner_whatever_the_order(entries: list[tuple[int, int, str]]) -> None:
    contenders = [Contender(cid, priority, T0 + timedelta(minutes=age)) for priority, age, cid in entries]
    winner, suppressed = arbitrate(contenders)
    assert winner is not None
    assert arbitrate(list(reversed(contenders)))[0] == winner
    assert len(suppressed) == len(contenders) - 1
    assert all(winner.priority >= other.priority for other in suppressed)


@given(st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True), st.sampled_from(["", " ", "-", "+86 "]))
def test_no_mainland_mobile_in_a_display_name_survives_rendering(number: str, lead: str) -> None:
    text = render("Dear {display_name}!", placeholder_values(member(display_name=lead + number)))
    assert number not in text.replace(" ", "").replace("-", "")
    assert number[-4:] in text
