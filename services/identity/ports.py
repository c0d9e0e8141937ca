"""What identity's use cases need from outside: the repositories of one transaction (storage.py
and the in-memory fakes implement them)."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from quanyu.audit_record import AuditTrail
from services.identity.domain import (
    AccountLinked,
    ChannelAccount,
    Customer,
    CustomersMerged,
    CustomerState,
    Revocation,
)


class Customers(Protocol):
    def survivor_of(self, customer_id: str, *, lock: bool = False) -> str | None:
        """The customer an id stands for today: itself, or the end of its chain of merges;
        `lock`: the chain's rows are held until the transaction ends."""
        ...

    def get(self, customer_id: str) -> Customer | None: ...

    def owner_of_account(self, account: ChannelAccount) -> str | None: ...

    def owner_of_phone(self, phone_hash: str) -> str | None: ...

    def state_for_orders(self, customer_id: str) -> CustomerState:
        """The customer's accounts, phone hashes and merge under their next version, which this
        takes (holding the customer until the transaction ends)."""
        ...

    def create(self, customer_id: str, display_name: str, now: datetime) -> None: ...

    def link_account(self, customer_id: str, account: ChannelAccount, now: datetime) -> None:
        """An account taken already fails the transaction (a concurrent resolve won)."""
        ...

    def link_phone(self, customer_id: str, phone_hash: str, phone_masked: str, now: datetime) -> None:
        """A phone taken already fails the transaction; the first phone is the one shown."""
        ...

    def fill_display_name(self, customer_id: str, display_name: str, now: datetime) -> None:
        """Give a customer without a name this one."""
        ...

    def merge(self, survivor_id: str, merged_id: str, now: datetime) -> None:
        """Move the merged customer's accounts and phones to the survivor and point it there."""
        ...


class Outbox(Protocol):
    def add(self, effect: CustomersMerged | AccountLinked | CustomerState, now: datetime) -> None:
        """Record an effect, delivered once the transaction commits."""
        ...


class Revocations(Protocol):
    def add(self, revocation: Revocation) -> None: ...

    def since(self, since: datetime) -> list[Revocation]:
        """The revocations made after `since` (older ones name tokens expired by now)."""
        ...


class Stores(Protocol):
    @property
    def customers(self) -> Customers: ...

    @property
    def revocations(self) -> Revocations: ...

    @property
    def audit(self) -> AuditTrail: ...

    @property
    def outbox(self) -> Outbox: ...
