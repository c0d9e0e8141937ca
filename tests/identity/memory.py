"""Identity's `Stores` kept in memory, for use cases tested without a database."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from quanyu.errors import AlreadyExists
from services.identity.domain import (
    MAX_MERGE_CHAIN,
    AccountLinked,
    ChannelAccount,
    Customer,
    CustomersMerged,
    CustomerState,
    Revocation,
)
from tests.trail import MemoryAudit


class MemoryCustomers:
    """Customers, their accounts and phones as dicts; a key taken twice fails as a unique key does."""

    def __init__(self) -> None:
        self.customers: dict[str, Customer] = {}
        self.merged_into: dict[str, str] = {}
        self.accounts: dict[ChannelAccount, str] = {}
        self.phones: dict[str, tuple[str, str]] = {}  # hash -> (customer, masked)
        self.locked: list[str] = []
        self.versions: dict[str, int] = {}

    def survivor_of(self, customer_id: str, *, lock: bool = False) -> str | None:
        current = customer_id
        for _ in range(MAX_MERGE_CHAIN):
            if current not in self.customers:
                return None if current == customer_id else current
            if lock:
                self.locked.append(current)
            if current not in self.merged_into:
                return current
            current = self.merged_into[current]
        raise AssertionError("merge chain too long")

    def get(self, customer_id: str) -> Customer | None:
        customer = self.customers.get(customer_id)
        if customer is None:
            return None
        owned = [account for account, owner in self.accounts.items() if owner == customer_id]
        return replace(customer, accounts=owned)

    def owner_of_account(self, account: ChannelAccount) -> str | None:
        return self.accounts.get(account)

    def owner_of_phone(self, phone_hash: str) -> str | None:
        found = self.phones.get(phone_hash)
        return found[0] if found else None

    def state_for_orders(self, customer_id: str) -> CustomerState:
        self.versions[customer_id] = self.versions.get(customer_id, 0) + 1
        owned = self.get(customer_id)
        assert owned is not None
        return CustomerState(
            customer_id,
            self.versions[customer_id],
            self.merged_into.get(customer_id),
            tuple(owned.accounts),
            tuple(sorted(h for h, (owner, _) in self.phones.items() if owner == customer_id)),
        )

    def create(self, customer_id: str, display_name: str, now: datetime) -> None:
        self.customers[customer_id] = Customer(customer_id, display_name, "", now)

    def link_account(self, customer_id: str, account: ChannelAccount, now: datetime) -> None:
        if account in self.accounts:
            raise AlreadyExists("account taken", reason="UNIQUE")
        self.accounts[account] = customer_id

    def link_phone(self, customer_id: str, phone_hash: str, phone_masked: str, now: datetime) -> None:
        if phone_hash in self.phones:
            raise AlreadyExists("phone taken", reason="UNIQUE")
        self.phones[phone_hash] = (customer_id, phone_masked)
        if not self.customers[customer_id].phone_masked:
            self.customers[customer_id].phone_masked = phone_masked

    def fill_display_name(self, customer_id: str, display_name: str, now: datetime) -> None:
        if display_name and not self.customers[customer_id].display_name:
            self.customers[customer_id].display_name = display_name

    def merge(self, survivor_id: str, merged_id: str, now: datetime) -> None:
        for account, owner in list(self.accounts.items()):
            if owner == merged_id:
                self.accounts[account] = survivor_id
        for key, (owner, masked) in list(self.phones.items()):
            if owner == merged_id:
                self.phones[key] = (survivor_id, masked)
        merged, survivor = self.customers[merged_id], self.customers[survivor_id]
        survivor.phone_masked = survivor.phone_masked or merged.phone_masked
        self.fill_display_name(survivor_id, merged.display_name, now)
        for key, target in list(self.merged_into.items()):
            if target == merged_id:
                self.merged_into[key] = survivor_id
        self.merged_into[merged_id] = survivor_id
        merged.phone_masked = ""


class MemoryOutbox:
    def __init__(self) -> None:
        self.effects: list[tuple[CustomersMerged | AccountLinked | CustomerState, datetime]] = []

    def add(self, effect: CustomersMerged | AccountLinked | CustomerState, now: datetime) -> None:
        self.effects.append((effect, now))


class MemoryRevocations:
    def __init__(self) -> None:
        self.kept: list[Revocation] = []

    def add(self, revocation: Revocation) -> None:
        self.kept.append(revocation)

    def since(self, since: datetime) -> list[Revocation]:
        return [r for r in self.kept if r.revoke_time > since]


class MemoryStores:
    def __init__(self) -> None:
        self.customers = MemoryCustomers()
        self.outbox = MemoryOutbox()
        self.revocations = MemoryRevocations()
        self.audit = MemoryAudit()
