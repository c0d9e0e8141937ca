"""Identity's rules on their own: no gRPC, no database."""

import pytest

from quanyu.errors import InvalidArgument
from quanyu.phones import Phone
from services.identity.domain import ChannelAccount, PhoneHasher, ResolveRequest, check_merge


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
