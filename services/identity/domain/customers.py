"""Customers across every channel (OneID): their accounts, who may reach them, how phones are
found, and the merge of two customers found to be one person."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, ClassVar

from quanyu.errors import PermissionDenied
from quanyu.phones import Phone, keyed_digest

# Merges form chains (A into B, B into C); a longer one than this means corrupt data.
MAX_MERGE_CHAIN = 64
# The channel of store tills (member cards).
TILL_CHANNEL = "CHANNEL_STORE_POS"
# The outbox kind of what marketing is told (one of marketing's Events, in its JSON form).
MARKETING_EVENT = "marketing_event"


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
        return keyed_digest(self._key, phone)


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
    def of_channel(cls, channel: str) -> Reach:
        return cls(channel, needs_account=True)

    @classmethod
    def of_till(cls) -> Reach:
        return cls(TILL_CHANNEL, needs_account=False)

    @classmethod
    def everything(cls) -> Reach:
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


@dataclass(frozen=True)
class CustomersMerged:
    """Two customers became one: membership merges their members too, through the outbox."""

    KIND: ClassVar[str] = "customers_merged"

    survivor_customer_id: str
    merged_customer_id: str

    @property
    def payload(self) -> dict[str, str]:
        """What the effect carries, with the key that makes its delivery exactly-once in effect."""
        return {
            "survivor_customer_id": self.survivor_customer_id,
            "merged_customer_id": self.merged_customer_id,
            "request_id": f"customer-merge:{self.merged_customer_id}:{self.survivor_customer_id}",
        }


def merge(survivor: str, merged: str) -> CustomersMerged | None:
    """What merging the customers two ids stand for today means: nothing when they are one
    already (merging again is harmless), else the merge membership must hear of."""
    return None if survivor == merged else CustomersMerged(survivor, merged)


@dataclass(frozen=True)
class AccountLinked:
    """A customer holds an account on a channel now (created with it, linked to it, or gained
    by a merge): marketing may reach them there."""

    KIND: ClassVar[str] = MARKETING_EVENT

    customer_id: str
    account: ChannelAccount
    display_name: str
    occur_time: datetime

    @property
    def payload(self) -> dict[str, Any]:
        """Marketing's Event, its id following from the customer and the account: a transaction
        run again, or a merge repeating what marketing was told, is one event to it."""
        holding = f"{self.customer_id}|{self.account.channel}|{self.account.external_id}"
        return {
            "event_id": "identity/account/" + hashlib.sha256(holding.encode()).hexdigest()[:40],
            "occur_time": self.occur_time.isoformat(),
            "account_linked": {
                "customer_id": self.customer_id,
                "account": {"channel": self.account.channel, "external_id": self.account.external_id},
                "display_name": self.display_name,
            },
        }


def accounts_linked(customer: Customer, accounts: list[ChannelAccount], now: datetime) -> list[AccountLinked]:
    """What marketing hears of the customer now holding `accounts`."""
    return [AccountLinked(customer.customer_id, account, customer.display_name, now) for account in accounts]


# The outbox kind of what orders is told (one of orders' CustomerEvents, in its JSON form).
ORDERS_EVENT = "orders_customer_event"
# What one event to orders carries at most (IngestCustomerEvents' caps); a customer holding more
# is told as withheld, and orders asks identity for them.
MAX_ACCOUNTS_TOLD = 100
MAX_PHONES_TOLD = 20


@dataclass(frozen=True)
class CustomerState:
    """A customer as they stand after a change of their accounts, phones or merge, told to
    orders so that it can find them without asking: the whole state, never a difference, and
    its version, so that orders keeps only the newest it has heard of whatever order the events
    arrive in."""

    KIND: ClassVar[str] = ORDERS_EVENT

    customer_id: str
    version: int
    merged_into: str | None
    accounts: tuple[ChannelAccount, ...]
    phone_hashes: tuple[str, ...]

    @property
    def payload(self) -> dict[str, Any]:
        withheld = len(self.accounts) > MAX_ACCOUNTS_TOLD or len(self.phone_hashes) > MAX_PHONES_TOLD
        accounts = () if withheld else self.accounts
        return {
            "event_id": f"identity/customer/{self.customer_id}/{self.version}",
            "customer": {
                "customer_id": self.customer_id,
                "version": self.version,
                "merged_into_customer_id": self.merged_into or "",
                "accounts": [{"channel": a.channel, "external_id": a.external_id} for a in accounts],
                "phone_hashes": [] if withheld else sorted(self.phone_hashes),
                "withheld": withheld,
            },
        }
