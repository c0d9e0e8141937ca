"""What each request of identity asks, checked once: every problem reported in one answer, each at
its field path."""

from __future__ import annotations

from dataclasses import dataclass

from quanyu.errors import InvalidArgument, Violations
from quanyu.phones import Phone
from services.identity.domain.customers import ChannelAccount

MAX_EXTERNAL_ID_LENGTH = 128
MAX_DISPLAY_NAME_LENGTH = 64
MAX_CUSTOMER_ID_LENGTH = 64


def validate_account(account: ChannelAccount | None, field_name: str, violations: Violations) -> None:
    if account is None:
        violations.add(field_name, "is required")
        return
    named = violations.within(field_name)
    named.check(bool(account.channel), "channel", "must name a channel")
    named.text(account.external_id, "external_id", max_length=MAX_EXTERNAL_ID_LENGTH)


def validate_customer_id(customer_id: str, field_name: str, violations: Violations) -> None:
    violations.text(customer_id, field_name, max_length=MAX_CUSTOMER_ID_LENGTH)


def checked_customer_id(customer_id: str) -> str:
    """GetCustomer."""
    violations = Violations()
    validate_customer_id(customer_id, "customer_id", violations)
    violations.raise_if_any()
    return customer_id


def checked_account(account: ChannelAccount | None) -> ChannelAccount:
    """LookupCustomer by account."""
    violations = Violations()
    validate_account(account, "account", violations)
    violations.raise_if_any()
    assert account is not None
    return account


def checked_phone(raw_phone: str) -> Phone:
    """LookupCustomer by phone."""
    if not raw_phone:
        raise InvalidArgument("phone", "give a channel account or a phone")
    return Phone.parse(raw_phone)


def checked_link(customer_id: str, account: ChannelAccount | None) -> ChannelAccount:
    """LinkAccount: the customer, and the account it gains."""
    violations = Violations()
    validate_customer_id(customer_id, "customer_id", violations)
    validate_account(account, "account", violations)
    violations.raise_if_any()
    assert account is not None
    return account


@dataclass(frozen=True)
class ResolveRequest:
    """Find a customer by channel account, else by phone, else create one."""

    account: ChannelAccount | None
    phone: Phone | None
    display_name: str

    @classmethod
    def checked(cls, account: ChannelAccount | None, raw_phone: str, display_name: str) -> ResolveRequest:
        violations = Violations()
        if account is None and not raw_phone:
            violations.add("account", "give a channel account or a phone")
        if account is not None:
            validate_account(account, "account", violations)
        violations.text(display_name, "display_name", max_length=MAX_DISPLAY_NAME_LENGTH, required=False)
        phone: Phone | None = None
        if raw_phone:
            try:
                phone = Phone.parse(raw_phone)
            except InvalidArgument as error:
                violations.found.extend(error.violations)
        violations.raise_if_any()
        return cls(account=account, phone=phone, display_name=display_name)


def check_merge(survivor_customer_id: str, merged_customer_id: str) -> None:
    violations = Violations()
    validate_customer_id(survivor_customer_id, "survivor_customer_id", violations)
    validate_customer_id(merged_customer_id, "merged_customer_id", violations)
    if survivor_customer_id and survivor_customer_id == merged_customer_id:
        violations.add("merged_customer_id", "a customer cannot be merged into itself")
    violations.raise_if_any()
