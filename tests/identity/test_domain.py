"""Identity's rules on their own: no gRPC, no database."""

from datetime import UTC, datetime

import pytest

from quanyu.auth import Principal, Role
from quanyu.errors import InvalidArgument, PermissionDenied
from quanyu.phones import Phone
from services.identity.domain import (
    ChannelAccount,
    Customer,
    CustomersMerged,
    PhoneHasher,
    ResolveRequest,
    check_merge,
    checked_account,
    checked_customer_id,
    checked_link,
    checked_phone,
    merge,
)
from services.identity.handlers import reach_of


@pytest.mark.parametrize("raw", ["+86 138-0013-8000", "13800138000", "8613800138000", "008613800138000"])
def test_every_way_of_writing_a_mainland_number_is_one_phone(raw: str) -> None:
    phone = Phone.parse(raw)
    assert phone.e164 == "+8613800138000"
    assert phone.masked == "138****8000"


def test_a_foreign_number_keeps_its_calling_code_in_the_mask() -> None:
    phone = Phone.parse("+1 650-253-0000")
    assert phone.e164 == "+16502530000"
    assert phone.masked == "+1 650****0000"


@pytest.mark.parametrize("raw", ["12345", "not a phone", "1380013800099999", "+86 000 0000 0000", "1" * 40])
def test_an_unusable_phone_is_invalid_argument_naming_the_field(raw: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        Phone.parse(raw)
    assert caught.value.violations[0].field == "phone"


def test_the_phone_hash_is_keyed() -> None:
    phone = Phone.parse("13800138000")
    assert PhoneHasher(b"a" * 32).digest(phone) == PhoneHasher(b"a" * 32).digest(
        Phone.parse("+8613800138000")
    )
    assert PhoneHasher(b"a" * 32).digest(phone) != PhoneHasher(b"b" * 32).digest(phone)
    assert "13800138000" not in PhoneHasher(b"a" * 32).digest(phone)


def test_resolving_needs_an_account_or_a_phone() -> None:
    with pytest.raises(InvalidArgument) as caught:
        ResolveRequest.checked(None, "", "")
    assert caught.value.violations[0].field == "account"


@pytest.mark.parametrize(
    ("account", "field"),
    [
        (ChannelAccount("", "openid-1"), "account.channel"),
        (ChannelAccount("CHANNEL_APP", ""), "account.external_id"),
        (ChannelAccount("CHANNEL_APP", "x" * 129), "account.external_id"),
        (ChannelAccount("CHANNEL_APP", "bad\x00id"), "account.external_id"),
    ],
)
def test_a_bad_account_is_invalid_argument_naming_the_field(account: ChannelAccount, field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        ResolveRequest.checked(account, "", "")
    assert [v.field for v in caught.value.violations] == [field]


def test_every_problem_of_a_request_is_reported_at_once() -> None:
    with pytest.raises(InvalidArgument) as caught:
        ResolveRequest.checked(ChannelAccount("CHANNEL_APP", ""), "123", "n" * 65)
    assert {v.field for v in caught.value.violations} == {"account.external_id", "phone", "display_name"}


def test_a_customer_cannot_be_merged_into_itself() -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_merge("cus_1", "cus_1")
    assert caught.value.violations[0].field == "merged_customer_id"


def test_a_merge_names_both_customers() -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_merge("", "")
    assert {v.field for v in caught.value.violations} == {"survivor_customer_id", "merged_customer_id"}


def test_merging_a_customer_into_the_one_it_already_is_asks_nothing_of_membership() -> None:
    assert merge("cus_a", "cus_a") is None
    effect = merge("cus_a", "cus_b")
    assert effect == CustomersMerged("cus_a", "cus_b")
    # The key makes the merge exactly-once in effect at membership, however often it is delivered.
    assert effect.payload == {
        "survivor_customer_id": "cus_a",
        "merged_customer_id": "cus_b",
        "request_id": "customer-merge:cus_b:cus_a",
    }


def test_a_link_names_every_bad_field_at_once() -> None:
    with pytest.raises(InvalidArgument) as caught:
        checked_link("", ChannelAccount("", "x" * 129))
    assert [v.field for v in caught.value.violations] == [
        "customer_id",
        "account.channel",
        "account.external_id",
    ]
    with pytest.raises(InvalidArgument) as missing:
        checked_link("cus_1", None)
    assert [v.field for v in missing.value.violations] == ["account"]


def test_a_lookup_names_an_account_a_phone_or_a_customer() -> None:
    with pytest.raises(InvalidArgument) as caught:
        checked_account(ChannelAccount("CHANNEL_APP", "bad\nid"))
    assert [v.field for v in caught.value.violations] == ["account.external_id"]
    with pytest.raises(InvalidArgument) as no_phone:
        checked_phone("")
    assert [v.field for v in no_phone.value.violations] == ["phone"]
    assert checked_phone("+86 138 0013 8000").e164 == "+8613800138000"
    with pytest.raises(InvalidArgument):
        checked_customer_id("c" * 65)


# --- who reaches which customer ----------------------------------------------------------------


def _customer(*accounts: tuple[str, str]) -> Customer:
    return Customer(
        "cus_1", "Li", "138****8000", datetime(2026, 1, 1, tzinfo=UTC), [ChannelAccount(*a) for a in accounts]
    )


def test_a_channel_acts_for_customers_holding_its_account_and_sees_only_those_accounts() -> None:
    reach = reach_of(Principal(Role.CHANNEL, "tmall", channel="CHANNEL_TMALL"))
    both = _customer(("CHANNEL_TMALL", "buyer-1"), ("CHANNEL_WECHAT_MINI_PROGRAM", "openid-1"))
    assert reach.acts_for(both)
    assert reach.view(both).accounts == [ChannelAccount("CHANNEL_TMALL", "buyer-1")]
    assert not reach.acts_for(_customer(("CHANNEL_WECHAT_MINI_PROGRAM", "openid-1")))
    with pytest.raises(PermissionDenied) as refused:
        reach.require_own(ChannelAccount("CHANNEL_WECHAT_MINI_PROGRAM", "openid-2"))
    assert refused.value.reason == "OTHER_CHANNEL"


def test_a_till_serves_any_customer_but_names_and_sees_till_accounts_only() -> None:
    reach = reach_of(Principal(Role.STORE, "till-1", store_id="SH-001"))
    customer = _customer(("CHANNEL_STORE_POS", "card-9"), ("CHANNEL_TMALL", "buyer-1"))
    assert reach.acts_for(_customer(("CHANNEL_TMALL", "buyer-1")))
    assert reach.view(customer).accounts == [ChannelAccount("CHANNEL_STORE_POS", "card-9")]
    with pytest.raises(PermissionDenied):
        reach.require_own(ChannelAccount("CHANNEL_TMALL", "buyer-2"))


def test_the_platform_reaches_every_customer_and_account() -> None:
    customer = _customer(("CHANNEL_STORE_POS", "card-9"), ("CHANNEL_TMALL", "buyer-1"))
    for principal in (Principal(Role.OPS, "ops"), Principal(Role.SERVICE, "orders")):
        reach = reach_of(principal)
        assert reach.acts_for(customer)
        assert reach.view(customer) == customer
