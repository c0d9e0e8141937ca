"""Identity's rules, free of gRPC and the database: phones, channel accounts, customers, merges."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field, replace
from datetime import datetime

from quanyu.auth import STORE_POS, Principal, Role
from quanyu.errors import InvalidArgument, PermissionDenied, Violations
from quanyu.phones import Phone

MAX_EXTERNAL_ID_LENGTH = 128
MAX_DISPLAY_NAME_LENGTH = 64
MAX_CUSTOMER_ID_LENGTH = 64
# Merges form chains (A into B, B into C); a longer one than this means corrupt data.
MAX_MERGE_CHAIN = 64


@dataclass(frozen=True)
class ChannelAccount:
    """A customer's account on one channel: a WeChat openid, a Tmall buyer id, a till card."""

    channel: str  # a common.v1.Channel value name, e.g. CHANNEL_TMALL
    external_id: str


class PhoneHasher:
    """Phones are found by a keyed hash: a stolen table does not give the numbers back."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def digest(self, phone: Phone) -> str:
        return hmac.new(self._key, phone.e164.encode(), hashlib.sha256).hexdigest()


@dataclass
class Customer:
    customer_id: str
    display_name: str
    phone_masked: str
    create_time: datetime
    accounts: list[ChannelAccount] = field(default_factory=list)


@dataclass(frozen=True)
class Reach:
    """How far a caller reaches into the customers: the one channel whose accounts it names,
    links and is shown (None: every channel), and whether it acts only for customers holding
    one of them.

    A channel backend acts for the customers who hold an account on its channel and sees only
    those accounts: another channel's openid or buyer id is nothing to it. A till serves every
    customer of the chain at the counter, but the accounts it names, links and sees are till
    accounts (member cards). Ops and the platform's services reach everything.
    """

    channel: str | None
    needs_account: bool

    @classmethod
    def of(cls, principal: Principal) -> Reach:
        if principal.role is Role.CHANNEL:
            return cls(principal.channel, needs_account=True)
        if principal.role is Role.STORE:
            return cls(STORE_POS, needs_account=False)
        return cls(None, needs_account=False)

    def names(self, account: ChannelAccount) -> bool:
        return self.channel is None or account.channel == self.channel

    def require_own(self, account: ChannelAccount, field_name: str = "account") -> None:
        """Linking or creating with another channel's account is taking over its customer."""
        if not self.names(account):
            raise PermissionDenied(
                f"{field_name}: this caller names and links {self.channel} accounts only",
                reason="OTHER_CHANNEL",
            )

    def acts_for(self, customer: Customer) -> bool:
        return not self.needs_account or any(self.names(account) for account in customer.accounts)

    def view(self, customer: Customer) -> Customer:
        if self.channel is None:
            return customer
        return replace(customer, accounts=[a for a in customer.accounts if self.names(a)])


def validate_account(account: ChannelAccount | None, field_name: str, violations: Violations) -> None:
    if account is None:
        violations.add(field_name, "is required")
        return
    violations.check(bool(account.channel), f"{field_name}.channel", "must name a channel")
    violations.text(account.external_id, f"{field_name}.external_id", max_length=MAX_EXTERNAL_ID_LENGTH)


def validate_customer_id(customer_id: str, field_name: str, violations: Violations) -> None:
    violations.text(customer_id, field_name, max_length=MAX_CUSTOMER_ID_LENGTH)


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
